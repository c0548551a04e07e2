"""pytest fixtures for the emulated PIN pad (registered by hardware.pytest_plugin).

``pinpad`` is a factory: ``pad = pinpad(slots={0: AesDukptKey(...)},
scripts=[PinScript.entered("1234")], faults=Faults(drop=0.2))`` starts an
:class:`~hardware.pinpad.EmulatedPinpad` with a stable symlink in the test's temporary
directory (``pad.link_path``); every pad started is stopped when the test ends.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

import pytest

from hardware.pinpad.emulator import EmulatedPinpad
from hardware.pinpad.faults import Faults
from hardware.pinpad.keys import RandomSource, SlotKey
from hardware.pinpad.script import KeySource, PinScript
from paycore.pinpad import LinkTimings


class PinpadFactory(Protocol):
    """The ``pinpad`` fixture's type."""

    def __call__(
        self,
        *,
        kbpk: bytes | None = None,
        kbpk_algorithm: str = "A",
        slots: Mapping[int, SlotKey] | None = None,
        slot_count: int = 4,
        scripts: Iterable[PinScript] = (),
        keypad: KeySource | None = None,
        faults: Faults | None = None,
        timings: LinkTimings | None = None,
        random: RandomSource = secrets.token_bytes,
    ) -> EmulatedPinpad: ...


@pytest.fixture
def pinpad(tmp_path: Path) -> Iterator[PinpadFactory]:
    """Start emulated PIN pads on ptys; all are stopped after the test."""
    started: list[EmulatedPinpad] = []

    def start(
        *,
        kbpk: bytes | None = None,
        kbpk_algorithm: str = "A",
        slots: Mapping[int, SlotKey] | None = None,
        slot_count: int = 4,
        scripts: Iterable[PinScript] = (),
        keypad: KeySource | None = None,
        faults: Faults | None = None,
        timings: LinkTimings | None = None,
        random: RandomSource = secrets.token_bytes,
    ) -> EmulatedPinpad:
        pad = EmulatedPinpad(
            kbpk=secrets.token_bytes(32) if kbpk is None else kbpk,
            kbpk_algorithm=kbpk_algorithm,
            slots=slots,
            slot_count=slot_count,
            keypad=keypad,
            faults=faults,
            timings=timings,
            random=random,
            link_path=tmp_path / f"pos-pinpad{len(started)}",
        )
        for script in scripts:
            pad.queue_pin(script)
        started.append(pad.start())
        return pad

    try:
        yield start
    finally:
        for pad in started:
            pad.stop()
