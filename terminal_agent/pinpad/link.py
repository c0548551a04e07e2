"""Host side of the PIN pad link layer (docs/pinpad-protocol.md section 3) on one open port.

:class:`LinkProtocol` is the state machine, with no I/O of its own: bytes come in through
:meth:`LinkProtocol.data_received` (and :meth:`LinkProtocol.expire` when the inter-byte
timer runs out), bytes go out through the ``write`` callable it is given. Framing and
resynchronisation are the shared codec's (:class:`paycore.pinpad.FrameReassembler`).

* Every intact RESPONSE or EVENT is ACKed at once (3.2); a damaged frame is NAKed.
* Stop-and-wait (3.2): one request of ours is outstanding at a time; it is retransmitted
  byte for byte on NAK or when no ACK comes within the ACK timeout, at most ``max_retries``
  times (3.3), after which the request fails with :class:`PinpadTimeout`.
* A frame equal to the last one accepted from the pad is its retransmission after a lost
  ACK: ACKed again, not delivered again (3.3).
* Responses are matched to waiting requests by command code (5.4: CANCEL's and GET PIN's
  responses may come in either order). A response for the outstanding request's command
  also counts as its ACK (the pad only answers what it received), which saves an ACK
  timeout when the pad's ACK was the frame that got lost.

:class:`SerialTransport` connects one to an open pyserial port. Reads use the event loop's
``add_reader`` on the port's file descriptor, not a reader thread: a tty, pty or USB CDC-ACM
device is pollable, the link then runs on one thread with no hand-over between a thread and
the loop (one wake-up per chunk instead of two), and closing needs no thread to be unblocked.
pyserial opens the device and sets it raw (8N1, rate); the bytes go through ``os.read`` and
``os.write`` on its non-blocking descriptor.

Frames are logged at TRACE (5) by type, sequence number, command and length, never their
DATA (a GET PIN request carries the PAN; responses carry PIN blocks and key check values).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import serial

from paycore.pinpad import (
    Command,
    DamagedFrame,
    Event,
    Frame,
    FrameReassembler,
    FrameType,
    LinkTimings,
    PinpadProtocolError,
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
from terminal_agent.pinpad.errors import PinpadDisconnected, PinpadReplyError, PinpadTimeout

log = logging.getLogger(__name__)
TRACE: Final = 5
Answer = Response | StatusResponse


@dataclass(slots=True)
class LinkStats:
    """Counters over the driver's life (all connections); for health checks and tests."""

    requests: int = 0
    retransmissions: int = 0
    ack_timeouts: int = 0
    naks_sent: int = 0
    naks_received: int = 0
    duplicates: int = 0
    unmatched_responses: int = 0
    bad_messages: int = 0
    events: int = 0
    write_overruns: int = 0
    connects: int = 0
    disconnects: int = 0


def _command_name(code: int) -> str:
    try:
        return Command(code).name
    except ValueError:
        return f"{code:#04x}"


