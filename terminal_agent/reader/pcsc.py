"""The PC/SC adapter: pyscard's blocking ``smartcard.scard`` calls, behind an async API.

PC/SC (the PC/SC Workgroup specification, part 5; pcsc-lite on Linux) through pyscard's
thin ``smartcard.scard`` layer, so every call's return code is seen and translated here,
not half-handled by pyscard's higher layers (whose ``CardMonitor`` thread stops silently
after a fault). All pyscard calls run in ONE dedicated thread (a single-worker executor,
house style 6): PC/SC handles stay on the thread that made them and the event loop never
blocks. The one exception is ``SCardCancel``, which PC/SC defines to be called from
another thread to end a blocked ``SCardGetStatusChange``: any call submitted while a wait
is in progress cancels that wait first, so the thread is free for it.

* :meth:`PcscAdapter.list_readers`, :meth:`~PcscAdapter.status`,
  :meth:`~PcscAdapter.wait_change` (``SCardGetStatusChange`` with a timeout),
  :meth:`~PcscAdapter.wait_for_card`;
* :meth:`PcscAdapter.connect` powers the card (T=0 or T=1, whichever the ATR offers and
  pcscd negotiates) and returns a :class:`PcscCard`, a
  :class:`~terminal_agent.reader.channel.CardChannel` whose ``transmit`` does GET RESPONSE
  and Le correction (:mod:`terminal_agent.reader.apdu`) inside the reader thread.

The PC/SC context is established lazily and dropped when pcscd goes away
(``SCARD_E_NO_SERVICE``, ``SCARD_E_SERVICE_STOPPED``, ``SCARD_E_INVALID_HANDLE`` on the
context): the next call establishes a new one, which is how a restarted pcscd is picked
up without restarting the agent.

APDUs are logged at TRACE (5) only: the command's header and length, never its data
(VERIFY carries a PIN); the response through :func:`paycore.redact.redact_tlv`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

from smartcard import scard  # type: ignore[import-untyped]  # pyscard has no stubs
from smartcard.Exceptions import (  # type: ignore[import-untyped]
    CardConnectionException,
    CardServiceStoppedException,
    InvalidReaderException,
    NoCardException,
    NoReadersException,
)
from smartcard.pcsc.PCSCExceptions import (  # type: ignore[import-untyped]
    EstablishContextException,
)

from paycore.redact import redact_tlv

from .apdu import exchange
from .errors import (
    ApduTransportError,
    CardMuteError,
    CardProtocolError,
    CardRemovedError,
    NoReader,
    NoService,
    ReaderError,
    ReaderLostError,
)
from .settings import ReaderSettings

__all__ = [
    "TRACE",
    "PcscAdapter",
    "PcscCard",
    "SlotStatus",
    "translate_code",
    "translate_exception",
]

TRACE: Final = 5
logging.addLevelName(TRACE, "TRACE")
logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_P = ParamSpec("_P")


def _u32(code: int) -> int:
    return code & 0xFFFFFFFF


# PC/SC return code -> (error class, what it means). Codes not listed become ReaderError.
_CODES: Final[dict[int, tuple[type[ReaderError], str]]] = {
    _u32(scard.SCARD_E_NO_SERVICE): (NoService, "pcscd is not running"),
    _u32(scard.SCARD_E_SERVICE_STOPPED): (NoService, "pcscd stopped"),
    _u32(scard.SCARD_E_INVALID_HANDLE): (NoService, "PC/SC handle no longer valid"),
    _u32(scard.SCARD_F_COMM_ERROR): (NoService, "lost the connection to pcscd"),
    _u32(scard.SCARD_E_NO_READERS_AVAILABLE): (NoReader, "no reader is connected"),
    _u32(scard.SCARD_E_UNKNOWN_READER): (NoReader, "the reader is not connected"),
    _u32(scard.SCARD_E_READER_UNAVAILABLE): (NoReader, "the reader was unplugged"),
    _u32(scard.SCARD_W_REMOVED_CARD): (CardRemovedError, "the card was removed"),
    _u32(scard.SCARD_E_NO_SMARTCARD): (CardRemovedError, "no card in the reader"),
    _u32(scard.SCARD_W_RESET_CARD): (CardRemovedError, "the card was reset by another program"),
    _u32(scard.SCARD_W_UNRESPONSIVE_CARD): (CardMuteError, "the card does not answer"),
    _u32(scard.SCARD_W_UNPOWERED_CARD): (CardMuteError, "the card cannot be powered"),
    _u32(scard.SCARD_E_PROTO_MISMATCH): (CardMuteError, "the card's ATR offers no usable protocol"),
    _u32(scard.SCARD_E_NOT_TRANSACTED): (CardMuteError, "the exchange with the card failed"),
    _u32(scard.SCARD_E_COMM_DATA_LOST): (CardMuteError, "the exchange with the card failed"),
    _u32(scard.SCARD_E_INVALID_ATR): (CardMuteError, "the card's ATR is not valid"),
    _u32(scard.SCARD_E_INSUFFICIENT_BUFFER): (CardProtocolError, "the card's answer is too long"),
    _u32(scard.SCARD_E_SHARING_VIOLATION): (
        CardMuteError,
        "another program holds the card (exclusive access)",
    ),
}

_NO_CARD_STATES: Final = scard.SCARD_STATE_EMPTY | scard.SCARD_STATE_UNAVAILABLE
_PNP: Final = "\\\\?PnP?\\Notification"


def translate_code(code: int, doing: str) -> ReaderError:
    """The agent's error for PC/SC return code ``code`` while ``doing`` something."""
    cls, meaning = _CODES.get(_u32(code), (ReaderError, "PC/SC call failed"))
    return cls(f"{doing}: {meaning}", code=_u32(code))


