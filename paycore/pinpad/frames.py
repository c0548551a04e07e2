"""PIN pad serial link, frame layer: encode, decode, CRC and a resynchronising reassembler.

Implements section 2 of docs/pinpad-protocol.md (length-framed, no byte stuffing)::

    STX | LEN (2, big-endian) | SEQ | TYPE | CMD | DATA (LEN bytes) | CRC (2, big-endian) | ETX

The CRC is CRC-16/IBM-3740 (better known as CRC-16/CCITT-FALSE: polynomial 0x1021,
initial value 0xFFFF, no reflection, no final XOR; check value 0x29B1 over ``123456789``)
computed over LEN, SEQ, TYPE, CMD and DATA. ACK and NAK are frames of their own with no
data and command 0x00, so a stray 0x06 in line noise is never taken for an acknowledgement.

Everything here is pure: no I/O, no clock, no logging. :class:`FrameReassembler` is fed
bytes as they arrive and returns whole frames; it skips garbage, and a frame that lost a
byte is found to be damaged by its CRC/ETX, or, when nothing follows it, by
:meth:`FrameReassembler.expire` which the caller invokes when the inter-byte timeout runs
out (the clock belongs to the caller).
"""

from __future__ import annotations

import binascii
import enum
from dataclasses import dataclass, field
from typing import Final

from paycore.errors import CodecError

STX: Final = 0x02
ETX: Final = 0x03
HEADER_LEN: Final = 6  # STX, LEN (2), SEQ, TYPE, CMD
TRAILER_LEN: Final = 3  # CRC (2), ETX
OVERHEAD: Final = HEADER_LEN + TRAILER_LEN
MAX_DATA: Final = 1024
"""Largest DATA field; a header announcing more is not a frame start (helps resync)."""


class PinpadProtocolError(CodecError):
    """Bytes that are not a valid PIN pad frame or message. Carries offset and field."""


class IncompleteFrameError(PinpadProtocolError):
    """The bytes are a plausible start of a frame but it is not all there yet."""


class FrameType(enum.IntEnum):
    """The TYPE byte of a frame (protocol section 2.2)."""

    REQUEST = 0x51  # 'Q': host -> pad
    RESPONSE = 0x52  # 'R': pad -> host, answers a request with the same CMD
    EVENT = 0x45  # 'E': pad -> host, unsolicited
    ACK = 0x06
    NAK = 0x15


_TYPES: Final = frozenset(int(t) for t in FrameType)
_CONTROL: Final = frozenset({FrameType.ACK, FrameType.NAK})


