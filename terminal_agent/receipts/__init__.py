"""Receipts: the customer and merchant copies of a payment (DESIGN 3, step 9; issue 7).

EMV Book 4 section 11.4 and the card schemes' public receipt rules say what a chip
receipt shows; :mod:`terminal_agent.receipts.model` builds it (:func:`receipt_for`) from
the journal record, the payment result and the merchant settings, with the PAN only
ever masked. :mod:`~terminal_agent.receipts.render` turns it into plain text (32 or 42
columns), an escaped HTML snippet or ESC/POS bytes, and
:mod:`~terminal_agent.receipts.printer` sends those to a printer device, a serial port
or a file. docs/receipts.md describes what is printed and how to set up a printer.

Errors::

    ReceiptError
    ├── ReceiptDataError (also ValueError)  record and result cannot make a receipt
    └── PrinterError                        the receipt was not printed (.path)
        ├── PrinterUnavailable                  transient: absent, busy, timed out
        └── PrinterConfigError                  permanent: wrong kind of file, no access
"""

from __future__ import annotations

from terminal_agent.receipts.errors import (
    PrinterConfigError,
    PrinterError,
    PrinterUnavailable,
    ReceiptDataError,
    ReceiptError,
)
from terminal_agent.receipts.model import (
    CVM_TEXT,
    Copy,
    Cvm,
    MerchantSettings,
    Outcome,
    Receipt,
    receipt_for,
    safe_masked_pan,
)
from terminal_agent.receipts.printer import PrinterSettings, print_receipt
from terminal_agent.receipts.render import (
    WIDTHS,
    Line,
    Width,
    layout,
    render_escpos,
    render_html,
    render_text,
)

__all__ = [
    "CVM_TEXT",
    "WIDTHS",
    "Copy",
    "Cvm",
    "Line",
    "MerchantSettings",
    "Outcome",
    "PrinterConfigError",
    "PrinterError",
    "PrinterSettings",
    "PrinterUnavailable",
    "Receipt",
    "ReceiptDataError",
    "ReceiptError",
    "Width",
    "layout",
    "print_receipt",
    "receipt_for",
    "render_escpos",
    "render_html",
    "render_text",
    "safe_masked_pan",
]
