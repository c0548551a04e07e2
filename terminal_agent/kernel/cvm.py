"""Step 5: cardholder verification (EMV 4.4 Book 3 10.5, CVM list coding Annex C3).

The CVM list (8E) is amount X and amount Y (binary, in the application currency) and
two-byte rules: the CVM code (b7 "apply succeeding rule if this CVM fails", b6-b1 the
method) and the condition. :func:`process_cvm_list` walks the rules in order, pure but
for the ``perform`` callback that carries out a method (so table tests need no card):

* a rule whose condition is not satisfied, or not understood, is skipped;
* a method this kernel does not know sets TVR "unrecognised CVM" and fails;
* a method the terminal does not support fails (a PIN method with no PIN capability at
  all also sets "PIN entry required and PIN pad not present or not working");
* a failed rule with b7 set moves on, without b7 it ends verification as failed;
* the first success ends it; CVM results (9F34) are the rule's two bytes and ``02``
  (successful) or ``00`` (unknown: signature and online PIN, checked later), or ``01``
  (failed); ``3F 00 01`` when no rule applied at all.

Enciphered offline PIN (04, 05) needs an ICC public key this kernel never recovers, so
it is never supported, whatever 9F33 says. :func:`cardholder_verification` is the step:
AIP b5 clear skips it; a missing CVM list sets "ICC data missing"; otherwise the rules
run with :class:`CvmPerformer` (plaintext offline PIN through the Cardholder seam,
with the PIN try counter from GET DATA 9F17; online PIN; signature; no CVM).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum, IntEnum

from paycore.pan import Pan, PanError

from . import apdu as _apdu
from .apdu import CardLink
from .bits import Tsi, Tvr
from .context import TransactionContext
from .errors import CardDataError, CardholderAbort
from .seams import Cardholder, OfflinePinStatus, OnlinePinStatus

__all__ = [
    "Attempt",
    "CvmDecision",
    "CvmFacts",
    "CvmList",
    "CvmMethod",
    "CvmPerformer",
    "CvmRule",
    "card_pan",
    "cardholder_verification",
    "condition_satisfied",
    "facts_of",
    "parse_cvm_list",
    "process_cvm_list",
    "terminal_supports",
]


class CvmMethod(IntEnum):
    """CVM codes b6-b1 (Annex C3) this kernel recognises."""

    FAIL = 0x00
    PLAINTEXT_PIN = 0x01
    ONLINE_PIN = 0x02
    PLAINTEXT_PIN_AND_SIGNATURE = 0x03
    ENCIPHERED_PIN = 0x04
    ENCIPHERED_PIN_AND_SIGNATURE = 0x05
    SIGNATURE = 0x1E
    NO_CVM = 0x1F


_KNOWN = frozenset(int(m) for m in CvmMethod)
_PIN_METHODS = frozenset({0x01, 0x02, 0x03, 0x04, 0x05})
# Terminal capabilities (9F33) byte 2 bits each method needs.
_CAPABILITY: dict[int, int] = {
    CvmMethod.FAIL: 0x00,
    CvmMethod.PLAINTEXT_PIN: 0x80,
    CvmMethod.ONLINE_PIN: 0x40,
    CvmMethod.PLAINTEXT_PIN_AND_SIGNATURE: 0xA0,
    CvmMethod.SIGNATURE: 0x20,
    CvmMethod.NO_CVM: 0x08,
}


@dataclass(frozen=True, slots=True)
class CvmRule:
    """One CV rule: CVM code and condition code."""

    code: int
    condition: int

    @property
    def method(self) -> int:
        """b6-b1 of the CVM code."""
        return self.code & 0x3F

    @property
    def continue_on_failure(self) -> bool:
        """b7: apply the succeeding rule if this CVM fails."""
        return bool(self.code & 0x40)


@dataclass(frozen=True, slots=True)
class CvmList:
    """A parsed CVM list: amounts X and Y (binary, application currency) and rules."""

    x: int
    y: int
    rules: tuple[CvmRule, ...]


def parse_cvm_list(data: bytes) -> CvmList:
    """Split 8E; fewer than one rule or an odd rule area is CardDataError."""
    if len(data) < 10 or len(data) % 2:
        raise CardDataError("CVM list is malformed", step="cvm", tag=0x8E)
    rules = tuple(CvmRule(data[i], data[i + 1]) for i in range(8, len(data), 2))
    return CvmList(int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big"), rules)


@dataclass(frozen=True, slots=True)
class CvmFacts:
    """What the CVM conditions look at."""

    amount: int
    transaction_type: int
    unattended: bool
    currency_matches: bool  # transaction currency (5F2A) == application currency (9F42)
    capabilities: bytes  # 9F33

    @property
    def cash(self) -> bool:
        """9C 01."""
        return self.transaction_type == 0x01

    @property
    def cashback(self) -> bool:
        """9C 09."""
        return self.transaction_type == 0x09


def terminal_supports(method: int, capabilities: bytes) -> bool:
    """Whether the terminal can perform ``method`` (9F33 byte 2; 04/05 never)."""
    needed = _CAPABILITY.get(method)
    if needed is None:
        return False
    return capabilities[1] & needed == needed


def condition_satisfied(rule: CvmRule, cvm_list: CvmList, facts: CvmFacts) -> bool | None:
    """Annex C3 condition codes; None for a code this kernel does not understand."""
    c = rule.condition
    if c == 0x00:
        return True
    if c == 0x01:
        return facts.cash and facts.unattended
    if c == 0x02:
        return not facts.cash and not facts.cashback
    if c == 0x03:
        return terminal_supports(rule.method, facts.capabilities)
    if c == 0x04:
        return facts.cash and not facts.unattended
    if c == 0x05:
        return facts.cashback
    if 0x06 <= c <= 0x09:
        if not facts.currency_matches:
            return False
        limit = cvm_list.x if c in (0x06, 0x07) else cvm_list.y
        return facts.amount < limit if c in (0x06, 0x08) else facts.amount > limit
    return None


class Attempt(Enum):
    """How performing one CVM ended; the value is CVM results byte 3."""

    SUCCESSFUL = 0x02
    UNKNOWN = 0x00
    FAILED = 0x01


@dataclass(frozen=True, slots=True)
class CvmDecision:
    """The end of CVM processing: CVM results (9F34), TVR bits, the rules performed."""

    results: bytes
    tvr: Tvr
    performed: tuple[CvmRule, ...]


Perform = Callable[[CvmRule], Awaitable[Attempt]]


async def process_cvm_list(cvm_list: CvmList, facts: CvmFacts, perform: Perform) -> CvmDecision:
    """Walk the rules (Book 3 10.5, figure 8); ``perform`` carries out supported CVMs."""
    tvr = Tvr(0)
    performed: list[CvmRule] = []
    last_failed: CvmRule | None = None
    for rule in cvm_list.rules:
        if not condition_satisfied(rule, cvm_list, facts):
            continue
        method = rule.method
        if method not in _KNOWN:
            tvr |= Tvr.UNRECOGNISED_CVM
            outcome = Attempt.FAILED
        elif not terminal_supports(method, facts.capabilities):
            if method in _PIN_METHODS and not facts.capabilities[1] & 0xC0:
                tvr |= Tvr.PIN_PAD_NOT_PRESENT_OR_NOT_WORKING
            outcome = Attempt.FAILED
        elif method == CvmMethod.FAIL:
            outcome = Attempt.FAILED
        else:
            performed.append(rule)
            outcome = await perform(rule)
        if outcome is not Attempt.FAILED:
            results = bytes((rule.code, rule.condition, outcome.value))
            return CvmDecision(results, tvr, tuple(performed))
        last_failed = rule
        if not rule.continue_on_failure:
            break
    tvr |= Tvr.CARDHOLDER_VERIFICATION_NOT_SUCCESSFUL
    if last_failed is None:
        results = bytes.fromhex("3F0001")
    else:
        results = bytes((last_failed.code, last_failed.condition, Attempt.FAILED.value))
    return CvmDecision(results, tvr, tuple(performed))


def card_pan(ctx: TransactionContext) -> Pan:
    """The PAN from 5A (format cn, trailing F padding)."""
    digits = ctx.card_data.get(0x5A, b"").hex().rstrip("f")
    try:
        return Pan(digits)
    except (PanError, ValueError):
        raise CardDataError("PAN is not valid", step="read", tag=0x5A) from None


_MAX_PIN_ENTRIES = 16


class CvmPerformer:
    """Carries out the CVMs this terminal supports, through the Cardholder seam."""

    def __init__(self, ctx: TransactionContext, link: CardLink, cardholder: Cardholder) -> None:
        self.ctx = ctx
        self.link = link
        self.cardholder = cardholder

    async def __call__(self, rule: CvmRule) -> Attempt:
        """Perform ``rule``'s method; TVR bits go straight into the context."""
        method = rule.method
        if method == CvmMethod.NO_CVM:
            return Attempt.SUCCESSFUL
        if method == CvmMethod.SIGNATURE:
            await self._signature()
            return Attempt.UNKNOWN
        if method == CvmMethod.ONLINE_PIN:
            return await self._online_pin()
        if method in (CvmMethod.PLAINTEXT_PIN, CvmMethod.PLAINTEXT_PIN_AND_SIGNATURE):
            if await self._offline_pin() is Attempt.FAILED:
                return Attempt.FAILED
            if method == CvmMethod.PLAINTEXT_PIN_AND_SIGNATURE:
                await self._signature()
                return Attempt.UNKNOWN
            return Attempt.SUCCESSFUL
        return Attempt.FAILED

    async def _signature(self) -> None:
        self.ctx.signature_required = True
        await self.cardholder.signature_required()

    async def _online_pin(self) -> Attempt:
        ctx = self.ctx
        if not ctx.config.pinpad_present:
            ctx.tvr |= Tvr.PIN_PAD_NOT_PRESENT_OR_NOT_WORKING
            return Attempt.FAILED
        result = await self.cardholder.online_pin(
            card_pan(ctx).digits, ctx.transaction.amount, f"{ctx.currency_code:03d}"
        )
        if result.status is OnlinePinStatus.OK and result.block is not None:
            ctx.tvr |= Tvr.ONLINE_PIN_ENTERED
            ctx.pin_block = result.block
            return Attempt.UNKNOWN
        if result.status is OnlinePinStatus.CANCELLED:
            raise CardholderAbort("cancelled", step="online PIN")
        if result.status is OnlinePinStatus.TIMEOUT:
            raise CardholderAbort("timeout", step="online PIN")
        ctx.tvr |= Tvr.PIN_PAD_PRESENT_PIN_NOT_ENTERED
        return Attempt.FAILED

    async def _pin_try_counter(self) -> int | None:
        answer = await self.link.get_data(0x9F17)
        if not answer.ok:
            return None
        try:
            objects = _apdu.decode(answer.data, step="cvm", command="GET DATA")
        except CardDataError:
            return None
        if len(objects) == 1 and objects[0].tag == 0x9F17 and len(objects[0].data) == 1:
            return objects[0].data[0]
        return None

    async def _offline_pin(self) -> Attempt:
        ctx = self.ctx
        if not ctx.config.pinpad_present:
            ctx.tvr |= Tvr.PIN_PAD_NOT_PRESENT_OR_NOT_WORKING
            return Attempt.FAILED
        tries = await self._pin_try_counter()
        if tries == 0:
            ctx.tvr |= Tvr.PIN_TRY_LIMIT_EXCEEDED
            return Attempt.FAILED
        for _ in range(_MAX_PIN_ENTRIES):
            outcome = await self.cardholder.offline_plaintext_pin(self.link, tries)
            status = outcome.status
            if status is OfflinePinStatus.VERIFIED:
                return Attempt.SUCCESSFUL
            if status is OfflinePinStatus.WRONG:
                tries = outcome.tries_left
                if tries is not None and tries <= 0:
                    break
                await self.cardholder.show("INCORRECT PIN")
                continue
            if status is OfflinePinStatus.BLOCKED:
                break
            if status is OfflinePinStatus.BYPASSED:
                ctx.tvr |= Tvr.PIN_PAD_PRESENT_PIN_NOT_ENTERED
                return Attempt.FAILED
            if status is OfflinePinStatus.NOT_POSSIBLE:
                ctx.tvr |= Tvr.PIN_PAD_NOT_PRESENT_OR_NOT_WORKING
                return Attempt.FAILED
            if status is OfflinePinStatus.CANCELLED:
                raise CardholderAbort("cancelled", step="offline PIN")
            raise CardholderAbort("timeout", step="offline PIN")
        ctx.tvr |= Tvr.PIN_TRY_LIMIT_EXCEEDED
        return Attempt.FAILED


