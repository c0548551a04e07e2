"""Steps 7 to 9: terminal action analysis, GENERATE AC and completion.

* :func:`terminal_action_analysis` (EMV 4.4 Book 3 10.7): the TVR against the terminal
  (TAC, per AID) and issuer (IAC, 9F0E/9F0F/9F0D) action codes. Denial first: any match
  asks for an AAC. An online-only terminal (9F35 x1, x4) then asks for an ARQC; one
  with online capability asks for an ARQC on an online match, else a TC; an
  offline-only one applies the default codes (AAC on a match, else TC). Absent IACs
  count as ``00..00`` for denial and ``FF..FF`` for online and default (10.7).
* :func:`first_generate_ac` (10.8, 6.5.5): CDOL1 built with :func:`paycore.dol.build`,
  response format 1 (80) or 2 (77), the cryptogram type in the CID; a card may answer
  with a lower type (TC > ARQC > AAC) but never a higher one. TSI "card risk
  management performed".
* :func:`complete` (10.9, 10.10; Book 4 6.3.7): with the host's answer, the ARC (8A) and
  issuer authentication data (91) go into CDOL2 (or, when the card wants them apart and
  its AIP says it supports issuer authentication, EXTERNAL AUTHENTICATE); TSI "issuer
  authentication performed"; the second GENERATE AC asks for a TC when the host
  approved, an AAC when it declined, and when the host was unreachable decides by the
  default action codes (ARC Y3 / Z3; an online-only terminal declines). A card that
  declines after the host approved gets TVR "issuer authentication failed" when issuer
  authentication data was sent (the CVR is proprietary, so this is inferred), and the
  outcome asks for a reversal.
"""

from __future__ import annotations

from pydantic import SecretBytes

from paycore import dol as _dol
from paycore import tags as _tags
from paycore import tlv as _tlv

from .apdu import CardLink, decode, primitives
from .bits import Tsi, Tvr
from .context import (
    AcResponse,
    AcType,
    Decision,
    HostOutcome,
    OnlineRequest,
    Outcome,
    TransactionContext,
)
from .cvm import card_pan
from .errors import CardDataError, KernelSequenceError
from .processing import build_dol

__all__ = [
    "complete",
    "first_generate_ac",
    "online_request",
    "parse_generate_ac",
    "terminal_action_analysis",
]

_RANK = {AcType.AAC: 0, AcType.ARQC: 1, AcType.TC: 2}
_ALL = 0xFF_FF_FF_FF_FF


def _code(ctx: TransactionContext, tag: int, absent: int) -> int:
    value = ctx.card_data.get(tag)
    if value is None or len(value) != 5:
        return absent
    return int.from_bytes(value, "big")


def _default_says_decline(ctx: TransactionContext) -> bool:
    tac = int.from_bytes(ctx.aid_config.tac_default, "big")
    return bool(int(ctx.tvr) & (tac | _code(ctx, 0x9F0D, _ALL)))


def terminal_action_analysis(ctx: TransactionContext) -> AcType:
    """Book 3 10.7: the cryptogram type to ask for at the first GENERATE AC."""
    tvr, aid = int(ctx.tvr), ctx.aid_config
    denial = int.from_bytes(aid.tac_denial, "big") | _code(ctx, 0x9F0E, 0)
    if tvr & denial:
        return AcType.AAC
    if ctx.config.online_only:
        return AcType.ARQC
    if ctx.config.online_capable:
        online = int.from_bytes(aid.tac_online, "big") | _code(ctx, 0x9F0F, _ALL)
        return AcType.ARQC if tvr & online else AcType.TC
    return AcType.AAC if _default_says_decline(ctx) else AcType.TC


