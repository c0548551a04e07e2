"""Emulated EMV contact cards: the card application, its catalogue of profiles, faults.

* :class:`EmvCard` (:mod:`.card`): a card built from a profile, implementing
  :class:`hardware.card_interface.CardApplication`;
* :func:`load_profile`, :func:`catalogue` (:mod:`.profile`): the profiles in
  ``catalogue/*.toml`` (test data only);
* :class:`Faults`, :class:`At` (:mod:`.faults`): fault personalities;
* :class:`InProcessTransport` (:mod:`.transport`): ``transmit(apdu) -> (data, sw1, sw2)``
  without pcscd, for kernel unit tests.

Exceptions::

    ProfileError (ValueError)   a profile file that does not load (names file and field)
    ResponseTooShort            the in-process transport got fewer than 2 bytes
    CardRemoved                 (hardware.card_interface) the pulled-card fault
"""

from __future__ import annotations

from .apdu import SW
from .card import PPSE_NAME, PSE_NAME, EmvCard
from .crypto import AcType
from .faults import At, Clock, Faults, SystemClock
from .profile import (
    ApplicationProfile,
    CardProfile,
    ProfileError,
    catalogue,
    load_profile,
    load_profile_file,
)
from .transport import InProcessTransport, ResponseTooShort

__all__ = [
    "PPSE_NAME",
    "PSE_NAME",
    "SW",
    "AcType",
    "ApplicationProfile",
    "At",
    "CardProfile",
    "Clock",
    "EmvCard",
    "Faults",
    "InProcessTransport",
    "ProfileError",
    "ResponseTooShort",
    "SystemClock",
    "catalogue",
    "load_profile",
    "load_profile_file",
]
