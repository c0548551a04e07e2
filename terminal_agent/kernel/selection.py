"""Step 1: application selection (EMV 4.4 Book 1 section 12).

* :func:`build_candidate_list`: the PSE method (12.3.2: SELECT ``1PAY.SYS.DDF01``, READ
  RECORD over the directory SFI, ADF entries ``61`` with 4F/50/87/9F12) and, when the
  card has no PSE or it yields nothing, the list-of-AIDs method (12.3.3: SELECT each
  terminal AID, exact or partial match per the Application Selection Indicator, then
  "next occurrence" P2 02). Applications answering SELECT with 6283 (blocked) are not
  added. The list is ordered by the priority indicator 87 (low nibble, 1 highest; no
  priority last; card order otherwise).
* :func:`final_selection` (12.4): cardholder choice when there is more than one
  candidate, confirmation when 87 b8 asks for it, then the final SELECT; a candidate whose
  SELECT fails is removed and the choice repeats ("TRY AGAIN").

Directory entries for DDFs (tag 9D, nested directories) are not followed; cards in the
field rarely use them, and the list-of-AIDs method still finds their applications.
"""

from __future__ import annotations

import logging

from paycore import tlv as _tlv

from .apdu import SW_OK, CardLink
from .context import Candidate, TransactionContext
from .errors import CardDataError, CardholderAbort, NoApplication
from .seams import Cardholder

__all__ = [
    "PSE_NAME",
    "build_candidate_list",
    "final_selection",
    "remove_selected",
    "select_application",
]

PSE_NAME = b"1PAY.SYS.DDF01"
SW_BLOCKED = 0x6283
SW_CARD_BLOCKED = 0x6A81
SW_RECORD_NOT_FOUND = 0x6A83
_MAX_RECORDS = 64
_MAX_OCCURRENCES = 16
logger = logging.getLogger(__name__)


class _DirectoryError(Exception):
    """The PSE directory is unusable: fall back to the list of AIDs (Book 1 12.3.2)."""


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    return value.decode("ascii", errors="replace")


def _priority(value: bytes | None) -> int | None:
    return value[0] if value else None


def _fci(data: bytes) -> dict[int, bytes] | None:
    """The FCI's primitives (first occurrence), or None when it is not an FCI (6F)."""
    try:
        objects = _tlv.decode(data)
    except _tlv.DecodeError:
        return None
    if not objects or objects[0].tag != 0x6F:
        return None
    return _tlv.flatten(objects[:1])


async def _pse_candidates(ctx: TransactionContext, link: CardLink) -> list[Candidate]:
    """The PSE method; raises _DirectoryError to fall back, NoApplication on 6A81."""
    answer = await link.select(PSE_NAME)
    if answer.sw == SW_CARD_BLOCKED:
        raise NoApplication("card blocked or SELECT not supported", card_blocked=True)
    if not answer.ok:
        raise _DirectoryError
    fci = _fci(answer.data)
    sfi_value = fci.get(0x88) if fci else None
    if not sfi_value or len(sfi_value) != 1 or not 1 <= sfi_value[0] <= 10:
        raise _DirectoryError
    sfi = sfi_value[0]
    found: list[Candidate] = []
    for number in range(1, _MAX_RECORDS + 1):
        record = await link.read_record(sfi, number)
        if record.sw == SW_RECORD_NOT_FOUND:
            break
        if not record.ok:
            raise _DirectoryError
        try:
            objects = _tlv.decode(record.data)
        except _tlv.DecodeError:
            raise _DirectoryError from None
        if len(objects) != 1 or objects[0].tag != 0x70:
            raise _DirectoryError
        for entry in objects[0].children:
            if entry.tag != 0x61:
                continue
            values = {child.tag: child.data for child in entry.children if not child.constructed}
            adf = values.get(0x4F)
            if adf is None or not 5 <= len(adf) <= 16:
                continue  # a DDF entry (9D) or a malformed one
            config = ctx.config.aid_config(adf)
            if config is None:
                continue
            found.append(
                Candidate(
                    adf_name=adf,
                    label=_text(values.get(0x50)) or adf.hex().upper(),
                    aid_config=config,
                    priority=_priority(values.get(0x87)),
                    preferred_name=_text(values.get(0x9F12)),
                )
            )
    return found