def facts_of(ctx: TransactionContext) -> CvmFacts:
    """The CVM condition inputs from the context."""
    app_currency = ctx.card_data.get(0x9F42)
    return CvmFacts(
        amount=ctx.transaction.amount,
        transaction_type=ctx.transaction.transaction_type,
        unattended=ctx.config.unattended,
        currency_matches=app_currency is not None and app_currency == ctx.terminal_data[0x5F2A],
        capabilities=ctx.config.terminal_capabilities,
    )


async def cardholder_verification(
    ctx: TransactionContext, link: CardLink, cardholder: Cardholder
) -> None:
    """Book 3 10.5: sets ``cvm_results``, TVR byte 3 bits and TSI bit 7."""
    if not ctx.card_data[0x82][0] & 0x10:
        ctx.cvm_results = bytes.fromhex("3F0000")
        return
    raw = ctx.card_data.get(0x8E)
    try:
        cvm_list = parse_cvm_list(raw) if raw is not None else None
    except CardDataError:
        cvm_list = None
    if cvm_list is None:
        ctx.tvr |= Tvr.ICC_DATA_MISSING
        ctx.cvm_results = bytes.fromhex("3F0000")
        return
    decision = await process_cvm_list(cvm_list, facts_of(ctx), CvmPerformer(ctx, link, cardholder))
    ctx.tvr |= decision.tvr
    ctx.cvm_results = decision.results
    ctx.tsi |= Tsi.CARDHOLDER_VERIFICATION_PERFORMED
