"""pytest fixtures for the PC/SC stack (registered by hardware.pytest_plugin).

* ``pcscd_vpcd`` (session): a private pcscd with one vpcd reader. Session-scoped because
  libpcsclite reads ``PCSCLITE_CSOCK_NAME`` once per process (``pthread_once``): after
  the first PC/SC context the test process cannot be pointed at another pcscd. The
  fixture sets that variable in ``os.environ`` so pyscard in the test process finds it;
  child processes get :attr:`PcscdService.client_env`.
* ``vpcd_card`` (function): a :class:`CardSlot`; ``vpcd_card(app)`` inserts a card
  application into the reader and waits until PC/SC shows it; teardown removes it and
  waits until PC/SC shows the reader empty, so every test starts with an empty reader.
* ``mosquitto_broker`` (function): defined in :mod:`hardware.mosquitto`, registered here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from hardware.card_interface import CardApplication
from hardware.mosquitto import mosquitto_broker  # noqa: F401 - registered as a fixture here
from hardware.pcsc.pcscd import PcscdService, wait_for_card
from hardware.pcsc.vpcd import VpcdCardLink

_SOCKET_VARIABLE = "PCSCLITE_CSOCK_NAME"


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


@pytest.fixture(scope="session")
def pcscd_vpcd() -> Iterator[PcscdService]:
    """A running private pcscd with a vpcd reader, for the whole test session."""
    service = PcscdService()
    service.start()
    previous = os.environ.get(_SOCKET_VARIABLE)  # noqa: TID251 - fixtures own the env
    os.environ.update(service.client_env)  # noqa: TID251
    try:
        yield service
    finally:
        service.stop()
        if previous is None:
            os.environ.pop(_SOCKET_VARIABLE, None)  # noqa: TID251
        else:
            os.environ[_SOCKET_VARIABLE] = previous  # noqa: TID251


@pytest.fixture
def vpcd_card(pcscd_vpcd: PcscdService) -> Iterator[CardSlot]:
    """Insert card applications into the vpcd reader; the reader is empty afterwards."""
    if not pcscd_vpcd.running:
        raise RuntimeError(f"pcscd died during the session:\n{pcscd_vpcd.log_text()}")
    slot = CardSlot(pcscd_vpcd)
    try:
        yield slot
    finally:
        slot.remove()
