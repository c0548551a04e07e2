"""Where prompts and results go: the cashier screen, the PIN pad's display, a log.

The transaction state machine and the cardholder seam publish :class:`Prompt` objects
to a :class:`Display`; the cashier web page (a later issue) will be one subscriber, the
PIN pad's own display another, and :class:`RecordingDisplay` keeps them for tests and
for ``terminal-agent pay``. Prompts never carry card data: PANs are masked before a
prompt is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol

PromptKind = Literal[
    "idle",
    "present_card",
    "choose_application",
    "confirm_application",
    "enter_pin",
    "processing",
    "approved",
    "declined",
    "remove_card",
    "not_completed",
    "signature",
    "message",
]


@dataclass(frozen=True, slots=True)
class Prompt:
    kind: PromptKind
    #: What a person reads, already in plain words ("APPROVED", "Insufficient funds").
    text: str
    #: Extra lines (amount, choices), never card data beyond a masked PAN.
    lines: tuple[str, ...] = field(default=())


class Display(Protocol):
    async def show(self, prompt: Prompt) -> None: ...


class RecordingDisplay:
    """Keeps every prompt in order (tests, the CLI's transcript)."""

    def __init__(self) -> None:
        self.prompts: list[Prompt] = []

    async def show(self, prompt: Prompt) -> None:
        self.prompts.append(prompt)

    def kinds(self) -> list[str]:
        return [p.kind for p in self.prompts]


class FanOut:
    """Several displays as one."""

    def __init__(self, displays: Sequence[Display]) -> None:
        self._displays = tuple(displays)

    async def show(self, prompt: Prompt) -> None:
        for display in self._displays:
            await display.show(prompt)


class PadDisplay:
    """The customer-facing display of the PIN pad: the prompts a cardholder needs."""

    #: Which prompts the cardholder sees on the pad, and in how few words.
    SHOWN: ClassVar[Mapping[str, str]] = {
        "present_card": "INSERT CARD",
        "processing": "PROCESSING",
        "approved": "APPROVED",
        "declined": "DECLINED",
        "not_completed": "NOT COMPLETED",
        "remove_card": "REMOVE CARD",
    }

    def __init__(self, pad: PadScreen) -> None:
        self._pad = pad

    async def show(self, prompt: Prompt) -> None:
        text = self.SHOWN.get(prompt.kind)
        if text is None:
            return
        try:
            await self._pad.display((text, *prompt.lines[:1])[:2])
        except Exception:  # noqa: BLE001 - the pad's own display is best effort
            return


class PadScreen(Protocol):
    async def display(self, lines: Sequence[str], timeout_ms: int = 0) -> None: ...
