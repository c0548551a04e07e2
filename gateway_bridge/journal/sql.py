"""The journal's logic, written once as SQL programs that both backends run (DESIGN 6).

:class:`SqlJournal` implements :class:`~gateway_bridge.journal.base.Journal` on top of two
primitives each backend provides:

- :meth:`SqlJournal._transact` runs a short *program* (a list of :class:`Step`) in one
  transaction and returns the rows of each step. A step may run only if an earlier step
  did (or did not) return rows, which is how "insert, or else read the existing row"
  stays one round of the writer without a read-then-write race: the insert is an
  ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` against the unique constraint.
- :meth:`SqlJournal._query` runs one read.

SQL is written with PostgreSQL's numbered placeholders (``$1``); the SQLite backend
rewrites them to SQLite's numbered ``?1``, which binds the same way.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

from gateway_bridge.journal.base import (
    FINAL_STATES,
    TERMINAL_STATUSES,
    AuthorizationEntry,
    AuthorizationOutcome,
    AuthorizationQuery,
    AuthorizationRecord,
    BatchInProgress,
    BeginResult,
    EnrolmentCodeRecord,
    EnrolmentRedemption,
    InvalidTransition,
    JournalError,
    New,
    ReversalEntry,
    ReversalOutcome,
    ReversalRecord,
    TerminalExists,
    TerminalRecord,
    TerminalRegistration,
    TerminalStatus,
    UnknownEntry,
    UnknownTerminal,
    check_code_digest,
    classify_existing,
    normalise_initial_key_id,
)
from gateway_bridge.journal.pan_crypto import (
    JournalKeys,
    PanDecryptError,
    encrypt_pan,
    pan_hash,
)
from gateway_bridge.journal.pan_crypto import decrypt_pan as _decrypt_pan
from paycore.pan import Pan
from paycore.redact import redact_text

Row: TypeAlias = dict[str, Any]
Clock = Callable[[], datetime]
Random = Callable[[int], bytes]

_MAX_ERROR_TEXT = 500


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of a program. ``when=(i, True)`` runs it only if step ``i`` returned
    at least one row, ``(i, False)`` only if it returned none."""

    sql: str
    args: tuple[object, ...]
    when: tuple[int, bool] | None = None


Program: TypeAlias = list[Step]

TERMINAL_COLUMNS = (
    "terminal_id, merchant_id, status, data_initial_key_id, data_bdk_id, pin_bdk_id, "
    "last_counter, last_seen_at, created_at, updated_at"
)
AUTH_COLUMNS = (
    "id, terminal_id, merchant_id, idempotency_key, message_id, original_message_id, "
    "request_digest, transaction_type, amount, currency, stan, reference, masked_pan, state, "
    "response_code, authorization_code, host_reference, response_payload, received_at, "
    "sent_at, completed_at, reversed_at, batch_id"
)
REVERSAL_COLUMNS = (
    "id, terminal_id, merchant_id, idempotency_key, message_id, original_message_id, reason, "
    "amount, currency, origin, state, outcome, attempts, last_error, next_attempt_at, "
    "response_payload, created_at, updated_at"
)

_INSERT_AUTH = """
INSERT INTO authorizations (
    terminal_id, idempotency_key, merchant_id, message_id, original_message_id,
    request_digest, transaction_type, amount, currency, stan, reference, masked_pan,
    pan_encrypted, pan_key_id, pan_hash, state, received_at, updated_at
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'received',
          $16, $16)
ON CONFLICT (terminal_id, idempotency_key) DO NOTHING
RETURNING id"""


def _select(columns: str, *rest: str) -> str:
    """``SELECT columns FROM rest...``; every part is a constant of this module."""
    return " ".join(("SELECT", columns, "FROM", *rest))


_INSERT_TERMINAL = " ".join(
    (
        "INSERT INTO terminals (",
        TERMINAL_COLUMNS,
        ") VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, $7, $7)",
        "ON CONFLICT (terminal_id) DO NOTHING RETURNING",
        TERMINAL_COLUMNS,
    )
)

ENROLMENT_COLUMNS = "terminal_id, created_at, expires_at, used_at, failed_attempts, created_by"

