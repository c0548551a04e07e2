"""The receipt package's exception tree (drawn in :mod:`terminal_agent.receipts`).

No message carries card data: a PAN, masked or not, is never quoted.
"""

from __future__ import annotations


class ReceiptError(Exception):
    """Base of every error raised by :mod:`terminal_agent.receipts`."""


class ReceiptDataError(ReceiptError, ValueError):
    """The journal record and payment result cannot make a receipt (they disagree, or a
    value cannot be shown, such as an unknown currency or time zone)."""


class PrinterError(ReceiptError):
    """The receipt could not be printed. ``path`` names the target."""

    def __init__(self, message: str, *, path: str) -> None:
        self.path = path
        super().__init__(f"{message} ({path})")


class PrinterUnavailable(PrinterError):
    """Transient: the printer is absent, busy, out of paper or timed out. Reprint later."""


class PrinterConfigError(PrinterError):
    """Permanent: the target cannot be a printer as configured (a directory, no
    permission, not a character device, a serial setting the port refuses)."""
