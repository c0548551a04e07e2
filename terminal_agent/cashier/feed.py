"""The cashier screen's live feed: prompts and device/link health (issue 7, docs/cashier-screen.md).

:class:`CashierFeed` is a :class:`~terminal_agent.display.Display`: put it in the agent's
:class:`~terminal_agent.display.FanOut` (the one given to both ``PaymentTerminal`` and
``PadCardholder``) and every :class:`~terminal_agent.display.Prompt` reaches each connected
page as a server-sent event (WHATWG HTML, "Server-sent events"). :func:`health` turns the
reader state, the PIN pad link state and the bridge availability into banners, each with
the action to take. Prompts carry no card data beyond a masked PAN (display.py), and the
feed adds none.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import time
from typing import Final, Protocol

from paycore.dukpt import AES_MAX_COUNTER, AES_MAX_ONE_BITS
from terminal_agent.display import Prompt
from terminal_agent.journal import JournalError
from terminal_agent.link import MqttLink
from terminal_agent.pinpad import PinpadDriver, PinpadError
from terminal_agent.pinpad.driver import LinkState
from terminal_agent.reader import ReaderService
from terminal_agent.reader.service import ReaderState

__all__ = ["DEFAULT_KEY_THRESHOLD", "Banner", "CashierFeed", "KeyWatch", "aes_keys_left", "health",
           "sse_event"]  # fmt: skip

log = logging.getLogger(__name__)

#: Prompts queued for one slow page before it is dropped (it reconnects and catches up).
QUEUE_LIMIT: Final = 64


@dataclasses.dataclass(frozen=True, slots=True)
class Banner:
    """One problem the cashier must see: what is wrong and what to do about it."""

    id: str
    text: str
    action: str


_READER_BANNERS: Final[dict[ReaderState, Banner]] = {
    ReaderState.NO_READER: Banner(
        "reader_missing",
        "Card reader missing",
        "Check the card reader's USB cable and plug it in again; payments resume when it is found.",
    ),
    ReaderState.NO_SERVICE: Banner(
        "reader_service",
        "Card reader service not running",
        "Restart the terminal; if this stays, call support.",
    ),
    ReaderState.STOPPED: Banner(
        "reader_stopped", "Card reader stopped", "Restart the terminal agent."
    ),
}


def health(
    reader: ReaderService | None, pinpad: PinpadDriver | None, link: MqttLink | None
) -> list[Banner]:
    """The banners for the current state of the reader, the PIN pad and the link."""
    banners: list[Banner] = []
    if reader is not None:
        banner = _READER_BANNERS.get(reader.status.state)
        if banner is not None:
            banners.append(banner)
    if pinpad is not None and pinpad.state is not LinkState.CONNECTED:
        banners.append(
            Banner(
                "pinpad_missing",
                "PIN pad missing",
                "Check the PIN pad's cable and plug it in again; card payments need it.",
            )
        )
    if link is not None:
        if not link.connected:
            banners.append(
                Banner(
                    "link_down",
                    "No network connection",
                    "Check the network cable or Wi-Fi; payments cannot be sent until it is back.",
                )
            )
        elif not link.bridge_online:
            banners.append(
                Banner(
                    "bridge_offline",
                    "Payment gateway offline",
                    "Payments cannot be approved now: take another form of payment, and call "
                    "support if this lasts more than a few minutes.",
                )
            )
    return banners


#: Keys left under which the cashier is told to ask for new keys (``[cashier] key_threshold``).
DEFAULT_KEY_THRESHOLD: Final = 10_000
KEYS_LOW_TEXT: Final = "PIN pad keys running low — ask for new keys (provisioning)"


def aes_keys_left(next_counter: int) -> int:
    """AES DUKPT transaction keys left from ``next_counter``: the counters up to
    ``AES_MAX_COUNTER`` with at most 16 one-bits (X9.24-3-2017 6.1)."""

    def usable_below(limit: int) -> int:
        count, ones = 0, 0
        for bit in range(limit.bit_length() - 1, -1, -1):
            if limit >> bit & 1:
                room = AES_MAX_ONE_BITS - ones
                count += sum(math.comb(bit, j) for j in range(0, min(room, bit) + 1) if room >= 0)
                ones += 1
        return count

    if next_counter > AES_MAX_COUNTER:
        return 0
    return usable_below(AES_MAX_COUNTER + 1) - usable_below(max(next_counter, 0))


class _KeyStatus(Protocol):
    @property
    def keys_left(self) -> int: ...


class _Pad(Protocol):
    async def key_status(self, slot: int) -> _KeyStatus: ...


class _Counters(Protocol):
    async def next_counter(self) -> int: ...


class KeyWatch:
    """The keys-low banners: the PIN pad's key in ``slot`` (KEY STATUS) and the terminal's
    own data-key DUKPT counter space (journal), each against ``threshold`` keys left.
    Asked at most once per ``interval_s`` however many pages are open; a pad that does not
    answer (busy with a PIN entry, unplugged) keeps the last answer."""

    def __init__(
        self,
        pinpad: _Pad | None,
        counters: _Counters | None,
        *,
        slot: int = 1,
        threshold: int = DEFAULT_KEY_THRESHOLD,
        interval_s: float = 30.0,
    ) -> None:
        self.pinpad, self.counters, self.slot = pinpad, counters, slot
        self.threshold, self.interval_s = threshold, interval_s
        self._pad_low = False
        self._own_low = False
        self._checked = -math.inf
        self._lock = asyncio.Lock()

    async def banners(self) -> list[Banner]:
        async with self._lock:
            if time.monotonic() - self._checked >= self.interval_s:
                await self._check()
                self._checked = time.monotonic()
        shown: list[Banner] = []
        if self._pad_low:
            shown.append(Banner("pinpad_keys_low", KEYS_LOW_TEXT,
                                "Keys are used up one per PIN: ask support for a new key load "
                                "before they run out."))  # fmt: skip
        if self._own_low:
            shown.append(Banner("terminal_keys_low", "Terminal keys running low — ask for "
                                "new keys (provisioning)",
                                "The terminal's own encryption keys are nearly used up: ask "
                                "support for a new key load."))  # fmt: skip
        return shown

    async def _check(self) -> None:
        if self.pinpad is not None:
            try:
                status = await self.pinpad.key_status(self.slot)
            except PinpadError as exc:
                log.debug("KEY STATUS not answered: %s", type(exc).__name__)
            else:
                self._pad_low = status.keys_left < self.threshold
        if self.counters is not None:
            try:
                left = aes_keys_left(await self.counters.next_counter())
            except JournalError as exc:  # a journal problem must not end the page's feed
                log.debug("DUKPT counter not read: %s", type(exc).__name__)
            else:
                self._own_low = left < self.threshold


def prompt_json(prompt: Prompt) -> str:
    return json.dumps({"kind": prompt.kind, "text": prompt.text, "lines": list(prompt.lines)})


def banners_json(banners: list[Banner]) -> str:
    return json.dumps({"banners": [dataclasses.asdict(b) for b in banners]})


def sse_event(event: str, data: str) -> bytes:
    """One server-sent event; ``data`` is one line of JSON (no newlines to split)."""
    return f"event: {event}\ndata: {data}\n\n".encode()


class CashierFeed:
    """A Display that hands every prompt to each subscribed page (and remembers the last,
    so a page that (re)connects shows where the terminal is)."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Prompt | None]] = set()
        self.last: Prompt = Prompt("idle", "Ready")
        self.closed = False

    async def show(self, prompt: Prompt) -> None:
        self.last = prompt
        for queue in tuple(self._queues):
            try:
                queue.put_nowait(prompt)
            except asyncio.QueueFull:
                self._queues.discard(queue)
                queue.get_nowait()  # room for the end marker: the page reconnects
                queue.put_nowait(None)

    def subscribe(self) -> asyncio.Queue[Prompt | None]:
        """A queue of prompts from now on; ``None`` means the feed ended (reconnect)."""
        queue: asyncio.Queue[Prompt | None] = asyncio.Queue(QUEUE_LIMIT)
        if self.closed:
            queue.put_nowait(None)
        else:
            self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Prompt | None]) -> None:
        self._queues.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def close(self) -> None:
        """End every page's stream (shutdown: the server need not wait for them)."""
        self.closed = True
        for queue in tuple(self._queues):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._queues.clear()
