"""An in-process transport: a card application behind ``transmit(apdu) -> (data, sw1, sw2)``.

The fast seam for kernel unit tests (house style 6): the same shape as the pyscard
adapter, without pcscd. It passes every answer through as the card gave it: ``61xx``
and ``6Cxx`` reach the caller (the terminal's reader layer handles them, EMV 4.4 Book 1
9.3.1), and :class:`CardRemoved` propagates.
"""

from __future__ import annotations

from hardware.card_interface import CardApplication

__all__ = ["InProcessTransport", "ResponseTooShort"]


class ResponseTooShort(Exception):
    """The card answered fewer than two bytes: there is no status word to report."""


class InProcessTransport:
    """Carries APDUs to ``card`` in the same process; powers it on when made."""

    def __init__(self, card: CardApplication, *, power_on: bool = True) -> None:
        self.card = card
        self.atr = card.power_on() if power_on else b""

    def reset(self) -> bytes:
        """Cold reset (power off, power on); returns the ATR."""
        self.card.power_off()
        self.atr = self.card.power_on()
        return self.atr

    def transmit(self, apdu: bytes) -> tuple[bytes, int, int]:
        """Send one command APDU; the answer's data, SW1 and SW2, unaltered."""
        answer = self.card.process_apdu(bytes(apdu))
        if len(answer) < 2:
            raise ResponseTooShort(f"card answered {len(answer)} byte(s)")
        return answer[:-2], answer[-2], answer[-1]
