"""Step 6: terminal risk management (EMV 4.4 Book 3 10.6).

* floor limit (10.6.1): an amount equal to or above the floor limit (per AID, else the
  terminal's) sets TVR "transaction exceeds floor limit". The optional check of the
  terminal's own log for earlier transactions with the same PAN is not done: this
  terminal keeps no such log (its journal holds PANs only encrypted);
* random transaction selection (10.6.2): a random number 1 to 99 from the injected
  source against the target percentage below the threshold, and against the biased
  percentage ``target + (max - target) * (amount - threshold) / (floor - threshold)``
  between the threshold and the floor limit; sets "selected randomly for online";
* velocity checking (10.6.3), when the card carries both the lower (9F14) and upper
  (9F23) consecutive offline limits: GET DATA of the ATC (9F36) and the last online ATC
  register (9F13); both limit bits when either is missing or ATC <= last online ATC,
  otherwise the bits for ``ATC - last online ATC`` above each limit; "new card" when the
  last online ATC register is zero.

Run when the AIP asks for it (byte 1 bit 4); sets TSI "terminal risk management
performed".
"""

from __future__ import annotations

from fractions import Fraction
from typing import Protocol

from .apdu import CardLink, decode
from .bits import Tsi, Tvr
from .context import TransactionContext
from .errors import CardDataError

__all__ = [
    "RandomSource",
    "floor_limit_check",
    "random_selection",
    "terminal_risk_management",
    "velocity_check",
]


class RandomSource(Protocol):
    """What the kernel needs of randomness (``random.SystemRandom`` fits)."""

    def randint(self, a: int, b: int) -> int:
        """A random integer in [a, b]."""
        ...

    def randbytes(self, n: int) -> bytes:
        """``n`` random bytes (the unpredictable number, 9F37)."""
        ...


def floor_limit_check(ctx: TransactionContext) -> None:
    """Book 3 10.6.1."""
    limit = ctx.aid_config.floor_limit
    if limit is None:
        limit = ctx.config.floor_limit
    if ctx.transaction.amount >= limit:
        ctx.tvr |= Tvr.EXCEEDS_FLOOR_LIMIT


def random_selection(ctx: TransactionContext, rng: RandomSource) -> None:
    """Book 3 10.6.2, with the biased selection between threshold and floor limit."""
    rs = ctx.config.random_selection
    floor = ctx.aid_config.floor_limit
    if floor is None:
        floor = ctx.config.floor_limit
    amount = ctx.transaction.amount
    if not rs.enabled or amount >= floor:
        return
    number = rng.randint(1, 99)
    if amount < rs.threshold:
        percent = Fraction(rs.target_percent)
    else:
        span = floor - rs.threshold
        factor = Fraction(amount - rs.threshold, span) if span > 0 else Fraction(0)
        percent = rs.target_percent + (rs.max_target_percent - rs.target_percent) * factor
    if number <= percent:
        ctx.tvr |= Tvr.SELECTED_RANDOMLY_FOR_ONLINE


async def _counter(link: CardLink, tag: int) -> int | None:
    answer = await link.get_data(tag)
    if not answer.ok:
        return None
    try:
        objects = decode(answer.data, step="risk management", command="GET DATA")
    except CardDataError:
        return None
    if len(objects) != 1 or objects[0].tag != tag or len(objects[0].data) != 2:
        return None
    return int.from_bytes(objects[0].data, "big")


async def velocity_check(ctx: TransactionContext, link: CardLink) -> None:
    """Book 3 10.6.3 (only when the card has both 9F14 and 9F23)."""
    lcol, ucol = ctx.card_data.get(0x9F14), ctx.card_data.get(0x9F23)
    if lcol is None or ucol is None or len(lcol) != 1 or len(ucol) != 1:
        return
    atc = await _counter(link, 0x9F36)
    last_online = await _counter(link, 0x9F13)
    both = (
        Tvr.LOWER_CONSECUTIVE_OFFLINE_LIMIT_EXCEEDED | Tvr.UPPER_CONSECUTIVE_OFFLINE_LIMIT_EXCEEDED
    )
    if atc is None or last_online is None:
        ctx.tvr |= both
        return
    if last_online == 0:
        ctx.tvr |= Tvr.NEW_CARD
    if atc <= last_online:
        ctx.tvr |= both
        return
    offline_run = atc - last_online
    if offline_run > lcol[0]:
        ctx.tvr |= Tvr.LOWER_CONSECUTIVE_OFFLINE_LIMIT_EXCEEDED
    if offline_run > ucol[0]:
        ctx.tvr |= Tvr.UPPER_CONSECUTIVE_OFFLINE_LIMIT_EXCEEDED


async def terminal_risk_management(
    ctx: TransactionContext, link: CardLink, rng: RandomSource
) -> None:
    """Book 3 10.6, when AIP byte 1 bit 4 asks for it."""
    if ctx.transaction.force_online:
        ctx.tvr |= Tvr.MERCHANT_FORCED_ONLINE
    if not ctx.card_data[0x82][0] & 0x08:
        return
    floor_limit_check(ctx)
    random_selection(ctx, rng)
    await velocity_check(ctx, link)
    ctx.tsi |= Tsi.TERMINAL_RISK_MANAGEMENT_PERFORMED