def parse_generate_ac(data: bytes, *, step: str) -> AcResponse:
    """A GENERATE AC answer, format 1 or 2 (Book 3 6.5.5.4)."""
    objects = decode(data, step=step, command="GENERATE AC")
    if len(objects) != 1:
        raise CardDataError("answer is not one template", step=step, command="GENERATE AC")
    top = objects[0]
    if top.tag == 0x80 and not top.constructed:
        v = top.data
        if not 11 <= len(v) <= 43:
            raise CardDataError("format 1 answer length", step=step, tag=0x80)
        response = AcResponse(v[0], v[1:3], v[3:11], v[11:])
    elif top.tag == 0x77:
        found: dict[int, bytes] = {}
        for obj in primitives([top]):
            if obj.tag in found:
                raise CardDataError("duplicate data object", step=step, tag=obj.tag)
            found[obj.tag] = obj.data
        for tag, length in ((0x9F27, 1), (0x9F36, 2), (0x9F26, 8)):
            if len(found.get(tag, b"")) != length:
                raise CardDataError("mandatory data object missing", step=step, tag=tag)
        response = AcResponse(
            found[0x9F27][0], found[0x9F36], found[0x9F26], found.get(0x9F10, b"")
        )
    else:
        raise CardDataError("answer is neither 80 nor 77", step=step, command="GENERATE AC")
    if response.cid & 0xC0 == 0xC0:
        raise CardDataError("CID names an RFU cryptogram type", step=step, tag=0x9F27)
    return response


def _store(ctx: TransactionContext, ac: AcResponse) -> None:
    ctx.card_data[0x9F27] = bytes((ac.cid,))
    ctx.card_data[0x9F36] = ac.atc
    ctx.card_data[0x9F26] = ac.cryptogram
    if ac.iad:
        ctx.card_data[0x9F10] = ac.iad


async def _generate_ac(
    ctx: TransactionContext, link: CardLink, requested: AcType, dol_tag: int, step: str
) -> AcResponse:
    data = build_dol(ctx, dol_tag, step)
    answer = await link.generate_ac(requested.value, data, step=step)
    if not answer.ok:
        raise CardDataError("GENERATE AC refused", step=step, command="GENERATE AC", sw=answer.sw)
    ac = parse_generate_ac(answer.data, step=step)
    if _RANK[ac.ac_type] > _RANK[requested]:
        raise CardDataError("card returned a higher cryptogram than asked", step=step, tag=0x9F27)
    _store(ctx, ac)
    return ac


def _outcome(
    ctx: TransactionContext, decision: Decision, ac: AcResponse, **extra: object
) -> Outcome:
    selected = ctx.selected
    if selected is None:
        raise KernelSequenceError("no application selected")
    arc = extra.get("arc")
    return Outcome(
        decision=decision,
        cryptogram=ac.cryptogram,
        cid=ac.cid,
        atc=ac.atc,
        tvr=ctx.tvr.to_bytes(),
        tsi=ctx.tsi.to_bytes(),
        cvm_results=ctx.cvm_results,
        aid=selected.adf_name,
        label=selected.preferred_name or selected.label,
        arc=arc if isinstance(arc, bytes) else None,
        signature_required=ctx.signature_required,
        reversal_required=bool(extra.get("reversal_required", False)),
    )


def online_request(ctx: TransactionContext) -> OnlineRequest:
    """The data for the authorisation request after an ARQC (DE55 without sensitive tags)."""
    if ctx.first_ac is None or ctx.selected is None:
        raise KernelSequenceError("no ARQC yet")
    data = ctx.data()
    de55 = _de55(ctx, data)
    psn = ctx.card_data.get(0x5F34)
    track2 = ctx.card_data.get(0x57)
    return OnlineRequest(
        arqc=ctx.first_ac.cryptogram,
        de55=de55,
        pan=card_pan(ctx),
        psn=psn.hex() if psn else None,
        expiry=ctx.card_data[0x5F24].hex()[:4],
        track2=SecretBytes(track2) if track2 is not None else None,
        cvm_results=ctx.cvm_results,
        tvr=ctx.tvr.to_bytes(),
        tsi=ctx.tsi.to_bytes(),
        aid=ctx.selected.adf_name,
        amount=ctx.transaction.amount,
        amount_other=ctx.transaction.amount_other,
        currency_code=ctx.currency_code,
        pin_block=ctx.pin_block,
    )


