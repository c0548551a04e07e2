"""Terminal Verification Results (95) and Transaction Status Information (9B) as bit fields.

EMV 4.4 Book 3 Annex C5 (TVR, five bytes) and C6 (TSI, two bytes). Each bit is an
:class:`enum.IntFlag` member named after the book's wording; the member's value places
it at byte ``n`` bit ``b`` of the big-endian field (byte 1 is leftmost, bit 8 is the
most significant), so ``Tvr.EXPIRED_APPLICATION.to_bytes()`` is ``00 40 00 00 00``.
"""

from __future__ import annotations

from enum import IntFlag

__all__ = ["Tsi", "Tvr"]


def _tvr(byte: int, bit: int) -> int:
    return 1 << ((5 - byte) * 8 + bit - 1)


def _tsi(byte: int, bit: int) -> int:
    return 1 << ((2 - byte) * 8 + bit - 1)


class Tvr(IntFlag):
    """Terminal Verification Results, tag 95 (Book 3 Annex C5)."""

    # byte 1
    ODA_NOT_PERFORMED = _tvr(1, 8)
    SDA_FAILED = _tvr(1, 7)
    ICC_DATA_MISSING = _tvr(1, 6)
    CARD_ON_EXCEPTION_FILE = _tvr(1, 5)
    DDA_FAILED = _tvr(1, 4)
    CDA_FAILED = _tvr(1, 3)
    # byte 2
    DIFFERENT_APPLICATION_VERSIONS = _tvr(2, 8)
    EXPIRED_APPLICATION = _tvr(2, 7)
    APPLICATION_NOT_YET_EFFECTIVE = _tvr(2, 6)
    SERVICE_NOT_ALLOWED = _tvr(2, 5)
    NEW_CARD = _tvr(2, 4)
    # byte 3
    CARDHOLDER_VERIFICATION_NOT_SUCCESSFUL = _tvr(3, 8)
    UNRECOGNISED_CVM = _tvr(3, 7)
    PIN_TRY_LIMIT_EXCEEDED = _tvr(3, 6)
    PIN_PAD_NOT_PRESENT_OR_NOT_WORKING = _tvr(3, 5)
    PIN_PAD_PRESENT_PIN_NOT_ENTERED = _tvr(3, 4)
    ONLINE_PIN_ENTERED = _tvr(3, 3)
    # byte 4
    EXCEEDS_FLOOR_LIMIT = _tvr(4, 8)
    LOWER_CONSECUTIVE_OFFLINE_LIMIT_EXCEEDED = _tvr(4, 7)
    UPPER_CONSECUTIVE_OFFLINE_LIMIT_EXCEEDED = _tvr(4, 6)
    SELECTED_RANDOMLY_FOR_ONLINE = _tvr(4, 5)
    MERCHANT_FORCED_ONLINE = _tvr(4, 4)
    # byte 5
    DEFAULT_TDOL_USED = _tvr(5, 8)
    ISSUER_AUTHENTICATION_FAILED = _tvr(5, 7)
    SCRIPT_FAILED_BEFORE_FINAL_GENERATE_AC = _tvr(5, 6)
    SCRIPT_FAILED_AFTER_FINAL_GENERATE_AC = _tvr(5, 5)

    def to_bytes(self) -> bytes:  # type: ignore[override]
        """The five bytes of tag 95."""
        return int(self).to_bytes(5, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> Tvr:  # type: ignore[override]
        """A TVR (or an action code, which has the same layout) from five bytes."""
        if len(data) != 5:
            raise ValueError("a TVR or action code is 5 bytes")
        return cls(int.from_bytes(data, "big"))


class Tsi(IntFlag):
    """Transaction Status Information, tag 9B (Book 3 Annex C6)."""

    ODA_PERFORMED = _tsi(1, 8)
    CARDHOLDER_VERIFICATION_PERFORMED = _tsi(1, 7)
    CARD_RISK_MANAGEMENT_PERFORMED = _tsi(1, 6)
    ISSUER_AUTHENTICATION_PERFORMED = _tsi(1, 5)
    TERMINAL_RISK_MANAGEMENT_PERFORMED = _tsi(1, 4)
    SCRIPT_PROCESSING_PERFORMED = _tsi(1, 3)

    def to_bytes(self) -> bytes:  # type: ignore[override]
        """The two bytes of tag 9B."""
        return int(self).to_bytes(2, "big")
