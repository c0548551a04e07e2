"""The bridge journal's interface: records, outcomes, errors (DESIGN section 6).

The journal is the bridge's write-ahead log and its idempotency guard. Every state is
recorded (and durable) before the bridge acts on it:

- an authorisation is journaled as ``received`` before the acquirer is called, may be
  marked ``sent`` just before the call, and ends ``approved``, ``declined``, ``failed``
  or ``timed_out`` together with the exact response payload the bridge publishes;
- a reversal is ``pending`` until the acquirer acknowledges it (``acknowledged``) or
  says it never saw the original (``unknown_original``); the retry loop reads
  :meth:`Journal.pending_reversals`.

Idempotency is a unique constraint on ``(terminal_id, idempotency_key)``, never a
read-then-write: :meth:`Journal.begin_authorization` inserts atomically and tells the
caller which of :class:`New`, :class:`Duplicate`, :class:`InFlight` or :class:`Conflict`
happened. The terminal registry lives in the same database: its
:meth:`TerminalRegistry.advance_counter` is one conditional ``UPDATE``, so a replayed or
old DUKPT counter is refused even with many bridges sharing one PostgreSQL database.

Enrolment codes (issue 8) live there too, one per terminal, as a SHA-256-sized digest
only: :meth:`Journal.redeem_enrolment_code` checks and spends a code and, in the same
transaction, gives the terminal its new data initial key id, so two bridges redeeming one
code together cannot both succeed. No record returned by the journal holds the digest.

What is never stored: track 2 equivalent data, PIN blocks, CVV/CVC or any other
sensitive authentication data. There are no columns for them, and the entry types below
have no fields that could carry them. PANs are stored only as AES-GCM ciphertext under the
caller's journal data key, as an HMAC-SHA256 under a separate lookup key, and masked
(first six, last four); records returned by queries hold the masked PAN only.

Exception tree::

    JournalError
    ├── JournalUnavailable   the database cannot be reached or is busy (transient)
    ├── JournalClosed        the journal was closed
    ├── SchemaTooNew         the database was written by a newer release: refused
    ├── UnknownTerminal      no such terminal in the registry
    ├── TerminalExists       register_terminal for an id already registered
    ├── UnknownEntry         no such authorisation or reversal
    ├── InvalidTransition    a state change the state machine does not allow
    └── PanDecryptError      a stored PAN does not open under the given key (pan_crypto)

Messages name terminals, idempotency keys and states; never PANs or payloads.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, TypeAlias

from paycore.pan import Pan
from paycore.wire import AuthorizationRequest, ReversalRequest

TerminalStatus = Literal["active", "suspended", "revoked"]
AuthorizationState = Literal["received", "sent", "approved", "declined", "failed", "timed_out"]
FinalAuthorizationState = Literal["approved", "declined", "failed", "timed_out"]
ReversalState = Literal["pending", "acknowledged", "unknown_original"]
ReversalOutcome = Literal["reversed", "already_reversed", "unknown_original"]
TransactionType = Literal["purchase", "refund", "void"]
ReversalReason = Literal[
    "host_timeout", "card_declined", "card_removed", "cancelled", "terminal_error"
]

TERMINAL_STATUSES: tuple[TerminalStatus, ...] = ("active", "suspended", "revoked")
AUTHORIZATION_STATES: tuple[AuthorizationState, ...] = (
    "received",
    "sent",
    "approved",
    "declined",
    "failed",
    "timed_out",
)
FINAL_STATES: tuple[FinalAuthorizationState, ...] = ("approved", "declined", "failed", "timed_out")
IN_FLIGHT_STATES: tuple[AuthorizationState, ...] = ("received", "sent")

_INITIAL_KEY_ID = re.compile(r"[0-9A-F]{16}")


# -- errors ---------------------------------------------------------------------------------


class JournalError(Exception):
    """Base of every error the journal raises."""


class JournalUnavailable(JournalError):
    """The database could not be reached, or stayed busy: transient, retry later."""


class JournalClosed(JournalError):
    """The journal was closed; nothing more can be written."""


class SchemaTooNew(JournalError):
    """The database carries a schema version newer than this release understands."""

    def __init__(self, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            f"journal schema version {found} is newer than this release supports "
            f"({supported}); upgrade gateway_bridge before opening this database"
        )


class BatchInProgress(JournalError):
    """Another bridge is closing the same terminal batch right now."""


class UnknownTerminal(JournalError):
    pass


class TerminalExists(JournalError):
    pass


class UnknownEntry(JournalError):
    pass


class InvalidTransition(JournalError):
    pass


# -- helpers --------------------------------------------------------------------------------


def request_digest(body: bytes) -> bytes:
    """The digest the journal compares duplicates by: SHA-256 of the opened request body."""
    return hashlib.sha256(body).digest()


def _check_digest(digest: bytes) -> None:
    if len(digest) != 32:
        raise ValueError("request_digest must be a 32-byte SHA-256 digest")


def normalise_initial_key_id(key_id: str) -> str:
    """An AES DUKPT Initial Key ID as the registry stores it: 16 hex digits, upper case.

    The first 8 bytes of the terminal's KSN (X9.24-3-2017 6.1); ValueError otherwise.
    """
    if not isinstance(key_id, str):
        raise ValueError("data_initial_key_id must be 16 hex digits (8 bytes)")
    upper = key_id.upper()
    if not _INITIAL_KEY_ID.fullmatch(upper):
        raise ValueError("data_initial_key_id must be 16 hex digits (8 bytes)")
    return upper


def check_code_digest(code_digest: bytes) -> bytes:
    """An enrolment code's digest: 32 bytes (ValueError otherwise; never echoed)."""
    if not isinstance(code_digest, bytes | bytearray | memoryview) or len(code_digest) != 32:
        raise ValueError("code_digest must be a 32-byte digest")
    return bytes(code_digest)


