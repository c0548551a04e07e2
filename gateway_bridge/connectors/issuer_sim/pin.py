"""Online PIN verification values: Visa PVV and IBM 3624 offset, through psec.

Standards and methods (the arithmetic is psec's, ``psec.pin``):

* **Visa PVV** (the PIN verification value of the Visa PIN Verification Service): the
  transformed security parameter ``TSP = 11 rightmost PAN digits excluding the check
  digit || PVKI || 4 PIN digits`` is enciphered with the TDES PVK; the PVV is the first
  four decimal digits of the result (then hex digits A-F as 0-5 if fewer than four).
  Only the **four leftmost** PIN digits enter the TSP, so for a longer PIN the PVV
  checks those four (that is the method, not a shortcut).
* **IBM 3624 offset**: the validation data (``validation_length`` PAN digits from
  ``validation_start``, 0-based, padded to 16 with ``pad``) is enciphered with the PVK,
  decimalised through the 16-digit table; the natural PIN is its leftmost ``len(offset)``
  digits, and the customer PIN is natural PIN + offset, digit by digit modulo 10. The
  PIN length is the offset length.

The issuer keeps the PVK and the PVV (or the offset), never the PIN. A check is a
function of the clear PIN digits (ASCII in a ``bytearray``) that the key store calls
inside :meth:`~gateway_bridge.connectors.base.PinService.verify`; it copies nothing out
and compares in constant time. psec takes ``str``, so a transient ``str`` of the PIN
exists for the duration of the call (Python strings cannot be wiped).

:func:`visa_pvv` and :func:`ibm3624_offset` compute the values from a test PIN when an
accounts file gives the key but not the value (see docs/issuer-simulator.md).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass

from psec import pin as _psec_pin

__all__ = [
    "Ibm3624",
    "PinCheck",
    "PinVerification",
    "VisaPvv",
    "ibm3624_offset",
    "visa_pvv",
]

PinCheck = Callable[[bytearray], bool]
"""What :meth:`PinService.verify` calls with the clear PIN digits."""


def _digits(pin: bytearray) -> str | None:
    """The PIN as a str when it is 4-12 ASCII digits, else None."""
    if not 4 <= len(pin) <= 12 or not all(0x30 <= b <= 0x39 for b in pin):
        return None
    return pin.decode("ascii")


def visa_pvv(pvk: bytes, pvki: int, pin: str, pan: str) -> str:
    """The Visa PVV of ``pin`` (its four leftmost digits) for ``pan`` under ``pvk``.

    >>> visa_pvv(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"), 3, "4524",
    ...          "1122334455667788")
    '4021'

    Raises ValueError (psec's) for a bad key, PVKI, PIN or PAN.
    """
    return _psec_pin.generate_visa_pvv(pvk, str(pvki), pin[:4], pan)


def ibm3624_offset(
    pvk: bytes,
    decimalisation_table: str,
    pin: str,
    pan: str,
    validation_start: int,
    validation_length: int,
    pad: str,
) -> str:
    """The IBM 3624 offset that turns the natural PIN for ``pan`` into ``pin``.

    >>> ibm3624_offset(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"),
    ...                "1234567890123456", "4524", "1122334455667788", 0, 16, "F")
    '0000'
    """
    return _psec_pin.generate_ibm3624_offset(
        pvk, decimalisation_table, pin, pan, validation_start, validation_length, pad
    )


@dataclass(frozen=True, slots=True, repr=False)
class VisaPvv:
    """The issuer's Visa PVV record: PVK, PVK index and the PVV."""

    pvk: bytes
    pvki: int
    pvv: str

    method = "pvv"

    def check(self, pan: str) -> PinCheck:
        """A check for ``pan`` that recomputes the PVV from the entered PIN and compares."""

        def check(pin: bytearray) -> bool:
            digits = _digits(pin)
            if digits is None:
                return False
            try:
                computed = visa_pvv(self.pvk, self.pvki, digits, pan)
            except ValueError:
                return False
            return hmac.compare_digest(computed.encode(), self.pvv.encode())

        return check

    def __repr__(self) -> str:
        return f"VisaPvv(pvki={self.pvki})"


@dataclass(frozen=True, slots=True, repr=False)
class Ibm3624:
    """The issuer's IBM 3624 record: PVK, decimalisation table, validation data, offset."""

    pvk: bytes
    decimalisation_table: str
    offset: str
    validation_start: int
    validation_length: int
    pad: str

    method = "ibm3624"

    def check(self, pan: str) -> PinCheck:
        """A check for ``pan``: natural PIN + offset must equal the entered PIN."""

        def check(pin: bytearray) -> bool:
            if len(pin) != len(self.offset) or _digits(pin) is None:
                return False
            try:
                expected = _psec_pin.generate_ibm3624_pin(
                    self.pvk,
                    self.decimalisation_table,
                    self.offset,
                    pan,
                    self.validation_start,
                    self.validation_length,
                    self.pad,
                )
            except ValueError:
                return False
            return hmac.compare_digest(expected.encode(), bytes(pin))

        return check

    def __repr__(self) -> str:
        return f"Ibm3624(pin_length={len(self.offset)})"


PinVerification = VisaPvv | Ibm3624
