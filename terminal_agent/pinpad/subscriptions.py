"""Fan-out of the driver's unsolicited news (key presses, link state) to subscribers.

A subscriber takes either a :class:`Subscription` (an async iterator with its own bounded
queue; the oldest item is dropped when a slow reader lets it fill) or a plain callback run
on the event loop. Subscribing takes effect at once, so nothing published after the call
is missed, even before the first ``await``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class Subscription(Generic[T]):
    """Items published after it was made, in order: ``async for item in subscription``.

    Iteration ends after :meth:`close` (or the driver closing). Also a context manager.
    """

    def __init__(self, hub: Hub[T], maxsize: int) -> None:
        self._hub = hub
        self._items: collections.deque[T] = collections.deque(maxlen=maxsize)
        self._wakeup = asyncio.Event()
        self._closed = False
        self.dropped = 0
        """Items lost because the queue was full."""

    def _put(self, item: T) -> None:
        if self._closed:
            return
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(item)
        self._wakeup.set()

    async def get(self) -> T:
        """The next item; :class:`StopAsyncIteration` once closed and drained."""
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._items.popleft()

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        return await self.get()

    def close(self) -> None:
        """Stop receiving; a reader waiting in :meth:`get` ends its iteration."""
        if not self._closed:
            self._closed = True
            self._hub._remove(self)
            self._wakeup.set()

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Hub(Generic[T]):
    """Publishes items to every subscription and callback."""

    def __init__(self, name: str, maxsize: int) -> None:
        self._name = name
        self._maxsize = maxsize
        self._subscriptions: list[Subscription[T]] = []
        self._callbacks: list[Callable[[T], None]] = []

    def subscribe(self) -> Subscription[T]:
        """A new subscription."""
        subscription = Subscription(self, self._maxsize)
        self._subscriptions.append(subscription)
        return subscription

    def add_callback(self, callback: Callable[[T], None]) -> Callable[[], None]:
        """Call ``callback(item)`` for every item; returns the function that stops it."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def publish(self, item: T) -> None:
        """Hand ``item`` to everyone; a failing callback is logged, the others still run."""
        for subscription in list(self._subscriptions):
            subscription._put(item)
        for callback in list(self._callbacks):
            try:
                callback(item)
            except Exception:
                log.exception("%s subscriber failed", self._name)

    def close(self) -> None:
        """End every subscription."""
        for subscription in list(self._subscriptions):
            subscription.close()
        self._callbacks.clear()

    def _remove(self, subscription: Subscription[T]) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