# -- the terminal registry ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TerminalRegistration:
    """A terminal to enrol. ``data_initial_key_id`` is the first 8 bytes of its KSN, hex."""

    terminal_id: str
    merchant_id: str
    data_initial_key_id: str
    data_bdk_id: str
    pin_bdk_id: str
    status: TerminalStatus = "active"

    def __post_init__(self) -> None:
        key_id = normalise_initial_key_id(self.data_initial_key_id)
        object.__setattr__(self, "data_initial_key_id", key_id)
        if self.status not in TERMINAL_STATUSES:
            raise ValueError(f"unknown terminal status {self.status!r}")
        for name in ("terminal_id", "merchant_id", "data_bdk_id", "pin_bdk_id"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")


@dataclass(frozen=True, slots=True)
class TerminalRecord:
    """A registry row. ``last_counter`` is None until the first envelope is accepted."""

    terminal_id: str
    merchant_id: str
    status: TerminalStatus
    data_initial_key_id: str
    data_bdk_id: str
    pin_bdk_id: str
    last_counter: int | None
    last_seen_at: datetime | None
    created_at: datetime
    updated_at: datetime


# -- enrolment codes ------------------------------------------------------------------------

EnrolmentOutcome = Literal["ok", "wrong", "expired", "used", "locked", "unknown"]
ENROLMENT_OUTCOMES: tuple[EnrolmentOutcome, ...] = (
    "ok",
    "wrong",
    "expired",
    "used",
    "locked",
    "unknown",
)


@dataclass(frozen=True, slots=True)
class EnrolmentCodeRecord:
    """A terminal's enrolment code as queries return it: never the code or its digest."""

    terminal_id: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    failed_attempts: int
    created_by: str


@dataclass(frozen=True, slots=True)
class EnrolmentRedemption:
    """What :meth:`Journal.redeem_enrolment_code` decided.

    ``terminal`` is the updated registry row when ``outcome`` is ``"ok"`` (None
    otherwise); ``failed_attempts`` is the count after this call (0 when ``unknown``).
    """

    outcome: EnrolmentOutcome
    terminal: TerminalRecord | None
    failed_attempts: int


# -- authorisations -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthorizationEntry:
    """What the bridge journals for an authorisation before it goes to the acquirer.

    Deliberately no track 2, PIN block or EMV data: those never reach the journal.
    ``pan`` is encrypted and hashed by the journal, and only its mask is stored in clear.
    """

    terminal_id: str
    merchant_id: str
    idempotency_key: str
    message_id: str
    request_digest: bytes
    transaction_type: TransactionType
    amount: int
    currency: str
    pan: Pan = field(repr=False)
    stan: int | None = None
    reference: str = ""
    original_message_id: str | None = None

    def __post_init__(self) -> None:
        _check_digest(self.request_digest)
        if not isinstance(self.pan, Pan):
            raise TypeError("pan must be a paycore.pan.Pan")
        if self.amount < 0:
            raise ValueError("amount must not be negative")

    @classmethod
    def from_request(
        cls,
        *,
        terminal_id: str,
        merchant_id: str,
        message_id: str,
        request: AuthorizationRequest,
        body: bytes,
    ) -> AuthorizationEntry:
        """The entry for an opened request; ``body`` is its plaintext (for the digest)."""
        return cls(
            terminal_id=terminal_id,
            merchant_id=merchant_id,
            idempotency_key=request.idempotency_key,
            message_id=message_id,
            request_digest=request_digest(body),
            transaction_type=request.transaction_type,
            amount=request.amount,
            currency=request.currency,
            pan=request.pan,
            stan=request.stan,
            reference=request.reference,
            original_message_id=request.original_message_id,
        )


@dataclass(frozen=True, slots=True)
class AuthorizationOutcome:
    """How an authorisation ended, and the exact payload the bridge publishes for it."""

    state: FinalAuthorizationState
    response_payload: bytes = field(repr=False)
    response_code: str | None = None
    authorization_code: str | None = None
    host_reference: str | None = None

    def __post_init__(self) -> None:
        if self.state not in FINAL_STATES:
            raise ValueError(f"{self.state!r} is not a final authorisation state")
        if not isinstance(self.response_payload, bytes):
            raise TypeError("response_payload must be bytes")


@dataclass(frozen=True, slots=True)
class AuthorizationRecord:
    """An authorisation as queries return it: masked PAN only, never the ciphertext."""

    id: int
    terminal_id: str
    merchant_id: str
    idempotency_key: str
    message_id: str
    original_message_id: str | None
    request_digest: bytes
    transaction_type: TransactionType
    amount: int
    currency: str
    stan: int | None
    reference: str
    masked_pan: str
    state: AuthorizationState
    response_code: str | None
    authorization_code: str | None
    host_reference: str | None
    response_payload: bytes | None = field(repr=False)
    received_at: datetime
    sent_at: datetime | None
    completed_at: datetime | None
    reversed_at: datetime | None
    batch_id: str | None


@dataclass(frozen=True, slots=True)
class AuthorizationQuery:
    """Filters for ``gateway-bridge journal``; ``since`` inclusive, ``until`` exclusive."""

    terminal_id: str | None = None
    merchant_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    state: AuthorizationState | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("limit must be at least 1")
        if self.state is not None and self.state not in AUTHORIZATION_STATES:
            raise ValueError(f"unknown authorisation state {self.state!r}")


# -- reversals ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReversalEntry:
    """A reversal to journal (from a terminal, or raised by the bridge itself)."""

    terminal_id: str
    merchant_id: str
    idempotency_key: str
    message_id: str
    original_message_id: str
    reason: ReversalReason
    amount: int
    currency: str
    request_digest: bytes
    origin: Literal["terminal", "bridge"] = "terminal"

    def __post_init__(self) -> None:
        _check_digest(self.request_digest)

    @classmethod
    def from_request(
        cls,
        *,
        terminal_id: str,
        merchant_id: str,
        message_id: str,
        request: ReversalRequest,
        body: bytes,
    ) -> ReversalEntry:
        return cls(
            terminal_id=terminal_id,
            merchant_id=merchant_id,
            idempotency_key=request.idempotency_key,
            message_id=message_id,
            original_message_id=request.original_message_id,
            reason=request.reason,
            amount=request.amount,
            currency=request.currency,
            request_digest=request_digest(body),
        )


@dataclass(frozen=True, slots=True)
class ReversalRecord:
    id: int
    terminal_id: str
    merchant_id: str
    idempotency_key: str
    message_id: str
    original_message_id: str
    reason: ReversalReason
    amount: int
    currency: str
    origin: Literal["terminal", "bridge"]
    state: ReversalState
    outcome: ReversalOutcome | None
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    response_payload: bytes | None = field(repr=False)
    created_at: datetime
    updated_at: datetime


# -- begin outcomes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class New:
    """The entry was inserted: this caller, and only this one, goes to the acquirer."""

    entry_id: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Seen and answered before: re-publish ``response_payload`` byte for byte."""

    response_payload: bytes = field(repr=False)
    entry_id: int


@dataclass(frozen=True, slots=True)
class InFlight:
    """Same key, same request, being processed now: do not call the acquirer again."""

    entry_id: int


@dataclass(frozen=True, slots=True)
class Conflict:
    """Same key, different request digest: refuse (``duplicate_conflict``)."""

    entry_id: int


BeginResult: TypeAlias = New | Duplicate | InFlight | Conflict


def classify_existing(
    entry_id: int, stored_digest: bytes, digest: bytes, response_payload: bytes | None
) -> BeginResult:
    """The outcome of a begin that met an existing row (shared by every backend)."""
    if stored_digest != digest:
        return Conflict(entry_id)
    if response_payload is None:
        return InFlight(entry_id)
    return Duplicate(response_payload, entry_id)


# -- the protocols --------------------------------------------------------------------------


class TerminalRegistry(Protocol):
    """Terminals the bridge serves, their keys' ids and the last DUKPT counter seen."""

    async def register_terminal(self, registration: TerminalRegistration) -> TerminalRecord: ...

    async def get_terminal(self, terminal_id: str) -> TerminalRecord | None: ...

    async def list_terminals(
        self, status: TerminalStatus | None = None
    ) -> list[TerminalRecord]: ...

    async def set_terminal_status(self, terminal_id: str, status: TerminalStatus) -> None: ...

    async def advance_counter(self, terminal_id: str, counter: int) -> bool:
        """Record ``counter`` if it is above the last one seen; False for a replay or an old
        counter. One conditional UPDATE: atomic across bridges. Raises
        :class:`UnknownTerminal` for a terminal not in the registry."""
        ...


class Journal(TerminalRegistry, Protocol):
    """The bridge's journal. Every write is durable when its await returns."""

    # authorisations
    async def begin_authorization(self, entry: AuthorizationEntry) -> BeginResult: ...

    async def mark_sent(self, terminal_id: str, idempotency_key: str) -> None:
        """``received`` -> ``sent``: recorded just before the acquirer is called."""
        ...

    async def complete_authorization(
        self, terminal_id: str, idempotency_key: str, outcome: AuthorizationOutcome
    ) -> None:
        """``received``/``sent`` -> a final state, with the response payload."""
        ...

    async def get_authorization(
        self, terminal_id: str, idempotency_key: str
    ) -> AuthorizationRecord | None: ...

    async def find_authorization(
        self, terminal_id: str, message_id: str
    ) -> AuthorizationRecord | None: ...

    async def query_authorizations(self, query: AuthorizationQuery) -> list[AuthorizationRecord]:
        """Newest first, at most ``query.limit``."""
        ...

    async def find_by_pan(self, pan: Pan, limit: int = 100) -> list[AuthorizationRecord]:
        """Authorisations for ``pan`` through the keyed hash (newest first)."""
        ...

    async def decrypt_pan(self, terminal_id: str, idempotency_key: str) -> Pan:
        """The clear PAN of an authorisation (for a refund or void to the acquirer)."""
        ...

    async def in_flight_authorizations(
        self, older_than: datetime, since: datetime | None = None
    ) -> list[AuthorizationRecord]:
        """Entries still ``received``/``sent``, received before ``older_than`` (and at or
        after ``since``): crash recovery. The scan goes by receive time, so pass ``since``
        (e.g. the last recovery, or the retention window) on a large journal."""
        ...

    # reversals
    async def begin_reversal(self, entry: ReversalEntry) -> BeginResult: ...

    async def pending_reversals(self, limit: int = 100) -> list[ReversalRecord]:
        """Pending reversals whose next attempt is due now, oldest first."""
        ...

    async def mark_reversal_attempt(
        self, reversal_id: int, error: str, retry_at: datetime
    ) -> None: ...

    async def complete_reversal(
        self, reversal_id: int, outcome: ReversalOutcome, response_payload: bytes
    ) -> None:
        """``pending`` -> ``acknowledged`` (reversed, already reversed; the original
        authorisation is marked reversed in the same transaction) or ``unknown_original``.
        ``response_payload`` is what a duplicate request gets back (may be empty for a
        reversal the bridge raised itself)."""
        ...

    async def get_reversal(
        self, terminal_id: str, idempotency_key: str
    ) -> ReversalRecord | None: ...

    # settlement
    async def close_batch(self, terminal_id: str, batch_id: str) -> int:
        """Put every approved, unreversed, unbatched authorisation of the terminal into
        ``batch_id``; returns how many."""
        ...

    async def claim_terminal_batch(
        self, terminal_id: str, idempotency_key: str, *, stale_after_s: float
    ) -> bytes | None:
        """Claim a batch close the terminal asked for (DESIGN 6: a repeat gets the stored
        answer). None: this caller closes the batch now. Bytes: the stored answer, byte
        for byte. :class:`BatchInProgress` while another bridge's claim is younger than
        ``stale_after_s`` (an older unanswered claim is taken over: its bridge died)."""
        ...

    async def complete_terminal_batch(
        self, terminal_id: str, idempotency_key: str, host_batch_id: str, response: bytes
    ) -> None:
        """Store the answer to a claimed batch close."""
        ...

    async def release_terminal_batch(self, terminal_id: str, idempotency_key: str) -> None:
        """Drop an unanswered claim (the close failed before an answer was stored)."""
        ...

    # enrolment codes
    async def create_enrolment_code(
        self, terminal_id: str, code_digest: bytes, expires_at: datetime, created_by: str
    ) -> EnrolmentCodeRecord:
        """Store the digest (32 bytes, else ValueError) of a new one-time code for a
        registered terminal (else :class:`UnknownTerminal`), replacing any earlier code of
        the terminal, used or not: no failed attempts, not used."""
        ...

    async def get_enrolment_code(self, terminal_id: str) -> EnrolmentCodeRecord | None: ...

    async def redeem_enrolment_code(
        self,
        terminal_id: str,
        code_digest: bytes,
        *,
        max_attempts: int,
        new_data_initial_key_id: str,
    ) -> EnrolmentRedemption:
        """Check and spend a code in one transaction (exactly one concurrent caller of a
        right code gets ``ok``). Checked in order: no code ``unknown``; used ``used``;
        ``max_attempts`` failures ``locked``; ``expires_at <= now`` ``expired``; another
        digest counts a failure and is ``wrong`` (``locked`` if that reaches
        ``max_attempts``). Else the code is used now and the terminal's row gets
        ``new_data_initial_key_id`` (16 hex digits, stored upper case), no last counter
        and status ``active``, in the same transaction: ``ok`` with that row."""
        ...

    async def delete_enrolment_code(self, terminal_id: str) -> bool:
        """Remove the terminal's code; True if there was one."""
        ...

    async def close(self) -> None: ...