_UPSERT_ENROLMENT = " ".join(
    (
        """INSERT INTO enrolment_codes (terminal_id, code_digest, created_at, expires_at,
            used_at, failed_attempts, created_by)
        VALUES ($1, $2, $3, $4, NULL, 0, $5)
        ON CONFLICT (terminal_id) DO UPDATE SET code_digest = excluded.code_digest,
            created_at = excluded.created_at, expires_at = excluded.expires_at,
            used_at = NULL, failed_attempts = 0, created_by = excluded.created_by
        RETURNING""",
        ENROLMENT_COLUMNS,
    )
)

# Redemption (one transaction). The first statement is a no-op UPDATE: it locks the code's
# row (PostgreSQL waits there for a concurrent redemption to commit, then reads the row it
# left), so every later statement and the refusal reason see that same row. SQLite runs
# the whole program under its single writer.
_LOCK_ENROLMENT = """
UPDATE enrolment_codes SET failed_attempts = failed_attempts WHERE terminal_id = $1
RETURNING used_at, failed_attempts, expires_at"""

# Both updates hit only a usable code (not used, not locked, not expired); they differ in
# the digest comparison alone.
_SPEND_ENROLMENT = """
UPDATE enrolment_codes SET used_at = $4
WHERE terminal_id = $1 AND used_at IS NULL AND failed_attempts < $3 AND expires_at > $4
    AND code_digest = $2
RETURNING failed_attempts"""

_FAIL_ENROLMENT = """
UPDATE enrolment_codes SET failed_attempts = failed_attempts + 1
WHERE terminal_id = $1 AND used_at IS NULL AND failed_attempts < $3 AND expires_at > $4
    AND code_digest <> $2
RETURNING failed_attempts"""

_ENROL_TERMINAL = " ".join(
    (
        """UPDATE terminals SET data_initial_key_id = $2, last_counter = NULL,
            status = 'active', updated_at = $3
        WHERE terminal_id = $1 RETURNING""",
        TERMINAL_COLUMNS,
    )
)

_EXISTING_AUTH = """
SELECT id, request_digest, response_payload FROM authorizations
WHERE terminal_id = $1 AND idempotency_key = $2"""

_INSERT_REVERSAL = """
INSERT INTO reversals (
    terminal_id, idempotency_key, merchant_id, message_id, original_message_id, reason,
    amount, currency, origin, request_digest, state, attempts, next_attempt_at, created_at,
    updated_at
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', 0, $11, $11, $11)
ON CONFLICT (terminal_id, idempotency_key) DO NOTHING
RETURNING id"""

_EXISTING_REVERSAL = """
SELECT id, request_digest, response_payload FROM reversals
WHERE terminal_id = $1 AND idempotency_key = $2"""