def crc16_ccitt_false(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/IBM-3740 (CCITT-FALSE): poly 0x1021, init 0xFFFF, MSB first, no final XOR.

    >>> hex(crc16_ccitt_false(b"123456789"))
    '0x29b1'
    """
    return binascii.crc_hqx(data, crc)


@dataclass(frozen=True, slots=True)
class Frame:
    """One link-layer frame. ``data`` is the DATA field, opaque at this layer."""

    seq: int
    type: FrameType
    command: int
    data: bytes = field(default=b"", repr=False)  # may carry a PAN: never in a repr

    @property
    def is_control(self) -> bool:
        """ACK or NAK."""
        return self.type in _CONTROL


def ack(seq: int) -> Frame:
    """The ACK for the frame numbered ``seq``."""
    return Frame(seq, FrameType.ACK, 0)


def nak(seq: int) -> Frame:
    """A NAK; ``seq`` is informational (the damaged frame's number, or 0 if unknown)."""
    return Frame(seq, FrameType.NAK, 0)


def encode_frame(frame: Frame) -> bytes:
    """The wire bytes of ``frame``; :class:`PinpadProtocolError` if a field is out of range."""
    if not 0 <= frame.seq <= 0xFF:
        raise PinpadProtocolError("sequence number out of range", field="SEQ")
    if not 0 <= frame.command <= 0xFF:
        raise PinpadProtocolError("command code out of range", field="CMD")
    if len(frame.data) > MAX_DATA:
        raise PinpadProtocolError("data longer than MAX_DATA", field="LEN")
    if frame.is_control and (frame.data or frame.command):
        raise PinpadProtocolError("ACK/NAK carry no command or data", field="TYPE")
    body = (
        len(frame.data).to_bytes(2, "big")
        + bytes((frame.seq, frame.type, frame.command))
        + frame.data
    )
    return bytes((STX,)) + body + crc16_ccitt_false(body).to_bytes(2, "big") + bytes((ETX,))


def _check_header(data: bytes) -> int:
    """Validate the header in ``data`` (at least HEADER_LEN bytes); the DATA length."""
    if data[0] != STX:
        raise PinpadProtocolError("frame does not start with STX", offset=0, field="STX")
    length = int.from_bytes(data[1:3], "big")
    if length > MAX_DATA:
        raise PinpadProtocolError("length exceeds MAX_DATA", offset=1, field="LEN")
    if data[4] not in _TYPES:
        raise PinpadProtocolError("unknown frame type", offset=4, field="TYPE")
    if data[4] in _CONTROL and (length or data[5]):
        raise PinpadProtocolError("ACK/NAK with command or data", offset=1, field="LEN")
    return length


def decode_frame(data: bytes) -> tuple[Frame, bytes]:
    """Decode the frame at the start of ``data``; return it and the bytes after it.

    Raises :class:`IncompleteFrameError` when ``data`` is a valid but unfinished start of a
    frame, and :class:`PinpadProtocolError` for anything else that is not a frame.
    """
    data = bytes(data)
    if not data:
        raise IncompleteFrameError("no data", offset=0, field="STX")
    if data[0] != STX:
        raise PinpadProtocolError("frame does not start with STX", offset=0, field="STX")
    if len(data) < HEADER_LEN:
        # Check what is there so that garbage is refused early.
        if len(data) >= 3 and int.from_bytes(data[1:3], "big") > MAX_DATA:
            raise PinpadProtocolError("length exceeds MAX_DATA", offset=1, field="LEN")
        if len(data) >= 5 and data[4] not in _TYPES:
            raise PinpadProtocolError("unknown frame type", offset=4, field="TYPE")
        raise IncompleteFrameError("header incomplete", offset=len(data), field="header")
    length = _check_header(data)
    end = HEADER_LEN + length + TRAILER_LEN
    if len(data) < end:
        raise IncompleteFrameError("frame incomplete", offset=len(data), field="DATA")
    crc_at = HEADER_LEN + length
    if crc16_ccitt_false(data[1:crc_at]) != int.from_bytes(data[crc_at : crc_at + 2], "big"):
        raise PinpadProtocolError("CRC mismatch", offset=crc_at, field="CRC")
    if data[end - 1] != ETX:
        raise PinpadProtocolError("missing ETX", offset=end - 1, field="ETX")
    frame = Frame(
        seq=data[3],
        type=FrameType(data[4]),
        command=data[5],
        data=data[HEADER_LEN:crc_at],
    )
    return frame, data[end:]


@dataclass(frozen=True, slots=True)
class DamagedFrame:
    """A plausible frame header whose frame failed its CRC/ETX or never completed.

    The receiver answers it with a NAK (protocol section 3.2). ``seq`` is as read from the
    damaged header and must not be trusted.
    """

    seq: int
    reason: str


ReassemblyEvent = Frame | DamagedFrame


class FrameReassembler:
    """Turns a byte stream into frames, resynchronising after garbage and lost bytes.

    ``feed`` appends bytes and returns every frame (or damaged frame) now complete. Bytes
    that cannot start a frame are skipped silently; a candidate that fails its CRC/ETX is
    reported as :class:`DamagedFrame` and the search restarts one byte after its STX, so a
    good frame that it swallowed is still found. ``expire`` is called when the inter-byte
    timeout runs out with bytes pending: the unfinished candidate is declared damaged and
    the rest of the buffer is searched again.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.skipped = 0
        """Garbage bytes skipped so far (statistics)."""

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[ReassemblyEvent]:
        """Add ``data``; the frames (and damaged frames) completed by it, in order."""
        self._buffer += data
        return self._extract()

    def expire(self) -> list[ReassemblyEvent]:
        """Inter-byte timeout: give up on the pending candidate, rescan what follows it."""
        if not self._buffer:
            return []
        seq = self._buffer[3] if len(self._buffer) > 3 else 0
        del self._buffer[0]
        events: list[ReassemblyEvent] = [DamagedFrame(seq, "inter-byte timeout")]
        events += self._extract()
        return events

    def reset(self) -> None:
        """Forget everything pending (port reopened)."""
        self._buffer.clear()

    def _extract(self) -> list[ReassemblyEvent]:
        events: list[ReassemblyEvent] = []
        buffer = self._buffer
        while buffer:
            start = buffer.find(STX)
            if start < 0:
                self.skipped += len(buffer)
                buffer.clear()
                break
            if start:
                self.skipped += start
                del buffer[:start]
            try:
                frame, _rest = decode_frame(bytes(buffer[: HEADER_LEN + MAX_DATA + TRAILER_LEN]))
            except IncompleteFrameError:
                break
            except PinpadProtocolError as exc:
                if exc.field in ("CRC", "ETX"):
                    events.append(DamagedFrame(buffer[3], exc.field.lower() + " error"))
                else:
                    self.skipped += 1
                del buffer[0]
                continue
            del buffer[: OVERHEAD + len(frame.data)]
            events.append(frame)
        return events


@dataclass(frozen=True, slots=True)
class LinkTimings:
    """The link timers and retry limit of protocol section 3.4 (seconds).

    Defaults are the protocol's; tests pass shorter ones instead of patching constants.
    """

    inter_byte: float = 0.05
    """A partial frame with no new byte for this long is damaged (receiver NAKs it)."""
    ack_timeout: float = 0.25
    """A sender retransmits a frame not ACKed within this time."""
    max_retries: int = 3
    """Retransmissions after the first attempt before the sender gives up."""
    response_timeout: float = 2.0
    """Host: time from the ACK of a request to its response (GET PIN adds its own timeout)."""
