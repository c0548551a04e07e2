"""The receipt: what is printed after a payment, built from the journal and the result.

The fields are those EMV Book 4 (section 11.4, "Receipt") and the card schemes' public
receipt rules ask a chip terminal to print: merchant name and location, terminal id,
date and time, transaction type, amount and currency, the PAN truncated (PCI DSS v4.0
requirement 3.4.1: at most the first six and last four digits), application label and
AID, entry mode, the cardholder verification method, TVR, TSI, the application
cryptogram with its type, authorisation and response codes, the outcome in words and
which copy it is. docs/receipts.md lists where each comes from.

:func:`receipt_for` joins three sources: the journal's
:class:`~terminal_agent.journal.TransactionRecord` (what was written before each step),
the :class:`~terminal_agent.transaction.PaymentResult` (what the card said at the end)
and the :class:`MerchantSettings`. The :class:`Receipt` model has no field that can hold
a clear PAN: only the masked form, and a validator refuses any value that shows more than
:func:`paycore.pan.mask_pan` would.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from paycore.currency import by_alpha
from paycore.errors import CodecError
from paycore.pan import mask_pan
from terminal_agent.journal.model import TransactionRecord
from terminal_agent.receipts.errors import ReceiptDataError
from terminal_agent.transaction import RESPONSE_TEXT, PaymentResult

Copy = Literal["customer", "merchant"]
Outcome = Literal["APPROVED", "DECLINED", "NOT COMPLETED"]
ReceiptType = Literal["SALE", "REFUND", "VOID"]
CryptogramType = Literal["TC", "ARQC", "AAC"]
Cvm = Literal[
    "pin_verified", "pin_entered", "pin_failed", "pin_and_signature", "signature", "no_cvm"
]

#: What the receipt prints for each CVM.
CVM_TEXT: Final[dict[Cvm, str]] = {
    "pin_verified": "PIN VERIFIED",
    "pin_entered": "PIN ENTERED",
    "pin_failed": "PIN NOT VERIFIED",
    "pin_and_signature": "PIN VERIFIED + SIGNATURE",
    "signature": "SIGNATURE",
    "no_cvm": "NO CVM",
}
_TYPES: Final[dict[str, ReceiptType]] = {"purchase": "SALE", "refund": "REFUND", "void": "VOID"}
_OUTCOMES: Final[dict[str, Outcome]] = {
    "approved": "APPROVED",
    "declined": "DECLINED",
    "not_completed": "NOT COMPLETED",
}
_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True, hide_input_in_errors=True)


def safe_masked_pan(value: str, *, last4_only: bool = False) -> str:
    """``value`` (a masked PAN) with nothing visible that :func:`paycore.pan.mask_pan`
    would hide: a digit survives only where ``mask_pan`` of a string that long shows one,
    everything else (digits, separators, mask characters) becomes ``*``. A correctly
    masked PAN comes back unchanged; a clear PAN that slipped in comes back masked.

    ``last4_only`` hides everything but the last four digits (a customer copy).
    """
    keep = mask_pan("1" * len(value))  # where mask_pan leaves a digit for this length
    out = [
        ch if ch in "0123456789" and shown != "*" else "*"
        for ch, shown in zip(value, keep, strict=True)
    ]
    if last4_only:
        out = ["*"] * max(0, len(out) - 4) + out[-4:]
    return "".join(out)


class MerchantSettings(BaseModel):
    """The merchant block of every receipt (``[receipts]`` in the agent's configuration)."""

    model_config = _STRICT
    name: Annotated[str, Field(min_length=1, max_length=64)]
    address: Annotated[tuple[str, ...], Field(strict=False, max_length=4)] = ()
    merchant_id: Annotated[str, Field(min_length=1, max_length=15)]
    terminal_id: Annotated[str, Field(min_length=1, max_length=16)]
    #: IANA time zone the date and time are printed in.
    timezone: str = "UTC"
    #: Customer copies show only the last four PAN digits (the merchant copy shows 6+4).
    customer_pan_last4_only: bool = True


class Receipt(BaseModel):
    """One copy of one transaction's receipt: every value already in printable form.

    There is deliberately no field for a clear PAN; ``masked_pan`` is checked to show no
    more than the first six and last four digits.
    """

    model_config = _STRICT
    copy_of: Copy
    merchant_name: str
    merchant_address: tuple[str, ...]
    merchant_id: str
    terminal_id: str
    local_id: int
    timestamp: dt.datetime
    transaction_type: ReceiptType
    amount: int
    currency: str
    amount_text: str
    masked_pan: str | None
    application_label: str | None
    aid: str | None
    entry_mode: Literal["CHIP"] = "CHIP"
    cvm: Cvm
    tvr: str | None
    tsi: str | None
    cryptogram_type: CryptogramType | None
    cryptogram: str | None
    authorization_code: str | None
    response_code: str | None
    host_reference: str | None
    outcome: Outcome
    reason: str | None
    signature_line: bool
    reversal_queued: bool

    @field_validator("masked_pan")
    @classmethod
    def _masked_only(cls, value: str | None) -> str | None:
        if value is not None and safe_masked_pan(value) != value:
            raise ValueError("masked_pan shows more than the first six and last four digits")
        return value

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError("timestamp must carry its time zone")
        return value

    @property
    def cvm_text(self) -> str:
        return CVM_TEXT[self.cvm]

    @property
    def copy_text(self) -> str:
        return "CUSTOMER COPY" if self.copy_of == "customer" else "MERCHANT COPY"


def _cvm(record: TransactionRecord, result: PaymentResult) -> Cvm:
    """The CVM from the CVM Results (tag 9F34, EMV Book 3 Annex C3) and the journal.

    Online PIN is "verified" only when the issuer approved; before that it was entered.
    """
    raw = bytes.fromhex(record.cvm) if record.cvm else b""
    code = raw[0] & 0x3F if raw else 0x3F
    failed = len(raw) == 3 and raw[2] == 0x01
    online_pin = code == 0x02 or any(state == "pin_captured" for state, _ in record.history)
    if online_pin:
        if result.status == "approved":
            return "pin_verified"
        return "pin_failed" if result.response_code == "55" else "pin_entered"
    if code in (0x03, 0x05):
        return "pin_failed" if failed else "pin_and_signature"
    if code in (0x01, 0x04):
        return "pin_failed" if failed else "pin_verified"
    if code == 0x1E or result.signature_required:
        return "signature"
    return "no_cvm"


def _cryptogram(
    record: TransactionRecord, result: PaymentResult
) -> tuple[CryptogramType | None, str | None]:
    """TC when the card completed with one, else the ARQC sent online, else the card's
    offline answer (AAC when declined)."""
    if record.tc:
        return "TC", record.tc
    if record.arqc:
        return "ARQC", record.arqc
    if result.cryptogram:
        return ("TC" if result.status == "approved" else "AAC"), result.cryptogram
    return None, None


def _reason(result: PaymentResult) -> str | None:
    if result.status == "approved":
        return None
    if result.status == "declined":
        if result.response_code and result.response_code in RESPONSE_TEXT:
            return RESPONSE_TEXT[result.response_code]
        text = result.message.removeprefix("DECLINED").lstrip(": ").strip()
        return text or "Declined"
    return result.message.removeprefix("Not completed:").strip() or "Not completed"


def _first(*values: str | None) -> str | None:
    return next((v for v in values if v), None)


def receipt_for(
    record: TransactionRecord, result: PaymentResult, merchant: MerchantSettings, copy: Copy
) -> Receipt:
    """The ``copy`` ("customer" or "merchant") receipt of one transaction.

    ``record`` and ``result`` must describe the same transaction (local id and idempotency
    key), else :class:`ReceiptDataError`. Values the card gave at the end (the result) are
    preferred to those journaled at card read; host values come from the journal.
    """
    if (record.local_id, record.idempotency_key) != (result.local_id, result.idempotency_key):
        raise ReceiptDataError("the payment result is not for this journal record")
    try:
        amount_text = by_alpha(record.currency).format(record.amount)
        zone = zoneinfo.ZoneInfo(merchant.timezone)
    except CodecError as exc:
        raise ReceiptDataError("the transaction currency is not known") from exc
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ReceiptDataError("the merchant time zone is not known") from exc

    masked = _first(result.masked_pan, record.masked_pan)
    if masked is not None:
        last4 = copy == "customer" and merchant.customer_pan_last4_only
        masked = safe_masked_pan(masked, last4_only=last4)
    outcome = _OUTCOMES[result.status]
    cvm = _cvm(record, result)
    kind, cryptogram = _cryptogram(record, result)
    try:
        return Receipt(
            copy_of=copy,
            merchant_name=merchant.name,
            merchant_address=merchant.address,
            merchant_id=merchant.merchant_id,
            terminal_id=merchant.terminal_id,
            local_id=record.local_id,
            timestamp=record.created_at.astimezone(zone),
            transaction_type=_TYPES[record.transaction_type],
            amount=record.amount,
            currency=record.currency,
            amount_text=amount_text,
            masked_pan=masked,
            application_label=_first(result.application_label, record.application_label),
            aid=_first(result.aid, record.aid),
            cvm=cvm,
            tvr=_first(result.tvr, record.tvr),
            tsi=_first(result.tsi, record.tsi),
            cryptogram_type=kind,
            cryptogram=cryptogram,
            authorization_code=_first(result.authorization_code, record.authorization_code),
            response_code=_first(result.response_code, record.response_code),
            host_reference=record.host_reference or None,
            outcome=outcome,
            reason=_reason(result),
            signature_line=(
                copy == "merchant"
                and outcome == "APPROVED"
                and cvm in ("signature", "pin_and_signature")
            ),
            reversal_queued=result.reversal_queued or record.state == "reversal_pending",
        )
    except ValidationError as exc:  # input hidden; only the field names are kept
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise ReceiptDataError(f"receipt fields not valid: {fields}") from None
