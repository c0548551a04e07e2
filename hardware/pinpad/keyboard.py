"""A keypad for running the emulated PIN pad by hand: keys typed on a terminal.

Digits are digits, Enter is ENTER, Backspace is CLEAR, Esc or ``c`` is CANCEL. The
terminal is put in cbreak mode (no echo, no line buffering) while the source is open,
so the typed PIN is never shown; the emulator, like a real pad, keeps it to itself.
"""

from __future__ import annotations

import asyncio
import os
import termios
import tty
from types import TracebackType
from typing import Any

from paycore.pinpad import Key

_KEYS: dict[bytes, Key] = {
    **{str(d).encode(): Key(0x30 + d) for d in range(10)},
    b"\r": Key.ENTER,
    b"\n": Key.ENTER,
    b"\x7f": Key.CLEAR,
    b"\x08": Key.CLEAR,
    b"\x1b": Key.CANCEL,
    b"c": Key.CANCEL,
}


class TerminalKeypad:
    """A :class:`~hardware.pinpad.script.KeySource` reading a terminal file descriptor."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._saved: list[Any] | None = None
        self._queue: asyncio.Queue[Key] | None = None

    def __enter__(self) -> TerminalKeypad:
        if os.isatty(self._fd):
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def start_entry(self) -> None:
        if self._queue is not None:
            while not self._queue.empty():  # keys typed before the prompt do not count
                self._queue.get_nowait()

    async def read_key(self) -> Key:
        if self._queue is None:
            self._queue = asyncio.Queue()
            asyncio.get_running_loop().add_reader(self._fd, self._on_readable)
        return await self._queue.get()

    def _on_readable(self) -> None:
        assert self._queue is not None
        data = os.read(self._fd, 16)
        if not data:
            asyncio.get_running_loop().remove_reader(self._fd)
            return
        for i in range(len(data)):
            key = _KEYS.get(data[i : i + 1])
            if key is not None:
                self._queue.put_nowait(key)
