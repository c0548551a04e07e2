"""PIN pad protocol commands: the command table and the generic message codec.

Implements sections 4 and 5 of docs/pinpad-protocol.md. Every command is one row of
:data:`COMMANDS` (code, request class, response class); every event one row of
:data:`EVENTS`. A message class is a frozen dataclass whose fields are annotated with their
wire type (``Annotated[int, U8]``); its DATA layout is those fields in declaration order.
The one generic codec here reads the table; nothing else knows a layout, and a misspelt
field name is a mypy error at the call site.

A response's DATA starts with a :class:`Status` byte. When it is :attr:`Status.OK` the
command's response fields follow; any other status ends the DATA and decodes to
:class:`StatusResponse` (for GET PIN, CANCELLED/TIMEOUT/BYPASSED are such outcomes).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, NamedTuple, TypeVar, get_type_hints

from paycore.pinpad.fields import (
    AMOUNT,
    BOOL,
    BYTES,
    CURRENCY,
    DIGITS,
    LINES,
    LONG_TEXT,
    TEXT,
    U8,
    U16,
    U32,
    Enum,
    FieldLengthError,
    FieldType,
)
from paycore.pinpad.frames import Frame, FrameType, PinpadProtocolError

M = TypeVar("M")


class UnknownCommandError(PinpadProtocolError):
    """A command or event code that is not in the table (status UNKNOWN_COMMAND)."""


class Command(enum.IntEnum):
    """Command codes (CMD byte of REQUEST and RESPONSE frames)."""

    IDENTIFY = 0x01
    DISPLAY = 0x02
    GET_PIN = 0x03
    CANCEL = 0x04
    BEEP = 0x05
    LOAD_KEY = 0x06
    KEY_STATUS = 0x07


class EventCode(enum.IntEnum):
    """Event codes (CMD byte of EVENT frames)."""

    KEY_PRESSED = 0x81


class Status(enum.IntEnum):
    """First byte of every response. 0x0X are outcomes, 0x1X-0x2X refusals."""

    OK = 0x00
    CANCELLED = 0x01
    TIMEOUT = 0x02
    BYPASSED = 0x03
    UNKNOWN_COMMAND = 0x10
    BAD_LENGTH = 0x11
    BAD_VALUE = 0x12
    BUSY = 0x13
    NO_KEY = 0x20
    BAD_SLOT = 0x21
    KEY_BLOCK_TAMPERED = 0x22
    KEY_BLOCK_REFUSED = 0x23
    KEYS_EXHAUSTED = 0x24
    WRONG_KEY_TYPE = 0x25
    INTERNAL_ERROR = 0x7F


STATUS_MEANINGS: Final[dict[Status, str]] = {
    Status.OK: "done",
    Status.CANCELLED: "PIN entry or prompt cancelled (host CANCEL or cardholder cancel key)",
    Status.TIMEOUT: "the cardholder did not finish in time",
    Status.BYPASSED: "the cardholder pressed ENTER with no digits and bypass was allowed",
    Status.UNKNOWN_COMMAND: "command code not supported",
    Status.BAD_LENGTH: "DATA too short or too long for the command",
    Status.BAD_VALUE: "a field has a value the pad does not accept",
    Status.BUSY: "a PIN entry is in progress; only CANCEL is accepted",
    Status.NO_KEY: "the key slot is empty",
    Status.BAD_SLOT: "no such key slot",
    Status.KEY_BLOCK_TAMPERED: "the key block is malformed or fails its MAC under the KBPK",
    Status.KEY_BLOCK_REFUSED: "the key block is authentic but not a DUKPT initial key",
    Status.KEYS_EXHAUSTED: "the DUKPT transaction counter is used up",
    Status.WRONG_KEY_TYPE: "the slot's key does not fit the PIN block format asked for",
    Status.INTERNAL_ERROR: "the pad failed; the command had no effect",
}


class PinBlockFormat(enum.IntEnum):
    """ISO 9564-1 PIN block format, each with its key management."""

    ISO0_TDES_DUKPT = 0x00  # legacy pads: format 0 under TDES DUKPT (X9.24-1)
    ISO4_AES_DUKPT = 0x04  # default: format 4 under AES DUKPT (X9.24-3)


class KeyType(enum.IntEnum):
    """What a key slot holds."""

    EMPTY = 0x00
    AES128_DUKPT = 0x01
    AES256_DUKPT = 0x02
    TDES_DUKPT = 0x03


class Key(enum.IntEnum):
    """Keypad keys reported in KEY_PRESSED events (never during PIN entry)."""

    DIGIT_0 = 0x30
    DIGIT_1 = 0x31
    DIGIT_2 = 0x32
    DIGIT_3 = 0x33
    DIGIT_4 = 0x34
    DIGIT_5 = 0x35
    DIGIT_6 = 0x36
    DIGIT_7 = 0x37
    DIGIT_8 = 0x38
    DIGIT_9 = 0x39
    ENTER = 0x0D
    CANCEL = 0x1B
    CLEAR = 0x08
    F1 = 0xF1
    F2 = 0xF2
    F3 = 0xF3
    F4 = 0xF4

    @property
    def digit(self) -> str | None:
        """'0'..'9' for digit keys, else None."""
        return chr(self.value) if 0x30 <= self.value <= 0x39 else None


# --- requests -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdentifyRequest:
    """Ask who the pad is."""


@dataclass(frozen=True, slots=True)
class DisplayRequest:
    """Show ``lines`` to the customer for ``timeout_ms`` (0: until replaced)."""

    lines: Annotated[tuple[str, ...], LINES]
    timeout_ms: Annotated[int, U32]


@dataclass(frozen=True, slots=True)
class GetPinRequest:
    """Ask the cardholder for a PIN; the pad builds and enciphers the PIN block.

    The PAN is needed for the block (formats 0 and 4 bind it); it is never in a repr.
    """

    amount: Annotated[int, AMOUNT]
    currency: Annotated[int, CURRENCY]
    pan: Annotated[str, DIGITS] = field(repr=False)
    format: Annotated[PinBlockFormat, Enum(PinBlockFormat)]
    key_slot: Annotated[int, U8]
    timeout_ms: Annotated[int, U32]
    min_length: Annotated[int, U8]
    max_length: Annotated[int, U8]
    bypass_allowed: Annotated[bool, BOOL]


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Abort a PIN entry or prompt in progress (harmless when idle)."""


