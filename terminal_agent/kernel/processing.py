"""Steps 2 to 4: initiate application processing, read application data, restrictions.

* :func:`terminal_data`: the terminal's data objects for DOLs (Book 3 Annex A, source
  "terminal"), from the configuration and the transaction.
* :func:`initiate_application_processing` (Book 3 10.1): the PDOL built with
  :func:`paycore.dol.build`, GET PROCESSING OPTIONS, response format 1 (80: AIP, AFL)
  or 2 (77 with 82 and 94). ``6985`` means "conditions of use not satisfied": the
  caller removes the application and returns to final selection.
* :func:`read_application_data` (10.2): every record the AFL names, in order. Records of
  SFI 1 to 10 must be template 70; their primitives join the ICC data; the first
  ``n`` records of each AFL entry are kept for offline data authentication (SFI 1-10
  without the 70 tag and length, SFI 11-30 whole). A primitive data object found
  twice, or missing mandatory data (5A, 5F24, 8C, 8D), terminates the transaction.
* :func:`offline_data_authentication` (10.3): this kernel implements no SDA, DDA or
  CDA (its terminal capabilities announce none), so it sets TVR "offline data
  authentication was not performed" and leaves TSI "ODA performed" clear, as the book
  asks when no method is supported by both card and terminal.
* :func:`processing_restrictions` (10.4): application version (9F08 / 9F09),
  application usage control (9F07) against domestic/international and cash/goods/
  services/cashback and ATM, effective (5F25) and expiration (5F24) dates.
"""

from __future__ import annotations

import datetime as dt

from paycore import dol as _dol

from .apdu import CardLink, decode, primitives
from .bits import Tvr
from .context import TransactionContext
from .errors import CardDataError

__all__ = [
    "MANDATORY_TAGS",
    "AflEntry",
    "build_dol",
    "card_date",
    "initiate_application_processing",
    "offline_data_authentication",
    "parse_afl",
    "processing_restrictions",
    "read_application_data",
    "terminal_data",
]

MANDATORY_TAGS = (0x5A, 0x5F24, 0x8C, 0x8D)
SW_CONDITIONS_NOT_SATISFIED = 0x6985


def _n(value: int, length: int) -> bytes:
    return bytes.fromhex(f"{value:0{2 * length}d}")


def terminal_data(ctx: TransactionContext) -> dict[int, bytes]:
    """The terminal data objects for this transaction (Book 3 Annex A)."""
    cfg, tx = ctx.config, ctx.transaction
    data: dict[int, bytes] = {
        0x9F02: _n(tx.amount, 6),
        0x9F03: _n(tx.amount_other, 6),
        0x9F1A: _n(cfg.country_code, 2),
        0x5F2A: _n(ctx.currency_code, 2),
        0x5F36: _n(cfg.currency_exponent, 1),
        0x9A: bytes.fromhex(tx.date.strftime("%y%m%d")),
        0x9F21: bytes.fromhex(tx.time.strftime("%H%M%S")),
        0x9C: bytes((tx.transaction_type,)),
        0x9F37: ctx.unpredictable_number,
        0x9F35: bytes((cfg.terminal_type,)),
        0x9F33: cfg.terminal_capabilities,
        0x9F40: cfg.additional_capabilities,
        0x9F15: bytes.fromhex(cfg.merchant_category_code),
        0x9F1E: cfg.ifd_serial.encode("ascii"),
        0x9F1B: min(cfg.floor_limit, 0xFFFFFFFF).to_bytes(4, "big"),
    }
    if tx.amount <= 0xFFFFFFFF:
        data[0x81] = tx.amount.to_bytes(4, "big")
    if tx.amount_other <= 0xFFFFFFFF:
        data[0x9F04] = tx.amount_other.to_bytes(4, "big")
    if cfg.terminal_id is not None:
        data[0x9F1C] = cfg.terminal_id.encode("ascii")
    if cfg.merchant_id is not None:
        data[0x9F16] = cfg.merchant_id.encode("ascii")
    if tx.sequence_counter is not None:
        data[0x9F41] = _n(tx.sequence_counter % 10**8, 4)
    if ctx.selected is not None:
        data[0x9F09] = ctx.selected.aid_config.application_version
    for name, value in cfg.extra_terminal_data.items():
        data[int(name, 16)] = value
    return data


