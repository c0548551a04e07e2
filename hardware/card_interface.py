"""The seam between an emulated card and whatever carries its APDUs.

A card application (hardware.cards) answers command APDUs; a transport (the in-process
one, or the vpcd link behind pcscd in hardware.pcsc) delivers them. Both sides only
know this protocol.
"""

from __future__ import annotations

from typing import Protocol


class CardApplication(Protocol):
    """Anything that answers like a contact smart card (ISO 7816-3/-4)."""

    def power_on(self) -> bytes:
        """Cold reset: forget the session state and return the ATR."""
        ...

    def power_off(self) -> None:
        """Contacts deactivated: the session ends."""
        ...

    def process_apdu(self, command: bytes) -> bytes:
        """Answer one command APDU with response data followed by SW1 SW2.

        Never raises for bad commands: a card answers them with a status word
        (6700, 6D00, 6E00 ...). A fault personality may raise
        :class:`CardRemoved` to simulate the card leaving the reader mid-exchange.
        """
        ...


class CardRemoved(Exception):
    """Raised by a card application to simulate the card being pulled out."""
