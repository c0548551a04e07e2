"""Command table and message codec of the PIN pad protocol (docs/pinpad-protocol.md 4-5)."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore.pinpad import (
    COMMANDS,
    EVENTS,
    STATUS_MEANINGS,
    BeepRequest,
    BeepResponse,
    CancelRequest,
    CancelResponse,
    Command,
    DisplayRequest,
    DisplayResponse,
    FieldLengthError,
    FieldValueError,
    Frame,
    FrameType,
    GetPinRequest,
    GetPinResponse,
    IdentifyRequest,
    IdentifyResponse,
    Key,
    KeyPressedEvent,
    KeyStatusRequest,
    KeyStatusResponse,
    KeyType,
    LoadKeyRequest,
    LoadKeyResponse,
    PinBlockFormat,
    PinpadProtocolError,
    Request,
    Response,
    Status,
    StatusResponse,
    UnknownCommandError,
    decode_event,
    decode_frame,
    decode_request,
    decode_response,
    encode_event,
    encode_frame,
    encode_request,
    encode_response,
    schema,
)

PAN = "5413330089020011"

SAMPLES: dict[Command, tuple[Request, Response]] = {
    Command.IDENTIFY: (
        IdentifyRequest(),
        IdentifyResponse("EMU-1", "SN 0001", "1.2.3", 4, bytes.fromhex("0102030405")),
    ),
    Command.DISPLAY: (DisplayRequest(("TOTAL", "EUR 12.34", "Grüße"), 0), DisplayResponse()),
    Command.GET_PIN: (
        GetPinRequest(
            amount=123456789012,
            currency=978,
            pan=PAN,
            format=PinBlockFormat.ISO4_AES_DUKPT,
            key_slot=1,
            timeout_ms=30_000,
            min_length=4,
            max_length=12,
            bypass_allowed=True,
        ),
        GetPinResponse(PinBlockFormat.ISO4_AES_DUKPT, bytes(range(12)), bytes(range(16))),
    ),
    Command.CANCEL: (CancelRequest(), CancelResponse()),
    Command.BEEP: (BeepRequest(2, 150), BeepResponse()),
    Command.LOAD_KEY: (
        LoadKeyRequest(3, "D0112P0AE00E0000" + "A" * 96),
        LoadKeyResponse(KeyType.AES128_DUKPT, bytes.fromhex("08793E1234")),
    ),
    Command.KEY_STATUS: (
        KeyStatusRequest(2),
        KeyStatusResponse(2, KeyType.TDES_DUKPT, bytes(10), 7, 1_048_568),
    ),
}


def _over_the_wire(frame: Frame) -> Frame:
    decoded, rest = decode_frame(encode_frame(frame))
    assert rest == b""
    return decoded


def test_table_covers_every_command_once() -> None:
    assert [row.code for row in COMMANDS] == list(Command)
    assert set(SAMPLES) == set(Command)
    assert set(STATUS_MEANINGS) == set(Status)
    assert len({row.request for row in COMMANDS}) == len(COMMANDS)
    assert len({row.response for row in COMMANDS}) == len(COMMANDS)
    for row in COMMANDS:
        for cls in (row.request, row.response):
            assert [name for name, _ in schema(cls)] == [f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("code", list(Command))
def test_every_command_round_trips(code: Command) -> None:
    request, response = SAMPLES[code]
    frame = _over_the_wire(encode_request(9, request))
    assert (frame.type, frame.command, frame.seq) == (FrameType.REQUEST, code, 9)
    assert decode_request(frame) == request
    frame = _over_the_wire(encode_response(10, response))
    assert (frame.type, frame.command, frame.data[0]) == (FrameType.RESPONSE, code, Status.OK)
    assert decode_response(frame) == response


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.OK])
def test_status_only_responses(status: Status) -> None:
    answer = StatusResponse(Command.GET_PIN, status)
    frame = _over_the_wire(encode_response(1, answer))
    assert frame.data == bytes((status,))
    assert decode_response(frame) == answer


def test_status_ok_needs_fields() -> None:
    with pytest.raises(PinpadProtocolError):
        encode_response(1, StatusResponse(Command.BEEP, Status.OK))


def test_events_round_trip() -> None:
    assert [row.code for row in EVENTS] == [0x81]
    for key in Key:
        event = KeyPressedEvent(key)
        frame = _over_the_wire(encode_event(3, event))
        assert frame.type is FrameType.EVENT
        assert decode_event(frame) == event
    assert Key.DIGIT_7.digit == "7"
    assert Key.ENTER.digit is None


def test_layout_is_as_documented() -> None:
    request, _ = SAMPLES[Command.GET_PIN]
    data = encode_request(0, request).data
    pan_field = bytes((16,)) + PAN.encode()
    assert data == (
        bytes.fromhex("123456789012")  # amount n12
        + bytes.fromhex("0978")  # currency n4
        + pan_field
        + bytes((0x04, 1))  # format, key slot
        + (30_000).to_bytes(4, "big")
        + bytes((4, 12, 1))
    )


def test_unknown_command() -> None:
    with pytest.raises(UnknownCommandError) as info:
        decode_request(Frame(1, FrameType.REQUEST, 0x7E, b""))
    assert info.value.field == "CMD"
    with pytest.raises(UnknownCommandError):
        decode_event(Frame(1, FrameType.EVENT, 0x01, b"\x0d"))


def test_length_errors() -> None:
    good = encode_request(1, SAMPLES[Command.BEEP][0])
    with pytest.raises(FieldLengthError) as info:
        decode_request(Frame(1, FrameType.REQUEST, Command.BEEP, good.data + b"\x00"))
    assert info.value.offset == 3
    with pytest.raises(FieldLengthError) as info:
        decode_request(Frame(1, FrameType.REQUEST, Command.BEEP, good.data[:2]))
    assert info.value.field == "duration_ms"
    with pytest.raises(FieldLengthError):
        decode_response(Frame(1, FrameType.RESPONSE, Command.BEEP, b""))
    with pytest.raises(FieldLengthError):
        decode_response(Frame(1, FrameType.RESPONSE, Command.BEEP, b"\x13\x00"))


def test_value_errors() -> None:
    request, _ = SAMPLES[Command.GET_PIN]
    data = bytearray(encode_request(0, request).data)
    bad_bcd = bytes(data)
    bad_bcd = b"\x1a" + bad_bcd[1:]
    with pytest.raises(FieldValueError) as info:
        decode_request(Frame(0, FrameType.REQUEST, Command.GET_PIN, bad_bcd))
    assert info.value.field == "amount"
    data[-1] = 2  # bypass_allowed must be 0 or 1
    with pytest.raises(FieldValueError):
        decode_request(Frame(0, FrameType.REQUEST, Command.GET_PIN, bytes(data)))
    data[-1] = 1
    data[9] = ord("X")  # a letter in the PAN
    with pytest.raises(FieldValueError) as info:
        decode_request(Frame(0, FrameType.REQUEST, Command.GET_PIN, bytes(data)))
    assert info.value.field == "pan"
    with pytest.raises(PinpadProtocolError):
        decode_response(Frame(1, FrameType.RESPONSE, Command.BEEP, b"\x55"))


def test_encode_refuses_bad_values_without_quoting_them() -> None:
    request = SAMPLES[Command.GET_PIN][0]
    assert isinstance(request, GetPinRequest)
    with pytest.raises(FieldValueError) as info:
        encode_request(0, dataclasses.replace(request, pan=PAN + "X"))
    assert PAN not in str(info.value)
    assert info.value.field == "pan"
    with pytest.raises(FieldValueError):
        encode_request(0, BeepRequest(256, 1))
    with pytest.raises(FieldValueError):
        encode_request(0, DisplayRequest(("bell\x07",), 0))
    with pytest.raises(FieldValueError):
        encode_request(0, KeyStatusRequest(-1))


def test_reprs_hide_pan_and_pin_block() -> None:
    request, response = SAMPLES[Command.GET_PIN]
    assert PAN not in repr(request)
    assert bytes(range(16)).hex() not in repr(response).lower()
    assert "pin_block" not in repr(response)


amounts = st.integers(0, 10**12 - 1)


@given(
    amount=amounts,
    currency=st.integers(0, 9999),
    pan=st.text("0123456789", min_size=0, max_size=19),
    block_format=st.sampled_from(PinBlockFormat),
    slot=st.integers(0, 255),
    timeout=st.integers(0, 2**32 - 1),
    lengths=st.tuples(st.integers(0, 255), st.integers(0, 255)),
    bypass=st.booleans(),
)
def test_get_pin_request_round_trips(
    amount: int,
    currency: int,
    pan: str,
    block_format: PinBlockFormat,
    slot: int,
    timeout: int,
    lengths: tuple[int, int],
    bypass: bool,
) -> None:
    request = GetPinRequest(
        amount, currency, pan, block_format, slot, timeout, lengths[0], lengths[1], bypass
    )
    assert decode_request(_over_the_wire(encode_request(0, request))) == request


@settings(max_examples=60)
@given(st.sampled_from(list(Command)), st.binary(max_size=64))
def test_decoders_raise_only_their_own_error(code: Command, data: bytes) -> None:
    decoders: list[tuple[FrameType, Any]] = [
        (FrameType.REQUEST, decode_request),
        (FrameType.RESPONSE, decode_response),
        (FrameType.EVENT, decode_event),
    ]
    for frame_type, decoder in decoders:
        for command in (code, 0x81, data[0] if data else 0):
            with contextlib.suppress(PinpadProtocolError):
                decoder(Frame(0, frame_type, command, data))


@settings(max_examples=60)
@given(st.binary(max_size=80))
def test_any_bytes_through_frame_and_message_decoders(data: bytes) -> None:
    try:
        frame, _ = decode_frame(data)
        if frame.type is FrameType.REQUEST:
            decode_request(frame)
        elif frame.type is FrameType.RESPONSE:
            decode_response(frame)
        elif frame.type is FrameType.EVENT:
            decode_event(frame)
    except PinpadProtocolError:
        pass