@dataclass(frozen=True, slots=True)
class BeepRequest:
    """Sound the buzzer ``count`` times for ``duration_ms`` each."""

    count: Annotated[int, U8]
    duration_ms: Annotated[int, U16]


@dataclass(frozen=True, slots=True)
class LoadKeyRequest:
    """Load a TR-31 key block (ASCII) enciphered under the pad's KBPK into ``slot``."""

    slot: Annotated[int, U8]
    key_block: Annotated[str, LONG_TEXT] = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeyStatusRequest:
    """Ask what ``slot`` holds."""

    slot: Annotated[int, U8]


# --- responses (status OK) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdentifyResponse:
    """Who the pad is; ``kbpk_kcv`` identifies its key-block protection key."""

    model: Annotated[str, TEXT]
    serial: Annotated[str, TEXT]
    firmware: Annotated[str, TEXT]
    key_slots: Annotated[int, U8]
    kbpk_kcv: Annotated[bytes, BYTES]


@dataclass(frozen=True, slots=True)
class DisplayResponse:
    """The lines are shown."""


@dataclass(frozen=True, slots=True)
class GetPinResponse:
    """A PIN was entered: the enciphered block and the KSN it was enciphered under."""

    format: Annotated[PinBlockFormat, Enum(PinBlockFormat)]
    ksn: Annotated[bytes, BYTES]
    pin_block: Annotated[bytes, BYTES] = field(repr=False)


