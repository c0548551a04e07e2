"""Framing of ISO 8583 messages on a TCP stream: length header and optional TPDU.

A frame on the wire is ``[length header] [TPDU] message``:

- length header (a setting): ``"2byte"``, an unsigned 16-bit big-endian byte count;
  ``"4ascii"``, four ASCII decimal digits; ``"none"``, no header, the message's end is
  found by walking the dialect's spec (:func:`.dialects.measure`). The count covers the
  TPDU and the message, not the header itself.
- TPDU (optional, 5 bytes): the transport protocol data unit of ISO 8583 terminal
  networks: an id byte (``0x60``), a 2-byte destination and a 2-byte origin address. A
  reply swaps destination and origin (:func:`reply_tpdu`).

:class:`FrameDecoder` is the sans-I/O stream reassembler: bytes in (in any chunks), frames
out. A zero-length frame is skipped (some hosts send one as a keep-alive). When the header
cannot be read (not digits, larger than the maximum, shorter than the TPDU) the stream
has no trustworthy boundary left: :class:`.errors.FramingError` is raised, the buffer is
dropped, and the caller closes the connection. A frame with a good header whose message
does not decode is the message layer's problem; the framing still delivers it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from gateway_bridge.connectors.iso8583.errors import FramingError, MessageDecodeError

__all__ = [
    "TPDU_SIZE",
    "Frame",
    "FrameDecoder",
    "Framing",
    "HeaderKind",
    "reply_tpdu",
]

HeaderKind: TypeAlias = Literal["2byte", "4ascii", "none"]
TPDU_SIZE: Final = 5
_HEADER_SIZE: Final[dict[HeaderKind, int]] = {"2byte": 2, "4ascii": 4, "none": 0}
_HEADER_LIMIT: Final[dict[HeaderKind, int]] = {"2byte": 0xFFFF, "4ascii": 9999, "none": 0xFFFF}


@dataclass(frozen=True, slots=True)
class Framing:
    """How frames are delimited: the header kind, whether a TPDU is present, the size cap."""

    header: HeaderKind = "2byte"
    tpdu: bool = False
    #: Largest TPDU + message accepted or sent, in bytes.
    max_frame: int = 8192

    def __post_init__(self) -> None:
        if not 1 <= self.max_frame <= _HEADER_LIMIT[self.header]:
            raise ValueError("max_frame does not fit the length header")

    def encode(self, message: bytes, tpdu: bytes | None = None) -> bytes:
        """One frame for ``message`` (with ``tpdu`` when the framing has one)."""
        if self.tpdu != (tpdu is not None):
            raise FramingError("TPDU given when the framing has none, or missing", field="tpdu")
        body = (tpdu or b"") + message
        if tpdu is not None and len(tpdu) != TPDU_SIZE:
            raise FramingError("TPDU must be 5 bytes", field="tpdu")
        if not message or len(body) > self.max_frame:
            raise FramingError("message size outside the frame limit", field="length header")
        if self.header == "2byte":
            return len(body).to_bytes(2, "big") + body
        if self.header == "4ascii":
            return f"{len(body):04d}".encode("ascii") + body
        return body


@dataclass(frozen=True, slots=True)
class Frame:
    tpdu: bytes | None
    message: bytes


def reply_tpdu(tpdu: bytes) -> bytes:
    """The TPDU of a reply: same id, destination and origin addresses swapped."""
    if len(tpdu) != TPDU_SIZE:
        raise FramingError("TPDU must be 5 bytes", field="tpdu")
    return tpdu[:1] + tpdu[3:5] + tpdu[1:3]


class FrameDecoder:
    """Reassembles frames from stream chunks (pure: no I/O, no logging).

    ``measure`` is needed for the ``"none"`` header: given the bytes after the TPDU it
    returns the message length, None when more bytes are needed, or raises
    :class:`.errors.MessageDecodeError`.
    """

    def __init__(
        self, framing: Framing, measure: Callable[[bytes], int | None] | None = None
    ) -> None:
        if framing.header == "none" and measure is None:
            raise ValueError("a framing without a length header needs a measure function")
        self._framing = framing
        self._measure = measure
        self._buffer = bytearray()
        self._offset = 0  # stream offset of the buffer's first byte, for error reports

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data``; every frame now complete, in order. FramingError on a broken stream."""
        self._buffer += data
        frames: list[Frame] = []
        while True:
            try:
                size = self._next_frame_size()
            except FramingError:
                self._buffer.clear()
                raise
            if size is None:
                return frames
            header, body = size
            if body == 0:
                self._consume(header)
                continue
            raw = bytes(self._buffer[header : header + body])
            self._consume(header + body)
            if self._framing.tpdu:
                frames.append(Frame(raw[:TPDU_SIZE], raw[TPDU_SIZE:]))
            else:
                frames.append(Frame(None, raw))

    def _consume(self, count: int) -> None:
        del self._buffer[:count]
        self._offset += count

    def _next_frame_size(self) -> tuple[int, int] | None:
        """(header size, body size) of the first complete frame, or None if incomplete."""
        framing = self._framing
        tpdu_size = TPDU_SIZE if framing.tpdu else 0
        header_size = _HEADER_SIZE[framing.header]
        buffer = self._buffer
        if len(buffer) < header_size:
            return None
        if framing.header == "none":
            if len(buffer) <= tpdu_size:
                return None
            assert self._measure is not None  # checked in __init__
            try:
                length = self._measure(bytes(buffer[tpdu_size : framing.max_frame + 1]))
            except MessageDecodeError as exc:
                raise FramingError(
                    "message boundary cannot be found",
                    field=exc.field,
                    offset=self._offset + tpdu_size + (exc.offset or 0),
                ) from None
            if length is None:
                if len(buffer) > framing.max_frame:
                    raise FramingError("frame longer than the maximum", offset=self._offset)
                return None
            body = tpdu_size + length
            if body > framing.max_frame:
                raise FramingError("frame longer than the maximum", offset=self._offset)
            return 0, body
        header = bytes(buffer[:header_size])
        if framing.header == "2byte":
            body = int.from_bytes(header, "big")
        else:
            if not (header.isascii() and header.isdigit()):
                raise FramingError(
                    "length header is not 4 digits", field="length header", offset=self._offset
                )
            body = int(header)
        if body == 0:
            return header_size, 0
        if body > framing.max_frame or body <= tpdu_size:
            raise FramingError(
                "length header out of range", field="length header", offset=self._offset
            )
        if len(buffer) < header_size + body:
            return None
        return header_size, body
