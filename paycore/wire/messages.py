"""The application messages carried by the broker (DESIGN sections 3 and 4).

Requests and responses travel encrypted inside an :class:`~paycore.wire.envelope.Envelope`;
status messages are plain JSON on the retained status topics and hold no card data.

Every model is strict, frozen and forbids unknown fields; validation errors never echo the
input. Card data fields (PAN, track 2 equivalent, PIN block) are masked in ``repr``, ``str``
and in any dump, unless the dump is made with the :data:`REVEAL` context, which only the
envelope uses when it encrypts a body.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal, TypeAlias, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FieldSerializationInfo,
    SecretStr,
    ValidationError,
    field_serializer,
    model_validator,
)

from paycore.currency import by_alpha
from paycore.errors import CodecError
from paycore.pan import Pan
from paycore.wire.topics import TERMINAL_ID_PATTERN

#: Serialisation context that shows card data in the clear: for sealing an envelope only.
REVEAL: dict[str, bool] = {"reveal_card_data": True}

STRICT = ConfigDict(
    frozen=True,
    extra="forbid",
    strict=True,
    hide_input_in_errors=True,
    validate_default=True,
)


class MessageError(CodecError):
    """A payload that is not a valid message of this protocol. Names fields, never values."""

    @classmethod
    def from_validation(cls, what: str, exc: ValidationError) -> MessageError:
        fields = sorted({".".join(str(p) for p in err["loc"]) or "(root)" for err in exc.errors()})
        return cls(f"invalid {what}", field=", ".join(fields[:5]))


def _hex(max_bytes: int) -> AfterValidator:
    pattern = re.compile(rf"^(?:[0-9A-F]{{2}}){{0,{max_bytes}}}$")

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError("expected upper-case hex of whole bytes")
        return value

    return AfterValidator(check)


def _currency(value: str) -> str:
    by_alpha(value)  # raises CodecError (a ValueError) for an unknown code
    return value


def _reveal(info: FieldSerializationInfo) -> bool:
    context = info.context
    return isinstance(context, dict) and bool(context.get("reveal_card_data"))


Hex = Annotated[str, _hex(4096)]
MessageId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
TerminalId = Annotated[str, Field(pattern=TERMINAL_ID_PATTERN)]
IdempotencyKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$"), AfterValidator(_currency)]
#: Minor units; 12 digits is the ISO 8583 amount field (DE4) and the EMV 9F02 range.
Amount = Annotated[int, Field(gt=0, le=999_999_999_999)]
TransactionType = Literal["purchase", "refund", "void"]
Cvm = Literal["online_pin", "offline_pin", "signature", "offline_pin_and_signature", "no_cvm"]


class Message(BaseModel):
    model_config = STRICT


class EncryptedPinBlock(Message):
    """An ISO 9564 PIN block as the PIN pad produced it, enciphered under its DUKPT PIN key."""

    format: Literal[0, 3, 4]
    ksn: Annotated[str, Field(pattern=r"^(?:[0-9A-F]{20}|[0-9A-F]{24})$")]
    block: SecretStr

    @model_validator(mode="after")
    def _block_shape(self) -> EncryptedPinBlock:
        size = 32 if self.format == 4 else 16
        if not re.fullmatch(rf"[0-9A-F]{{{size}}}", self.block.get_secret_value()):
            raise ValueError(f"format {self.format} PIN block must be {size} hex digits")
        return self

    @field_serializer("block")
    def _dump_block(self, value: SecretStr, info: FieldSerializationInfo) -> str:
        return value.get_secret_value() if _reveal(info) else str(value)


class AuthorizationRequest(Message):
    """What the terminal asks the host to authorise (sale, refund or void)."""

    transaction_type: TransactionType
    amount: Amount
    currency: CurrencyCode
    idempotency_key: IdempotencyKey
    reference: Annotated[str, Field(max_length=64)] = ""
    stan: Annotated[int, Field(ge=1, le=999_999)]
    terminal_time: datetime
    pan: Pan
    pan_sequence_number: Annotated[str, Field(pattern=r"^[0-9]{2}$")] | None = None
    expiry: Annotated[str, Field(pattern=r"^[0-9]{2}(0[1-9]|1[0-2])$")]
    track2_equivalent: SecretStr | None = None
    emv_data: Hex
    cvm: Cvm
    pin_block: EncryptedPinBlock | None = None
    entry_mode: Literal["chip"] = "chip"
    original_message_id: MessageId | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AuthorizationRequest:
        if (self.cvm == "online_pin") != (self.pin_block is not None):
            raise ValueError("a PIN block goes with online PIN, and only with it")
        if self.transaction_type == "void" and self.original_message_id is None:
            raise ValueError("a void names the message id of the purchase it voids")
        if self.track2_equivalent is not None and not re.fullmatch(
            r"[0-9]{12,19}D[0-9]{4,}F?", self.track2_equivalent.get_secret_value()
        ):
            raise ValueError("track 2 equivalent data is malformed")
        return self

    @field_serializer("pan")
    def _dump_pan(self, value: Pan, info: FieldSerializationInfo) -> str:
        return value.digits if _reveal(info) else value.masked

    @field_serializer("track2_equivalent")
    def _dump_track2(self, value: SecretStr | None, info: FieldSerializationInfo) -> str | None:
        if value is None:
            return None
        return value.get_secret_value() if _reveal(info) else str(value)


class AuthorizationResponse(Message):
    """The host's answer; ``approved`` and ``response_code`` agree (00, 08, 10, 11 approve)."""

    response_code: Annotated[str, Field(pattern=r"^[0-9A-Z]{2}$")]
    approved: bool
    authorization_code: Annotated[str, Field(pattern=r"^[0-9A-Z ]{6}$")] | None = None
    issuer_authentication_data: Annotated[str, _hex(16)] | None = None
    issuer_scripts: Annotated[str, _hex(512)] | None = None
    host_reference: Annotated[str, Field(pattern=r"^[0-9A-Za-z]{1,12}$")] | None = None
    display_text: Annotated[str, Field(max_length=64)] = ""


