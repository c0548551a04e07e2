"""Where the emulated pad's key presses come from: scripted per test, or a pluggable source.

A real pad reads its keypad inside the secure processor. The emulator asks a
:class:`KeySource` for keys during PIN entry; :class:`ScriptedKeypad` plays one
:class:`PinScript` per PIN entry (digits, ENTER, CANCEL, CLEAR, delays, or nothing more so
the entry times out). A keyboard source for running the emulator by hand implements the
same two methods.

Scripts hold test PINs; their reprs show only how many keys they press.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from dataclasses import dataclass, field
from typing import Protocol

from paycore.pinpad import Key

_DIGIT_KEYS = {str(d): Key(0x30 + d) for d in range(10)}


class KeySource(Protocol):
    """Keys for PIN entry. Called on the emulator's event loop."""

    def start_entry(self) -> None:
        """A PIN entry begins (a scripted source moves to its next script)."""
        ...

    async def read_key(self) -> Key:
        """The next key pressed; waits as long as it takes (the pad applies its timeout)."""
        ...


@dataclass(frozen=True, slots=True)
class PinScript:
    """What the cardholder does during one PIN entry: ``(delay_s, key)`` steps in order.

    After the last step nobody presses anything, so an entry that has not ended times out.
    """

    steps: tuple[tuple[float, Key], ...] = field(repr=False)

    def __repr__(self) -> str:
        return f"PinScript(<{len(self.steps)} keys>)"

    @classmethod
    def keys(cls, *keys: Key, delay: float = 0.0) -> PinScript:
        """Press ``keys`` with ``delay`` seconds before each."""
        return cls(tuple((delay, key) for key in keys))

    @classmethod
    def entered(cls, pin: str, *, delay: float = 0.0) -> PinScript:
        """Type ``pin`` and press ENTER."""
        return cls.keys(*_digits(pin), Key.ENTER, delay=delay)

    @classmethod
    def cancelled(cls, typed: str = "", *, delay: float = 0.0) -> PinScript:
        """Type ``typed`` then press CANCEL."""
        return cls.keys(*_digits(typed), Key.CANCEL, delay=delay)

    @classmethod
    def timeout(cls, typed: str = "", *, delay: float = 0.0) -> PinScript:
        """Type ``typed`` then walk away."""
        return cls.keys(*_digits(typed), delay=delay)

    @classmethod
    def bypassed(cls, *, delay: float = 0.0) -> PinScript:
        """Press ENTER with no digits (PIN bypass, when the host allows it)."""
        return cls.keys(Key.ENTER, delay=delay)


def _digits(text: str) -> list[Key]:
    try:
        return [_DIGIT_KEYS[ch] for ch in text]
    except KeyError:
        raise ValueError("PIN scripts take decimal digits only") from None


class ScriptedKeypad:
    """A :class:`KeySource` that plays queued scripts, one per PIN entry.

    ``queue`` may be called from any thread. With nothing queued, an entry times out.
    """

    def __init__(self, *scripts: PinScript) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque[PinScript] = collections.deque(scripts)
        self._steps: collections.deque[tuple[float, Key]] = collections.deque()

    def __repr__(self) -> str:
        return f"ScriptedKeypad(<{len(self._queue)} scripts queued>)"

    def queue(self, script: PinScript) -> None:
        """Play ``script`` at a coming PIN entry (after those already queued)."""
        with self._lock:
            self._queue.append(script)

    def start_entry(self) -> None:
        with self._lock:
            script = self._queue.popleft() if self._queue else PinScript(())
        self._steps = collections.deque(script.steps)

    async def read_key(self) -> Key:
        if not self._steps:
            await asyncio.Event().wait()  # nobody presses anything again
        delay, key = self._steps.popleft()
        if delay:
            await asyncio.sleep(delay)
        return key
