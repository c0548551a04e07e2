"""The few ESC/POS commands a receipt needs, as bytes (Epson ESC/POS command reference).

Written here rather than taken from python-escpos: that library brings Pillow, PyYAML,
qrcode, python-barcode and four more packages for image and barcode support a text
receipt does not use, and has no type information. Each command below is the published
byte sequence; ``tests/terminal_agent/receipts`` parses them back.

=========================  ===============  ==========================================
command                    bytes            meaning
=========================  ===============  ==========================================
ESC @                      1B 40            initialise the printer (clears modes)
ESC t n                    1B 74 n          character code table (19 = PC858, Euro)
ESC a n                    1B 61 n          justification: 0 left, 1 centre, 2 right
ESC E n                    1B 45 n          emphasised (bold): 1 on, 0 off
GS ! n                     1D 21 n          character size: 0x11 double width+height
ESC d n                    1B 64 n          print the buffer and feed n lines
GS V m                     1D 56 m          cut the paper: 0 full, 1 partial
LF                         0A               print the buffer and feed one line
=========================  ===============  ==========================================
"""

from __future__ import annotations

from typing import Final, Literal

ESC: Final = b"\x1b"
GS: Final = b"\x1d"
LF: Final = b"\n"

INIT: Final = ESC + b"@"
#: ESC t 19: code page PC858 (PC850 with the Euro sign), which Python encodes as "cp858".
CODEPAGE_PC858: Final = ESC + b"t\x13"
TEXT_ENCODING: Final = "cp858"

Align = Literal["left", "center", "right"]
_ALIGN: Final[dict[Align, int]] = {"left": 0, "center": 1, "right": 2}


def align(where: Align) -> bytes:
    """ESC a n."""
    return ESC + b"a" + bytes([_ALIGN[where]])


def bold(on: bool) -> bytes:
    """ESC E n."""
    return ESC + b"E" + bytes([1 if on else 0])


def size(double: bool) -> bytes:
    """GS ! n: 0x11 is double width and double height, 0x00 normal."""
    return GS + b"!" + bytes([0x11 if double else 0x00])


def feed(lines: int) -> bytes:
    """ESC d n: print and feed ``lines`` lines (0 to 255)."""
    if not 0 <= lines <= 255:
        raise ValueError("feed takes 0 to 255 lines")
    return ESC + b"d" + bytes([lines])


def cut(partial: bool = True) -> bytes:
    """GS V m (function A): 1 partial cut, 0 full cut."""
    return GS + b"V" + bytes([1 if partial else 0])


def text(line: str) -> bytes:
    """One line of text in PC858 (unprintable characters become ``?``), then LF.

    Control characters are replaced first, so no text can smuggle a command in.
    """
    clean = "".join(ch if ch.isprintable() else "?" for ch in line)
    return clean.encode(TEXT_ENCODING, errors="replace") + LF