class SqlJournal(abc.ABC):
    """The journal's logic over :meth:`_transact` and :meth:`_query` (see module doc)."""

    def __init__(self, keys: JournalKeys, *, clock: Clock, random: Random) -> None:
        self._keys = keys
        self._clock = clock
        self._random = random

    # -- backend primitives -------------------------------------------------------------

    @abc.abstractmethod
    async def _transact(self, program: Program) -> list[list[Row]]:
        """Run ``program`` in one durable transaction; rows per step ([] if skipped)."""

    @abc.abstractmethod
    async def _query(self, sql: str, args: Sequence[object]) -> list[Row]: ...

    @abc.abstractmethod
    def _ts(self, value: datetime) -> object:
        """A timestamp as the backend binds it."""

    @abc.abstractmethod
    def _dt(self, value: object) -> datetime:
        """A stored timestamp back as an aware UTC datetime."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    # -- helpers ------------------------------------------------------------------------

    def _now(self) -> object:
        return self._ts(self._clock())

    def _opt_dt(self, value: object) -> datetime | None:
        return None if value is None else self._dt(value)

    def _terminal(self, row: Row) -> TerminalRecord:
        return TerminalRecord(
            terminal_id=row["terminal_id"],
            merchant_id=row["merchant_id"],
            status=row["status"],
            data_initial_key_id=row["data_initial_key_id"],
            data_bdk_id=row["data_bdk_id"],
            pin_bdk_id=row["pin_bdk_id"],
            last_counter=row["last_counter"],
            last_seen_at=self._opt_dt(row["last_seen_at"]),
            created_at=self._dt(row["created_at"]),
            updated_at=self._dt(row["updated_at"]),
        )

    def _authorization(self, row: Row) -> AuthorizationRecord:
        return AuthorizationRecord(
            id=row["id"],
            terminal_id=row["terminal_id"],
            merchant_id=row["merchant_id"],
            idempotency_key=row["idempotency_key"],
            message_id=row["message_id"],
            original_message_id=row["original_message_id"],
            request_digest=bytes(row["request_digest"]),
            transaction_type=row["transaction_type"],
            amount=row["amount"],
            currency=row["currency"],
            stan=row["stan"],
            reference=row["reference"],
            masked_pan=row["masked_pan"],
            state=row["state"],
            response_code=row["response_code"],
            authorization_code=row["authorization_code"],
            host_reference=row["host_reference"],
            response_payload=_opt_bytes(row["response_payload"]),
            received_at=self._dt(row["received_at"]),
            sent_at=self._opt_dt(row["sent_at"]),
            completed_at=self._opt_dt(row["completed_at"]),
            reversed_at=self._opt_dt(row["reversed_at"]),
            batch_id=row["batch_id"],
        )

    def _reversal(self, row: Row) -> ReversalRecord:
        return ReversalRecord(
            id=row["id"],
            terminal_id=row["terminal_id"],
            merchant_id=row["merchant_id"],
            idempotency_key=row["idempotency_key"],
            message_id=row["message_id"],
            original_message_id=row["original_message_id"],
            reason=row["reason"],
            amount=row["amount"],
            currency=row["currency"],
            origin=row["origin"],
            state=row["state"],
            outcome=row["outcome"],
            attempts=row["attempts"],
            last_error=row["last_error"],
            next_attempt_at=self._dt(row["next_attempt_at"]),
            response_payload=_opt_bytes(row["response_payload"]),
            created_at=self._dt(row["created_at"]),
            updated_at=self._dt(row["updated_at"]),
        )

    # -- terminal registry ----------------------------------------------------------------

    async def register_terminal(self, registration: TerminalRegistration) -> TerminalRecord:
        r = registration
        now = self._now()
        rows = await self._transact(
            [
                Step(
                    _INSERT_TERMINAL,
                    (
                        r.terminal_id,
                        r.merchant_id,
                        r.status,
                        r.data_initial_key_id,
                        r.data_bdk_id,
                        r.pin_bdk_id,
                        now,
                    ),
                )
            ]
        )
        if not rows[0]:
            raise TerminalExists(f"terminal {r.terminal_id!r} is already registered")
        return self._terminal(rows[0][0])

    async def get_terminal(self, terminal_id: str) -> TerminalRecord | None:
        rows = await self._query(
            _select(TERMINAL_COLUMNS, "terminals WHERE terminal_id = $1"), (terminal_id,)
        )
        return self._terminal(rows[0]) if rows else None

    async def list_terminals(self, status: TerminalStatus | None = None) -> list[TerminalRecord]:
        if status is None:
            rows = await self._query(
                _select(TERMINAL_COLUMNS, "terminals ORDER BY terminal_id"), ()
            )
        else:
            _check_status(status)
            rows = await self._query(
                _select(TERMINAL_COLUMNS, "terminals WHERE status = $1 ORDER BY terminal_id"),
                (status,),
            )
        return [self._terminal(row) for row in rows]

    async def set_terminal_status(self, terminal_id: str, status: TerminalStatus) -> None:
        _check_status(status)
        rows = await self._transact(
            [
                Step(
                    "UPDATE terminals SET status = $2, updated_at = $3 WHERE terminal_id = $1 "
                    "RETURNING terminal_id",
                    (terminal_id, status, self._now()),
                )
            ]
        )
        if not rows[0]:
            raise UnknownTerminal(f"no terminal {terminal_id!r}")

    async def advance_counter(self, terminal_id: str, counter: int) -> bool:
        if isinstance(counter, bool) or not isinstance(counter, int) or counter < 0:
            raise ValueError("counter must be a non-negative integer")
        rows = await self._transact(
            [
                Step(
                    """UPDATE terminals SET last_counter = $2, last_seen_at = $3, updated_at = $3
                    WHERE terminal_id = $1 AND (last_counter IS NULL OR last_counter < $2)
                    RETURNING terminal_id""",
                    (terminal_id, counter, self._now()),
                ),
                Step(
                    "SELECT terminal_id FROM terminals WHERE terminal_id = $1",
                    (terminal_id,),
                    when=(0, False),
                ),
            ]
        )
        if rows[0]:
            return True
        if rows[1]:
            return False
        raise UnknownTerminal(f"no terminal {terminal_id!r}")

    # -- authorisations -------------------------------------------------------------------

    async def begin_authorization(self, entry: AuthorizationEntry) -> BeginResult:
        e = entry
        sealed = encrypt_pan(self._keys, e.pan, e.terminal_id, e.idempotency_key, self._random)
        rows = await self._transact(
            [
                Step(
                    _INSERT_AUTH,
                    (
                        e.terminal_id,
                        e.idempotency_key,
                        e.merchant_id,
                        e.message_id,
                        e.original_message_id,
                        e.request_digest,
                        e.transaction_type,
                        e.amount,
                        e.currency,
                        e.stan,
                        e.reference,
                        e.pan.masked,
                        sealed,
                        self._keys.key_id,
                        pan_hash(self._keys, e.pan),
                        self._now(),
                    ),
                ),
                Step(_EXISTING_AUTH, (e.terminal_id, e.idempotency_key), when=(0, False)),
            ]
        )
        return self._begin_result(rows, entry.request_digest)

    @staticmethod
    def _begin_result(rows: list[list[Row]], digest: bytes) -> BeginResult:
        if rows[0]:
            return New(rows[0][0]["id"])
        if not rows[1]:  # pragma: no cover - rows are never deleted
            raise JournalError("idempotency conflict without an existing row")
        existing = rows[1][0]
        return classify_existing(
            existing["id"],
            bytes(existing["request_digest"]),
            digest,
            _opt_bytes(existing["response_payload"]),
        )

    async def mark_sent(self, terminal_id: str, idempotency_key: str) -> None:
        rows = await self._transact(
            [
                Step(
                    """UPDATE authorizations SET state = 'sent', sent_at = $3, updated_at = $3
                    WHERE terminal_id = $1 AND idempotency_key = $2 AND state = 'received'
                    RETURNING id""",
                    (terminal_id, idempotency_key, self._now()),
                ),
                _state_probe("authorizations", terminal_id, idempotency_key),
            ]
        )
        _check_transition(rows, "authorisation", idempotency_key, "received")

    async def complete_authorization(
        self, terminal_id: str, idempotency_key: str, outcome: AuthorizationOutcome
    ) -> None:
        o = outcome
        if o.state not in FINAL_STATES:
            raise ValueError(f"{o.state!r} is not a final authorisation state")
        rows = await self._transact(
            [
                Step(
                    """UPDATE authorizations SET state = $3, response_code = $4,
                        authorization_code = $5, host_reference = $6, response_payload = $7,
                        completed_at = $8, updated_at = $8
                    WHERE terminal_id = $1 AND idempotency_key = $2
                        AND state IN ('received', 'sent')
                    RETURNING id""",
                    (
                        terminal_id,
                        idempotency_key,
                        o.state,
                        o.response_code,
                        o.authorization_code,
                        o.host_reference,
                        o.response_payload,
                        self._now(),
                    ),
                ),
                _state_probe("authorizations", terminal_id, idempotency_key),
            ]
        )
        _check_transition(rows, "authorisation", idempotency_key, "received or sent")

    async def get_authorization(
        self, terminal_id: str, idempotency_key: str
    ) -> AuthorizationRecord | None:
        rows = await self._query(
            _select(AUTH_COLUMNS, "authorizations WHERE terminal_id = $1 AND idempotency_key = $2"),
            (terminal_id, idempotency_key),
        )
        return self._authorization(rows[0]) if rows else None

    async def find_authorization(
        self, terminal_id: str, message_id: str
    ) -> AuthorizationRecord | None:
        rows = await self._query(
            _select(
                AUTH_COLUMNS,
                "authorizations WHERE terminal_id = $1 AND message_id = $2 ORDER BY id LIMIT 1",
            ),
            (terminal_id, message_id),
        )
        return self._authorization(rows[0]) if rows else None

    async def query_authorizations(self, query: AuthorizationQuery) -> list[AuthorizationRecord]:
        where: list[str] = []
        args: list[object] = []

        def bind(clause: str, value: object) -> None:
            args.append(value)
            where.append(clause.format(f"${len(args)}"))

        if query.terminal_id is not None:
            bind("terminal_id = {}", query.terminal_id)
        if query.merchant_id is not None:
            bind("merchant_id = {}", query.merchant_id)
        if query.since is not None:
            bind("received_at >= {}", self._ts(query.since))
        if query.until is not None:
            bind("received_at < {}", self._ts(query.until))
        if query.state is not None:
            bind("state = {}", query.state)
        args.append(query.limit)
        clauses = ["authorizations"]
        if where:
            clauses += ["WHERE", " AND ".join(where)]
        clauses.append(f"ORDER BY received_at DESC, id DESC LIMIT ${len(args)}")
        sql = _select(AUTH_COLUMNS, *clauses)
        return [self._authorization(row) for row in await self._query(sql, args)]

    async def find_by_pan(self, pan: Pan, limit: int = 100) -> list[AuthorizationRecord]:
        rows = await self._query(
            _select(
                AUTH_COLUMNS,
                "authorizations WHERE pan_hash = $1 ORDER BY received_at DESC, id DESC LIMIT $2",
            ),
            (pan_hash(self._keys, pan), limit),
        )
        return [self._authorization(row) for row in rows]

    async def decrypt_pan(self, terminal_id: str, idempotency_key: str) -> Pan:
        rows = await self._query(
            "SELECT pan_encrypted, pan_key_id FROM authorizations "
            "WHERE terminal_id = $1 AND idempotency_key = $2",
            (terminal_id, idempotency_key),
        )
        if not rows:
            raise UnknownEntry(f"no authorisation {idempotency_key!r} for {terminal_id!r}")
        if rows[0]["pan_key_id"] != self._keys.key_id:
            raise PanDecryptError(
                f"stored PAN is under key id {rows[0]['pan_key_id']!r}, not {self._keys.key_id!r}"
            )
        return _decrypt_pan(
            self._keys, bytes(rows[0]["pan_encrypted"]), terminal_id, idempotency_key
        )

    async def in_flight_authorizations(
        self, older_than: datetime, since: datetime | None = None
    ) -> list[AuthorizationRecord]:
        where = "authorizations WHERE state IN ('received', 'sent') AND received_at < $1"
        args: list[object] = [self._ts(older_than)]
        if since is not None:
            where += " AND received_at >= $2"
            args.append(self._ts(since))
        rows = await self._query(_select(AUTH_COLUMNS, where, "ORDER BY received_at, id"), args)
        return [self._authorization(row) for row in rows]

    # -- reversals ------------------------------------------------------------------------

    async def begin_reversal(self, entry: ReversalEntry) -> BeginResult:
        e = entry
        rows = await self._transact(
            [
                Step(
                    _INSERT_REVERSAL,
                    (
                        e.terminal_id,
                        e.idempotency_key,
                        e.merchant_id,
                        e.message_id,
                        e.original_message_id,
                        e.reason,
                        e.amount,
                        e.currency,
                        e.origin,
                        e.request_digest,
                        self._now(),
                    ),
                ),
                Step(_EXISTING_REVERSAL, (e.terminal_id, e.idempotency_key), when=(0, False)),
            ]
        )
        return self._begin_result(rows, entry.request_digest)

    async def pending_reversals(self, limit: int = 100) -> list[ReversalRecord]:
        rows = await self._query(
            _select(
                REVERSAL_COLUMNS,
                "reversals WHERE state = 'pending' AND next_attempt_at <= $1",
                "ORDER BY next_attempt_at, id LIMIT $2",
            ),
            (self._now(), limit),
        )
        return [self._reversal(row) for row in rows]

    async def mark_reversal_attempt(self, reversal_id: int, error: str, retry_at: datetime) -> None:
        text = redact_text(error)[:_MAX_ERROR_TEXT]
        rows = await self._transact(
            [
                Step(
                    """UPDATE reversals SET attempts = attempts + 1, last_error = $2,
                        next_attempt_at = $3, updated_at = $4
                    WHERE id = $1 AND state = 'pending' RETURNING id""",
                    (reversal_id, text, self._ts(retry_at), self._now()),
                ),
                Step("SELECT state FROM reversals WHERE id = $1", (reversal_id,), when=(0, False)),
            ]
        )
        _check_transition(rows, "reversal", str(reversal_id), "pending")

    async def complete_reversal(
        self, reversal_id: int, outcome: ReversalOutcome, response_payload: bytes
    ) -> None:
        if outcome not in ("reversed", "already_reversed", "unknown_original"):
            raise ValueError(f"unknown reversal outcome {outcome!r}")
        if not isinstance(response_payload, bytes):
            raise TypeError("response_payload must be bytes")
        state = "unknown_original" if outcome == "unknown_original" else "acknowledged"
        now = self._now()
        program = [
            Step(
                """UPDATE reversals SET state = $2, outcome = $3, response_payload = $4,
                    updated_at = $5
                WHERE id = $1 AND state = 'pending' RETURNING id""",
                (reversal_id, state, outcome, response_payload, now),
            ),
            Step("SELECT state FROM reversals WHERE id = $1", (reversal_id,), when=(0, False)),
        ]
        if state == "acknowledged":
            program.append(
                Step(
                    """UPDATE authorizations SET reversed_at = $2, updated_at = $2
                    WHERE reversed_at IS NULL AND (terminal_id, message_id) IN (
                        SELECT terminal_id, original_message_id FROM reversals WHERE id = $1)
                    RETURNING id""",
                    (reversal_id, now),
                    when=(0, True),
                )
            )
        rows = await self._transact(program)
        _check_transition(rows, "reversal", str(reversal_id), "pending")

    async def get_reversal(self, terminal_id: str, idempotency_key: str) -> ReversalRecord | None:
        rows = await self._query(
            _select(REVERSAL_COLUMNS, "reversals WHERE terminal_id = $1 AND idempotency_key = $2"),
            (terminal_id, idempotency_key),
        )
        return self._reversal(rows[0]) if rows else None

    # -- enrolment codes ------------------------------------------------------------------

    def _enrolment(self, row: Row) -> EnrolmentCodeRecord:
        return EnrolmentCodeRecord(
            terminal_id=row["terminal_id"],
            created_at=self._dt(row["created_at"]),
            expires_at=self._dt(row["expires_at"]),
            used_at=self._opt_dt(row["used_at"]),
            failed_attempts=row["failed_attempts"],
            created_by=row["created_by"],
        )

    async def create_enrolment_code(
        self, terminal_id: str, code_digest: bytes, expires_at: datetime, created_by: str
    ) -> EnrolmentCodeRecord:
        digest = check_code_digest(code_digest)
        if not created_by:
            raise ValueError("created_by must not be empty")
        expires = self._ts(expires_at)
        rows = await self._transact(
            [
                Step("SELECT terminal_id FROM terminals WHERE terminal_id = $1", (terminal_id,)),
                Step(
                    _UPSERT_ENROLMENT,
                    (terminal_id, digest, self._now(), expires, created_by),
                    when=(0, True),
                ),
            ]
        )
        if not rows[0]:
            raise UnknownTerminal(f"no terminal {terminal_id!r}")
        return self._enrolment(rows[1][0])

    async def get_enrolment_code(self, terminal_id: str) -> EnrolmentCodeRecord | None:
        rows = await self._query(
            _select(ENROLMENT_COLUMNS, "enrolment_codes WHERE terminal_id = $1"), (terminal_id,)
        )
        return self._enrolment(rows[0]) if rows else None

    async def redeem_enrolment_code(
        self,
        terminal_id: str,
        code_digest: bytes,
        *,
        max_attempts: int,
        new_data_initial_key_id: str,
    ) -> EnrolmentRedemption:
        digest = check_code_digest(code_digest)
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError("max_attempts must be a positive integer")
        key_id = normalise_initial_key_id(new_data_initial_key_id)
        clock = self._clock()
        now = self._ts(clock)
        usable = (terminal_id, digest, max_attempts, now)
        rows = await self._transact(
            [
                Step(_LOCK_ENROLMENT, (terminal_id,)),
                Step(_SPEND_ENROLMENT, usable, when=(0, True)),
                Step(_ENROL_TERMINAL, (terminal_id, key_id, now), when=(1, True)),
                Step(_FAIL_ENROLMENT, usable, when=(1, False)),
            ]
        )
        locked, spent, enrolled, failed = rows
        if spent:
            if not enrolled:  # pragma: no cover - the foreign key keeps the terminal
                raise UnknownTerminal(f"no terminal {terminal_id!r}")
            return EnrolmentRedemption(
                "ok", self._terminal(enrolled[0]), spent[0]["failed_attempts"]
            )
        if failed:
            count = failed[0]["failed_attempts"]
            return EnrolmentRedemption("locked" if count >= max_attempts else "wrong", None, count)
        if not locked:
            return EnrolmentRedemption("unknown", None, 0)
        row = locked[0]
        count = row["failed_attempts"]
        if row["used_at"] is not None:
            return EnrolmentRedemption("used", None, count)
        if count >= max_attempts:
            return EnrolmentRedemption("locked", None, count)
        if self._dt(row["expires_at"]) <= clock:
            return EnrolmentRedemption("expired", None, count)
        # The locked row satisfied neither update yet is usable: cannot happen.
        raise JournalError(  # pragma: no cover
            f"enrolment code of {terminal_id!r} is in an inconsistent state"
        )

    async def delete_enrolment_code(self, terminal_id: str) -> bool:
        rows = await self._transact(
            [
                Step(
                    "DELETE FROM enrolment_codes WHERE terminal_id = $1 RETURNING terminal_id",
                    (terminal_id,),
                )
            ]
        )
        return bool(rows[0])

    # -- settlement -----------------------------------------------------------------------

    async def close_batch(self, terminal_id: str, batch_id: str) -> int:
        if not batch_id:
            raise ValueError("batch_id must not be empty")
        rows = await self._transact(
            [
                Step(
                    """UPDATE authorizations SET batch_id = $2, updated_at = $3
                    WHERE terminal_id = $1 AND state = 'approved' AND reversed_at IS NULL
                        AND batch_id IS NULL
                    RETURNING id""",
                    (terminal_id, batch_id, self._now()),
                )
            ]
        )
        return len(rows[0])

    async def claim_terminal_batch(
        self, terminal_id: str, idempotency_key: str, *, stale_after_s: float
    ) -> bytes | None:
        now = self._clock()
        stale = self._ts(now - timedelta(seconds=stale_after_s))
        rows = await self._transact(
            [
                Step(
                    """INSERT INTO terminal_batches (terminal_id, idempotency_key, claimed_at)
                    VALUES ($1, $2, $3) ON CONFLICT (terminal_id, idempotency_key) DO NOTHING
                    RETURNING terminal_id""",
                    (terminal_id, idempotency_key, self._ts(now)),
                ),
                Step(
                    """UPDATE terminal_batches SET claimed_at = $3
                    WHERE terminal_id = $1 AND idempotency_key = $2
                        AND response_payload IS NULL AND claimed_at < $4
                    RETURNING terminal_id""",
                    (terminal_id, idempotency_key, self._ts(now), stale),
                    when=(0, False),
                ),
                Step(
                    """SELECT response_payload FROM terminal_batches
                    WHERE terminal_id = $1 AND idempotency_key = $2""",
                    (terminal_id, idempotency_key),
                    when=(0, False),
                ),
            ]
        )
        if rows[0] or rows[1]:
            return None
        stored = _opt_bytes(rows[2][0]["response_payload"]) if rows[2] else None
        if stored is None:
            raise BatchInProgress(f"batch {idempotency_key!r} of {terminal_id!r} is being closed")
        return stored

    async def complete_terminal_batch(
        self, terminal_id: str, idempotency_key: str, host_batch_id: str, response: bytes
    ) -> None:
        rows = await self._transact(
            [
                Step(
                    """UPDATE terminal_batches SET host_batch_id = $3, response_payload = $4
                    WHERE terminal_id = $1 AND idempotency_key = $2
                        AND response_payload IS NULL
                    RETURNING terminal_id""",
                    (terminal_id, idempotency_key, host_batch_id, response),
                )
            ]
        )
        if not rows[0]:
            raise UnknownEntry(f"no open batch claim {idempotency_key!r} for {terminal_id!r}")

    async def release_terminal_batch(self, terminal_id: str, idempotency_key: str) -> None:
        await self._transact(
            [
                Step(
                    """DELETE FROM terminal_batches
                    WHERE terminal_id = $1 AND idempotency_key = $2
                        AND response_payload IS NULL
                    RETURNING terminal_id""",
                    (terminal_id, idempotency_key),
                )
            ]
        )


def _opt_bytes(value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise JournalError("stored payload has an unexpected type")


def _check_status(status: str) -> None:
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"unknown terminal status {status!r}")


def _state_probe(table: str, terminal_id: str, idempotency_key: str) -> Step:
    return Step(
        _select("state", table, "WHERE terminal_id = $1 AND idempotency_key = $2"),
        (terminal_id, idempotency_key),
        when=(0, False),
    )


def _check_transition(rows: list[list[Row]], what: str, key: str, expected: str) -> None:
    if rows[0]:
        return
    if not rows[1]:
        raise UnknownEntry(f"no {what} {key!r}")
    raise InvalidTransition(f"{what} {key!r} is {rows[1][0]['state']}, not {expected}")


def default_random(size: int) -> bytes:
    return os.urandom(size)
