"""A card slot: one reader of a private pcscd, one emulated card at a time.

Insertion and removal wait until PC/SC itself has seen them, using pcscd's event
counter: right after a card pulls itself out, pcscd may report the reader empty before
its own polling noticed, and a card inserted in that window is never reported.
The caller's process must point libpcsclite at the service (``PCSCLITE_CSOCK_NAME``,
see :attr:`PcscdService.client_env`) before its first PC/SC call.
"""

from __future__ import annotations

from hardware.card_interface import CardApplication
from hardware.pcsc.pcscd import PcscdService, wait_for_card
from hardware.pcsc.vpcd import VpcdCardLink


class CardSlot:
    """The reader of ``pcscd_vpcd``: insert one card application at a time."""

    def __init__(self, service: PcscdService, *, event_timeout: float = 5.0) -> None:
        self.service = service
        self.event_timeout = event_timeout
        self.link: VpcdCardLink | None = None
        self._events_at_insert: int | None = None

    @property
    def reader(self) -> str:
        """The PC/SC reader name the card appears in."""
        return self.service.card_reader

    def __call__(self, card: CardApplication, *, wait: bool = True) -> VpcdCardLink:
        """Insert ``card``; with ``wait``, return once PC/SC reports it present."""
        self.remove()
        self.link = VpcdCardLink(card, self.service.vpcd_port)
        self.link.insert()
        if wait:
            state = wait_for_card(self.reader, present=True, timeout=self.event_timeout)
            self._events_at_insert = state.events
        return self.link

    def remove(self, *, wait: bool = True) -> None:
        """Pull the card out (if any); with ``wait``, until pcscd has seen the reader empty.

        Also right after the card application pulled itself out (``CardRemoved``): the
        next card must not arrive before pcscd's polling has seen this one leave.
        """
        if self.link is None:
            return
        self.link.remove()
        self.link = None
        if wait:
            wait_for_card(
                self.reader,
                present=False,
                timeout=self.event_timeout,
                after_events=self._events_at_insert,
            )