def translate_exception(exc: Exception, doing: str) -> ReaderError:
    """The agent's error for an exception from pyscard's higher layers.

    ``smartcard.Exceptions.*`` and ``smartcard.pcsc.PCSCExceptions.*`` carry the PC/SC
    code in ``hresult`` (``-1`` when there is none); the code decides where it can.
    """
    hresult = getattr(exc, "hresult", -1)
    if isinstance(hresult, int) and hresult not in (-1, 0):
        return translate_code(hresult, doing)
    if isinstance(exc, EstablishContextException):
        return NoService(f"{doing}: pcscd is not running")
    if isinstance(exc, NoReadersException | InvalidReaderException):
        return NoReader(f"{doing}: no such reader")
    if isinstance(exc, NoCardException):
        return CardRemovedError(f"{doing}: no card in the reader")
    if isinstance(exc, CardServiceStoppedException):
        return NoService(f"{doing}: pcscd stopped")
    if isinstance(exc, CardConnectionException):
        return ApduTransportError(f"{doing}: the card connection failed")
    return ReaderError(f"{doing}: {type(exc).__name__}")


@dataclasses.dataclass(frozen=True, slots=True)
class SlotStatus:
    """What PC/SC says about one reader (``SCardGetStatusChange``)."""

    reader: str
    present: bool
    mute: bool
    atr: bytes
    events: int
    """pcscd's card event counter for the reader (high word of ``dwEventState``)."""
    flags: int
    """The raw ``dwEventState`` with ``SCARD_STATE_CHANGED`` cleared."""

    @classmethod
    def from_pcsc(cls, reader: str, event_state: int, atr: list[int]) -> SlotStatus:
        present = bool(event_state & scard.SCARD_STATE_PRESENT) and not (
            event_state & _NO_CARD_STATES
        )
        return cls(
            reader=reader,
            present=present,
            mute=present and bool(event_state & scard.SCARD_STATE_MUTE),
            atr=bytes(atr) if present else b"",
            events=(event_state >> 16) & 0xFFFF,
            flags=event_state & ~scard.SCARD_STATE_CHANGED,
        )