def _parse_dol(ctx: TransactionContext, tag: int, step: str) -> list[_dol.DolEntry]:
    try:
        return _dol.parse(ctx.card_data.get(tag, b""))
    except _dol.DolError:
        raise CardDataError("DOL does not parse", step=step, tag=tag) from None


def build_dol(ctx: TransactionContext, tag: int, step: str) -> bytes:
    """The command data for the card's DOL ``tag`` (8C, 8D, 9F38) from the context."""
    return _dol.build(_parse_dol(ctx, tag, step), ctx.data())


class AflEntry:
    """One four-byte AFL entry (Book 3 10.2)."""

    __slots__ = ("first", "last", "oda", "sfi")

    def __init__(self, sfi: int, first: int, last: int, oda: int) -> None:
        self.sfi, self.first, self.last, self.oda = sfi, first, last, oda


def parse_afl(afl: bytes) -> list[AflEntry]:
    """Split and check the AFL; a malformed one terminates the transaction."""
    if not afl or len(afl) % 4:
        raise CardDataError("AFL length is not a multiple of 4", step="read", tag=0x94)
    entries = []
    for i in range(0, len(afl), 4):
        sfi, first, last, oda = afl[i] >> 3, afl[i + 1], afl[i + 2], afl[i + 3]
        if afl[i] & 0x07 or not 1 <= sfi <= 30 or first == 0 or last < first:
            raise CardDataError("AFL entry is not valid", step="read", tag=0x94)
        if oda > last - first + 1:
            raise CardDataError("AFL names more ODA records than records", step="read", tag=0x94)
        entries.append(AflEntry(sfi, first, last, oda))
    return entries


async def initiate_application_processing(ctx: TransactionContext, link: CardLink) -> bool:
    """GET PROCESSING OPTIONS (Book 3 10.1). False when the card answered 6985."""
    ctx.terminal_data = terminal_data(ctx)
    pdol_data = build_dol(ctx, 0x9F38, "initiate")
    answer = await link.get_processing_options(pdol_data)
    if answer.sw == SW_CONDITIONS_NOT_SATISFIED:
        return False
    if not answer.ok:
        raise CardDataError("GPO refused", step="initiate", command="GPO", sw=answer.sw)
    objects = decode(answer.data, step="initiate", command="GPO")
    if len(objects) != 1:
        raise CardDataError("GPO answer is not one template", step="initiate", command="GPO")
    top = objects[0]
    if top.tag == 0x80 and not top.constructed:
        value = top.data
        if len(value) < 6 or (len(value) - 2) % 4:
            raise CardDataError("format 1 GPO answer length", step="initiate", tag=0x80)
        aip, afl = value[:2], value[2:]
    elif top.tag == 0x77:
        found: dict[int, bytes] = {}
        for obj in primitives([top]):
            if obj.tag in found:
                raise CardDataError("duplicate data object", step="initiate", tag=obj.tag)
            found[obj.tag] = obj.data
        aip, afl = found.get(0x82, b""), found.get(0x94, b"")
        if len(aip) != 2:
            raise CardDataError("AIP missing or malformed", step="initiate", tag=0x82)
        ctx.card_data.update({t: v for t, v in found.items() if t not in (0x82, 0x94)})
    else:
        raise CardDataError("GPO answer is neither 80 nor 77", step="initiate", command="GPO")
    parse_afl(afl)
    ctx.card_data[0x82] = aip
    ctx.card_data[0x94] = afl
    return True


async def read_application_data(ctx: TransactionContext, link: CardLink) -> None:
    """READ RECORD over the AFL (Book 3 10.2); fills ``card_data`` and ``oda_records``."""
    seen: set[int] = set()
    for entry in parse_afl(ctx.card_data[0x94]):
        for number in range(entry.first, entry.last + 1):
            answer = await link.read_record(entry.sfi, number)
            if not answer.ok:
                raise CardDataError(
                    "record named in the AFL not read",
                    step="read",
                    command="READ RECORD",
                    sw=answer.sw,
                )
            objects = decode(answer.data, step="read", command="READ RECORD")
            is_template = len(objects) == 1 and objects[0].tag == 0x70
            if entry.sfi <= 10 and not is_template:
                raise CardDataError("record is not a 70 template", step="read", tag=0x70)
            if number - entry.first < entry.oda:
                ctx.oda_records.append(objects[0].data if entry.sfi <= 10 else answer.data)
            if not is_template:
                continue
            for obj in primitives(objects):
                if obj.tag in seen or obj.tag in (0x82, 0x94):
                    raise CardDataError("duplicate data object", step="read", tag=obj.tag)
                seen.add(obj.tag)
                ctx.card_data[obj.tag] = obj.data
    for tag in MANDATORY_TAGS:
        if tag not in ctx.card_data:
            raise CardDataError("mandatory data object missing", step="read", tag=tag)
    _parse_dol(ctx, 0x8C, "read")
    _parse_dol(ctx, 0x8D, "read")
    card_date(ctx.card_data[0x5F24], tag=0x5F24)


