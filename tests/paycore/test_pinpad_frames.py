"""Frame layer of the PIN pad protocol (docs/pinpad-protocol.md section 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore.errors import CodecError
from paycore.pinpad import (
    MAX_DATA,
    DamagedFrame,
    DisplayRequest,
    Frame,
    FrameReassembler,
    FrameType,
    IncompleteFrameError,
    PinpadProtocolError,
    ack,
    crc16_ccitt_false,
    decode_frame,
    encode_frame,
    encode_request,
    nak,
)

DOC = (Path(__file__).parents[2] / "docs" / "pinpad-protocol.md").read_text(encoding="utf-8")

DATA_TYPES = [FrameType.REQUEST, FrameType.RESPONSE, FrameType.EVENT]

frames = st.one_of(
    st.builds(
        Frame,
        seq=st.integers(0, 255),
        type=st.sampled_from(DATA_TYPES),
        command=st.integers(0, 255),
        data=st.binary(max_size=64),
    ),
    st.builds(ack, st.integers(0, 255)),
    st.builds(nak, st.integers(0, 255)),
)


def test_crc_known_answers() -> None:
    # CRC-16/IBM-3740 (CCITT-FALSE) check value from the CRC catalogue.
    assert crc16_ccitt_false(b"123456789") == 0x29B1
    assert crc16_ccitt_false(b"") == 0xFFFF
    # Bit by bit, MSB first, from the definition (poly 0x1021, init 0xFFFF, no xorout).
    crc = 0xFFFF
    for byte in b"PIN pad":
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    assert crc16_ccitt_false(b"PIN pad") == crc


def _doc_hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_worked_example_in_the_doc() -> None:
    wire = encode_frame(encode_request(0x12, DisplayRequest(("TOTAL", "EUR 12.34"), 5000)))
    printed = " ".join(f"{b:02X}" for b in wire)
    assert f"On the line: `{printed}`" in DOC
    assert printed.endswith("CB A3 03")
    assert crc16_ccitt_false(wire[1:-3]) == 0xCBA3
    frame, rest = decode_frame(wire)
    assert rest == b""
    assert (frame.seq, frame.type, frame.command, len(frame.data)) == (
        0x12,
        FrameType.REQUEST,
        0x02,
        21,
    )
    for text, frame in (
        ("02 00 00 12 06 00 96 A9 03", ack(0x12)),
        ("02 00 00 12 15 00 C0 89 03", nak(0x12)),
    ):
        assert f"`{text}`" in DOC
        assert encode_frame(frame) == _doc_hex(text)
        assert decode_frame(_doc_hex(text)) == (frame, b"")


@given(frames, st.binary(max_size=20))
def test_frame_round_trip(frame: Frame, tail: bytes) -> None:
    wire = encode_frame(frame)
    assert len(wire) == len(frame.data) + 9
    assert decode_frame(wire + tail) == (frame, tail)


@given(frames)
def test_every_truncation_is_incomplete(frame: Frame) -> None:
    wire = encode_frame(frame)
    for cut in range(len(wire)):
        with pytest.raises(IncompleteFrameError):
            decode_frame(wire[:cut])


@given(frames, st.data())
def test_any_flipped_bit_is_refused(frame: Frame, data: st.DataObject) -> None:
    wire = bytearray(encode_frame(frame))
    index = data.draw(st.integers(0, len(wire) - 1))
    wire[index] ^= 1 << data.draw(st.integers(0, 7))
    # A flipped LEN bit can make the frame look incomplete: still an error, never a frame.
    with pytest.raises(PinpadProtocolError):
        decode_frame(bytes(wire))


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_decode_binary_raises_only_its_own_error(data: bytes) -> None:
    try:
        frame, rest = decode_frame(data)
    except PinpadProtocolError:
        return
    assert encode_frame(frame) + rest == data


def test_protocol_errors_are_codec_errors() -> None:
    with pytest.raises(CodecError) as info:
        decode_frame(b"\x55")
    assert isinstance(info.value, PinpadProtocolError)
    assert isinstance(info.value, ValueError)
    assert (info.value.offset, info.value.field) == (0, "STX")


def test_encode_refuses_out_of_range() -> None:
    with pytest.raises(PinpadProtocolError):
        encode_frame(Frame(256, FrameType.REQUEST, 1))
    with pytest.raises(PinpadProtocolError):
        encode_frame(Frame(1, FrameType.REQUEST, 1, bytes(MAX_DATA + 1)))
    with pytest.raises(PinpadProtocolError):
        encode_frame(Frame(1, FrameType.ACK, 1))
    long_header = b"\x02" + (MAX_DATA + 1).to_bytes(2, "big") + b"\x00\x51\x01"
    with pytest.raises(PinpadProtocolError) as info:
        decode_frame(long_header)
    assert not isinstance(info.value, IncompleteFrameError)
    assert info.value.field == "LEN"


def _frames_in(events: list[Frame | DamagedFrame]) -> list[Frame]:
    return [e for e in events if isinstance(e, Frame)]


def _drain(reassembler: FrameReassembler) -> list[Frame | DamagedFrame]:
    events: list[Frame | DamagedFrame] = []
    while reassembler.pending:
        events += reassembler.expire()
    return events


def _plausible_header(wire: bytes) -> bool:
    try:
        decode_frame(wire[:6])
    except IncompleteFrameError:
        return True
    except PinpadProtocolError:
        return False
    return True


def _is_subsequence(wanted: list[Frame], got: list[Frame]) -> bool:
    remaining = iter(got)
    return all(any(g == w for g in remaining) for w in wanted)


@settings(max_examples=150)
@given(st.lists(st.tuples(st.binary(max_size=24), frames), max_size=6), st.integers(1, 40))
def test_reassembler_skips_garbage(chunks: list[tuple[bytes, Frame]], step: int) -> None:
    stream = b"".join(garbage + encode_frame(frame) for garbage, frame in chunks)
    reassembler = FrameReassembler()
    events: list[Frame | DamagedFrame] = []
    for start in range(0, len(stream), step):  # arrives in pieces of ``step`` bytes
        events += reassembler.feed(stream[start : start + step])
    events += _drain(reassembler)
    assert _is_subsequence([frame for _, frame in chunks], _frames_in(events))
    if all(b"\x02" not in garbage for garbage, _ in chunks):
        assert _frames_in(events) == [frame for _, frame in chunks]


@settings(max_examples=150)
@given(st.lists(st.tuples(frames, st.booleans(), st.integers(0, 10_000)), min_size=1, max_size=6))
def test_reassembler_recovers_from_dropped_bytes(sent: list[tuple[Frame, bool, int]]) -> None:
    """Each frame arrives after a quiet gap (inter-byte timeout); some lost a byte."""
    reassembler = FrameReassembler()
    for frame, damaged, where in sent:
        wire = encode_frame(frame)
        if damaged:
            cut = where % len(wire)
            wire = wire[:cut] + wire[cut + 1 :]
        events = reassembler.feed(wire)
        events += _drain(reassembler)  # the line goes quiet: inter-byte timeout
        if damaged:
            assert frame not in events
            if _plausible_header(wire):  # else it is skipped as garbage; ACK timeout covers it
                assert any(isinstance(e, DamagedFrame) for e in events)
        else:
            assert _frames_in(events) == [frame]


@settings(max_examples=100)
@given(st.lists(st.tuples(frames, st.booleans(), st.integers(0, 10_000)), min_size=1, max_size=6))
def test_reassembler_continuous_stream_with_drops(sent: list[tuple[Frame, bool, int]]) -> None:
    """No gaps between frames: a damaged frame must not hide the good ones after it."""
    stream = b""
    intact = []
    for frame, damaged, where in sent:
        wire = encode_frame(frame)
        if damaged:
            cut = where % len(wire)
            wire = wire[:cut] + wire[cut + 1 :]
        else:
            intact.append(frame)
        stream += wire
    reassembler = FrameReassembler()
    events = reassembler.feed(stream) + _drain(reassembler)
    assert _is_subsequence(intact, _frames_in(events))


def test_frame_repr_hides_data() -> None:
    frame = Frame(1, FrameType.REQUEST, 3, b"5413330089020011")
    assert "5413" not in repr(frame)
