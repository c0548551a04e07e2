"""The issuer simulator: the bridge's built-in acquirer connector (DESIGN section 3, step 6).

It answers an authorisation as an issuer host would, applying the checks in the order a
real host does (docs/issuer-simulator.md has the table):

1. the PAN names an account, else **14**;
2. the account status: lost **41**, stolen **43**, blocked or closed **62**;
3. the expiry: the request's YYMM must be the account's and not before this month, else
   **54** (the month of the injectable clock: a card is valid through the end of its
   expiry month);
4. the card's cryptogram (EMV Book 2 8.1, :mod:`.cryptogram`): DE55 must parse and hold
   an ARQC (a refund may carry an AAC), its amount and currency must be the request's,
   and the cryptogram must verify, else **05** with no ARPC. A refund without DE55 skips
   this step;
5. the PIN, when the CVM is online PIN, through the key store's
   :meth:`~gateway_bridge.connectors.base.PinService.verify` with the account's Visa PVV
   or IBM 3624 check (:mod:`.pin`): wrong **55**; the wrong attempt that reaches the
   try limit (3) and every PIN attempt after it **75** until :meth:`reset_pin_tries`; a
   right PIN resets the count; no verification data **86**; a key store failure **96**;
6. the transaction currency must be the account's (no FX here), else **57**;
7. scenario amounts (:data:`SCENARIOS`): fixed answers for testing;
8. funds (purchase amount above the balance) **51**, then the daily limit **61**;
9. approval **00**: a 6-digit authorisation code; the balance moves (purchase debits,
   refund credits).

Every answer carries a host reference (RRN, 12 digits: last digit of the year, day of the
year, hour, 6-digit sequence). Once the cryptogram has verified, the answer carries the
issuer authentication data (tag 91: ARPC || ARC, or ARPC || CSU for CVN 18) whatever the
decision, so the card can authenticate a decline too; except 91 and 96, which a real
issuer's host does not produce itself.

A void finds the approved purchase it names (``original_message_id`` of the same
terminal, or the original host reference) and gives its amount back: unknown **25**,
amount differs **13**, already reversed or voided **12**. A reversal undoes any entry
once: ``reversed``, then ``already_reversed``; ``unknown_original`` when the simulator
never answered that message.

State (balances, daily spend, PIN tries, the ledger) is in memory and safe to share
between threads and tasks: each account has a lock held from the PIN check to the balance
update, so concurrent authorisations never overspend. ``authorize`` and ``reverse`` run
the blocking work (pyemv, the key store) in a worker thread.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final

from gateway_bridge.connectors.base import (
    Authorization,
    ConnectorTimeout,
    Reversal,
    ReversalOutcome,
)
from gateway_bridge.connectors.issuer_sim.accounts import (
    Account,
    AccountStatus,
    check_unique,
    load_accounts,
)
from gateway_bridge.connectors.issuer_sim.cryptogram import (
    IccData,
    IccDataError,
    issuer_authentication_data,
    parse_icc_data,
    verify_arqc,
)
from gateway_bridge.connectors.issuer_sim.ledger import EntryKind, Ledger, LedgerEntry
from gateway_bridge.keystore.base import KeyStoreError
from paycore.currency import by_alpha
from paycore.errors import CodecError
from paycore.pan import Pan
from paycore.wire import AuthorizationResponse

__all__ = [
    "RESPONSE_CODES",
    "SCENARIOS",
    "SCENARIO_FIRST",
    "SCENARIO_LAST",
    "AccountSnapshot",
    "IssuerSimulator",
    "ResponseCode",
]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
RandomSource = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """An ISO 8583 response code (DE39) as the simulator uses it."""

    code: str
    approved: bool
    text: str


RESPONSE_CODES: Final[Mapping[str, ResponseCode]] = {
    rc.code: rc
    for rc in (
        ResponseCode("00", True, "APPROVED"),
        ResponseCode("05", False, "DO NOT HONOUR"),
        ResponseCode("12", False, "INVALID TRANSACTION"),
        ResponseCode("13", False, "INVALID AMOUNT"),
        ResponseCode("14", False, "INVALID CARD NUMBER"),
        ResponseCode("25", False, "ORIGINAL NOT FOUND"),
        ResponseCode("41", False, "LOST CARD"),
        ResponseCode("43", False, "STOLEN CARD"),
        ResponseCode("51", False, "INSUFFICIENT FUNDS"),
        ResponseCode("54", False, "EXPIRED CARD"),
        ResponseCode("55", False, "INCORRECT PIN"),
        ResponseCode("57", False, "NOT PERMITTED"),
        ResponseCode("61", False, "EXCEEDS AMOUNT LIMIT"),
        ResponseCode("62", False, "RESTRICTED CARD"),
        ResponseCode("75", False, "PIN TRIES EXCEEDED"),
        ResponseCode("86", False, "PIN VALIDATION NOT POSSIBLE"),
        ResponseCode("91", False, "ISSUER UNAVAILABLE"),
        ResponseCode("96", False, "SYSTEM MALFUNCTION"),
    )
}
"""Every response code the simulator gives, with its display text."""

SCENARIO_FIRST: Final = 99_900
SCENARIO_LAST: Final = 99_999
SCENARIOS: Final[Mapping[int, str]] = {
    5: "05",
    13: "13",
    51: "51",
    57: "57",
    61: "61",
    62: "62",
    68: "timeout",
    91: "91",
    96: "96",
}
"""Scenario amounts: an amount of SCENARIO_FIRST + NN minor units (999.NN in a currency
with two decimals) whose NN is a key here gets that answer, whatever the balance and the
limits. ``timeout`` (NN = 68, "response received too late"): the host decides as usual
and records it, then the answer is lost: ``authorize`` raises ConnectorTimeout, so the
bridge reverses. Other amounts from 999.00 to 999.99 are ordinary amounts."""

#: Response codes after which a real issuer host sends no ARPC (a stand-in or a failure).
_NO_ARPC: Final = frozenset({"91", "96"})
_STATUS_CODES: Final[Mapping[AccountStatus, str]] = {
    "lost": "41",
    "stolen": "43",
    "blocked": "62",
    "closed": "62",
}


_ENTRY_KINDS: Final[Mapping[str, EntryKind]] = {
    "purchase": "authorisation",
    "refund": "refund",
    "void": "void",
}


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """An account's state at one moment (no PAN beyond its masked form)."""

    account_id: str
    masked_pan: str
    status: AccountStatus
    currency: str
    balance: int
    daily_limit: int
    daily_spent: int
    pin_failures: int
    pin_blocked: bool


