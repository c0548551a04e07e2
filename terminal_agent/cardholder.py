"""The kernel's Cardholder seam, made of the PIN pad and the displays.

- Online PIN: the PIN pad builds an ISO 9564 format 4 block under its own AES DUKPT PIN
  key and returns only that block and its KSN; the agent never holds a clear PIN.
- Application choice and confirmation: the choices are shown on the pad and the
  cashier screen; the cardholder answers on the pad's keypad (digit, OK, CANCEL).
- Offline plaintext PIN: not offered. With a PIN pad separate from the card reader, a
  plaintext PIN for the card's VERIFY would have to cross this computer in clear, which
  the design forbids (DESIGN 3 step 4). The kernel is told NOT_POSSIBLE and moves to the
  card's next CVM rule, as EMV Book 3 prescribes for a CVM the terminal cannot perform;
  the default terminal capabilities do not announce plaintext offline PIN either.
  docs/emv-kernel.md says what a PIN pad with its own card slot would change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from paycore.currency import by_numeric
from paycore.pinpad import Key, KeyPressedEvent
from terminal_agent.display import Display, Prompt
from terminal_agent.kernel import (
    Candidate,
    CardChannel,
    OfflinePinOutcome,
    OfflinePinStatus,
    OnlinePinResult,
    OnlinePinStatus,
)
from terminal_agent.pinpad import PinEntryStatus, PinpadDriver, PinpadError

_PIN_STATUS = {
    PinEntryStatus.OK: OnlinePinStatus.OK,
    PinEntryStatus.CANCELLED: OnlinePinStatus.CANCELLED,
    PinEntryStatus.TIMEOUT: OnlinePinStatus.TIMEOUT,
    PinEntryStatus.BYPASSED: OnlinePinStatus.BYPASSED,
}
_DIGITS = {Key(0x30 + d): d for d in range(10)}


class PadCardholder:
    """Implements :class:`terminal_agent.kernel.Cardholder` with a PIN pad and displays."""

    def __init__(
        self,
        pinpad: PinpadDriver,
        display: Display,
        *,
        pin_key_slot: int = 1,
        pin_timeout_s: float = 30.0,
        choice_timeout_s: float = 30.0,
    ) -> None:
        self.pinpad = pinpad
        self.display = display
        self.pin_key_slot = pin_key_slot
        self.pin_timeout_s = pin_timeout_s
        self.choice_timeout_s = choice_timeout_s

    async def _ask(self, lines: Sequence[str], accept: set[Key]) -> Key | None:
        """Show ``lines`` on the pad and return the next accepted key; None on timeout.

        The subscription to key events opens before the question is shown, so a key
        pressed as soon as it appears is not lost.
        """
        with self.pinpad.events() as events:
            await self.pinpad.display(tuple(lines)[:4])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.choice_timeout_s):
                    while True:
                        event = await events.get()
                        if isinstance(event, KeyPressedEvent) and event.key in accept:
                            return event.key
        return None

    async def choose_application(self, candidates: Sequence[Candidate]) -> int | None:
        lines = tuple(f"{i + 1} {c.label}"[:20] for i, c in enumerate(candidates[:9]))
        await self.display.show(Prompt("choose_application", "Choose the card to use", lines))
        keys = {Key(0x31 + i) for i in range(len(lines))} | {Key.CANCEL}
        key = await self._ask(("SELECT:", *lines), keys)
        if key is None or key is Key.CANCEL:
            return None
        return _DIGITS[key] - 1

    async def confirm_application(self, candidate: Candidate) -> bool:
        await self.display.show(
            Prompt("confirm_application", f"Use {candidate.label}?", ("OK = yes",))
        )
        question = (f"USE {candidate.label}?"[:20], "OK = YES")
        return await self._ask(question, {Key.ENTER, Key.CANCEL}) is Key.ENTER

    async def online_pin(self, pan: str, amount: int, currency: str) -> OnlinePinResult:
        money = by_numeric(currency.zfill(3)[-3:]).format(amount)
        await self.display.show(Prompt("enter_pin", "Enter PIN on the PIN pad", (money,)))
        try:
            entry = await self.pinpad.get_pin(
                amount,
                int(currency),
                pan,
                key_slot=self.pin_key_slot,
                timeout_ms=int(self.pin_timeout_s * 1000),
            )
        except PinpadError:
            return OnlinePinResult(OnlinePinStatus.CANCELLED)
        return OnlinePinResult(_PIN_STATUS[entry.status], entry.pin_block)

    async def offline_plaintext_pin(
        self, channel: CardChannel, tries_left: int | None
    ) -> OfflinePinOutcome:
        del channel, tries_left  # see the module docstring: never done on this terminal
        return OfflinePinOutcome(OfflinePinStatus.NOT_POSSIBLE)

    async def signature_required(self) -> None:
        await self.display.show(Prompt("signature", "Signature required on the receipt"))

    async def show(self, message: str) -> None:
        await self.display.show(Prompt("message", message))
        with contextlib.suppress(PinpadError):
            await self.pinpad.display((message[:20],))
