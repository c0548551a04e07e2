"""Data Object Lists (EMV 4.4 Book 3 section 5.4).

A DOL (PDOL 9F38, CDOL1 8C, CDOL2 8D, TDOL 97, DDOL 9F49) is a concatenation of
entries, each a BER-TLV tag (Annex B1) followed by a one-byte length: the card's request
for the values the terminal is to send, in that order, without tags or lengths.

:func:`build` applies the rules of section 5.4 to each entry:

a. a tag absent from the source, or a constructed tag: the entry's length of ``00``
   bytes (this also covers "unknown to the terminal" and "not applicable");
b. a value longer than the entry: numeric (``n``) values lose their *leftmost* bytes,
   all others their *rightmost* bytes;
c. a value shorter than the entry: numeric (``n``) values get leading ``00`` bytes,
   compressed numeric (``cn``) values trailing ``FF`` bytes, all others trailing ``00``.

The format comes from :mod:`paycore.tags`; a tag the dictionary does not know is
treated as binary (``b``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from paycore import tags as _tags
from paycore.errors import CodecError

__all__ = ["DolEntry", "DolError", "build", "encode", "parse", "total_length"]

_MAX_TAG_BYTES = 4


class DolError(CodecError):
    """A DOL that does not parse; ``offset`` is where in the DOL, ``tag`` the entry's tag."""

    def __init__(self, message: str, *, offset: int, tag: int | None = None) -> None:
        self.tag = tag
        super().__init__(message, offset=offset, field=None if tag is None else f"tag {tag:X}")


@dataclass(frozen=True, slots=True)
class DolEntry:
    """One DOL entry: the tag requested and the number of value bytes to send for it."""

    tag: int
    length: int

    def __post_init__(self) -> None:
        if not 0 <= self.length <= 0xFF:
            raise ValueError("a DOL entry length is one byte (0 to 255)")
        if self.tag <= 0 or self.tag.bit_length() > 8 * _MAX_TAG_BYTES:
            raise ValueError(f"a DOL tag is 1 to {_MAX_TAG_BYTES} bytes")

    @property
    def constructed(self) -> bool:
        """True when the tag is a template (b6 of its first byte)."""
        first = self.tag >> (8 * ((self.tag.bit_length() - 1) // 8))
        return bool(first & 0x20)


def parse(dol: bytes) -> list[DolEntry]:
    """The entries of ``dol`` in order. Raises :class:`DolError` on a truncated entry.

    Tags follow the BER-TLV rules (multi-byte tags when b5-b1 of the first byte are all
    set); ``00`` or ``FF`` as a first tag byte is refused (a DOL has no padding).
    """
    entries: list[DolEntry] = []
    pos, end = 0, len(dol)
    while pos < end:
        start = pos
        first = dol[pos]
        if first in (0x00, 0xFF):
            raise DolError("00 or FF is not a tag", offset=start)
        tag = first
        pos += 1
        if first & 0x1F == 0x1F:
            while True:
                if pos >= end:
                    raise DolError("tag truncated", offset=start, tag=tag)
                byte = dol[pos]
                tag = (tag << 8) | byte
                pos += 1
                if not byte & 0x80:
                    break
                if pos - start >= _MAX_TAG_BYTES:
                    raise DolError("tag too long", offset=start, tag=tag)
        if pos >= end:
            raise DolError("length missing", offset=pos, tag=tag)
        entries.append(DolEntry(tag, dol[pos]))
        pos += 1
    return entries


def encode(entries: Iterable[DolEntry]) -> bytes:
    """The DOL bytes for ``entries`` (the inverse of :func:`parse`)."""
    out = bytearray()
    for entry in entries:
        out += entry.tag.to_bytes((entry.tag.bit_length() + 7) // 8, "big")
        out.append(entry.length)
    return bytes(out)


def total_length(dol: bytes | Sequence[DolEntry]) -> int:
    """The number of bytes :func:`build` produces for ``dol``."""
    entries = parse(dol) if isinstance(dol, bytes | bytearray) else dol
    return sum(entry.length for entry in entries)


def _fit(value: bytes, length: int, fmt: str) -> bytes:
    have = len(value)
    if have == length:
        return value
    if have > length:
        return value[have - length :] if fmt == "n" else value[:length]
    if fmt == "n":
        return bytes(length - have) + value
    if fmt == "cn":
        return value + b"\xff" * (length - have)
    return value + bytes(length - have)


def build(dol: bytes | Sequence[DolEntry], source: Mapping[int, bytes]) -> bytes:
    """The command data for ``dol`` from the values in ``source`` (Book 3 section 5.4).

    ``source`` maps tags to values (e.g. :func:`paycore.tlv.flatten` of the card's
    answers merged with the terminal's data). Raises :class:`DolError` when ``dol`` is
    bytes that do not parse.
    """
    entries = parse(dol) if isinstance(dol, bytes | bytearray) else dol
    out = bytearray()
    for entry in entries:
        value = source.get(entry.tag)
        if value is None or entry.constructed:
            out += bytes(entry.length)
            continue
        info = _tags.lookup(entry.tag)
        out += _fit(value, entry.length, "b" if info is None else info.format)
    return bytes(out)