class _State:
    """The mutable side of an account; every field is guarded by ``lock``."""

    __slots__ = ("account", "balance", "daily_spent", "lock", "pin_failures", "spend_day", "status")

    def __init__(self, account: Account) -> None:
        self.account = account
        self.lock = threading.Lock()
        self.status: AccountStatus = account.status
        self.balance = account.balance
        self.daily_spent = 0
        self.spend_day: date | None = None
        self.pin_failures = 0

    def spent_on(self, day: date) -> int:
        if self.spend_day != day:
            self.spend_day = day
            self.daily_spent = 0
        return self.daily_spent


@dataclass(slots=True)
class _Decision:
    code: str
    icc: IccData | None = None
    balance_delta: int = 0
    daily_delta: int = 0
    original: LedgerEntry | None = None
    timeout: bool = False


class IssuerSimulator:
    """An in-memory issuer host implementing :class:`~gateway_bridge.connectors.base.Connector`.

    ``clock`` gives the current time (aware datetime; its date is "today" for expiry and
    daily limits), ``random(n)`` gives n random bytes (authorisation codes).
    """

    name = "issuer_sim"

    def __init__(
        self,
        accounts: Iterable[Account],
        *,
        clock: Clock = _utc_now,
        random: RandomSource = secrets.token_bytes,
    ) -> None:
        listed = list(accounts)
        check_unique(listed)
        self._states: dict[Pan, _State] = {a.pan: _State(a) for a in listed}
        self._by_id: dict[str, _State] = {s.account.account_id: s for s in self._states.values()}
        self._clock = clock
        self._random = random
        self._ledger = Ledger()
        self._rrn_lock = threading.Lock()
        self._rrn_sequence = itertools.count(1)

    @classmethod
    def from_paths(
        cls,
        paths: Iterable[Path],
        *,
        clock: Clock = _utc_now,
        random: RandomSource = secrets.token_bytes,
    ) -> IssuerSimulator:
        """A simulator over the accounts of catalogue directories, profiles and accounts files."""
        return cls(load_accounts(paths), clock=clock, random=random)

    # -- Connector -----------------------------------------------------------------------

    async def start(self) -> None:
        log.info("issuer simulator ready with %d accounts", len(self._states))

    async def close(self) -> None:
        return None

    # The work is a few hundred microseconds of CPU under the accounts' locks: run inline.
    # A thread hop per request cost more than the work itself (bench/bench_bridge.py).
    async def authorize(self, auth: Authorization) -> AuthorizationResponse:
        return self.authorize_sync(auth)

    async def reverse(self, reversal: Reversal) -> ReversalOutcome:
        return self.reverse_sync(reversal)

    # -- inspection and administration (tests, settlement, the admin CLI) ----------------

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    def accounts(self) -> list[Account]:
        return [state.account for state in self._states.values()]

    def snapshot(self, key: Pan | str) -> AccountSnapshot:
        """The state of the account with this PAN (a :class:`Pan`) or account id (a str)."""
        state = self._state_for(key)
        with state.lock:
            spent = state.spent_on(self._clock().date())
            return AccountSnapshot(
                account_id=state.account.account_id,
                masked_pan=state.account.pan.masked,
                status=state.status,
                currency=state.account.currency.alpha,
                balance=state.balance,
                daily_limit=state.account.daily_limit,
                daily_spent=spent,
                pin_failures=state.pin_failures,
                pin_blocked=state.pin_failures >= state.account.pin_try_limit,
            )

    def snapshots(self) -> list[AccountSnapshot]:
        return [self.snapshot(account_id) for account_id in self._by_id]

    def reset_pin_tries(self, key: Pan | str) -> None:
        """Unblock online PIN for the account (what the issuer's back office does)."""
        state = self._state_for(key)
        with state.lock:
            state.pin_failures = 0

    def set_status(self, key: Pan | str, status: AccountStatus) -> None:
        state = self._state_for(key)
        with state.lock:
            state.status = status

    def _state_for(self, key: Pan | str) -> _State:
        state = self._states.get(key) if isinstance(key, Pan) else self._by_id.get(key)
        if state is None:
            raise KeyError("no such account")
        return state

    # -- authorisation -------------------------------------------------------------------

    def authorize_sync(self, auth: Authorization) -> AuthorizationResponse:
        """:meth:`authorize` without the worker thread (blocks on pyemv and the key store)."""
        request = auth.request
        now = self._clock()
        state = self._states.get(request.pan)
        if state is None:
            log.info("authorisation %s: unknown card number", _short(auth.message_id))
            return self._response("14", None, None, self._rrn(now))
        account = state.account
        if request.transaction_type == "void":
            decision = self._void(state, auth)
        else:
            decision = self._purchase_or_refund(state, auth, now)
        approved = RESPONSE_CODES[decision.code].approved
        kind = _ENTRY_KINDS[request.transaction_type]
        auth_code = self._auth_code() if approved else None
        rrn = self._rrn(now)
        entry = self._ledger.append(
            LedgerEntry(
                sequence=-1,
                kind=kind,
                account_id=account.account_id,
                terminal_id=auth.terminal_id,
                merchant_id=auth.merchant_id,
                message_id=auth.message_id,
                amount=request.amount,
                currency=request.currency,
                response_code=decision.code,
                approved=approved,
                balance_delta=decision.balance_delta,
                daily_delta=decision.daily_delta,
                day=now.date().isoformat(),
                at=now,
                authorization_code=auth_code,
                host_reference=rrn,
                original_sequence=None if decision.original is None else decision.original.sequence,
            )
        )
        log.info(
            "authorisation %s on %s: %s %s -> %s (ledger %d)",
            _short(auth.message_id),
            account.account_id,
            request.transaction_type,
            request.amount,
            decision.code,
            entry.sequence,
        )
        if decision.timeout:
            raise ConnectorTimeout("issuer simulator scenario: the answer was lost")
        iad = None
        if decision.icc is not None and decision.code not in _NO_ARPC:
            iad = issuer_authentication_data(account.keys, decision.icc, decision.code, approved)
        return self._response(decision.code, auth_code, iad, rrn)

    def _purchase_or_refund(self, state: _State, auth: Authorization, now: datetime) -> _Decision:
        request = auth.request
        account = state.account
        refund = request.transaction_type == "refund"
        # 2. status (read under the lock: set_status may change it)
        with state.lock:
            status = state.status
        if status != "active":
            return _Decision(_STATUS_CODES[status])
        # 3. expiry
        if request.expiry != account.expiry or _expired(request.expiry, now.date()):
            return _Decision("54")
        # 4. cryptogram
        icc: IccData | None = None
        if request.emv_data or not refund:
            icc = self._verified_icc(account, request.emv_data, auth, refund)
            if icc is None:
                return _Decision("05")
        # Refund cap against a named purchase.
        original: LedgerEntry | None = None
        if refund and auth.original_host_reference is not None:
            original = self._ledger.find_reference(auth.original_host_reference)
            if (
                original is None
                or original.kind != "authorisation"
                or not original.approved
                or original.account_id != account.account_id
            ):
                return _Decision("25", icc)
        with state.lock:
            # 5. PIN
            if request.cvm == "online_pin":
                pin_code = self._check_pin(state, auth)
                if pin_code is not None:
                    return _Decision(pin_code, icc)
            # 6. currency
            if request.currency != account.currency.alpha:
                return _Decision("57", icc)
            # 7. scenarios
            scenario = _scenario(request.amount)
            timeout = scenario == "timeout"
            if scenario is not None and not timeout:
                return _Decision(scenario, icc)
            amount = request.amount
            if refund:
                if original is not None and (
                    self._ledger.is_undone(original.sequence)
                    or self._ledger.refunded(original.sequence) + amount > original.amount
                ):
                    return _Decision("13", icc, original=original)
                state.balance += amount
                return _Decision(
                    "00", icc, balance_delta=amount, original=original, timeout=timeout
                )
            # 8. funds and limits
            spent = state.spent_on(now.date())
            if amount > state.balance:
                return _Decision("51", icc, timeout=timeout)
            if spent + amount > account.daily_limit:
                return _Decision("61", icc, timeout=timeout)
            # 9. approve
            state.balance -= amount
            state.daily_spent += amount
            return _Decision("00", icc, balance_delta=-amount, daily_delta=amount, timeout=timeout)

    def _verified_icc(
        self, account: Account, emv_data: str, auth: Authorization, refund: bool
    ) -> IccData | None:
        request = auth.request
        try:
            icc = parse_icc_data(bytes.fromhex(emv_data))
        except (IccDataError, ValueError) as exc:
            log.info("authorisation %s: DE55 unusable: %s", _short(auth.message_id), exc)
            return None
        allowed = ("ARQC", "AAC") if refund else ("ARQC",)
        if icc.cryptogram_type not in allowed:
            log.info(
                "authorisation %s: cryptogram type %s", _short(auth.message_id), icc.cryptogram_type
            )
            return None
        if icc.amount_minor() != request.amount or icc.currency_numeric() != _numeric(
            request.currency
        ):
            # the cryptogram must cover what is being authorised
            log.info("authorisation %s: DE55 amount or currency differs", _short(auth.message_id))
            return None
        try:
            verified = verify_arqc(account.keys, icc)
        except ValueError:
            verified = False
        if not verified:
            log.info("authorisation %s: cryptogram does not verify", _short(auth.message_id))
            return None
        return icc

    def _check_pin(self, state: _State, auth: Authorization) -> str | None:
        """None when the PIN is right; the response code otherwise. Caller holds the lock."""
        account = state.account
        if state.pin_failures >= account.pin_try_limit:
            return "75"
        pin_block = auth.request.pin_block
        if account.pin is None or pin_block is None:
            return "86"
        try:
            right = auth.pins.verify(
                pin_block, account.pan.digits, account.pin.check(account.pan.digits)
            )
        except (KeyStoreError, CodecError) as exc:
            log.warning(
                "authorisation %s: PIN block not verifiable: %s",
                _short(auth.message_id),
                type(exc).__name__,
            )
            return "96"
        if right:
            state.pin_failures = 0
            return None
        state.pin_failures += 1
        return "75" if state.pin_failures >= account.pin_try_limit else "55"

    def _void(self, state: _State, auth: Authorization) -> _Decision:
        request = auth.request
        original: LedgerEntry | None = None
        if auth.original_host_reference is not None:
            original = self._ledger.find_reference(auth.original_host_reference)
        if original is None and request.original_message_id is not None:
            original = self._ledger.find_message(auth.terminal_id, request.original_message_id)
        if (
            original is None
            or original.kind != "authorisation"
            or not original.approved
            or original.account_id != state.account.account_id
        ):
            return _Decision("25")
        if original.amount != request.amount or original.currency != request.currency:
            return _Decision("13", original=original)
        with state.lock:
            if not self._ledger.mark_undone(original.sequence):
                return _Decision("12", original=original)
            state.balance -= original.balance_delta
            daily = self._give_back_daily(state, original)
        return _Decision(
            "00", balance_delta=-original.balance_delta, daily_delta=-daily, original=original
        )

    def _give_back_daily(self, state: _State, entry: LedgerEntry) -> int:
        """Take ``entry``'s daily spend back if it counted today. Caller holds the lock."""
        today = self._clock().date()
        state.spent_on(today)
        if entry.daily_delta and entry.day == today.isoformat():
            state.daily_spent -= entry.daily_delta
            return entry.daily_delta
        return 0

    # -- reversal ------------------------------------------------------------------------

    def reverse_sync(self, reversal: Reversal) -> ReversalOutcome:
        """:meth:`reverse` without the worker thread."""
        original = self._ledger.find_message(
            reversal.terminal_id, reversal.request.original_message_id
        )
        if original is None:
            log.info("reversal %s: unknown original", _short(reversal.message_id))
            return "unknown_original"
        state = self._by_id[original.account_id]
        now = self._clock()
        with state.lock:
            if not self._ledger.mark_undone(original.sequence):
                log.info("reversal %s: already reversed", _short(reversal.message_id))
                return "already_reversed"
            state.balance -= original.balance_delta
            daily = self._give_back_daily(state, original)
            if original.approved and original.original_sequence is not None:
                if original.kind == "void":
                    # the purchase the void gave back is live again
                    self._ledger.unmark_undone(original.original_sequence)
                elif original.kind == "refund":
                    self._ledger.unrefund(original.original_sequence, original.amount)
            self._ledger.append(
                LedgerEntry(
                    sequence=-1,
                    kind="reversal",
                    account_id=original.account_id,
                    terminal_id=reversal.terminal_id,
                    merchant_id=reversal.merchant_id,
                    message_id=reversal.message_id,
                    amount=original.amount,
                    currency=original.currency,
                    response_code="00",
                    approved=True,
                    balance_delta=-original.balance_delta,
                    daily_delta=-daily,
                    day=now.date().isoformat(),
                    at=now,
                    original_sequence=original.sequence,
                )
            )
        log.info("reversal %s: reversed ledger %d", _short(reversal.message_id), original.sequence)
        return "reversed"

    # -- helpers -------------------------------------------------------------------------

    def _auth_code(self) -> str:
        return f"{int.from_bytes(self._random(4), 'big') % 1_000_000:06d}"

    def _rrn(self, now: datetime) -> str:
        with self._rrn_lock:
            sequence = next(self._rrn_sequence) % 1_000_000
        return f"{now.year % 10}{now.timetuple().tm_yday:03d}{now.hour:02d}{sequence:06d}"

    @staticmethod
    def _response(
        code: str,
        auth_code: str | None,
        iad: bytes | None,
        rrn: str,
    ) -> AuthorizationResponse:
        rc = RESPONSE_CODES[code]
        return AuthorizationResponse(
            response_code=code,
            approved=rc.approved,
            authorization_code=auth_code,
            issuer_authentication_data=None if iad is None else iad.hex().upper(),
            host_reference=rrn,
            display_text=rc.text,
        )


def _short(message_id: str) -> str:
    """The first 12 characters of a message id, for logs: a full hex id can hold a run of
    13+ digits that looks like a PAN to a log scanner; 12 cannot."""
    return message_id[:12]


def _expired(expiry: str, today: date) -> bool:
    """True when YYMM is before today's month (valid through the end of the month)."""
    year, month = 2000 + int(expiry[:2]), int(expiry[2:])
    return (today.year, today.month) > (year, month)


def _scenario(amount: int) -> str | None:
    if SCENARIO_FIRST <= amount <= SCENARIO_LAST:
        return SCENARIOS.get(amount - SCENARIO_FIRST)
    return None


def _numeric(alpha: str) -> str:
    return by_alpha(alpha).numeric