@dataclass(frozen=True, slots=True)
class CancelResponse:
    """Cancel taken (the cancelled command answers CANCELLED itself)."""


@dataclass(frozen=True, slots=True)
class BeepResponse:
    """Beeped."""


@dataclass(frozen=True, slots=True)
class LoadKeyResponse:
    """The key is loaded; ``kcv`` is its check value (TDES: 3 bytes; AES: CMAC, 5 bytes)."""

    key_type: Annotated[KeyType, Enum(KeyType)]
    kcv: Annotated[bytes, BYTES]


@dataclass(frozen=True, slots=True)
class KeyStatusResponse:
    """A slot's key: its initial key ID (AES) or initial KSN (TDES), counter, keys left."""

    slot: Annotated[int, U8]
    key_type: Annotated[KeyType, Enum(KeyType)]
    key_id: Annotated[bytes, BYTES]
    counter: Annotated[int, U32]
    keys_left: Annotated[int, U32]


@dataclass(frozen=True, slots=True)
class StatusResponse:
    """Any response whose status is not OK: only the status is on the wire."""

    command: int
    """The command code answered (a :class:`Command`, or an unknown code echoed back)."""
    status: Status


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPressedEvent:
    """A key pressed outside PIN entry (menu choice, confirm, cancel)."""

    key: Annotated[Key, Enum(Key)]


Request = (
    IdentifyRequest
    | DisplayRequest
    | GetPinRequest
    | CancelRequest
    | BeepRequest
    | LoadKeyRequest
    | KeyStatusRequest
)
Response = (
    IdentifyResponse
    | DisplayResponse
    | GetPinResponse
    | CancelResponse
    | BeepResponse
    | LoadKeyResponse
    | KeyStatusResponse
)
Event = KeyPressedEvent


class CommandDef(NamedTuple):
    """One row of the command table."""

    code: Command
    request: type[Request]
    response: type[Response]
    long_running: bool
    """The response waits for the cardholder (response timeout = request timeout + margin)."""


class EventDef(NamedTuple):
    """One row of the event table."""

    code: EventCode
    event: type[Event]


COMMANDS: Final[tuple[CommandDef, ...]] = (
    CommandDef(Command.IDENTIFY, IdentifyRequest, IdentifyResponse, False),
    CommandDef(Command.DISPLAY, DisplayRequest, DisplayResponse, False),
    CommandDef(Command.GET_PIN, GetPinRequest, GetPinResponse, True),
    CommandDef(Command.CANCEL, CancelRequest, CancelResponse, False),
    CommandDef(Command.BEEP, BeepRequest, BeepResponse, False),
    CommandDef(Command.LOAD_KEY, LoadKeyRequest, LoadKeyResponse, False),
    CommandDef(Command.KEY_STATUS, KeyStatusRequest, KeyStatusResponse, False),
)
EVENTS: Final[tuple[EventDef, ...]] = (EventDef(EventCode.KEY_PRESSED, KeyPressedEvent),)

BY_CODE: Final[dict[int, CommandDef]] = {row.code: row for row in COMMANDS}
_BY_REQUEST: Final[dict[type[Any], CommandDef]] = {row.request: row for row in COMMANDS}
_BY_RESPONSE: Final[dict[type[Any], CommandDef]] = {row.response: row for row in COMMANDS}
_EVENT_BY_CODE: Final[dict[int, EventDef]] = {row.code: row for row in EVENTS}
_EVENT_BY_CLASS: Final[dict[type[Any], EventDef]] = {row.event: row for row in EVENTS}


_SCHEMAS: dict[type[Any], tuple[tuple[str, FieldType[Any]], ...]] = {}


def schema(cls: type[Any]) -> tuple[tuple[str, FieldType[Any]], ...]:
    """The wire layout of a message class: (field name, field type) in order."""
    cached = _SCHEMAS.get(cls)
    if cached is not None:
        return cached
    hints = get_type_hints(cls, include_extras=True)
    layout = []
    for item in dataclasses.fields(cls):
        metadata = getattr(hints[item.name], "__metadata__", ())
        wire = [m for m in metadata if isinstance(m, FieldType)]
        if len(wire) != 1:
            raise TypeError(f"{cls.__name__}.{item.name} needs exactly one wire type")
        layout.append((item.name, wire[0]))
    _SCHEMAS[cls] = tuple(layout)
    return _SCHEMAS[cls]


