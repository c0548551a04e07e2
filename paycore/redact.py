"""The redactor every log line and display string about card data goes through.

It is keyed by the sensitive flags of the tag dictionary (:mod:`paycore.tags`) and by the
shapes of card numbers:

* :func:`redact_tlv` renders BER-TLV bytes (EMV Book 3 Annex B) as a readable hex dump
  for TRACE logs of APDUs, the value of every sensitive tag replaced by ``<redacted>``;
  bytes that are not valid BER-TLV are never shown, only their count.
* :func:`redact_tags` does the same for a flattened tag map.
* :func:`redact_text` masks, inside any text, runs of 13 to 19 digits that pass the Luhn
  check of ISO/IEC 7812-1 Annex B (also written in groups split by single spaces or
  hyphens), and track 2 shaped data (ISO/IEC 7813: 12 to 19 digits, a ``=`` or ``D``
  separator, four digits of expiry, ...), whatever surrounds them.
* :class:`RedactingFilter` applies :func:`redact_text` to log records, so a handler can
  be made safe.

Masking a PAN keeps at most the first six and the last four digits (PCI DSS) and always
masks at least six: a PAN of ``n`` digits shows ``min(6, n - 10)`` leading digits (none
below 11) and the last four. In track 2 data everything after the separator (expiry,
service code, discretionary data with CVV/PVV) is masked as well.

What is shown of non-sensitive and unknown tags is passed through :func:`redact_text`
too, so a PAN inside a proprietary tag still does not reach a log in clear. Nothing here
performs I/O.

Limit: :func:`redact_text` sees a PAN only as a run of 13-19 digits with no digit on
either side (or before a track 2 separator). In a raw hex dump the PAN's digits can merge
with the tag and length digits around it (``5A08`` + PAN + ``5F24...``), so APDU data is
to be logged through :func:`redact_tlv`, never as plain hex through :func:`redact_text`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping

from paycore import tags as _tags
from paycore import tlv as _tlv

__all__ = [
    "REDACTED",
    "RedactingFilter",
    "luhn_valid",
    "mask_pan",
    "redact_tags",
    "redact_text",
    "redact_tlv",
]

REDACTED = "<redacted>"
_MASK = "*"

# A track 2 shape: PAN (12-19 digits), separator, YYMM, then service code, discretionary
# data and perhaps the F pad nibble of the hex form, all masked. No left boundary: in a hex
# dump the PAN follows the tag and length digits ("5713" + PAN + "D..."), and the
# separator anchors the match, so the 19 digits before it are masked.
_TRACK2 = re.compile(r"(\d{12,19})([=Dd])(\d{4}[0-9A-Fa-f]*)")
_ANY_DIGIT = re.compile(r"\d")
# A maximal run of 13-19 digits.
_DIGIT_RUN = re.compile(r"(?<!\d)\d{13,19}(?!\d)")
# 13-19 digits in groups separated by single spaces or hyphens ("4111 1111 1111 1111").
_GROUPED = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")


def luhn_valid(digits: str) -> bool:
    """Whether the decimal string ``digits`` passes the Luhn check (ISO/IEC 7812-1 B).

    Any Unicode decimal digits count, as they do for the ``\\d`` of the patterns here.
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i & 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def mask_pan(pan: str) -> str:
    """``pan`` with its middle digits masked: at most first 6 and last 4, at least 6 masked.

    Characters other than digits (group separators) are kept where they are.
    """
    positions = [i for i, ch in enumerate(pan) if ch.isdecimal()]
    n = len(positions)
    head = max(0, min(6, n - 10))
    tail = 4 if n >= 10 else 0
    hidden = set(positions[head : n - tail])
    return "".join(_MASK if i in hidden else ch for i, ch in enumerate(pan))


def _mask_track2(match: re.Match[str]) -> str:
    pan, separator, rest = match.group(1), match.group(2), match.group(3)
    return mask_pan(pan) + separator + _MASK * len(rest)


def _mask_if_luhn(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = "".join(ch for ch in text if ch.isdecimal())
    return mask_pan(text) if luhn_valid(digits) else text


def redact_text(text: str) -> str:
    """``text`` with PAN-like digit runs that pass Luhn and track 2 shaped data masked."""
    if _ANY_DIGIT.search(text) is None:
        return text
    text = _TRACK2.sub(_mask_track2, text)
    text = _DIGIT_RUN.sub(_mask_if_luhn, text)
    return _GROUPED.sub(_mask_if_luhn, text)


def _render(objects: Iterable[_tlv.Tlv], out: list[str]) -> None:
    for obj in objects:
        if isinstance(obj.value, tuple):
            out.append(f"{obj.tag_hex}[{len(obj.data):02X}]{{")
            _render(obj.value, out)
            out.append("}")
        elif _tags.is_sensitive(obj.tag):
            out.append(f"{obj.tag_hex}[{len(obj.value):02X}]={REDACTED}")
        else:
            out.append(
                f"{obj.tag_hex}[{len(obj.value):02X}]={redact_text(obj.value.hex().upper())}"
            )


def redact_tlv(data: bytes) -> str:
    """A one-line dump of BER-TLV ``data`` with every sensitive value replaced.

    Format: ``TAG[LL]=VALUE`` for primitive objects and ``TAG[LL]{ ... }`` for templates,
    space separated, ``LL`` the value length in hex, ``VALUE`` upper-case hex; sensitive
    values are ``<redacted>``. Padding bytes are not shown. Input that is not valid
    BER-TLV gives ``<n bytes, undecodable>`` and nothing of its content.
    """
    try:
        objects = _tlv.decode(data)
    except _tlv.DecodeError:
        return f"<{len(data)} bytes, undecodable>"
    parts: list[str] = []
    _render(objects, parts)
    return " ".join(parts).replace("{ ", "{").replace(" }", "}")


def redact_tags(values: Mapping[int, bytes]) -> dict[str, str]:
    """A flattened tag map (e.g. :func:`paycore.tlv.flatten`) made safe to log or show.

    Keys become upper-case hex tags; sensitive values become ``<redacted>``, others
    upper-case hex passed through :func:`redact_text`.
    """
    return {
        f"{tag:X}": REDACTED if _tags.is_sensitive(tag) else redact_text(value.hex().upper())
        for tag, value in values.items()
    }


class RedactingFilter(logging.Filter):
    """A logging filter that runs :func:`redact_text` over each record it sees.

    The message is formatted once (``msg % args``), redacted and stored back in
    ``record.msg`` with ``record.args`` cleared, so no handler formats the raw arguments
    again. A formatted traceback and stack are redacted into ``record.exc_text`` and
    ``record.stack_info``. Attach it to *handlers*: a filter on a logger does not see
    records propagated from its children. It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001  (a bad format string must not make logging raise)
            message = f"{record.msg} <unformattable log arguments dropped>"
        record.msg = redact_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True
