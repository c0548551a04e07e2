"""The terminal agent's PIN pad driver: a typed async API over docs/pinpad-protocol.md.

:class:`PinpadDriver` keeps the pad's serial port open (reopening it with backoff after an
unplug, section 6: the stable path is a udev name or the emulator's symlink), runs the host
link layer (:mod:`terminal_agent.pinpad.link`) on it, and turns the commands of section 5
into methods that return typed results or raise the errors of
:mod:`terminal_agent.pinpad.errors`:

=================  ==========================================================
``identify()``     IDENTIFY (5.1) -> :class:`paycore.pinpad.IdentifyResponse`
``display()``      DISPLAY (5.2)
``get_pin()``      GET PIN (5.3) -> :class:`PinEntry` (ok/cancelled/timeout/bypassed)
``cancel()``       CANCEL (5.4)
``beep()``         BEEP (5.5)
``load_key()``     LOAD KEY (5.6) -> the loaded key's check value
``key_status()``   KEY STATUS (5.7) -> :class:`paycore.pinpad.KeyStatusResponse`
=================  ==========================================================

Commands with different codes may run concurrently (a CANCEL while a GET PIN waits for the
cardholder: 5.4); calls with the same code are served one at a time, so that responses
matched by command code cannot be given to the wrong caller. A DISPLAY (or any command but
CANCEL) during PIN entry is sent, and the pad answers BUSY (5.4): it raises
:class:`PinpadRefused` with ``Status.BUSY`` and the PIN entry goes on undisturbed.

The PAN given to :meth:`PinpadDriver.get_pin` goes to the pad only: it is not logged, not
kept and in no repr. No clear PIN exists on this side; the pad returns an enciphered block.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, TypeVar

import serial
from pydantic import SecretStr, ValidationError

from paycore.pan import Pan
from paycore.pinpad import (
    BeepRequest,
    BeepResponse,
    CancelRequest,
    CancelResponse,
    Command,
    DisplayRequest,
    DisplayResponse,
    Event,
    GetPinRequest,
    GetPinResponse,
    IdentifyRequest,
    IdentifyResponse,
    KeyPressedEvent,
    KeyStatusRequest,
    KeyStatusResponse,
    KeyType,
    LoadKeyRequest,
    LoadKeyResponse,
    PinBlockFormat,
    Request,
    Status,
    StatusResponse,
    request_code,
)
from paycore.wire import EncryptedPinBlock
from terminal_agent.pinpad.errors import (
    PinpadDisconnected,
    PinpadError,
    PinpadRefused,
    PinpadReplyError,
    PinpadTimeout,
)
from terminal_agent.pinpad.link import Answer, LinkStats, SerialTransport
from terminal_agent.pinpad.settings import PinpadSettings
from terminal_agent.pinpad.subscriptions import Hub, Subscription

log = logging.getLogger(__name__)
_R = TypeVar("_R")

# (KSN bytes, PIN block bytes) per format (5.3).
_BLOCK_SHAPE: dict[PinBlockFormat, tuple[int, int]] = {
    PinBlockFormat.ISO4_AES_DUKPT: (12, 16),
    PinBlockFormat.ISO0_TDES_DUKPT: (10, 8),
}


class LinkState(enum.Enum):
    """Whether the driver has the pad's port open."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class PinEntryStatus(enum.Enum):
    """How a PIN entry ended (5.3)."""

    OK = "ok"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    BYPASSED = "bypassed"


_OUTCOMES: dict[Status, PinEntryStatus] = {
    Status.CANCELLED: PinEntryStatus.CANCELLED,
    Status.TIMEOUT: PinEntryStatus.TIMEOUT,
    Status.BYPASSED: PinEntryStatus.BYPASSED,
}


@dataclass(frozen=True, slots=True)
class PinEntry:
    """The result of :meth:`PinpadDriver.get_pin`.

    With status OK, ``format``, ``ksn`` and ``pin_block`` are set: ``pin_block`` is the
    :class:`paycore.wire.EncryptedPinBlock` for the authorization request (its block is a
    secret, masked in every repr). Otherwise they are None.
    """

    status: PinEntryStatus
    format: PinBlockFormat | None = None
    ksn: bytes | None = None
    pin_block: EncryptedPinBlock | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class KeyLoaded:
    """What :meth:`PinpadDriver.load_key_detail` reports: the slot's key type and KCV."""

    key_type: KeyType
    kcv: bytes