def offline_data_authentication(ctx: TransactionContext) -> None:
    """Book 3 10.3 with no method supported by both sides: TVR byte 1 bit 8."""
    ctx.tvr |= Tvr.ODA_NOT_PERFORMED


def card_date(value: bytes, *, tag: int) -> dt.date:
    """A YYMMDD date (format n 6) from the card; YY < 50 is 20YY (Book 4 6.7.3)."""
    text = value.hex()
    if len(value) != 3 or not text.isdigit():
        raise CardDataError("date is not YYMMDD", step="restrictions", tag=tag)
    yy, mm, dd = int(text[:2]), int(text[2:4]), int(text[4:])
    try:
        return dt.date(2000 + yy if yy < 50 else 1900 + yy, mm, dd)
    except ValueError:
        raise CardDataError("date is not a calendar date", step="restrictions", tag=tag) from None


# Application Usage Control (9F07) byte 1 and byte 2 bits, Book 3 Annex C2.
_AUC_DOMESTIC_CASH, _AUC_INTL_CASH = 0x8000, 0x4000
_AUC_DOMESTIC_GOODS, _AUC_INTL_GOODS = 0x2000, 0x1000
_AUC_DOMESTIC_SERVICES, _AUC_INTL_SERVICES = 0x0800, 0x0400
_AUC_ATM, _AUC_NOT_ATM = 0x0200, 0x0100
_AUC_DOMESTIC_CASHBACK, _AUC_INTL_CASHBACK = 0x0080, 0x0040


def _usage_allowed(ctx: TransactionContext, auc: int) -> bool:
    cfg, tx = ctx.config, ctx.transaction
    atm = cfg.unattended and bool(cfg.additional_capabilities[0] & 0x80) and tx.is_cash
    if not auc & (_AUC_ATM if atm else _AUC_NOT_ATM):
        return False
    issuer_country = ctx.card_data.get(0x5F28)
    if issuer_country is None:
        return True  # domestic/international cannot be told: only the ATM check applies
    domestic = issuer_country == ctx.terminal_data[0x9F1A]

    def bit(domestic_bit: int, international_bit: int) -> bool:
        return bool(auc & (domestic_bit if domestic else international_bit))

    if tx.is_cash:
        return bit(_AUC_DOMESTIC_CASH, _AUC_INTL_CASH)
    if tx.transaction_type in (0x00, 0x09):
        if tx.purchase_of == "goods":
            allowed = bit(_AUC_DOMESTIC_GOODS, _AUC_INTL_GOODS)
        else:
            allowed = bit(_AUC_DOMESTIC_SERVICES, _AUC_INTL_SERVICES)
        if tx.is_cashback and tx.amount_other > 0:
            allowed = allowed and bit(_AUC_DOMESTIC_CASHBACK, _AUC_INTL_CASHBACK)
        return allowed
    return True


def processing_restrictions(ctx: TransactionContext) -> None:
    """Book 3 10.4: version, usage control and dates; sets TVR byte 2 bits."""
    card_version = ctx.card_data.get(0x9F08)
    if card_version is not None and card_version != ctx.aid_config.application_version:
        ctx.tvr |= Tvr.DIFFERENT_APPLICATION_VERSIONS
    auc = ctx.card_data.get(0x9F07)
    if auc is not None and len(auc) == 2 and not _usage_allowed(ctx, int.from_bytes(auc, "big")):
        ctx.tvr |= Tvr.SERVICE_NOT_ALLOWED
    today = ctx.transaction.date
    effective = ctx.card_data.get(0x5F25)
    if effective is not None and card_date(effective, tag=0x5F25) > today:
        ctx.tvr |= Tvr.APPLICATION_NOT_YET_EFFECTIVE
    if card_date(ctx.card_data[0x5F24], tag=0x5F24) < today:
        ctx.tvr |= Tvr.EXPIRED_APPLICATION
