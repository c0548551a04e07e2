"""Field mapping between :mod:`paycore.wire` messages and ISO 8583:1987 data elements.

Used by both ends: the connector builds requests and reads responses; the acquirer
simulator reads requests and builds responses. docs/iso8583.md has the table.

Requests (0100/0200 authorisation or financial, 0400 void, 0420/0421 reversal advice)::

    DE2 PAN            DE3 processing code      DE4 amount (minor units, 12 digits)
    DE7 transmission   DE11 STAN (terminal's)   DE12/13 local time/date (terminal's clock)
    DE14 expiry YYMM   DE22 POS entry mode      DE23 PAN sequence number (0 + 2 digits)
    DE25 POS condition DE32 acquirer id         DE35 track 2 equivalent (no F pad)
    DE37 RRN           DE41 terminal id (ans8)  DE42 merchant id (ans15)
    DE49 currency      DE52 PIN block (zone)    DE55 ICC data (BER-TLV)
    DE90 original data elements (0400, 0420, 0421)

Responses: DE38 authorisation code, DE39 response code, DE37 RRN, DE55 with tag 91
(issuer authentication data) and templates 71/72 (issuer scripts).

Processing codes (DE3, ``TTFFTT``): purchase ``000000``, refund ``200000``; a void or a
reversal carries the processing code of what it undoes. POS entry mode (DE22): ``05``
(integrated circuit card) and the PIN entry capability digit (``1`` = can accept online
PINs, a setting). POS condition code (DE25): ``00`` (normal presentment).

Reversal reason (DE39 in a 0420/0421, acquirer-specific, table :data:`REVERSAL_REASONS`):
``68`` response received too late, ``17`` customer cancellation, ``06`` error.
Reversal outcome (DE39 in a 0430): ``00`` reversed, ``94`` duplicate (already reversed),
``25`` unable to locate the original.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, Literal

from pydantic import SecretStr, ValidationError

from gateway_bridge.connectors.base import ReversalOutcome
from gateway_bridge.connectors.iso8583.dialects import Fields
from gateway_bridge.connectors.iso8583.errors import MessageDecodeError
from gateway_bridge.connectors.iso8583.stan import local_date, local_time
from paycore import tlv
from paycore.currency import by_alpha, by_numeric
from paycore.errors import CodecError
from paycore.wire import AuthorizationRequest, AuthorizationResponse, EncryptedPinBlock

__all__ = [
    "APPROVAL_CODES",
    "DISPLAY_TEXT",
    "OUTCOME_CODES",
    "REVERSAL_REASONS",
    "Identity",
    "authorization_request_from_fields",
    "authorization_response_fields",
    "build_financial_request",
    "cvm_from_icc",
    "mti_class",
    "parse_authorization_response",
    "processing_code",
    "response_mti",
    "reversal_outcome",
]

PURCHASE: Final = "000000"
REFUND: Final = "200000"
APPROVAL_CODES: Final = frozenset({"00", "08", "10", "11"})
#: Cardholder-facing text for the common response codes (ISO 8583:1987 DE39 values).
DISPLAY_TEXT: Final[Mapping[str, str]] = {
    "00": "APPROVED",
    "01": "REFER TO ISSUER",
    "05": "DO NOT HONOUR",
    "08": "APPROVED WITH ID",
    "10": "PARTIAL APPROVAL",
    "11": "APPROVED (VIP)",
    "12": "INVALID TRANSACTION",
    "13": "INVALID AMOUNT",
    "14": "INVALID CARD NUMBER",
    "25": "ORIGINAL NOT FOUND",
    "30": "FORMAT ERROR",
    "41": "LOST CARD",
    "43": "STOLEN CARD",
    "51": "INSUFFICIENT FUNDS",
    "54": "EXPIRED CARD",
    "55": "INCORRECT PIN",
    "57": "NOT PERMITTED",
    "61": "EXCEEDS LIMIT",
    "62": "RESTRICTED CARD",
    "65": "EXCEEDS FREQUENCY",
    "75": "PIN TRIES EXCEEDED",
    "91": "ISSUER UNAVAILABLE",
    "94": "DUPLICATE",
    "96": "SYSTEM ERROR",
}
REVERSAL_REASONS: Final[Mapping[str, str]] = {
    "host_timeout": "68",
    "cancelled": "17",
    "card_declined": "06",
    "card_removed": "06",
    "terminal_error": "06",
}
OUTCOME_CODES: Final[Mapping[ReversalOutcome, str]] = {
    "reversed": "00",
    "already_reversed": "94",
    "unknown_original": "25",
}

_TAG_IAD: Final = 0x91
_SCRIPT_TAGS: Final = frozenset({0x71, 0x72})
_TAG_CVM_RESULTS: Final = 0x9F34


class Identity:
    """The card acceptor as the acquirer knows it: DE41, DE42, DE32 (fixed-width, padded)."""

    __slots__ = ("acquirer_id", "merchant_id", "terminal_id")

    def __init__(self, terminal_id: str, merchant_id: str, acquirer_id: str = "") -> None:
        if not 1 <= len(terminal_id) <= 8 or not terminal_id.isprintable():
            raise ValueError("DE41 terminal id is 1 to 8 printable characters")
        if not 1 <= len(merchant_id) <= 15 or not merchant_id.isprintable():
            raise ValueError("DE42 merchant id is 1 to 15 printable characters")
        if acquirer_id and not (len(acquirer_id) <= 11 and acquirer_id.isdigit()):
            raise ValueError("DE32 acquirer id is up to 11 digits")
        self.terminal_id = terminal_id.ljust(8)
        self.merchant_id = merchant_id.ljust(15)
        self.acquirer_id = acquirer_id


def mti_class(mti: str) -> str:
    """The message class of an MTI (``"0100"`` and ``"0110"`` -> ``"01"``)."""
    return mti[:2]


def response_mti(mti: str) -> str:
    """The response MTI for a request (``0100`` -> ``0110``; ``0421`` -> ``0430``)."""
    return f"{mti[:2]}{int(mti[2]) + 1}0"


def processing_code(transaction_type: Literal["purchase", "refund", "void"]) -> str:
    return REFUND if transaction_type == "refund" else PURCHASE


def build_financial_request(
    *,
    mti: str,
    request: AuthorizationRequest,
    identity: Identity,
    transmission: str,
    pin_block_hex: str | None,
    pin_entry_capability: str,
    rrn: str,
) -> Fields:
    """The data elements of an 0100/0200 for ``request`` (a purchase or a refund)."""
    fields: Fields = {
        "t": mti,
        "2": request.pan.digits,
        "3": processing_code(request.transaction_type),
        "4": f"{request.amount:012d}",
        "7": transmission,
        "11": f"{request.stan:06d}",
        "12": local_time(request.terminal_time),
        "13": local_date(request.terminal_time),
        "14": request.expiry,
        "22": f"05{pin_entry_capability}",
        "25": "00",
        "37": rrn,
        "41": identity.terminal_id,
        "42": identity.merchant_id,
        "49": by_alpha(request.currency).numeric,
    }
    if request.pan_sequence_number is not None:
        fields["23"] = f"0{request.pan_sequence_number}"
    if identity.acquirer_id:
        fields["32"] = identity.acquirer_id
    if request.track2_equivalent is not None:
        fields["35"] = request.track2_equivalent.get_secret_value().rstrip("F")
    if pin_block_hex is not None:
        fields["52"] = pin_block_hex
    if request.emv_data:
        fields["55"] = request.emv_data
    return fields


def _icc_response(value: str) -> tuple[str | None, str | None]:
    """(tag 91 value, encoded 71/72 templates) from response DE55, as upper-case hex."""
    try:
        objects = tlv.decode(bytes.fromhex(value))
    except (ValueError, CodecError):
        raise MessageDecodeError("ICC data is not BER-TLV", field="55") from None
    iad = next((o.data.hex().upper() for o in objects if o.tag == _TAG_IAD), None)
    scripts = tlv.encode(o for o in objects if o.tag in _SCRIPT_TAGS).hex().upper()
    return iad, scripts or None


def parse_authorization_response(fields: Mapping[str, str]) -> AuthorizationResponse:
    """An :class:`AuthorizationResponse` from an 0110/0210/0410; MessageDecodeError if unusable."""
    code = fields.get("39")
    if code is None:
        raise MessageDecodeError("response has no response code", field="39")
    iad, scripts = _icc_response(fields["55"]) if fields.get("55") else (None, None)
    auth_code = fields.get("38")
    reference = fields.get("37", "").strip() or None
    try:
        return AuthorizationResponse(
            response_code=code,
            approved=code in APPROVAL_CODES,
            authorization_code=auth_code if auth_code and auth_code.strip() else None,
            issuer_authentication_data=iad,
            issuer_scripts=scripts,
            host_reference=reference,
            display_text=DISPLAY_TEXT.get(code, ""),
        )
    except ValidationError as exc:
        where = ",".join(str(e["loc"][0]) for e in exc.errors() if e["loc"])
        raise MessageDecodeError("response element not valid", field=where or None) from None


def reversal_outcome(fields: Mapping[str, str]) -> ReversalOutcome | None:
    """What a 0430 says: reversed, already reversed, unknown original; None = not acknowledged."""
    code = fields.get("39")
    for outcome, value in OUTCOME_CODES.items():
        if code == value:
            return outcome
    return None


# -- the acquirer's side (the simulator) --------------------------------------------------------


def cvm_from_icc(emv_data: str) -> Literal["offline_pin", "signature", "no_cvm"] | None:
    """The CVM the card reports in CVM Results (9F34, EMV Book 3 C3 / Book 4 A4), if any."""
    try:
        values = tlv.flatten(tlv.decode(bytes.fromhex(emv_data)))
    except (ValueError, CodecError):
        return None
    results = values.get(_TAG_CVM_RESULTS)
    if not results:
        return None
    method = results[0] & 0x3F
    if method in (0x01, 0x03, 0x04, 0x05):
        return "offline_pin"
    if method == 0x1E:
        return "signature"
    if method == 0x1F:
        return "no_cvm"
    return None


def _required(fields: Mapping[str, str], key: str) -> str:
    value = fields.get(key)
    if value is None:
        raise MessageDecodeError("mandatory element missing", field=key)
    return value


def _digits(fields: Mapping[str, str], key: str) -> str:
    value = _required(fields, key)
    if not re.fullmatch(r"[0-9]+", value):
        raise MessageDecodeError("element is not numeric", field=key)
    return value


def _terminal_time(fields: Mapping[str, str], now: datetime) -> datetime:
    date, time = _digits(fields, "13"), _digits(fields, "12")
    try:
        return datetime.strptime(f"{now.year}{date}{time}", "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise MessageDecodeError("local date or time not valid", field="13") from None


def _key_part(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._:-]", "", value)


def authorization_request_from_fields(
    fields: Mapping[str, str],
    *,
    zone_format: Literal[0, 4],
    now: datetime,
    transaction_type: Literal["purchase", "refund", "void"],
    original_message_id: str | None = None,
) -> AuthorizationRequest:
    """The :class:`AuthorizationRequest` an acquirer forwards to its issuer for a request.

    The PIN block (DE52) stays enciphered under the zone PIN key; it travels in an
    :class:`EncryptedPinBlock` whose KSN is all zeros (a zone key is static) and whose
    format is the zone format. MessageDecodeError names the element that is missing or bad.
    """
    pin_block = None
    icc = fields.get("55", "")
    if "52" in fields:
        pin_block = EncryptedPinBlock(
            format=zone_format, ksn="0" * 20, block=SecretStr(fields["52"].upper())
        )
        cvm: str = "online_pin"
    else:
        cvm = cvm_from_icc(icc) or "no_cvm"
    psn = fields.get("23")
    track2 = fields.get("35")
    stan = _digits(fields, "11")
    terminal = _key_part(_required(fields, "41"))
    try:
        currency = by_numeric(_digits(fields, "49")).alpha
        return AuthorizationRequest.model_validate(
            {
                "transaction_type": transaction_type,
                "amount": int(_digits(fields, "4")),
                "currency": currency,
                "idempotency_key": f"acq:{terminal}:{stan}:{_key_part(fields.get('37', ''))}",
                "stan": int(stan),
                "terminal_time": _terminal_time(fields, now),
                "pan": _digits(fields, "2"),
                "pan_sequence_number": psn[-2:] if psn else None,
                "expiry": _digits(fields, "14"),
                "track2_equivalent": SecretStr(track2) if track2 else None,
                "emv_data": icc.upper(),
                "cvm": cvm,
                "pin_block": pin_block,
                "original_message_id": original_message_id,
            }
        )
    except ValidationError as exc:
        where = ",".join(str(e["loc"][0]) for e in exc.errors() if e["loc"])
        raise MessageDecodeError("request element not valid", field=where or None) from None
    except CodecError as exc:
        raise MessageDecodeError("request element not valid", field=exc.field) from None


#: Elements an acquirer echoes from the request into its response.
ECHOED: Final[tuple[str, ...]] = (
    "3",
    "4",
    "7",
    "11",
    "12",
    "13",
    "32",
    "37",
    "41",
    "42",
    "49",
    "90",
)


def authorization_response_fields(
    request: Mapping[str, str], response: AuthorizationResponse
) -> Fields:
    """The 0110/0210/0410 answering ``request`` with the issuer's ``response``."""
    fields: Fields = {"t": response_mti(request["t"])}
    fields.update({key: request[key] for key in ECHOED if key in request})
    fields["39"] = response.response_code
    if response.authorization_code is not None:
        fields["38"] = response.authorization_code
    icc = b""
    if response.issuer_authentication_data:
        icc += tlv.encode(
            [tlv.Tlv.primitive(_TAG_IAD, bytes.fromhex(response.issuer_authentication_data))]
        )
    if response.issuer_scripts:
        icc += bytes.fromhex(response.issuer_scripts)
    if icc:
        fields["55"] = icc.hex().upper()
    return fields