def encode_fields(message: object) -> bytes:
    """DATA for ``message`` (a request, response or event class of the tables)."""
    return b"".join(
        wire.encode(getattr(message, name), name) for name, wire in schema(type(message))
    )


def decode_fields(cls: type[M], data: bytes, offset: int = 0) -> M:
    """An instance of ``cls`` from ``data[offset:]``, which it must use up exactly."""
    values: dict[str, Any] = {}
    for name, wire in schema(cls):
        values[name], offset = wire.decode(data, offset, name)
    if offset != len(data):
        raise FieldLengthError("bytes left over after the last field", offset=offset, field="DATA")
    return cls(**values)


def request_code(message: Request) -> Command:
    """The command code of a request message."""
    return _BY_REQUEST[type(message)].code


def encode_request(seq: int, message: Request) -> Frame:
    """The REQUEST frame carrying ``message``."""
    return Frame(seq, FrameType.REQUEST, request_code(message), encode_fields(message))


def encode_response(seq: int, message: Response | StatusResponse) -> Frame:
    """The RESPONSE frame carrying ``message`` (status byte first)."""
    if isinstance(message, StatusResponse):
        if message.status is Status.OK:
            raise PinpadProtocolError("status OK needs the response fields", field="status")
        return Frame(seq, FrameType.RESPONSE, message.command, bytes((message.status,)))
    code = _BY_RESPONSE[type(message)].code
    return Frame(seq, FrameType.RESPONSE, code, bytes((Status.OK,)) + encode_fields(message))


def encode_event(seq: int, message: Event) -> Frame:
    """The EVENT frame carrying ``message``."""
    code = _EVENT_BY_CLASS[type(message)].code
    return Frame(seq, FrameType.EVENT, code, encode_fields(message))


def command_def(code: int) -> CommandDef:
    """The table row for ``code``; :class:`UnknownCommandError` if there is none."""
    try:
        return BY_CODE[code]
    except KeyError:
        raise UnknownCommandError("unknown command code", offset=5, field="CMD") from None


def decode_request(frame: Frame) -> Request:
    """The request message in a REQUEST frame."""
    if frame.type is not FrameType.REQUEST:
        raise PinpadProtocolError("not a request frame", offset=4, field="TYPE")
    row = command_def(frame.command)
    return decode_fields(row.request, frame.data)


def decode_response(frame: Frame) -> Response | StatusResponse:
    """The response message in a RESPONSE frame (status first)."""
    if frame.type is not FrameType.RESPONSE:
        raise PinpadProtocolError("not a response frame", offset=4, field="TYPE")
    if not frame.data:
        raise FieldLengthError("response without status", offset=0, field="status")
    try:
        status = Status(frame.data[0])
    except ValueError:
        raise PinpadProtocolError("unknown status", offset=0, field="status") from None
    if status is not Status.OK:
        # Refusals echo the code received, which may be one the table does not know.
        if len(frame.data) != 1:
            raise FieldLengthError("data after a non-OK status", offset=1, field="DATA")
        known = BY_CODE.get(frame.command)
        return StatusResponse(frame.command if known is None else known.code, status)
    row = command_def(frame.command)
    return decode_fields(row.response, frame.data, 1)


def decode_event(frame: Frame) -> Event:
    """The event message in an EVENT frame."""
    if frame.type is not FrameType.EVENT:
        raise PinpadProtocolError("not an event frame", offset=4, field="TYPE")
    row = _EVENT_BY_CODE.get(frame.command)
    if row is None:
        raise UnknownCommandError("unknown event code", offset=5, field="CMD")
    return decode_fields(row.event, frame.data)