class PinpadDriver:
    """The PIN pad on ``settings.port``. ``async with PinpadDriver(settings) as pad: ...``

    ``randbelow`` draws the first sequence number of each connection (3.1).
    """

    def __init__(
        self,
        settings: PinpadSettings,
        *,
        randbelow: Callable[[int], int] = secrets.randbelow,
    ) -> None:
        self.settings = settings
        self.stats = LinkStats()
        self._randbelow = randbelow
        self._timings = settings.timings
        self._state = LinkState.DISCONNECTED
        self._transport: SerialTransport | None = None
        self._connected = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._locks: dict[Command, asyncio.Lock] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._events: Hub[Event] = Hub("PIN pad event", settings.subscriber_queue)
        self._states: Hub[LinkState] = Hub("PIN pad state", settings.subscriber_queue)

    def __repr__(self) -> str:
        return f"PinpadDriver(port={self.settings.port!r}, state={self._state.value})"

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start opening the port (and reopening it whenever it closes)."""
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name="pinpad-supervisor")

    async def close(self) -> None:
        """Close the port and stop; subscriptions end. Idempotent."""
        transport, self._transport = self._transport, None
        # The port first: cancelling the supervisor while it awaits ``transport.lost``
        # would cancel that future, and a transport whose ``lost`` is done no longer
        # closes its port (the next open of the pad then fails on the exclusive lock).
        if transport is not None:
            transport.close()
        tasks = list(self._background)
        if self._supervisor is not None:
            tasks.append(self._supervisor)
            self._supervisor = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._set_state(LinkState.DISCONNECTED)
        self._events.close()
        self._states.close()

    async def __aenter__(self) -> PinpadDriver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def state(self) -> LinkState:
        """CONNECTED while the port is open."""
        return self._state

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return once the port is open; :class:`PinpadDisconnected` after ``timeout`` s."""
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            raise PinpadDisconnected("PIN pad not connected in time") from None

    # -- subscriptions -------------------------------------------------------------------

    def events(self) -> Subscription[Event]:
        """Unsolicited events (KEY_PRESSED) from now on, as an async iterator."""
        return self._events.subscribe()

    def on_event(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback`` for every event; returns the function that unsubscribes."""
        return self._events.add_callback(callback)

    def states(self) -> Subscription[LinkState]:
        """Link state changes (connected / disconnected) from now on."""
        return self._states.subscribe()

    def on_state(self, callback: Callable[[LinkState], None]) -> Callable[[], None]:
        """Call ``callback`` on every state change; returns the function that unsubscribes."""
        return self._states.add_callback(callback)

    def _set_state(self, state: LinkState) -> None:
        if state is self._state:
            return
        self._state = state
        if state is LinkState.CONNECTED:
            self._connected.set()
        else:
            self._connected.clear()
        log.info("PIN pad %s", state.value)
        self._states.publish(state)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, KeyPressedEvent):
            log.debug("PIN pad key event")  # which key is not logged: it may be a digit
        self._events.publish(event)

    # -- connection ----------------------------------------------------------------------

    def _open(self) -> SerialTransport:
        settings = self.settings
        try:
            port = serial.Serial(
                settings.port,
                baudrate=settings.baudrate,
                bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE,
                stopbits=serial.STOPBITS_ONE,
                xonxoff=False,
                rtscts=False,
                timeout=0,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PinpadDisconnected("cannot open the PIN pad port") from exc
        try:
            port.reset_input_buffer()  # whatever the pad said to nobody is stale
            return SerialTransport(
                port,
                self._timings,
                first_seq=self._randbelow(256),
                on_event=self._on_event,
                stats=self.stats,
            )
        except (serial.SerialException, OSError) as exc:
            port.close()
            raise PinpadDisconnected("cannot set up the PIN pad port") from exc

    async def _supervise(self) -> None:
        """Keep the port open: reopen with exponential backoff whenever it closes."""
        settings = self.settings
        delay = settings.reconnect_initial_s
        loop = asyncio.get_running_loop()
        while True:
            try:
                transport = self._open()
            except PinpadDisconnected as exc:
                log.debug("PIN pad port not available (%s); retry in %.2f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * settings.reconnect_factor, settings.reconnect_max_s)
                continue
            self.stats.connects += 1
            log.info("PIN pad port %s open", settings.port)
            opened = loop.time()
            self._transport = transport
            self._set_state(LinkState.CONNECTED)
            try:
                await asyncio.shield(transport.lost)
            finally:
                if self._transport is transport:
                    self._transport = None
            self.stats.disconnects += 1
            self._set_state(LinkState.DISCONNECTED)
            if loop.time() - opened >= settings.reconnect_max_s:
                delay = settings.reconnect_initial_s  # it was up a while: not flapping
            await asyncio.sleep(delay)
            delay = min(delay * settings.reconnect_factor, settings.reconnect_max_s)

    # -- requests ------------------------------------------------------------------------

    async def _exchange(self, message: Request, response_timeout: float) -> Answer:
        code = request_code(message)
        lock = self._locks.setdefault(code, asyncio.Lock())
        async with lock:
            transport = self._transport
            if transport is None or transport.protocol.is_lost:
                raise PinpadDisconnected("PIN pad not connected")
            return await transport.protocol.request(message, response_timeout)

    async def _call(self, message: Request, expected: type[_R]) -> _R:
        answer = await self._exchange(message, self._timings.response_timeout)
        return _expect(answer, expected)

    async def identify(self) -> IdentifyResponse:
        """Model, serial number, firmware, key slot count and KBPK check value (5.1)."""
        return await self._call(IdentifyRequest(), IdentifyResponse)

    async def display(self, lines: Sequence[str], timeout_ms: int = 0) -> None:
        """Show ``lines`` to the customer for ``timeout_ms`` (0: until replaced) (5.2)."""
        await self._call(DisplayRequest(tuple(lines), timeout_ms), DisplayResponse)

    async def get_pin(
        self,
        amount: int,
        currency_numeric: int,
        pan: str | Pan,
        *,
        format: PinBlockFormat = PinBlockFormat.ISO4_AES_DUKPT,
        key_slot: int = 0,
        timeout_ms: int = 30_000,
        min_len: int = 4,
        max_len: int = 12,
        bypass_allowed: bool = False,
    ) -> PinEntry:
        """Have the cardholder enter a PIN for ``pan``; the pad returns it enciphered (5.3).

        ``amount`` is in minor units, ``currency_numeric`` the ISO 4217 numeric code. The
        response may take ``timeout_ms`` plus the response timeout. If it does not come in
        that time, or the caller is cancelled while waiting, a CANCEL is sent in the
        background so the pad does not stay in PIN entry. Raises :class:`PinpadRefused`
        (NO_KEY, BAD_SLOT, WRONG_KEY_TYPE, KEYS_EXHAUSTED, BAD_VALUE, BUSY...),
        :class:`PinpadTimeout`, :class:`PinpadDisconnected` or :class:`PinpadReplyError`.
        """
        request = GetPinRequest(
            amount=amount,
            currency=currency_numeric,
            pan=pan.digits if isinstance(pan, Pan) else pan,
            format=format,
            key_slot=key_slot,
            timeout_ms=timeout_ms,
            min_length=min_len,
            max_length=max_len,
            bypass_allowed=bypass_allowed,
        )
        wait = timeout_ms / 1000 + self._timings.response_timeout
        try:
            answer = await self._exchange(request, wait)
        except PinpadTimeout:
            self._cancel_in_background()
            raise
        except asyncio.CancelledError:
            self._cancel_in_background()
            raise
        return _pin_entry(answer, format)

    async def cancel(self) -> None:
        """End a PIN entry or prompt in progress; harmless when idle (5.4)."""
        await self._call(CancelRequest(), CancelResponse)

    async def beep(self, count: int = 1, duration_ms: int = 100) -> None:
        """Sound the buzzer ``count`` times for ``duration_ms`` each (5.5)."""
        await self._call(BeepRequest(count, duration_ms), BeepResponse)

    async def load_key(self, slot: int, tr31_block: str) -> bytes:
        """Load a TR-31 DUKPT initial key block into ``slot``; its KCV (5.6)."""
        return (await self.load_key_detail(slot, tr31_block)).kcv

    async def load_key_detail(self, slot: int, tr31_block: str) -> KeyLoaded:
        """As :meth:`load_key`, with the key type the pad reports."""
        loaded = await self._call(LoadKeyRequest(slot, tr31_block), LoadKeyResponse)
        return KeyLoaded(loaded.key_type, loaded.kcv)

    async def key_status(self, slot: int) -> KeyStatusResponse:
        """What ``slot`` holds: key type, initial key ID / KSN, counter, keys left (5.7)."""
        return await self._call(KeyStatusRequest(slot), KeyStatusResponse)

    def _cancel_in_background(self) -> None:
        async def cancel() -> None:
            try:
                await self.cancel()
            except PinpadError as exc:
                log.debug("CANCEL after an abandoned PIN entry failed: %s", type(exc).__name__)

        task = asyncio.get_running_loop().create_task(cancel(), name="pinpad-cancel")
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _expect(answer: Answer, expected: type[_R]) -> _R:
    """``answer`` if it is an OK response of the ``expected`` type, else the right error."""
    if isinstance(answer, StatusResponse):
        raise PinpadRefused(answer.status, answer.command)
    if not isinstance(answer, expected):
        raise PinpadReplyError("the PIN pad answered with a response of another command")
    return answer


def _pin_entry(answer: Answer, requested: PinBlockFormat) -> PinEntry:
    if isinstance(answer, StatusResponse):
        outcome = _OUTCOMES.get(answer.status)
        if outcome is None:
            raise PinpadRefused(answer.status, answer.command)
        return PinEntry(outcome)
    reply = _expect(answer, GetPinResponse)
    ksn_len, block_len = _BLOCK_SHAPE[requested]
    if reply.format is not requested or len(reply.ksn) != ksn_len:
        raise PinpadReplyError("the PIN pad's PIN block does not have the format asked for")
    if len(reply.pin_block) != block_len:
        raise PinpadReplyError("the PIN pad's PIN block has the wrong length")
    wire_format: Literal[0, 4] = 4 if requested is PinBlockFormat.ISO4_AES_DUKPT else 0
    try:
        block = EncryptedPinBlock(
            format=wire_format,
            ksn=reply.ksn.hex().upper(),
            block=SecretStr(reply.pin_block.hex().upper()),
        )
    except ValidationError:
        raise PinpadReplyError("the PIN pad's PIN block does not fit the wire model") from None
    return PinEntry(PinEntryStatus.OK, reply.format, reply.ksn, block)