class PcscAdapter:
    """pyscard in one thread, with an async face. ``await close()`` when done."""

    def __init__(self, settings: ReaderSettings | None = None) -> None:
        self.settings = settings or ReaderSettings()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="pcsc"
        )
        # Touched only in the reader thread, except _waiting/_cancel (see _cancel_wait).
        self._context: int | None = None
        self._waiting = False
        self._cancel = threading.Event()
        self._closed = False

    # -- the reader thread --------------------------------------------------------

    async def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._closed:
            raise ReaderError("the reader adapter is closed")
        self._cancel_wait()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _cancel_wait(self) -> None:
        """End a blocked ``SCardGetStatusChange`` so the next call gets the thread."""
        self._cancel.set()
        context = self._context
        if self._waiting and context is not None:
            scard.SCardCancel(context)  # PC/SC: callable from any thread, for this

    def _ctx(self) -> int:
        if self._context is None:
            result, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if result != scard.SCARD_S_SUCCESS:
                raise translate_code(result, "establishing the PC/SC context")
            self._context = context
            logger.info("PC/SC context established")
        return self._context

    def _fail(self, result: int, doing: str) -> ReaderError:
        error = translate_code(result, doing)
        if isinstance(error, NoService):
            self._drop_context()
        return error

    def _drop_context(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            scard.SCardReleaseContext(context)  # may fail: pcscd is gone; nothing to do
            logger.info("PC/SC context dropped")

    def _list_readers(self) -> list[str]:
        result, names = scard.SCardListReaders(self._ctx(), [])
        if result == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        if result != scard.SCARD_S_SUCCESS:
            raise self._fail(result, "listing readers")
        return [str(name) for name in names]

    def _status_change(
        self, reader: str, known: int, timeout: float, cancellable: bool
    ) -> SlotStatus | None:
        """One ``SCardGetStatusChange``; ``None`` when it timed out or was cancelled."""
        context = self._ctx()
        if cancellable and self._cancel.is_set():  # a call came while this one was queued
            self._cancel.clear()
            return None
        self._waiting = True
        try:
            result, states = scard.SCardGetStatusChange(
                context, int(timeout * 1000), [(reader, known)]
            )
        finally:
            self._waiting = False
        if result in (scard.SCARD_E_TIMEOUT, scard.SCARD_E_CANCELLED):
            return None
        if result != scard.SCARD_S_SUCCESS:
            raise self._fail(result, f"watching reader {reader!r}")
        _, event_state, atr = states[0]
        if event_state & (scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_IGNORE):
            raise NoReader(f"reader {reader!r} is not connected")
        return SlotStatus.from_pcsc(reader, event_state, atr)

    def _connect(self, reader: str) -> PcscCard:
        share = scard.SCARD_SHARE_EXCLUSIVE if self.settings.exclusive else scard.SCARD_SHARE_SHARED
        doing = f"powering the card in {reader!r}"
        result, handle, protocol = scard.SCardConnect(
            self._ctx(), reader, share, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
        )
        if result != scard.SCARD_S_SUCCESS:
            raise self._fail(result, doing)
        result, _, _, _, atr = scard.SCardStatus(handle)
        if result != scard.SCARD_S_SUCCESS:
            scard.SCardDisconnect(handle, scard.SCARD_LEAVE_CARD)
            raise self._fail(result, doing)
        name = "T=0" if protocol == scard.SCARD_PROTOCOL_T0 else "T=1"
        logger.debug("card powered in %r: %s, ATR of %d bytes", reader, name, len(atr))
        return PcscCard(self, reader, handle, protocol, bytes(atr))

    def _send(self, handle: int, protocol: int, reader: str, apdu: bytes) -> bytes:
        if logger.isEnabledFor(TRACE):
            logger.log(TRACE, "C-APDU %s, %d bytes", apdu[:4].hex().upper(), len(apdu))
        result, answer = scard.SCardTransmit(handle, protocol, list(apdu))
        if result != scard.SCARD_S_SUCCESS:
            error = self._fail(result, "exchanging an APDU")
            if isinstance(error, ApduTransportError):
                raise error
            raise ReaderLostError(error.reason, code=error.code) from error
        raw = bytes(answer)
        if not raw and self._card_gone(reader):
            # Some readers (vpcd among them) answer "success, no bytes" for a card that
            # left mid-command; PC/SC's own presence polling then shows the reader empty.
            raise CardRemovedError("exchanging an APDU: the card was removed")
        if logger.isEnabledFor(TRACE):
            logger.log(TRACE, "R-APDU %s SW %s", redact_tlv(raw[:-2]), raw[-2:].hex().upper())
        return raw

    def _card_gone(self, reader: str) -> bool:
        """Whether PC/SC shows ``reader`` empty within ``removal_grace`` seconds."""
        if self._context is None:
            return True
        deadline = time.monotonic() + self.settings.removal_grace
        known = scard.SCARD_STATE_UNAWARE
        while True:
            timeout_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if known == scard.SCARD_STATE_UNAWARE:
                timeout_ms = 0  # the state now
            result, states = scard.SCardGetStatusChange(
                self._context, timeout_ms, [(reader, known)]
            )
            if result == scard.SCARD_E_TIMEOUT:
                return False
            if result != scard.SCARD_S_SUCCESS:
                return True  # the reader or pcscd went too: the card is gone for us
            event_state = states[0][1]
            if not SlotStatus.from_pcsc(reader, event_state, []).present:
                return True
            if time.monotonic() >= deadline:
                return False
            known = event_state & ~scard.SCARD_STATE_CHANGED

    def _exchange(
        self, handle: int, protocol: int, reader: str, apdu: bytes
    ) -> tuple[bytes, int, int]:
        return exchange(
            functools.partial(self._send, handle, protocol, reader),
            apdu,
            max_get_response=self.settings.max_get_response,
        )

    def _disconnect(self, handle: int, disposition: int) -> None:
        result = scard.SCardDisconnect(handle, disposition)
        if result != scard.SCARD_S_SUCCESS:  # the card or pcscd already went: nothing to undo
            logger.debug("disconnect: %s", translate_code(result, "disconnecting"))

    def _close(self) -> None:
        self._drop_context()

    # -- the async API --------------------------------------------------------------

    async def list_readers(self) -> list[str]:
        """The names of the connected readers (``[]`` when none; :class:`NoService`
        when pcscd is not running)."""
        return await self._run(self._list_readers)

    async def status(self, reader: str) -> SlotStatus:
        """The reader's state right now (:class:`NoReader` if it is not connected)."""
        state = await self._run(self._status_change, reader, scard.SCARD_STATE_UNAWARE, 0.0, False)
        if state is None:  # pcscd answered "timeout" to an immediate look: ask again
            return await self.status(reader)
        return state

    async def wait_change(
        self, reader: str, known: SlotStatus | None, timeout: float
    ) -> SlotStatus | None:
        """Wait up to ``timeout`` s for ``reader`` to differ from ``known``.

        Returns the new state, or ``None`` if nothing changed in time (or another call
        on this adapter needed the reader thread).
        """
        if self._closed:
            raise ReaderError("the reader adapter is closed")
        flags = scard.SCARD_STATE_UNAWARE if known is None else known.flags
        self._cancel.clear()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._status_change, reader, flags, timeout, True
        )

    async def wait_for_card(self, reader: str, *, present: bool = True) -> SlotStatus:
        """Wait (without limit; cancel the task to stop) until a card is in ``reader``
        (or, with ``present=False``, until it is out)."""
        state = await self.status(reader)
        while state.present != present:
            state = await self.wait_change(reader, state, self.settings.event_wait) or state
        return state

    async def connect(self, reader: str) -> PcscCard:
        """Power the card in ``reader``; :class:`CardRemovedError` if there is none."""
        return await self._run(self._connect, reader)

    async def close(self) -> None:
        """Release the context and stop the reader thread."""
        if self._closed:
            return
        self._cancel_wait()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._closed = True
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> PcscAdapter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class PcscCard:
    """A powered card: the kernel's :class:`~terminal_agent.reader.channel.CardChannel`."""

    def __init__(
        self, adapter: PcscAdapter, reader: str, handle: int, protocol: int, atr: bytes
    ) -> None:
        self.reader = reader
        self.atr = atr
        self.protocol = "T=0" if protocol == scard.SCARD_PROTOCOL_T0 else "T=1"
        self._adapter = adapter
        self._handle = handle
        self._protocol = protocol
        self._open = True

    async def transmit(self, apdu: bytes) -> tuple[bytes, int, int]:
        """Send ``apdu``; GET RESPONSE and Le correction are done here (see module doc)."""
        if not self._open:
            raise CardRemovedError("the card session is closed")
        return await self._adapter._run(
            self._adapter._exchange, self._handle, self._protocol, self.reader, bytes(apdu)
        )

    async def disconnect(self, *, unpower: bool = True) -> None:
        """End the session; power the card off (EMV: deactivate) unless told not to."""
        if not self._open:
            return
        self._open = False
        disposition = scard.SCARD_UNPOWER_CARD if unpower else scard.SCARD_LEAVE_CARD
        await self._adapter._run(self._adapter._disconnect, self._handle, disposition)

    async def __aenter__(self) -> PcscCard:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<PcscCard {self.reader!r} {self.protocol} {state}>"