def _de55(ctx: TransactionContext, data: dict[int, bytes]) -> bytes:
    objects = []
    for tag in ctx.config.de55_tags:
        value = data.get(tag)
        if value is None or _tags.is_sensitive(tag):
            continue
        try:
            objects.append(_tlv.Tlv(tag, value))
        except ValueError:
            continue  # a template tag: DE55 carries primitives only
    return _tlv.encode(objects)


async def first_generate_ac(
    ctx: TransactionContext, link: CardLink, requested: AcType
) -> Outcome | None:
    """Book 3 10.8: the first GENERATE AC; an Outcome when the card finished offline,
    None when it asked to go online (ARQC)."""
    ctx.requested_first = requested
    ac = await _generate_ac(ctx, link, requested, 0x8C, "first GENERATE AC")
    ctx.first_ac = ac
    ctx.tsi |= Tsi.CARD_RISK_MANAGEMENT_PERFORMED
    if ac.ac_type is AcType.ARQC:
        ctx.online_pending = True
        return None
    decision = Decision.APPROVED_OFFLINE if ac.ac_type is AcType.TC else Decision.DECLINED_OFFLINE
    return _outcome(ctx, decision, ac)


async def complete(ctx: TransactionContext, link: CardLink, host: HostOutcome) -> Outcome:
    """Book 3 10.9-10.10: issuer authentication and the second GENERATE AC."""
    if not ctx.online_pending:
        raise KernelSequenceError("complete() needs a transaction waiting for the host")
    ctx.online_pending = False
    ctx.terminal_data.pop(0x91, None)
    sent_issuer_data = False
    if host.unable_to_go_online:
        decline = ctx.config.online_only or _default_says_decline(ctx)
        requested = AcType.AAC if decline else AcType.TC
        arc = b"Z3" if decline else b"Y3"
    else:
        requested = AcType.TC if host.approved else AcType.AAC
        arc = host.arc
        if host.issuer_auth_data is not None:
            sent_issuer_data = await _issuer_authentication(ctx, link, host.issuer_auth_data)
    ctx.terminal_data[0x8A] = arc
    ac = await _generate_ac(ctx, link, requested, 0x8D, "second GENERATE AC")
    if ac.ac_type is AcType.ARQC:
        raise CardDataError("ARQC at the second GENERATE AC", step="completion", tag=0x9F27)
    ctx.second_ac = ac
    approved = ac.ac_type is AcType.TC
    if host.unable_to_go_online:
        decision = Decision.APPROVED_UNABLE_ONLINE if approved else Decision.DECLINED_UNABLE_ONLINE
        return _outcome(ctx, decision, ac, arc=arc)
    if not host.approved:
        return _outcome(ctx, Decision.DECLINED_ONLINE, ac, arc=arc)
    if approved:
        return _outcome(ctx, Decision.APPROVED_ONLINE, ac, arc=arc)
    if sent_issuer_data:
        ctx.tvr |= Tvr.ISSUER_AUTHENTICATION_FAILED
    return _outcome(ctx, Decision.DECLINED_AFTER_APPROVAL, ac, arc=arc, reversal_required=True)


async def _issuer_authentication(ctx: TransactionContext, link: CardLink, data: bytes) -> bool:
    """Book 3 10.9: 91 in CDOL2, else EXTERNAL AUTHENTICATE when the AIP supports it."""
    try:
        cdol2_tags = {entry.tag for entry in _dol.parse(ctx.card_data.get(0x8D, b""))}
    except _dol.DolError:
        raise CardDataError("CDOL2 does not parse", step="completion", tag=0x8D) from None
    if 0x91 in cdol2_tags:
        ctx.terminal_data[0x91] = data
        ctx.tsi |= Tsi.ISSUER_AUTHENTICATION_PERFORMED
        return True
    if ctx.card_data[0x82][0] & 0x04:
        answer = await link.external_authenticate(data)
        ctx.tsi |= Tsi.ISSUER_AUTHENTICATION_PERFORMED
        if not answer.ok:
            ctx.tvr |= Tvr.ISSUER_AUTHENTICATION_FAILED
        return True
    return False