class ReversalRequest(Message):
    """Undo an authorisation whose outcome the cardholder did not see completed.

    ``original_idempotency_key`` names the original for certain: a terminal whose first
    envelope was lost and whose resend was authorised knows only the ids it sent, and
    ``original_message_id`` may be one the bridge never saw.
    """

    original_message_id: MessageId
    original_idempotency_key: IdempotencyKey | None = None
    idempotency_key: IdempotencyKey
    reason: Literal["host_timeout", "card_declined", "card_removed", "cancelled", "terminal_error"]
    amount: Amount
    currency: CurrencyCode


class ReversalResponse(Message):
    """``accepted``: the bridge has journaled the reversal and will deliver it to the host
    (the host did not answer yet); the terminal's part is done either way."""

    original_message_id: MessageId
    outcome: Literal["reversed", "already_reversed", "unknown_original", "accepted"]


class BatchTotal(Message):
    """One line of a batch: how many transactions of a type, and their sum, in a currency."""

    transaction_type: TransactionType
    currency: CurrencyCode
    count: Annotated[int, Field(ge=0, le=10_000_000)]
    amount: Annotated[int, Field(ge=0, le=999_999_999_999_999)]


_TYPE_ORDER: tuple[str, ...] = ("purchase", "refund", "void")


def batch_differences(
    terminal: Sequence[BatchTotal], other: Sequence[BatchTotal], *, other_name: str
) -> list[str]:
    """One line of plain words per (type, currency) where the terminal's batch totals and
    ``other``'s differ (repeated lines add up; a missing line counts as none), by currency
    then type: ``purchase GBP: terminal 2 for 25.00 GBP, bridge 3 for 37.00 GBP``."""

    def index(lines: Sequence[BatchTotal]) -> dict[tuple[str, str], tuple[int, int]]:
        out: dict[tuple[str, str], tuple[int, int]] = {}
        for line in lines:
            count, amount = out.get((line.transaction_type, line.currency), (0, 0))
            out[(line.transaction_type, line.currency)] = (
                count + line.count,
                amount + line.amount,
            )
        return out

    ours, theirs = index(terminal), index(other)
    keys = sorted(ours.keys() | theirs.keys(), key=lambda k: (k[1], _TYPE_ORDER.index(k[0])))
    lines: list[str] = []
    for kind, currency in keys:
        a, b = ours.get((kind, currency), (0, 0)), theirs.get((kind, currency), (0, 0))
        if a != b:
            money = by_alpha(currency).format
            lines.append(
                f"{kind} {currency}: terminal {a[0]} for {money(a[1])}, "
                f"{other_name} {b[0]} for {money(b[1])}"
            )
    return lines


