"""Emulated cards behind a real PC/SC stack: a private pcscd with a vsmartcard vpcd reader.

* :mod:`hardware.pcsc.vpcd`: :class:`VpcdCardLink` connects a card application
  (:class:`hardware.card_interface.CardApplication`) to vpcd over TCP.
* :mod:`hardware.pcsc.pcscd`: :class:`PcscdService` runs pcscd in a private mount
  namespace with a vpcd reader entry; :func:`wait_for_card` waits for PC/SC card events.
* :mod:`hardware.services`: process helpers shared with :mod:`hardware.mosquitto`.
* :mod:`hardware.pcsc.fixtures`: the pytest fixtures (``pcscd_vpcd``, ``vpcd_card``,
  ``mosquitto_broker``).

The agent reaches the card only through pyscard, unchanged, as it would a USB reader.
"""

from hardware.pcsc.pcscd import PcscdService, ReaderState, wait_for_card
from hardware.pcsc.vpcd import VpcdCardLink, VpcdLinkError
from hardware.services import MissingPackageError, ServiceError

__all__ = [
    "MissingPackageError",
    "PcscdService",
    "ReaderState",
    "ServiceError",
    "VpcdCardLink",
    "VpcdLinkError",
    "wait_for_card",
]
