"""Command APDUs and status words as a contact card sees them (ISO/IEC 7816-4 5.1, 5.6).

:func:`parse_command` splits a short command APDU into its header, command data and Le
(cases 1, 2S, 3S and 4S of ISO/IEC 7816-3 12.1.3). Extended lengths are not supported by
the emulated cards (EMV cards use short APDUs only, EMV 4.4 Book 1 9.4), so an APDU whose
length does not fit a short case is answered with ``6700``.

The status words are the ones EMV 4.4 Book 3 section 6.3.5 and ISO/IEC 7816-4 table 6
give them; the card answers with these numbers and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "SW",
    "Command",
    "CommandError",
    "parse_command",
    "response",
]


class SW:
    """Status words (SW1 SW2 as one int) the emulated cards return."""

    OK: Final = 0x9000
    SELECTED_FILE_INVALIDATED: Final = 0x6283  # blocked application, FCI still returned
    WRONG_LENGTH: Final = 0x6700
    AUTH_METHOD_BLOCKED: Final = 0x6983  # PIN try counter at zero
    REFERENCE_DATA_NOT_USABLE: Final = 0x6984  # no offline PIN personalised
    CONDITIONS_NOT_SATISFIED: Final = 0x6985  # out of sequence
    WRONG_DATA: Final = 0x6A80
    FUNCTION_NOT_SUPPORTED: Final = 0x6A81
    FILE_NOT_FOUND: Final = 0x6A82
    RECORD_NOT_FOUND: Final = 0x6A83
    WRONG_P1P2: Final = 0x6A86
    REFERENCED_DATA_NOT_FOUND: Final = 0x6A88
    INS_NOT_SUPPORTED: Final = 0x6D00
    CLA_NOT_SUPPORTED: Final = 0x6E00

    @staticmethod
    def counter_warning(remaining: int) -> int:
        """``63Cx``: verification failed, ``x`` tries left (ISO/IEC 7816-4 table 6)."""
        return 0x63C0 | (remaining & 0x0F)


class CommandError(Exception):
    """A command the card refuses: carries the status word to answer with."""

    def __init__(self, sw: int) -> None:
        self.sw = sw
        super().__init__(f"status word {sw:04X}")


@dataclass(frozen=True, slots=True)
class Command:
    """One command APDU, split. ``le`` is None when absent; ``00`` means 256."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    @property
    def p1p2(self) -> int:
        """P1 and P2 as one int (``P1 << 8 | P2``)."""
        return self.p1 << 8 | self.p2

    @property
    def expected_length(self) -> int | None:
        """Le as a byte count (``00`` is 256), or None when Le is absent."""
        if self.le is None:
            return None
        return self.le or 256


def parse_command(raw: bytes) -> Command:
    """Split a short command APDU (ISO/IEC 7816-3 12.1.3); ``CommandError(6700)`` otherwise."""
    if len(raw) < 4:
        raise CommandError(SW.WRONG_LENGTH)
    cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
    if len(raw) == 4:
        return Command(cla, ins, p1, p2)
    if len(raw) == 5:
        return Command(cla, ins, p1, p2, le=raw[4])
    lc = raw[4]
    if lc == 0:  # extended length: not supported
        raise CommandError(SW.WRONG_LENGTH)
    if len(raw) == 5 + lc:
        return Command(cla, ins, p1, p2, data=bytes(raw[5:]))
    if len(raw) == 6 + lc:
        return Command(cla, ins, p1, p2, data=bytes(raw[5:-1]), le=raw[-1])
    raise CommandError(SW.WRONG_LENGTH)


def response(data: bytes, sw: int) -> bytes:
    """A response APDU: ``data`` followed by SW1 SW2."""
    return bytes(data) + sw.to_bytes(2, "big")