async def _aid_list_candidates(ctx: TransactionContext, link: CardLink) -> list[Candidate]:
    """The list-of-AIDs method (Book 1 12.3.3)."""
    found: list[Candidate] = []
    for config in ctx.config.aids:
        next_occurrence = False
        for _ in range(_MAX_OCCURRENCES):
            answer = await link.select(config.aid, next_occurrence=next_occurrence)
            if answer.sw == SW_CARD_BLOCKED and not next_occurrence:
                raise NoApplication("card blocked or SELECT not supported", card_blocked=True)
            if answer.sw not in (SW_OK, SW_BLOCKED):
                break
            fci = _fci(answer.data)
            df_name = fci.get(0x84) if fci else None
            if df_name is None or not df_name.startswith(config.aid):
                break
            exact = df_name == config.aid
            if answer.ok and (exact or config.partial_selection):
                found.append(
                    Candidate(
                        adf_name=df_name,
                        label=_text(fci.get(0x50) if fci else None) or df_name.hex().upper(),
                        aid_config=config,
                        priority=_priority(fci.get(0x87) if fci else None),
                        preferred_name=_text(fci.get(0x9F12) if fci else None),
                    )
                )
            if not config.partial_selection:
                break
            next_occurrence = True
    return found


async def build_candidate_list(ctx: TransactionContext, link: CardLink) -> list[Candidate]:
    """Book 1 12.3: the candidate list, ordered by priority; stored in ``ctx.candidates``."""
    found: list[Candidate] = []
    if ctx.config.use_pse:
        try:
            found = await _pse_candidates(ctx, link)
        except _DirectoryError:
            found = []
    if not found:
        found = await _aid_list_candidates(ctx, link)
    unique: dict[bytes, Candidate] = {}
    for candidate in found:
        unique.setdefault(candidate.adf_name, candidate)
    ctx.candidates = sorted(unique.values(), key=lambda c: c.rank)
    logger.debug("candidate list: %d application(s)", len(ctx.candidates))
    return ctx.candidates


async def _choose(ctx: TransactionContext, cardholder: Cardholder) -> Candidate:
    candidates = ctx.candidates
    if len(candidates) == 1:
        only = candidates[0]
        if only.confirmation_required and not await cardholder.confirm_application(only):
            raise CardholderAbort("cancelled", step="application selection")
        return only
    index = await cardholder.choose_application(list(candidates))
    if index is None:
        raise CardholderAbort("cancelled", step="application selection")
    if not 0 <= index < len(candidates):
        raise ValueError("the cardholder seam returned an index outside the list")
    return candidates[index]


async def final_selection(
    ctx: TransactionContext, link: CardLink, cardholder: Cardholder
) -> Candidate:
    """Book 1 12.4: choose, SELECT, and on failure remove the candidate and choose again.

    Sets ``ctx.selected`` and puts the FCI's data objects in ``ctx.card_data``.
    """
    while ctx.candidates:
        chosen = await _choose(ctx, cardholder)
        answer = await link.select(chosen.adf_name)
        fci = _fci(answer.data) if answer.ok else None
        if fci is None or fci.get(0x84) is None:
            logger.info("final SELECT failed (SW %04X): candidate removed", answer.sw)
            ctx.candidates = [c for c in ctx.candidates if c is not chosen]
            if ctx.candidates:
                await cardholder.show("TRY AGAIN")
            continue
        ctx.selected = chosen
        ctx.card_data = dict(fci)
        return chosen
    raise NoApplication("no application left to select")


async def select_application(
    ctx: TransactionContext, link: CardLink, cardholder: Cardholder
) -> Candidate:
    """Build the candidate list and select from it."""
    await build_candidate_list(ctx, link)
    if not ctx.candidates:
        raise NoApplication("the card has no application this terminal supports")
    return await final_selection(ctx, link, cardholder)


def remove_selected(ctx: TransactionContext) -> None:
    """Book 3 10.1: GPO answered 6985; drop the application and return to selection."""
    if ctx.selected is None:
        raise CardDataError("no application selected", step="initiate")
    ctx.candidates = [c for c in ctx.candidates if c is not ctx.selected]
    ctx.selected = None
    ctx.card_data = {}
