"""Where prompts and results go: the cashier screen, the PIN pad's display, a log.

The transaction state machine and the cardholder seam publish :class:`Prompt` objects
to a :class:`Display`; the cashier web page (a later issue) will be one subscriber, the
PIN pad's own display another, and :class:`RecordingDisplay` keeps them for tests and
for ``terminal-agent pay``. Prompts never carry card data: PANs are masked before a
prompt is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

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