class BatchCloseRequest(Message):
    """End of day from the terminal: its batch's completed transactions by type and
    currency. The bridge closes the terminal's batch in its own journal at the same moment,
    reconciles it with the acquirer (or the issuer) and compares it with these totals."""

    batch_id: Annotated[int, Field(ge=1)]
    idempotency_key: IdempotencyKey
    closed_at: datetime
    totals: Annotated[tuple[BatchTotal, ...], Field(max_length=64)]


class BatchCloseResponse(Message):
    """The host's view of the same batch, and every difference in plain words."""

    host_batch_id: Annotated[str, Field(min_length=1, max_length=80)]
    status: Literal["in_balance", "out_of_balance", "unreconciled"]
    totals: Annotated[tuple[BatchTotal, ...], Field(max_length=64)]
    differences: Annotated[
        tuple[Annotated[str, Field(max_length=200)], ...], Field(max_length=64)
    ] = ()


class ErrorResponse(Message):
    """A request the bridge could open but will not process (the reason, never card data)."""

    code: Literal["bad_request", "duplicate_conflict", "unavailable"]
    detail: Annotated[str, Field(max_length=200)] = ""


class HealthCheck(Message):
    """One self-test result as the agent reports it (``terminal-agent doctor`` names)."""

    name: Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")]
    status: Literal["ok", "warn", "fail"]
    found: Annotated[str, Field(max_length=300)]


class TerminalStatus(Message):
    """Retained on ``pos/v1/t/{tid}/status``; the will publishes ``state="offline"``.

    ``health`` carries the self-test results the running agent can take without
    disturbing a payment (configuration, keys left, certificate, clock, journal, disk,
    pending reversals), refreshed periodically, so fleet tooling sees what
    ``terminal-agent doctor`` would say.
    """

    terminal_id: TerminalId
    state: Literal["online", "offline"]
    software_version: Annotated[str, Field(max_length=32)] = ""
    reader: Literal["ready", "card_present", "missing", "no_service", "unknown"] = "unknown"
    pinpad: Literal["ready", "missing", "unknown"] = "unknown"
    keys_left: Annotated[int, Field(ge=0)] | None = None
    health: Annotated[tuple[HealthCheck, ...], Field(max_length=20)] = ()
    health_at: datetime | None = None


class BridgeStatus(Message):
    """Retained on ``pos/v1/bridge/status`` (one message for the bridge group)."""

    bridge_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    state: Literal["online", "offline"]
    software_version: Annotated[str, Field(max_length=32)] = ""


Body: TypeAlias = (
    AuthorizationRequest
    | AuthorizationResponse
    | ReversalRequest
    | ReversalResponse
    | BatchCloseRequest
    | BatchCloseResponse
    | ErrorResponse
)
Kind = Literal[
    "auth_request",
    "auth_response",
    "reversal_request",
    "reversal_response",
    "batch_request",
    "batch_response",
    "error",
]

#: Which body model each envelope kind carries.
BODY_MODELS: dict[str, type[Body]] = {
    "auth_request": AuthorizationRequest,
    "auth_response": AuthorizationResponse,
    "reversal_request": ReversalRequest,
    "reversal_response": ReversalResponse,
    "batch_request": BatchCloseRequest,
    "batch_response": BatchCloseResponse,
    "error": ErrorResponse,
}
KIND_OF: dict[type[Body], Kind] = {
    AuthorizationRequest: "auth_request",
    AuthorizationResponse: "auth_response",
    ReversalRequest: "reversal_request",
    ReversalResponse: "reversal_response",
    BatchCloseRequest: "batch_request",
    BatchCloseResponse: "batch_response",
    ErrorResponse: "error",
}
#: Kinds that travel from the terminal to the bridge (sealed with the data_encrypt key).
REQUEST_KINDS = frozenset({"auth_request", "reversal_request", "batch_request"})


M = TypeVar("M", bound=Message)


def decode_json(payload: bytes | str, model: type[M]) -> M:
    """Parse ``payload`` as ``model`` (a status or a body); :class:`MessageError` if it is not."""
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise MessageError.from_validation(model.__name__, exc) from None
