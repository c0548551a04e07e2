"""Framing: length headers, TPDU, the stream reassembler, and its fuzz."""

from __future__ import annotations

from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_bridge.connectors.iso8583 import (
    ASCII,
    BINARY,
    DIALECTS,
    Frame,
    FrameDecoder,
    Framing,
    FramingError,
    encode_message,
    measure,
)
from gateway_bridge.connectors.iso8583.framing import reply_tpdu

HEADERS: tuple[Literal["2byte", "4ascii", "none"], ...] = ("2byte", "4ascii", "none")
TPDU = bytes.fromhex("6000010002")
ECHO = encode_message(BINARY.spec, {"t": "0800", "11": "000001", "70": "301"})


def _decoder(framing: Framing, name: str = "binary") -> FrameDecoder:
    spec = DIALECTS[name].spec  # type: ignore[index]
    return FrameDecoder(framing, lambda data: measure(spec, data))


def test_header_encodings() -> None:
    assert Framing("2byte").encode(b"\x01" * 300) == b"\x01\x2c" + b"\x01" * 300
    assert Framing("4ascii").encode(b"abc") == b"0003abc"
    assert Framing("none").encode(b"abc") == b"abc"
    # the count covers the TPDU too
    assert Framing("2byte", tpdu=True).encode(b"abc", TPDU) == b"\x00\x08" + TPDU + b"abc"
    assert Framing("4ascii", tpdu=True).encode(b"abc", TPDU) == b"0008" + TPDU + b"abc"


def test_encode_refusals() -> None:
    with pytest.raises(FramingError):
        Framing("2byte").encode(b"abc", TPDU)
    with pytest.raises(FramingError):
        Framing("2byte", tpdu=True).encode(b"abc")
    with pytest.raises(FramingError):
        Framing("2byte", tpdu=True).encode(b"abc", b"\x60\x00")
    with pytest.raises(FramingError):
        Framing("4ascii", max_frame=100).encode(b"x" * 101)
    with pytest.raises(ValueError, match="max_frame"):
        Framing("4ascii", max_frame=10_000)


def test_reply_tpdu_swaps_addresses() -> None:
    assert reply_tpdu(bytes.fromhex("6000010002")) == bytes.fromhex("6000020001")
    with pytest.raises(FramingError):
        reply_tpdu(b"\x60")


@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize("tpdu", [None, TPDU])
def test_frames_come_back_one_byte_at_a_time(header: str, tpdu: bytes | None) -> None:
    framing = Framing(header, tpdu=tpdu is not None)  # type: ignore[arg-type]
    other = encode_message(BINARY.spec, {"t": "0810", "11": "000001", "39": "00", "70": "301"})
    stream = framing.encode(ECHO, tpdu) + framing.encode(other, tpdu)
    decoder = _decoder(framing)
    frames: list[Frame] = []
    for i in range(len(stream)):
        frames += decoder.feed(stream[i : i + 1])
    assert frames == [Frame(tpdu, ECHO), Frame(tpdu, other)]


def test_zero_length_frames_are_keepalives() -> None:
    decoder = _decoder(Framing("2byte"))
    assert decoder.feed(b"\x00\x00\x00\x00" + Framing("2byte").encode(ECHO)) == [Frame(None, ECHO)]


@pytest.mark.parametrize(
    ("framing", "stream"),
    [
        (Framing("4ascii"), b"00x1abc"),
        (Framing("2byte", max_frame=100), b"\x01\x00"),
        (Framing("2byte", tpdu=True), b"\x00\x03abc"),
        # DE2's BCD length byte AA is not decimal: no boundary can be found
        (Framing("none"), bytes.fromhex("02004000000000000000AA")),
    ],
)
def test_broken_headers_raise_and_reset(framing: Framing, stream: bytes) -> None:
    decoder = _decoder(framing)
    with pytest.raises(FramingError):
        decoder.feed(stream)
    # the buffer was dropped: a good frame decodes afterwards (the caller would reconnect)
    good = framing.encode(ECHO, TPDU if framing.tpdu else None)
    assert decoder.feed(good) == [Frame(TPDU if framing.tpdu else None, ECHO)]


def test_no_header_needs_a_measure() -> None:
    with pytest.raises(ValueError, match="measure"):
        FrameDecoder(Framing("none"))


def test_no_header_frame_cap() -> None:
    decoder = _decoder(Framing("none", max_frame=64), "ascii")
    head = encode_message(ASCII.spec, {"t": "0200", "55": "00" * 200})[:30]
    with pytest.raises(FramingError):
        decoder.feed(head + b"0" * 100)


@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize("tpdu", [False, True])
@pytest.mark.parametrize("name", sorted(DIALECTS))
@settings(max_examples=60)
@given(chunks=st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_frame_decoder(header: str, tpdu: bool, name: str, chunks: list[bytes]) -> None:
    framing = Framing(header, tpdu=tpdu, max_frame=512)  # type: ignore[arg-type]
    decoder = _decoder(framing, name)
    for chunk in chunks:
        try:
            frames = decoder.feed(chunk)
        except FramingError:
            continue
        for frame in frames:
            assert frame.message
            assert (frame.tpdu is not None) == tpdu


@pytest.mark.parametrize("header", HEADERS)
@settings(max_examples=40)
@given(
    messages=st.lists(st.binary(min_size=0, max_size=120), min_size=1, max_size=5),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
)
def test_chunking_does_not_matter(header: str, messages: list[bytes], cuts: list[int]) -> None:
    framing = Framing(header, tpdu=True)  # type: ignore[arg-type]
    spec = ASCII.spec
    encoded = [
        encode_message(spec, {"t": "0200", "55": m.hex().upper()} if m else {"t": "0800"})
        for m in messages
    ]
    stream = b"".join(framing.encode(m, TPDU) for m in encoded)
    decoder = _decoder(framing, "ascii")
    frames: list[Frame] = []
    start = 0
    for cut in [*sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]:
        frames += decoder.feed(stream[start:cut])
        start = cut
    assert [f.message for f in frames] == encoded
