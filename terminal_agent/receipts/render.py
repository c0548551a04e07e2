"""Three renderings of one :class:`~terminal_agent.receipts.model.Receipt`.

:func:`layout` decides *what* is printed, in order, as a short list of lines; the
renderers only decide how: :func:`render_text` (fixed width, 32 or 42 columns, the two
common thermal paper widths at font A), :func:`render_html` (a standalone, escaped HTML
snippet for the cashier screen or an e-mail) and :func:`render_escpos` (bytes for an
ESC/POS thermal printer, see :mod:`terminal_agent.receipts.escpos`). Every renderer
shows every line of the layout, so a field cannot be on one and missing on another.
"""

from __future__ import annotations

import html
import textwrap
from dataclasses import dataclass
from typing import Final, Literal

from terminal_agent.receipts import escpos
from terminal_agent.receipts.model import Receipt

Width = Literal[32, 42]
WIDTHS: Final[tuple[Width, ...]] = (32, 42)
NONE: Final = "-"
SIGNATURE_LABEL: Final = "CARDHOLDER SIGNATURE"


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the layout. ``kind``: ``title`` (merchant name), ``center``, ``pair``
    (label left, value right), ``text`` (wrapped, left), ``rule``, ``result`` (the
    outcome, large), ``signature`` (the line to sign on) and ``blank``."""

    kind: Literal["title", "center", "pair", "text", "rule", "result", "signature", "blank"]
    text: str = ""
    value: str = ""


def _pair(label: str, value: str | None) -> Line:
    return Line("pair", label, value or NONE)


def layout(receipt: Receipt) -> tuple[Line, ...]:
    """The lines of ``receipt``, top to bottom."""
    r = receipt
    lines = [Line("title", r.merchant_name)]
    lines += [Line("center", a) for a in r.merchant_address]
    lines += [
        _pair("MERCHANT ID", r.merchant_id),
        _pair("TERMINAL ID", r.terminal_id),
        _pair("DATE", r.timestamp.strftime("%Y-%m-%d")),
        _pair("TIME", r.timestamp.strftime("%H:%M:%S %Z").strip()),
        _pair("RECEIPT NO", str(r.local_id)),
        Line("rule"),
        Line("center", r.transaction_type),
        _pair("AMOUNT", r.amount_text),
        Line("rule"),
        _pair("CARD", r.masked_pan),
        _pair("APPLICATION", r.application_label),
        _pair("AID", r.aid),
        _pair("ENTRY MODE", r.entry_mode),
        _pair("CVM", r.cvm_text),
        _pair("TVR", r.tvr),
        _pair("TSI", r.tsi),
        _pair(r.cryptogram_type or "CRYPTOGRAM", r.cryptogram),
        _pair("AUTH CODE", r.authorization_code),
        _pair("RESPONSE CODE", r.response_code),
        _pair("HOST REF", r.host_reference),
        Line("rule"),
        Line("result", r.outcome),
    ]
    if r.reason:
        lines.append(Line("text", r.reason))
    if r.reversal_queued:
        lines.append(Line("text", "Any amount taken will be reversed."))
    if r.signature_line:
        lines += [Line("blank"), Line("blank"), Line("signature"), Line("center", SIGNATURE_LABEL)]
    lines += [Line("rule"), Line("center", r.copy_text)]
    return tuple(lines)


def _fit_pair(label: str, value: str, width: int) -> list[str]:
    if len(label) + 1 + len(value) <= width:
        return [label + " " * (width - len(label) - len(value)) + value]
    chunks = [value[i : i + width] for i in range(0, len(value), width)] or [""]
    return [label[:width]] + [c.rjust(width) for c in chunks]


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width) or [""]


def _text_lines(line: Line, width: int) -> list[str]:
    if line.kind == "pair":
        return _fit_pair(line.text, line.value, width)
    if line.kind in ("title", "center", "result"):
        return [t.center(width).rstrip() for t in _wrap(line.text, width)]
    if line.kind == "text":
        return _wrap(line.text, width)
    if line.kind == "rule":
        return ["-" * width]
    if line.kind == "signature":
        return ["X" + "_" * (width - 1)]
    return [""]


def _check_width(width: int) -> None:
    if width not in WIDTHS:
        raise ValueError("receipt width must be 32 or 42 columns")


def render_text(receipt: Receipt, width: Width = 42) -> str:
    """Plain text, ``width`` columns, lines ending in ``\\n``."""
    _check_width(width)
    out: list[str] = []
    for line in layout(receipt):
        text = f"*** {line.text} ***" if line.kind == "result" else line.text
        out += _text_lines(Line(line.kind, text, line.value), width)
    return "".join(f"{t}\n" for t in out)


_STYLE: Final = (
    "<style>.receipt{font-family:monospace;max-width:42ch;padding:1ch;border:1px solid #999}"
    ".receipt p{margin:0}.receipt .center,.receipt .result,.receipt .title{text-align:center}"
    ".receipt .pair{display:flex;justify-content:space-between;gap:1ch}"
    ".receipt .result{font-size:1.6em;font-weight:bold}.receipt .title{font-weight:bold}"
    ".receipt hr{border:0;border-top:1px dashed #999}</style>"
)


def render_html(receipt: Receipt) -> str:
    """A standalone HTML snippet (one ``<section>``, with its own small style sheet).

    Every value is escaped: a merchant name like ``<script>`` prints as text.
    """
    e = html.escape
    out = [_STYLE, f'<section class="receipt" data-copy="{e(receipt.copy_of)}">']
    for line in layout(receipt):
        if line.kind == "pair":
            out.append(
                f'<p class="pair"><span class="label">{e(line.text)}</span>'
                f'<span class="value">{e(line.value)}</span></p>'
            )
        elif line.kind == "result":
            cls = e(receipt.outcome.lower().replace(" ", "-"))
            out.append(f'<p class="result {cls}">{e(line.text)}</p>')
        elif line.kind == "rule":
            out.append("<hr>")
        elif line.kind == "signature":
            out.append('<p class="signature">X______________________</p>')
        elif line.kind == "blank":
            out.append("<p>&nbsp;</p>")
        else:
            out.append(f'<p class="{line.kind}">{e(line.text)}</p>')
    out.append("</section>")
    return "\n".join(out) + "\n"


def render_escpos(receipt: Receipt, width: Width = 42, *, partial_cut: bool = True) -> bytes:
    """ESC/POS bytes: initialise, code page PC858, the lines (merchant name bold, the
    outcome bold at double size, centred), feed and cut. ``width`` is the printer's
    columns at normal size; the outcome uses half as many."""
    _check_width(width)
    out = [escpos.INIT, escpos.CODEPAGE_PC858]
    for line in layout(receipt):
        if line.kind == "result":
            out += [escpos.align("center"), escpos.bold(True), escpos.size(True)]
            out += [escpos.text(t) for t in _wrap(line.text, width // 2)]
            out += [escpos.size(False), escpos.bold(False), escpos.align("left")]
        elif line.kind in ("title", "center"):
            out += [escpos.align("center"), escpos.bold(line.kind == "title")]
            out += [escpos.text(t) for t in _wrap(line.text, width)]
            out += [escpos.bold(False), escpos.align("left")]
        else:
            out += [escpos.text(t) for t in _text_lines(line, width)]
    out += [escpos.feed(4), escpos.cut(partial_cut)]
    return b"".join(out)
