"""Fault personalities for the emulated cards, switchable per test.

A :class:`Faults` value says how a card misbehaves; :class:`FaultInjector` applies it
around the card's own command processing. One-shot faults fire at a chosen step
(:class:`At`: the Nth command APDU since the card was made, or the Nth command with a
given INS), counted over the card's lifetime so that a re-inserted card behaves again.

* ``delay``: a slow card, every answer after ``delay`` seconds (through the card's clock);
* ``pull_at``: the card leaves the reader: :class:`~hardware.card_interface.CardRemoved`
  is raised instead of an answer (the command is not processed);
* ``garbage_at`` / ``truncate_at``: the answer is replaced by ``garbage`` bytes, or cut to
  half its length (so a status-word-only answer becomes one byte);
* ``wrong_sw_at``: the answer's status word is replaced by ``wrong_sw``;
* ``t0_get_response``: T=0 case 4 behaviour (ISO/IEC 7816-3 12.2.3, EMV 4.4 Book 1
  9.3.1): an answer carrying data comes back as ``61xx`` and the data has to be fetched
  with GET RESPONSE (``00 C0 00 00 xx``), in pieces when Le is short;
* ``t0_wrong_le``: T=0 case 2 behaviour: a command without data whose Le is not the
  exact length of the answer gets ``6Cxx`` (``xx`` the right length) and must be sent
  again with that Le;
* ``aac_at_second_gen_ac``: the card declines at the second GENERATE AC whatever the
  issuer said (a real AAC, computed as usual).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from hardware.card_interface import CardRemoved

from .apdu import SW, response

__all__ = ["At", "Clock", "FaultInjector", "Faults", "SystemClock"]

_GET_RESPONSE = 0xC0


class Clock(Protocol):
    """What the card needs of time: a way to wait (tests pass a fake one)."""

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds`` (``time.sleep``)."""
        time.sleep(seconds)


@dataclass(frozen=True, slots=True)
class At:
    """A step of the exchange: the ``apdu``-th command (1-based), or the ``occurrence``-th
    command with instruction byte ``ins`` (e.g. ``At(ins=0xAE)`` = first GENERATE AC)."""

    apdu: int | None = None
    ins: int | None = None
    occurrence: int = 1

    def __post_init__(self) -> None:
        if (self.apdu is None) == (self.ins is None):
            raise ValueError("At needs exactly one of apdu= or ins=")

    def matches(self, index: int, ins: int | None, ins_count: int) -> bool:
        """True for the command numbered ``index`` whose INS has been seen ``ins_count`` times."""
        if self.apdu is not None:
            return index == self.apdu
        return ins == self.ins and ins_count == self.occurrence


@dataclass(frozen=True, slots=True)
class Faults:
    """How a card misbehaves; the default misbehaves in no way."""

    delay: float = 0.0
    pull_at: At | None = None
    garbage_at: At | None = None
    garbage: bytes = bytes.fromhex("DEADBEEF")
    truncate_at: At | None = None
    wrong_sw_at: At | None = None
    wrong_sw: int = 0x6F00
    t0_get_response: bool = False
    t0_wrong_le: bool = False
    aac_at_second_gen_ac: bool = False


@dataclass
class FaultInjector:
    """Applies :class:`Faults` around a card's command handler."""

    faults: Faults
    clock: Clock
    _count: int = 0
    _per_ins: Counter[int] = field(default_factory=Counter)
    _pending: bytes | None = None

    def power_on(self) -> None:
        """A reset loses any answer still waiting for GET RESPONSE."""
        self._pending = None

    def process(self, raw: bytes, handler: Callable[[bytes], bytes]) -> bytes:
        """Answer ``raw`` through ``handler``, misbehaving as configured."""
        f = self.faults
        self._count += 1
        ins = raw[1] if len(raw) >= 2 else None
        if ins is not None:
            self._per_ins[ins] += 1
        seen = self._per_ins[ins] if ins is not None else 0
        if f.delay > 0:
            self.clock.sleep(f.delay)
        if f.pull_at is not None and f.pull_at.matches(self._count, ins, seen):
            raise CardRemoved("card pulled (fault personality)")

        pending, self._pending = self._pending, None
        if f.t0_get_response and ins == _GET_RESPONSE and len(raw) in (4, 5) and raw[0] == 0:
            answer = self._get_response(raw, pending)
        else:
            answer = handler(raw)
            answer = self._t0(raw, answer)

        if f.garbage_at is not None and f.garbage_at.matches(self._count, ins, seen):
            return f.garbage
        if f.truncate_at is not None and f.truncate_at.matches(self._count, ins, seen):
            return answer[: len(answer) // 2]
        if f.wrong_sw_at is not None and f.wrong_sw_at.matches(self._count, ins, seen):
            return response(answer[:-2], f.wrong_sw)
        return answer

    def _get_response(self, raw: bytes, pending: bytes | None) -> bytes:
        if raw[2:4] != b"\x00\x00":
            return response(b"", SW.WRONG_P1P2)
        if not pending:
            return response(b"", SW.CONDITIONS_NOT_SATISFIED)
        want = (raw[4] or 256) if len(raw) == 5 else 256
        chunk, rest = pending[:want], pending[want:]
        if rest:
            self._pending = rest
            return response(chunk, 0x6100 | (min(len(rest), 256) & 0xFF))
        return response(chunk, SW.OK)

    def _t0(self, raw: bytes, answer: bytes) -> bytes:
        f = self.faults
        data, sw = answer[:-2], answer[-2:]
        if not data or sw != b"\x90\x00":
            return answer
        has_body = len(raw) > 5
        if f.t0_wrong_le and not has_body:
            le = (raw[4] or 256) if len(raw) == 5 else 256
            if le != len(data):
                return response(b"", 0x6C00 | (len(data) & 0xFF))
            return answer
        if f.t0_get_response:
            self._pending = data
            return response(b"", 0x6100 | (len(data) & 0xFF))
        return answer
