"""A minimal blocking host side of the PIN pad protocol over pyserial, for tests and bench.

Not the terminal agent's driver (that is a later piece of work): just enough link layer
(docs/pinpad-protocol.md section 3) to drive the emulator over a real pty: reliable send
with retransmission on NAK / ACK timeout, ACK of every pad frame, NAK of damaged ones,
duplicate suppression, responses matched by command code, events collected.
"""

from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass

import serial

from paycore.pinpad import (
    Command,
    DamagedFrame,
    Event,
    Frame,
    FrameReassembler,
    FrameType,
    LinkTimings,
    Request,
    Response,
    StatusResponse,
    ack,
    decode_event,
    decode_response,
    encode_frame,
    encode_request,
    nak,
    request_code,
)

Answer = Response | StatusResponse


class PinpadTimeoutError(Exception):
    """No ACK after every retry, or no response in time."""


class PinpadDisconnectedError(Exception):
    """The serial port went away (pad unplugged)."""


@dataclass(slots=True)
class ClientStats:
    naks_sent: int = 0
    naks_received: int = 0
    retransmissions: int = 0
    duplicates: int = 0
    damaged: int = 0


class PinpadClient:
    """Host side of the link on ``port`` (a pty path or a symlink to one)."""

    def __init__(self, port: str, timings: LinkTimings | None = None, *, seq: int = 0) -> None:
        self.timings = timings if timings is not None else LinkTimings()
        try:
            self.serial = serial.Serial(port, baudrate=115200, timeout=0, write_timeout=1)
        except serial.SerialException as exc:
            raise PinpadDisconnectedError("cannot open the PIN pad port") from exc
        self.serial.reset_input_buffer()
        self.reassembler = FrameReassembler()
        self.stats = ClientStats()
        self.events: list[Event] = []
        self._seq = seq & 0xFF
        self._last_rx: Frame | None = None
        self._responses: dict[int, list[Answer]] = {}
        self._outstanding: int | None = None
        self._acked = False
        self._naked = False
        self._last_byte = 0.0

    def close(self) -> None:
        self.serial.close()

    # -- byte level ----------------------------------------------------------------------

    def write_raw(self, data: bytes) -> None:
        """Put bytes on the line as they are (tests: duplicates, garbage)."""
        try:
            self.serial.write(data)
        except (serial.SerialException, OSError) as exc:
            raise PinpadDisconnectedError("write failed") from exc

    def _read(self, timeout: float) -> bytes:
        try:
            ready, _, _ = select.select([self.serial.fileno()], [], [], max(timeout, 0))
            if not ready:
                return b""
            data = os.read(self.serial.fileno(), 4096)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PinpadDisconnectedError("read failed") from exc
        if not data:
            raise PinpadDisconnectedError("port closed")
        return data

    def pump(self, timeout: float) -> None:
        """Read and handle whatever arrives within ``timeout`` seconds (one read at most)."""
        now = time.monotonic()
        if self.reassembler.pending:
            expiry = self._last_byte + self.timings.inter_byte
            if now >= expiry:
                self._handle(self.reassembler.expire())
                return
            timeout = min(timeout, expiry - now)
        data = self._read(timeout)
        if data:
            self._last_byte = time.monotonic()
            self._handle(self.reassembler.feed(data))

    def _handle(self, events: list[Frame | DamagedFrame]) -> None:
        for event in events:
            if isinstance(event, DamagedFrame):
                self.stats.damaged += 1
                self.stats.naks_sent += 1
                self.write_raw(encode_frame(nak(event.seq)))
            elif event.type is FrameType.ACK:
                if event.seq == self._outstanding:
                    self._acked = True
            elif event.type is FrameType.NAK:
                self.stats.naks_received += 1
                if self._outstanding is not None:
                    self._naked = True
            else:
                self.write_raw(encode_frame(ack(event.seq)))
                if event == self._last_rx:
                    self.stats.duplicates += 1
                    continue
                self._last_rx = event
                if event.type is FrameType.RESPONSE:
                    self._responses.setdefault(event.command, []).append(decode_response(event))
                elif event.type is FrameType.EVENT:
                    self.events.append(decode_event(event))

    # -- message level -------------------------------------------------------------------

    def next_frame(self, message: Request) -> Frame:
        """The frame ``send`` would put on the line next (sequence number taken)."""
        frame = encode_request(self._seq, message)
        self._seq = (self._seq + 1) & 0xFF
        return frame

    def send_frame(self, frame: Frame) -> None:
        """Send ``frame`` reliably: retransmit on NAK or ACK timeout, up to max_retries."""
        wire = encode_frame(frame)
        self._outstanding = frame.seq
        try:
            for attempt in range(self.timings.max_retries + 1):
                if attempt:
                    self.stats.retransmissions += 1
                self._acked = self._naked = False
                self.write_raw(wire)
                deadline = time.monotonic() + self.timings.ack_timeout
                while not (self._acked or self._naked):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.pump(left)
                if self._acked:
                    return
            raise PinpadTimeoutError("no ACK from the PIN pad")
        finally:
            self._outstanding = None

    def send(self, message: Request) -> None:
        """Send a request (ACKed), without waiting for its response."""
        self.send_frame(self.next_frame(message))

    def wait_response(self, command: int, timeout: float | None = None) -> Answer:
        """The next response to ``command``."""
        deadline = time.monotonic() + (
            self.timings.response_timeout if timeout is None else timeout
        )
        while True:
            queued = self._responses.get(command)
            if queued:
                return queued.pop(0)
            left = deadline - time.monotonic()
            if left <= 0:
                raise PinpadTimeoutError(f"no response to {Command(command).name}")
            self.pump(left)

    def pending_responses(self, command: int) -> int:
        """Responses to ``command`` received and not yet collected."""
        return len(self._responses.get(command, []))

    def call(self, message: Request, timeout: float | None = None) -> Answer:
        """Send ``message`` and return its response."""
        self.send(message)
        return self.wait_response(request_code(message), timeout)

    def wait_event(self, timeout: float) -> Event:
        """The next unsolicited event."""
        deadline = time.monotonic() + timeout
        while not self.events:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PinpadTimeoutError("no event")
            self.pump(left)
        return self.events.pop(0)
