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

from hardware.mosquitto import mosquitto_broker
from hardware.pcsc.pcscd import PcscdService
from hardware.pcsc.slot import CardSlot

__all__ = ["CardSlot", "mosquitto_broker", "pcscd_vpcd", "vpcd_card"]

_SOCKET_VARIABLE = "PCSCLITE_CSOCK_NAME"


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
