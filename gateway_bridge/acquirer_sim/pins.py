"""The acquirer simulator's PIN service: DE52 deciphered under the zone PIN key (ISO 9564-1).

The connector translates each PIN block to the acquirer's zone PIN key (ZPK) through the
bridge's key store; the acquirer simulator holds the same zone key as key material and
hands its issuer this :class:`ZonePinService`, so the issuer's PIN check runs against the
PIN the cardholder entered. Zone format 0: an ISO 9564 format 0 block, TDES-ECB under a
double- or triple-length key (8 bytes on the wire). Zone format 4: an ISO 9564 format 4
block under an AES key (16 bytes). The request's :class:`EncryptedPinBlock` carries the
zone block with an all-zero KSN (a zone key is static), which this service ignores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from psec import des as _des

from paycore import pinblock
from paycore.wire import EncryptedPinBlock

__all__ = ["ZonePinService"]


class ZonePinService:
    """PIN operations of an acquirer that shares a zone PIN key with the bridge."""

    def __init__(self, zone_key: bytes, zone_format: Literal[0, 4]) -> None:
        sizes = {16, 24, 32} if zone_format == 4 else {16, 24}
        if len(zone_key) not in sizes:
            raise ValueError("zone PIN key has a wrong length for the zone format")
        self._key = bytes(zone_key)
        self._format = zone_format

    def __repr__(self) -> str:
        return f"ZonePinService(format={self._format})"

    def _pin(self, pin_block: EncryptedPinBlock, pan: str) -> str:
        block = bytes.fromhex(pin_block.block.get_secret_value())
        if self._format == 4:
            return pinblock.decipher_format4(self._key, block, pan)
        if len(block) != 8:
            raise pinblock.PinBlockError("zone PIN block has the wrong length", field="block")
        return pinblock.decode_format0(_des.decrypt_tdes_ecb(self._key, block), pan)

    def verify(
        self, pin_block: EncryptedPinBlock, pan: str, check: Callable[[bytearray], bool]
    ) -> bool:
        """Decipher under the zone key and call ``check`` with the PIN digits (ASCII).

        A block that does not decipher to a valid PIN block is a wrong PIN (False).
        """
        try:
            pin = self._pin(pin_block, pan)
        except pinblock.PinBlockError:
            return False
        digits = bytearray(pin.encode("ascii"))
        try:
            return check(digits)
        finally:
            digits[:] = b"\x00" * len(digits)

    def translate(
        self, pin_block: EncryptedPinBlock, pan: str, zone_key_id: str, zone_format: Literal[0, 4]
    ) -> bytes:
        """Not offered: an acquirer's issuer verifies PINs, it does not forward them."""
        raise NotImplementedError("the acquirer simulator does not translate PIN blocks")
