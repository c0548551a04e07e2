"""An emulated serial PIN pad on a pseudo-terminal, speaking docs/pinpad-protocol.md.

:class:`EmulatedPinpad` opens a pty pair (``os.openpty``, raw mode), serves the protocol on
the master side from an asyncio loop in its own thread, and exposes the slave path as
:attr:`EmulatedPinpad.port`: pyserial opens it exactly like ``/dev/ttyUSB0``. With
``link_path`` it also keeps a symlink there pointing at the current pty, like the udev rule
that gives a real pad ``/dev/pos-pinpad``.

Unplug closes both ends of the pty (the host's reads and writes fail with EIO); replug opens
a *new* pty pair, whose ``/dev/pts/N`` may differ: a host reopens :attr:`port` (or the
stable ``link_path``). Key slots, counters and the KBPK survive an unplug, as in a real pad;
a PIN entry in progress is abandoned, and the link layer (sequence numbers, duplicate
memory) starts afresh.

Link layer, pad side (protocol section 3): every REQUEST is ACKed (a damaged frame is
NAKed); a request equal to the last one accepted is a retransmission and is ACKed but not
executed; RESPONSE and EVENT frames go out one at a time, each retransmitted on NAK or ACK
timeout up to ``max_retries`` times.

The clear PIN lives only inside the PIN entry coroutine and is cleared when it ends; it is
never logged. Frames are logged at TRACE (level 5) by type, sequence, command and length,
never their data.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import secrets
import threading
import tty
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

from hardware.pinpad.faults import Faults
from hardware.pinpad.keys import KeyStore, KeyStoreError, RandomSource, SlotKey
from hardware.pinpad.script import KeySource, PinScript, ScriptedKeypad
from paycore.pinpad import (
    BeepRequest,
    BeepResponse,
    CancelRequest,
    CancelResponse,
    Command,
    DamagedFrame,
    DisplayRequest,
    DisplayResponse,
    FieldLengthError,
    Frame,
    FrameReassembler,
    FrameType,
    GetPinRequest,
    GetPinResponse,
    IdentifyRequest,
    IdentifyResponse,
    Key,
    KeyPressedEvent,
    KeyStatusRequest,
    LinkTimings,
    LoadKeyRequest,
    PinpadProtocolError,
    Request,
    Response,
    Status,
    StatusResponse,
    UnknownCommandError,
    ack,
    decode_request,
    encode_event,
    encode_frame,
    encode_response,
    nak,
)

log = logging.getLogger(__name__)
TRACE: Final = 5
_T = TypeVar("_T")
Answer = Response | StatusResponse


@dataclass(slots=True)
class PadStats:
    """What the pad saw and did; tests assert on it."""

    executed: collections.Counter[Command] = field(default_factory=collections.Counter)
    duplicates: int = 0
    naks_sent: int = 0
    naks_received: int = 0
    retransmissions: int = 0
    gave_up: int = 0
    overruns: int = 0


class _Link:
    """One plugged-in pty and the pad side of the link layer on it."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timings: LinkTimings,
        faults: Faults,
        stats: PadStats,
        on_request: Callable[[_Link, Frame], None],
    ) -> None:
        self._loop = loop
        self._timings = timings
        self._faults = faults
        self._stats = stats
        self._on_request = on_request
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.port = os.ttyname(self._slave)
        self._reassembler = FrameReassembler()
        self._timer: asyncio.TimerHandle | None = None
        self._last_request: Frame | None = None
        self._next_seq = secrets.randbelow(256)
        self._outbox: asyncio.Queue[Frame] = asyncio.Queue()
        self._ack: asyncio.Future[bool] | None = None  # True = ACK, False = NAK
        self._outstanding: int | None = None
        self.closed = False
        loop.add_reader(self.master, self._on_readable)
        self._sender = loop.create_task(self._send_loop())

    def close(self) -> None:
        """Unplug: both pty ends closed, pending output dropped."""
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self.master)
        self._sender.cancel()
        if self._timer is not None:
            self._timer.cancel()
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- output --------------------------------------------------------------------------

    def send(self, frame_type: FrameType, command: int, data: bytes) -> None:
        """Queue a RESPONSE or EVENT for reliable delivery (sequence number assigned later)."""
        if not self.closed:
            self._outbox.put_nowait(Frame(0, frame_type, command, data))

    def _write(self, wire: bytes) -> None:
        data = self._faults.outbound(wire)
        if not data or self.closed:
            return
        try:
            os.write(self.master, data)
        except BlockingIOError:
            self._stats.overruns += 1  # nobody reads the port: the bytes are lost
        except OSError:
            log.debug("pty write failed; pad unplugged")

    def _control(self, frame: Frame) -> None:
        log.log(TRACE, "pad tx %s seq=%d", frame.type.name, frame.seq)
        self._write(encode_frame(frame))

    async def _send_loop(self) -> None:
        while True:
            queued = await self._outbox.get()
            frame = Frame(self._next_seq, queued.type, queued.command, queued.data)
            self._next_seq = (self._next_seq + 1) & 0xFF
            wire = encode_frame(frame)
            self._outstanding = frame.seq
            for attempt in range(self._timings.max_retries + 1):
                if attempt:
                    self._stats.retransmissions += 1
                self._ack = self._loop.create_future()
                log.log(
                    TRACE,
                    "pad tx %s seq=%d cmd=%#04x len=%d try=%d",
                    frame.type.name,
                    frame.seq,
                    frame.command,
                    len(frame.data),
                    attempt,
                )
                self._write(wire)
                try:
                    if await asyncio.wait_for(self._ack, self._timings.ack_timeout):
                        break
                except TimeoutError:
                    continue
            else:
                self._stats.gave_up += 1
                log.warning("pad gave up sending %s cmd=%#04x", frame.type.name, frame.command)
            self._outstanding = None
            self._ack = None

    # -- input ---------------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self.master, 4096)
        except BlockingIOError:
            return
        except OSError:
            return  # no host has the port open
        chunk = self._faults.inbound(chunk)
        if not chunk:
            return
        self._process(self._reassembler.feed(chunk))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reassembler.pending:
            self._timer = self._loop.call_later(self._timings.inter_byte, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._process(self._reassembler.expire())
        if self._reassembler.pending:
            self._timer = self._loop.call_later(self._timings.inter_byte, self._expire)

    def _process(self, events: list[Frame | DamagedFrame]) -> None:
        for event in events:
            if isinstance(event, DamagedFrame):
                self._stats.naks_sent += 1
                self._control(nak(event.seq))
            elif event.type is FrameType.ACK:
                if event.seq == self._outstanding and self._ack and not self._ack.done():
                    self._ack.set_result(True)
            elif event.type is FrameType.NAK:
                self._stats.naks_received += 1
                if self._ack is not None and not self._ack.done():
                    self._ack.set_result(False)
            else:
                log.log(
                    TRACE,
                    "pad rx %s seq=%d cmd=%#04x len=%d",
                    event.type.name,
                    event.seq,
                    event.command,
                    len(event.data),
                )
                self._control(ack(event.seq))
                if event.type is not FrameType.REQUEST:
                    continue  # a host has no business sending these; ACKed and ignored
                if event == self._last_request:
                    self._stats.duplicates += 1
                    continue
                self._last_request = event
                self._on_request(self, event)


class EmulatedPinpad:
    """A PIN pad on a pty. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(
        self,
        *,
        kbpk: bytes,
        slots: Mapping[int, SlotKey] | None = None,
        slot_count: int = 4,
        kbpk_algorithm: str = "A",
        keypad: KeySource | None = None,
        faults: Faults | None = None,
        timings: LinkTimings | None = None,
        random: RandomSource = secrets.token_bytes,
        link_path: str | os.PathLike[str] | None = None,
        model: str = "PAYCORE EMU-1",
        serial: str = "EMU00000001",
        firmware: str = "0.1.0",
        display_size: tuple[int, int] = (4, 20),
    ) -> None:
        self.keys = KeyStore(kbpk, slots, slot_count=slot_count, kbpk_algorithm=kbpk_algorithm)
        self.keypad: KeySource = keypad if keypad is not None else ScriptedKeypad()
        self.faults = faults if faults is not None else Faults()
        self.timings = timings if timings is not None else LinkTimings()
        self.stats = PadStats()
        self.model, self.serial, self.firmware = model, serial, firmware
        self.display_size = display_size
        self.display: tuple[str, ...] = ()
        """What the customer sees now."""
        self.beeps = 0
        self._random = random
        self._link_path = None if link_path is None else Path(link_path)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._link: _Link | None = None
        self._pin_task: asyncio.Task[Answer] | None = None
        self._cancel: asyncio.Event | None = None
        self._display_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"EmulatedPinpad(port={self.port!r}, keys={self.keys!r})"

    # -- lifecycle (any thread) ----------------------------------------------------------

    def start(self) -> EmulatedPinpad:
        """Open the pty and serve it; returns self."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pinpad", daemon=True)
        self._thread.start()
        self._on_loop(self._plug)
        return self

    def stop(self) -> None:
        """Unplug and stop the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._on_loop(self._unplug)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.run_until_complete(_cancel_all())
        loop.close()
        self._loop = self._thread = None
        if self._link_path is not None:
            with contextlib.suppress(OSError):
                self._link_path.unlink()

    def __enter__(self) -> EmulatedPinpad:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> str | None:
        """The current pty slave path (changes on replug); None while unplugged."""
        link = self._link
        return None if link is None else link.port

    @property
    def link_path(self) -> Path | None:
        """The stable symlink to :attr:`port`, when the pad was given one."""
        return self._link_path

    def unplug(self) -> None:
        """Pull the cable: the pty closes, the host sees EIO."""
        self._on_loop(self._unplug)

    def replug(self) -> str:
        """Plug back in: a new pty pair; returns its path."""
        self._on_loop(self._plug)
        port = self.port
        assert port is not None
        return port

    def press(self, key: Key) -> None:
        """The cardholder presses ``key`` outside PIN entry: a KEY_PRESSED event."""
        self._on_loop(lambda: self._key_event(key))

    def queue_pin(self, script: PinScript) -> None:
        """Play ``script`` at a coming PIN entry (scripted keypads only)."""
        if not isinstance(self.keypad, ScriptedKeypad):
            raise TypeError("this pad reads a live key source, not scripts")
        self.keypad.queue(script)

    def _on_loop(self, function: Callable[[], _T]) -> _T:
        loop = self._loop
        if loop is None:
            raise RuntimeError("pad not started")

        async def call() -> _T:
            return function()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=5)

    # -- on the loop ---------------------------------------------------------------------

    def _plug(self) -> None:
        if self._link is not None:
            return
        assert self._loop is not None
        self._link = _Link(self._loop, self.timings, self.faults, self.stats, self._dispatch)
        if self._link_path is not None:
            temporary = self._link_path.with_name(self._link_path.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            temporary.symlink_to(self._link.port)
            temporary.replace(self._link_path)
        log.debug("pin pad plugged in at %s", self._link.port)

    def _unplug(self) -> None:
        if self._pin_task is not None:
            self._pin_task.cancel()
            self._pin_task = None
        if self._link is not None:
            self._link.close()
            self._link = None
            log.debug("pin pad unplugged")

    def _key_event(self, key: Key) -> None:
        if self._pin_task is not None or self._link is None:
            return  # keys during PIN entry belong to the secure prompt, never reported
        self._link.send(FrameType.EVENT, *_event_payload(key))

    def _respond(self, link: _Link, answer: Answer) -> None:
        frame = encode_response(0, answer)
        link.send(FrameType.RESPONSE, frame.command, frame.data)

    def _dispatch(self, link: _Link, frame: Frame) -> None:
        try:
            request = decode_request(frame)
        except UnknownCommandError:
            self._respond(link, StatusResponse(frame.command, Status.UNKNOWN_COMMAND))
            return
        except FieldLengthError:
            self._respond(link, StatusResponse(frame.command, Status.BAD_LENGTH))
            return
        except PinpadProtocolError:
            self._respond(link, StatusResponse(frame.command, Status.BAD_VALUE))
            return
        code = Command(frame.command)
        self.stats.executed[code] += 1
        if self._pin_task is not None and not isinstance(request, CancelRequest):
            self._respond(link, StatusResponse(code, Status.BUSY))
            return
        if isinstance(request, GetPinRequest):
            self._pin_task = asyncio.ensure_future(self._get_pin(request))
            self._pin_task.add_done_callback(lambda task: self._pin_done(link, task))
            return
        try:
            answer = self._execute(request)
        except KeyStoreError as exc:
            answer = StatusResponse(code, exc.status)
        except Exception:
            log.exception("pin pad failed on %s", code.name)
            answer = StatusResponse(code, Status.INTERNAL_ERROR)
        self._respond(link, answer)

    def _pin_done(self, link: _Link, task: asyncio.Task[Answer]) -> None:
        if self._pin_task is task:
            self._pin_task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("PIN entry failed: %s", type(exc).__name__)
            self._respond(link, StatusResponse(Command.GET_PIN, Status.INTERNAL_ERROR))
        else:
            self._respond(link, task.result())

    def _execute(self, request: Request) -> Answer:
        if isinstance(request, IdentifyRequest):
            return IdentifyResponse(
                self.model, self.serial, self.firmware, self.keys.slot_count, self.keys.kbpk_kcv
            )
        if isinstance(request, DisplayRequest):
            return self._show(request)
        if isinstance(request, CancelRequest):
            if self._cancel is not None:
                self._cancel.set()
            return CancelResponse()
        if isinstance(request, BeepRequest):
            self.beeps += request.count
            return BeepResponse()
        if isinstance(request, LoadKeyRequest):
            loaded = self.keys.load(request.slot, request.key_block)
            if self.faults.wrong_kcv:
                flipped = bytes([loaded.kcv[0] ^ 0xFF]) + loaded.kcv[1:]
                return dataclasses.replace(loaded, kcv=flipped)
            return loaded
        if isinstance(request, KeyStatusRequest):
            return self.keys.status(request.slot)
        raise AssertionError("GET PIN is handled by the caller")

    def _show(self, request: DisplayRequest) -> Answer:
        rows, columns = self.display_size
        if len(request.lines) > rows or any(len(line) > columns for line in request.lines):
            return StatusResponse(Command.DISPLAY, Status.BAD_VALUE)
        self.display = request.lines
        if self._display_timer is not None:
            self._display_timer.cancel()
            self._display_timer = None
        if request.timeout_ms:
            assert self._loop is not None
            self._display_timer = self._loop.call_later(
                request.timeout_ms / 1000, self._clear_display
            )
        return DisplayResponse()

    def _clear_display(self) -> None:
        self._display_timer = None
        self.display = ()

    async def _get_pin(self, request: GetPinRequest) -> Answer:
        code = Command.GET_PIN
        if (
            not 4 <= request.min_length <= request.max_length <= 12
            or request.timeout_ms == 0
            or not 12 <= len(request.pan) <= 19
        ):
            return StatusResponse(code, Status.BAD_VALUE)
        try:
            self.keys.check_pin_key(request.key_slot, request.format)
        except KeyStoreError as exc:
            return StatusResponse(code, exc.status)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.timeout_ms / 1000
        self._cancel = cancel = asyncio.Event()
        self.keypad.start_entry()
        pin: list[str] = []
        try:
            while True:
                key = await _next_key(self.keypad, cancel, deadline - loop.time())
                if isinstance(key, Status):
                    return StatusResponse(code, key)
                if key.digit is not None:
                    if len(pin) < request.max_length:
                        pin.append(key.digit)
                elif key is Key.CLEAR:
                    pin.clear()
                elif key is Key.CANCEL:
                    return StatusResponse(code, Status.CANCELLED)
                elif key is Key.ENTER:
                    if not pin and request.bypass_allowed:
                        return StatusResponse(code, Status.BYPASSED)
                    if len(pin) >= request.min_length:
                        return self._encipher(request, "".join(pin))
        finally:
            pin.clear()
            self._cancel = None

    def _encipher(self, request: GetPinRequest, pin: str) -> GetPinResponse | StatusResponse:
        try:
            return self.keys.encipher_pin(
                request.key_slot, request.format, pin, request.pan, random=self._random
            )
        except KeyStoreError as exc:
            return StatusResponse(Command.GET_PIN, exc.status)


async def _cancel_all() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _next_key(source: KeySource, cancel: asyncio.Event, remaining: float) -> Key | Status:
    """The next key, or CANCELLED (host CANCEL) or TIMEOUT, whichever comes first."""
    if remaining <= 0:
        return Status.TIMEOUT
    key_task = asyncio.ensure_future(source.read_key())
    cancel_task = asyncio.ensure_future(cancel.wait())
    pending: set[asyncio.Future[Any]] = {key_task, cancel_task}
    try:
        done, _ = await asyncio.wait(
            pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        key_task.cancel()
        cancel_task.cancel()
    if cancel_task in done:
        return Status.CANCELLED
    if key_task in done:
        return key_task.result()
    return Status.TIMEOUT


def _event_payload(key: Key) -> tuple[int, bytes]:
    frame = encode_event(0, KeyPressedEvent(key))
    return frame.command, frame.data