class LinkProtocol:
    """The host's link layer on one connection (a new one after every reconnect)."""

    def __init__(
        self,
        write: Callable[[bytes], None],
        timings: LinkTimings,
        *,
        first_seq: int,
        on_event: Callable[[Event], None],
        stats: LinkStats,
    ) -> None:
        self._write = write
        self._timings = timings
        self._on_event = on_event
        self.stats = stats
        self._reassembler = FrameReassembler()
        self._next_seq = first_seq & 0xFF
        self._last_rx: Frame | None = None
        self._tx_lock = asyncio.Lock()
        self._outstanding: Frame | None = None
        self._ack: asyncio.Future[bool] | None = None  # True: ACK, False: NAK
        self._waiters: dict[int, collections.deque[asyncio.Future[Answer]]] = {}
        self._lost: str | None = None
        """Why the connection ended, once it has."""

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held by the reassembler."""
        return self._reassembler.pending

    @property
    def is_lost(self) -> bool:
        """The connection is gone; every call fails with PinpadDisconnected."""
        return self._lost is not None

    # -- receiving -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Bytes from the line; never raises (bad input is NAKed, counted or dropped)."""
        self._handle(self._reassembler.feed(data))

    def expire(self) -> None:
        """The inter-byte timeout ran out with a partial frame pending (2.5)."""
        self._handle(self._reassembler.expire())

    def _handle(self, events: list[Frame | DamagedFrame]) -> None:
        for event in events:
            if isinstance(event, DamagedFrame):
                self.stats.naks_sent += 1
                log.log(TRACE, "pinpad rx damaged frame (%s); NAK", event.reason)
                self._send_control(nak(event.seq))
            elif event.type is FrameType.ACK:
                self._acknowledged(event.seq, ok=True)
            elif event.type is FrameType.NAK:
                self.stats.naks_received += 1
                self._acknowledged(event.seq, ok=False)
            else:
                self._received(event)

    def _acknowledged(self, seq: int, *, ok: bool) -> None:
        outstanding, waiter = self._outstanding, self._ack
        if outstanding is None or waiter is None or waiter.done():
            return  # 3.3: NAK with nothing outstanding, or a late ACK: ignored
        if ok and seq != outstanding.seq:
            return  # an ACK for another frame
        log.log(TRACE, "pinpad rx %s seq=%d", "ACK" if ok else "NAK", seq)
        waiter.set_result(ok)

    def _received(self, frame: Frame) -> None:
        log.log(
            TRACE,
            "pinpad rx %s seq=%d cmd=%s len=%d",
            frame.type.name,
            frame.seq,
            _command_name(frame.command),
            len(frame.data),
        )
        self._send_control(ack(frame.seq))
        if frame == self._last_rx:
            self.stats.duplicates += 1
            return
        self._last_rx = frame
        if frame.type is FrameType.RESPONSE:
            self._response(frame)
        elif frame.type is FrameType.EVENT:
            self._event(frame)
        # A REQUEST from the pad: ACKed (the pad must not resend it) and ignored.

    def _response(self, frame: Frame) -> None:
        outstanding = self._outstanding
        if outstanding is not None and outstanding.command == frame.command:
            self._acknowledged(outstanding.seq, ok=True)  # answered, so it was received
        queue = self._waiters.get(frame.command)
        waiter = queue.popleft() if queue else None
        try:
            answer = decode_response(frame)
        except PinpadProtocolError as exc:
            self.stats.bad_messages += 1
            log.warning(
                "PIN pad response to %s does not decode (%s)", _command_name(frame.command), exc
            )
            if waiter is not None and not waiter.done():
                waiter.set_exception(PinpadReplyError("the PIN pad's response does not decode"))
            return
        if waiter is None or waiter.done():
            self.stats.unmatched_responses += 1
            log.debug("PIN pad response to %s with nobody waiting", _command_name(frame.command))
            return
        waiter.set_result(answer)

    def _event(self, frame: Frame) -> None:
        try:
            event = decode_event(frame)
        except PinpadProtocolError as exc:
            self.stats.bad_messages += 1
            log.warning("PIN pad event does not decode (%s)", exc)
            return
        self.stats.events += 1
        self._on_event(event)

    def _send_control(self, frame: Frame) -> None:
        log.log(TRACE, "pinpad tx %s seq=%d", frame.type.name, frame.seq)
        self._write(encode_frame(frame))

    # -- sending -------------------------------------------------------------------------

    async def request(self, message: Request, response_timeout: float) -> Answer:
        """Send ``message`` reliably and return its response (any status).

        ``response_timeout`` runs from the request's ACK (3.4). Raises
        :class:`PinpadTimeout` (no ACK after every retry, or no response in time),
        :class:`PinpadDisconnected` or :class:`PinpadReplyError`.
        """
        if self._lost is not None:
            raise PinpadDisconnected("PIN pad not connected")
        code = request_code(message)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Answer] = loop.create_future()
        queue = self._waiters.setdefault(code, collections.deque())
        queue.append(waiter)  # before sending: the response may overtake the ACK
        try:
            await self._send_reliably(message)
            try:
                async with asyncio.timeout(response_timeout):
                    return await waiter
            except TimeoutError:
                raise PinpadTimeout(f"no response to {code.name} from the PIN pad") from None
        finally:
            with contextlib.suppress(ValueError):
                queue.remove(waiter)
            if not waiter.done():
                waiter.cancel()
            elif not waiter.cancelled():
                waiter.exception()  # failed before anyone awaited it: mark it retrieved

    async def _send_reliably(self, message: Request) -> None:
        async with self._tx_lock:
            if self._lost is not None:
                raise PinpadDisconnected("PIN pad not connected")
            frame = encode_request(self._next_seq, message)
            self._next_seq = (self._next_seq + 1) & 0xFF
            wire = encode_frame(frame)
            loop = asyncio.get_running_loop()
            self._outstanding = frame
            self.stats.requests += 1
            try:
                for attempt in range(self._timings.max_retries + 1):
                    if self._lost is not None:
                        raise PinpadDisconnected(f"PIN pad port closed: {self._lost}")
                    if attempt:
                        self.stats.retransmissions += 1
                    self._ack = ack_waiter = loop.create_future()
                    log.log(
                        TRACE,
                        "pinpad tx REQUEST seq=%d cmd=%s len=%d try=%d",
                        frame.seq,
                        _command_name(frame.command),
                        len(frame.data),
                        attempt,
                    )
                    self._write(wire)
                    try:
                        async with asyncio.timeout(self._timings.ack_timeout):
                            if await ack_waiter:
                                return
                    except TimeoutError:
                        self.stats.ack_timeouts += 1
            finally:
                self._outstanding = None
                self._ack = None
        raise PinpadTimeout(f"PIN pad did not acknowledge {_command_name(frame.command)}")

    # -- end -----------------------------------------------------------------------------

    def connection_lost(self, why: str) -> None:
        """The port closed: every pending ACK and response wait fails (PinpadDisconnected)."""
        if self._lost is not None:
            return
        self._lost = why
        self._reassembler.reset()
        waiters: list[asyncio.Future[bool] | asyncio.Future[Answer]] = []
        if self._ack is not None:
            waiters.append(self._ack)
        for queue in self._waiters.values():
            waiters.extend(queue)
            queue.clear()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(PinpadDisconnected(f"PIN pad port closed: {why}"))


