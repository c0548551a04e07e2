"""A card slot without PC/SC: the emulated card answered in this process.

Used by the demo when pcscd and the vpcd driver are not installed. It offers the one
method of the agent's ReaderService that a payment uses (``card_session``), over the
same CardChannel seam, so the kernel and everything after it run unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from hardware.card_interface import CardApplication
from hardware.cards import InProcessTransport
from terminal_agent.reader import CardRemovedError


class InProcessChannel:
    """The agent's CardChannel over an in-process card, with the reader layer's 61xx and
    6Cxx handling done here as terminal_agent.reader does it over PC/SC."""

    def __init__(self, card: CardApplication) -> None:
        self._transport = InProcessTransport(card)

    async def transmit(self, apdu: bytes) -> tuple[bytes, int, int]:
        data, sw1, sw2 = self._transport.transmit(apdu)
        if sw1 == 0x6C:
            data, sw1, sw2 = self._transport.transmit(apdu[:-1] + bytes((sw2,)))
        collected = data
        while sw1 == 0x61:
            data, sw1, sw2 = self._transport.transmit(bytes((0x00, 0xC0, 0x00, 0x00, sw2)))
            collected += data
        return collected, sw1, sw2


class InProcessSlot:
    """Holds at most one card; ``card_session`` waits for one like a reader does."""

    def __init__(self) -> None:
        self.card: CardApplication | None = None

    def __call__(self, card: CardApplication) -> None:
        """Insert ``card`` (the same call as hardware.pcsc.slot.CardSlot)."""
        self.card = card

    def remove(self) -> None:
        self.card = None

    @contextlib.asynccontextmanager
    async def card_session(self, timeout: float | None = None) -> AsyncIterator[InProcessChannel]:
        del timeout
        if self.card is None:
            raise CardRemovedError("no card in the in-process slot")
        yield InProcessChannel(self.card)
