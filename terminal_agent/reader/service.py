"""The supervising reader service: one reader, watched for as long as the agent runs.

It survives what breaks real deployments, without a restart of the agent:

* no pcscd at start-up, or pcscd restarted: the PC/SC context is dropped and
  re-established with exponential backoff (``backoff_initial`` doubling to
  ``backoff_max``); state ``no_service`` meanwhile;
* no reader, or the reader unplugged and plugged back: the reader list is polled every
  ``no_reader_poll`` seconds; state ``no_reader``;
* a card pulled mid-exchange: the kernel's ``transmit`` raises ``CardRemovedError``, the
  session ends, and the service goes back to watching the (now empty) reader.

Card events come from ``SCardGetStatusChange`` in slices of ``event_wait`` seconds
(PC/SC part 5), not from pyscard's ``CardMonitor`` thread, which stops silently after a
fault. Every change of :class:`ReaderStatus` goes to the subscribers: async iterators
from :meth:`ReaderService.updates` and callbacks from :meth:`ReaderService.add_listener`
(the cashier display and the MQTT status topic).

The kernel gets the card through :meth:`ReaderService.card_session`: it waits for a card,
powers it, yields a :class:`~terminal_agent.reader.channel.CardChannel` and powers the
card off at the end. While a session is open the service does not watch the reader
(the session owns the reader thread; a pulled card shows as ``CardRemovedError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
from collections.abc import AsyncIterator, Callable

from .errors import CardMuteError, NoReader, NoService, ReaderError
from .pcsc import PcscAdapter, PcscCard, SlotStatus
from .settings import ReaderSettings

__all__ = ["ReaderService", "ReaderState", "ReaderStatus"]

logger = logging.getLogger(__name__)


class ReaderState(enum.Enum):
    """Where the reader is, as the display and the status topic show it."""

    STARTING = "starting"
    NO_SERVICE = "no_service"
    """pcscd is not running (or is being restarted)."""
    NO_READER = "no_reader"
    """pcscd runs, but the reader is not connected."""
    READY = "ready"
    """The reader is connected and empty: insert a card."""
    CARD_PRESENT = "card_present"
    """A card is in the reader and answered its reset."""
    CARD_MUTE = "card_mute"
    """A card is in the reader but does not answer (inserted upside down, dead chip)."""
    STOPPED = "stopped"


@dataclasses.dataclass(frozen=True, slots=True)
class ReaderStatus:
    """One state of the reader, with what goes with it. Never carries card data."""

    state: ReaderState
    reader: str | None = None
    atr: bytes = b""
    detail: str = ""
    """Why, for the bad states (an error message without card data)."""


Listener = Callable[[ReaderStatus], None]


class ReaderService:
    """Watches one reader and hands its card to the kernel. An async context manager.

    ``adapter`` defaults to a :class:`PcscAdapter` with the same settings.
    """

    def __init__(
        self, settings: ReaderSettings | None = None, *, adapter: PcscAdapter | None = None
    ) -> None:
        self.settings = settings or ReaderSettings()
        self.adapter = adapter or PcscAdapter(self.settings)
        self._status = ReaderStatus(ReaderState.STARTING)
        self._changed = asyncio.Condition()
        self._queues: set[asyncio.Queue[ReaderStatus]] = set()
        self._listeners: list[Listener] = []
        self._idle = asyncio.Event()  # no card session open: the supervisor may watch
        self._idle.set()
        self._session_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._mute_card: tuple[str, int] | None = None  # (reader, event count) of a mute card
        self._events = -1  # the reader's event count when last seen

    # -- state and subscribers ---------------------------------------------------------

    @property
    def status(self) -> ReaderStatus:
        """The current state."""
        return self._status

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` on every change (in the event loop); returns the remover.

        A listener that raises is logged and kept.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def updates(self) -> AsyncIterator[ReaderStatus]:
        """The current state, then every change, for as long as the caller iterates."""
        queue: asyncio.Queue[ReaderStatus] = asyncio.Queue()
        self._queues.add(queue)
        try:
            yield self._status
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)

    async def wait_for(self, *states: ReaderState, timeout: float | None = None) -> ReaderStatus:
        """Wait until the state is one of ``states``; :class:`TimeoutError` after ``timeout``."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self._status.state in states)
            return self._status

    async def _publish(self, status: ReaderStatus) -> None:
        if status == self._status:
            return
        previous, self._status = self._status, status
        level = logging.INFO if status.state is not ReaderState.CARD_PRESENT else logging.DEBUG
        logger.log(
            level,
            "reader %s -> %s%s",
            previous.state.value,
            status.state.value,
            f" ({status.detail})" if status.detail else "",
        )
        for queue in self._queues:
            queue.put_nowait(status)
        for listener in list(self._listeners):
            try:
                listener(status)
            except Exception:
                logger.exception("reader state listener failed")
        async with self._changed:
            self._changed.notify_all()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start supervising (returns at once; watch :attr:`status` or :meth:`updates`)."""
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name="reader-service")

    async def stop(self) -> None:
        """Stop supervising and release PC/SC."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.adapter.close()
        await self._publish(ReaderStatus(ReaderState.STOPPED))

    async def __aenter__(self) -> ReaderService:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- the card, for the kernel --------------------------------------------------------

    @contextlib.asynccontextmanager
    async def card_session(self, timeout: float | None = None) -> AsyncIterator[PcscCard]:
        """Wait (up to ``timeout``) for a card, power it and yield its channel.

        The card is powered off when the block ends, whatever happened. A card that does
        not answer its reset raises :class:`CardMuteError` (and the state turns
        ``card_mute``); one pulled meanwhile raises ``CardRemovedError``.
        """
        async with self._session_lock:
            status = await self.wait_for(ReaderState.CARD_PRESENT, timeout=timeout)
            if status.reader is None:
                raise NoReader("no reader to power a card in")
            self._idle.clear()
            try:
                try:
                    card = await self.adapter.connect(status.reader)
                except CardMuteError as exc:
                    self._mute_card = (status.reader, self._events)
                    await self._publish(
                        dataclasses.replace(status, state=ReaderState.CARD_MUTE, detail=str(exc))
                    )
                    raise
                try:
                    yield card
                finally:
                    with contextlib.suppress(ReaderError):
                        await card.disconnect()
            finally:
                self._idle.set()

    # -- supervision ---------------------------------------------------------------------

    def _pick(self, readers: list[str]) -> str | None:
        wanted = self.settings.reader
        for name in readers:
            if wanted is None or name.startswith(wanted):
                return name
        return None

    async def _supervise(self) -> None:
        settings = self.settings
        backoff = settings.backoff_initial
        reader: str | None = None
        known: SlotStatus | None = None
        while True:
            try:
                await self._session_closed()
                if reader is None:
                    reader = self._pick(await self.adapter.list_readers())
                    if reader is None:
                        await self._publish(
                            ReaderStatus(ReaderState.NO_READER, detail="no reader connected")
                        )
                        backoff = settings.backoff_initial
                        await asyncio.sleep(settings.no_reader_poll)
                        continue
                    known = None
                await self._session_closed()  # (again: list_readers gave way to the loop)
                if known is None or self._status.state not in (
                    ReaderState.READY,
                    ReaderState.CARD_PRESENT,
                    ReaderState.CARD_MUTE,
                ):
                    slot: SlotStatus | None = await self.adapter.status(reader)
                else:
                    slot = await self.adapter.wait_change(reader, known, settings.event_wait)
                backoff = settings.backoff_initial
                if slot is None:  # nothing changed, or a card session wants the thread
                    continue
                if (
                    known is not None
                    and slot.present
                    and known.present
                    and (slot.events - known.events) % 0x10000 >= 2
                ):
                    # out and in again between two looks (pcscd counts each insertion
                    # and removal): the card changed, say so
                    await self._publish(ReaderStatus(ReaderState.READY, reader=reader))
                known = slot
                self._events = slot.events
                await self._publish(self._from_slot(slot))
            except NoService as exc:
                reader, known = None, None
                await self._publish(ReaderStatus(ReaderState.NO_SERVICE, detail=str(exc)))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, settings.backoff_max)
            except NoReader as exc:
                reader, known = None, None
                await self._publish(ReaderStatus(ReaderState.NO_READER, detail=str(exc)))
                await asyncio.sleep(settings.no_reader_poll)
            except ReaderError as exc:  # anything else PC/SC says: start again, patiently
                logger.warning("reader supervision: %s", exc)
                reader, known = None, None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, settings.backoff_max)

    async def _session_closed(self) -> None:
        """Return once no card session is open (an Event wakes its waiters at ``set()``
        even if it is cleared again before they run: look again)."""
        while not self._idle.is_set():
            await self._idle.wait()

    def _from_slot(self, slot: SlotStatus) -> ReaderStatus:
        if not slot.present:
            return ReaderStatus(ReaderState.READY, reader=slot.reader)
        if slot.mute or self._mute_card == (slot.reader, slot.events):
            return ReaderStatus(
                ReaderState.CARD_MUTE, reader=slot.reader, detail="the card does not answer"
            )
        return ReaderStatus(ReaderState.CARD_PRESENT, reader=slot.reader, atr=slot.atr)