class SerialTransport:
    """One open pyserial port wired to a :class:`LinkProtocol` through ``add_reader``."""

    def __init__(
        self,
        port: serial.Serial,
        timings: LinkTimings,
        *,
        first_seq: int,
        on_event: Callable[[Event], None],
        stats: LinkStats,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._port = port
        self._fd = port.fileno()
        self._inter_byte = timings.inter_byte
        self._stats = stats
        self._timer: asyncio.TimerHandle | None = None
        self.lost: asyncio.Future[None] = self._loop.create_future()
        """Resolved when the port closes (unplugged, or :meth:`close`)."""
        self.protocol = LinkProtocol(
            self.write, timings, first_seq=first_seq, on_event=on_event, stats=stats
        )
        os.set_blocking(self._fd, False)
        self._loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EIO: the pty closed, the USB device went away
            self._close(f"read failed ({exc.strerror})")
            return
        if not data:
            self._close("end of file on the port")
            return
        self.protocol.data_received(data)
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.protocol.pending and not self.lost.done():
            self._timer = self._loop.call_later(self._inter_byte, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self.protocol.expire()
        self._arm_timer()

    def write(self, data: bytes) -> None:
        """Put ``data`` on the line; a closed port ends the connection instead."""
        if self.lost.done():
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except BlockingIOError:
            # The output queue is full: what did not fit is lost on the line, as on a
            # UART; the peer NAKs or times out and the frame is sent again.
            self._stats.write_overruns += 1
        except OSError as exc:
            self._close(f"write failed ({exc.strerror})")

    def close(self) -> None:
        """Close the port (the driver is stopping)."""
        self._close("closed by the driver")

    def _close(self, why: str) -> None:
        if self.lost.done():
            return
        log.info("PIN pad port closed: %s", why)
        self._loop.remove_reader(self._fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with contextlib.suppress(OSError, serial.SerialException):
            self._port.close()
        self.protocol.connection_lost(why)
        self.lost.set_result(None)
