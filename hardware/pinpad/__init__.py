"""An emulated serial PIN pad on a pseudo-terminal (docs/pinpad-protocol.md).

:class:`EmulatedPinpad` serves the protocol on a pty that pyserial opens like a USB serial
port; :class:`PinScript` scripts the cardholder; :class:`Faults` switches line faults;
``hardware.pinpad.fixtures`` gives tests a ``pinpad`` factory fixture.
"""

from __future__ import annotations

from hardware.pinpad.emulator import EmulatedPinpad, PadStats
from hardware.pinpad.faults import Faults
from hardware.pinpad.keys import AesDukptKey, KeyStore, SlotKey, TdesDukptKey
from hardware.pinpad.script import KeySource, PinScript, ScriptedKeypad

__all__ = [
    "AesDukptKey",
    "EmulatedPinpad",
    "Faults",
    "KeySource",
    "KeyStore",
    "PadStats",
    "PinScript",
    "ScriptedKeypad",
    "SlotKey",
    "TdesDukptKey",
]
