"""BER-TLV as EMV uses it (EMV 4.4 Book 3 Annex B, on top of ISO/IEC 8825-1).

A data object is a tag, a length and a value:

* **Tag** (Annex B1): the first byte carries the class (b8-b7), the constructed flag (b6)
  and, in b5-b1, either the tag number or ``11111`` meaning "more tag bytes follow";
  every following byte with b8 = 1 announces one more. Tags are kept as ints
  (``0x9F02``), up to :data:`MAX_TAG_BYTES` bytes. ``00`` and ``FF`` are never first tag
  bytes (see padding below).
* **Length** (Annex B2): short form ``0xxxxxxx`` (0-127), or long form ``1nnnnnnn``
  followed by ``n`` big-endian length bytes. EMV itself uses ``81`` and ``82``; ``83``
  and ``84`` are accepted as well (the length must still fit the data), anything longer
  is refused, as is ``80`` (the BER indefinite form, which EMV does not allow). Encodings
  that are longer than needed (``81 05``) are accepted and remembered in
  :attr:`Tlv.length_octets`, so ``encode(decode(x)) == x``.
* **Value**: bytes for a primitive object, a sequence of data objects for a constructed
  one (b6 of the first tag byte set), decoded recursively up to :data:`MAX_DEPTH` levels.

**Padding** (Annex B, after ISO/IEC 7816-4 5.2.2.1): bytes ``00`` and ``FF`` before,
between and after data objects, at the top level and inside templates, are skipped and
not kept, so only padding-free input round-trips byte for byte.

Decoding empty input (or input made only of padding) gives an empty list.

Errors are :class:`DecodeError` (a :class:`paycore.errors.CodecError`, so a
``ValueError``) with the offset in the *whole* input and the tag being read; the value is
never part of the message, and :class:`Tlv`'s ``repr`` hides the value of sensitive tags
(:func:`paycore.tags.is_sensitive`) and of tags the dictionary does not know.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from paycore import tags as _tags
from paycore.errors import CodecError

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH_OCTETS",
    "MAX_TAG_BYTES",
    "DecodeError",
    "Tlv",
    "decode",
    "encode",
    "find",
    "find_all",
    "flatten",
    "iter_tlvs",
]

MAX_DEPTH = 32
"""Most templates :func:`decode` follows one inside the other (a top-level template is 1)."""

MAX_TAG_BYTES = 4
"""Longest tag accepted, in bytes (EMV uses at most 3; ISO/IEC 7816-4 allows more)."""

MAX_LENGTH_OCTETS = 5
"""Longest length field accepted: ``84`` plus four length bytes."""

_PADDING = (0x00, 0xFF)


class DecodeError(CodecError):
    """BER-TLV input that does not parse.

    ``offset`` is the position in the whole input where the problem was found (where the
    missing or invalid item starts); ``tag`` is the tag being read (for a truncated tag,
    the bytes read so far), or None when no tag was involved. The message never includes
    any value bytes.
    """

    def __init__(self, message: str, *, offset: int, tag: int | None = None) -> None:
        self.tag = tag
        super().__init__(message, offset=offset, field=None if tag is None else f"tag {tag:X}")


def _tag_to_bytes(tag: int) -> bytes:
    return tag.to_bytes((tag.bit_length() + 7) // 8 or 1, "big")


def _check_tag(tag: int) -> None:
    """Raise ValueError unless ``tag`` is a well-formed BER tag of 1 to MAX_TAG_BYTES."""
    if isinstance(tag, bool) or not isinstance(tag, int) or tag <= 0:
        raise ValueError("a tag is a positive int")
    raw = _tag_to_bytes(tag)
    if len(raw) > MAX_TAG_BYTES:
        raise ValueError(f"tag longer than {MAX_TAG_BYTES} bytes")
    if raw[0] in _PADDING:
        raise ValueError("00 and FF are not valid first tag bytes")
    if raw[0] & 0x1F != 0x1F:
        if len(raw) != 1:
            raise ValueError(f"tag {tag:X}: first byte does not announce more tag bytes")
        return
    if len(raw) == 1:
        raise ValueError(f"tag {tag:X}: first byte announces more tag bytes")
    if any(b & 0x80 == 0 for b in raw[1:-1]) or raw[-1] & 0x80:
        raise ValueError(f"tag {tag:X}: b8 of the subsequent tag bytes is inconsistent")


def _minimal_length_octets(length: int) -> int:
    if length < 0x80:
        return 1
    return 1 + (length.bit_length() + 7) // 8


def _length_field(length: int, length_octets: int) -> bytes:
    if length_octets == 0:
        length_octets = _minimal_length_octets(length)
    elif length_octets < _minimal_length_octets(length):
        raise ValueError(f"{length_octets} length octets cannot encode length {length}")
    if length_octets == 1:
        return bytes((length,))
    return bytes((0x80 | (length_octets - 1),)) + length.to_bytes(length_octets - 1, "big")


@dataclass(frozen=True, slots=True, repr=False)
class Tlv:
    """One BER-TLV data object.

    ``value`` is bytes for a primitive tag and a tuple of :class:`Tlv` for a constructed
    one (b6 of the first tag byte). ``length_octets`` is 0 for the minimal length
    encoding (what :func:`decode` reports for minimal input and what :func:`encode`
    writes), otherwise the number of length octets to write (1 = short form, 2 = ``81
    xx``, 3 = ``82 xx xx``, ...) so that non-minimal input round-trips.
    """

    tag: int
    value: bytes | tuple[Tlv, ...]
    length_octets: int = 0

    def __post_init__(self) -> None:
        _check_tag(self.tag)
        if self.constructed:
            if not isinstance(self.value, tuple) or not all(
                isinstance(child, Tlv) for child in self.value
            ):
                raise ValueError(f"tag {self.tag:X} is constructed: its value is a tuple of Tlv")
        elif not isinstance(self.value, bytes):
            raise ValueError(f"tag {self.tag:X} is primitive: its value is bytes")
        if not 0 <= self.length_octets <= MAX_LENGTH_OCTETS:
            raise ValueError(f"length_octets must be 0 to {MAX_LENGTH_OCTETS}")

    @classmethod
    def primitive(cls, tag: int, value: bytes, length_octets: int = 0) -> Tlv:
        """A primitive data object (``tag`` must have b6 of its first byte clear)."""
        return cls(tag, bytes(value), length_octets)

    @classmethod
    def constructed_of(cls, tag: int, children: Iterable[Tlv], length_octets: int = 0) -> Tlv:
        """A constructed data object (template) holding ``children``."""
        return cls(tag, tuple(children), length_octets)

    @property
    def tag_bytes(self) -> bytes:
        """The tag as it is written on the wire."""
        return _tag_to_bytes(self.tag)

    @property
    def tag_hex(self) -> str:
        """The tag in upper-case hex, as the specifications write it (``"9F02"``)."""
        return self.tag_bytes.hex().upper()

    @property
    def constructed(self) -> bool:
        """True when b6 of the first tag byte is set (the value is a list of objects)."""
        return bool(self.tag_bytes[0] & 0x20)

    @property
    def children(self) -> tuple[Tlv, ...]:
        """The data objects of a constructed object; empty for a primitive one."""
        return self.value if isinstance(self.value, tuple) else ()

    @property
    def data(self) -> bytes:
        """The value of a primitive object; for a constructed one, its encoded children."""
        return self.value if isinstance(self.value, bytes) else encode(self.value)

    def __repr__(self) -> str:
        extra = f", length_octets={self.length_octets}" if self.length_octets else ""
        if isinstance(self.value, tuple):
            inner = ", ".join(repr(child) for child in self.value)
            return f"Tlv(0x{self.tag_hex}, ({inner}{',' if len(self.value) == 1 else ''}){extra})"
        info = _tags.lookup(self.tag)
        if info is None or info.sensitive:
            shown = f"<{len(self.value)} bytes, hidden>"
        else:
            shown = f"bytes.fromhex('{self.value.hex().upper()}')"
        return f"Tlv(0x{self.tag_hex}, {shown}{extra})"


# decode's fast path: the parser only builds well-formed objects, so it skips the checks
# of __post_init__ and sets the slots through their descriptors (about 7x faster).
_set_tag = Tlv.__dict__["tag"].__set__
_set_value = Tlv.__dict__["value"].__set__
_set_length_octets = Tlv.__dict__["length_octets"].__set__


def _new(tag: int, value: bytes | tuple[Tlv, ...], length_octets: int) -> Tlv:
    obj = object.__new__(Tlv)
    _set_tag(obj, tag)
    _set_value(obj, value)
    _set_length_octets(obj, length_octets)
    return obj


def _parse(data: bytes, pos: int, end: int, depth: int) -> list[Tlv]:
    out: list[Tlv] = []
    append = out.append
    while pos < end:
        first = data[pos]
        if first == 0x00 or first == 0xFF:
            pos += 1
            continue
        tag_start = pos
        tag = first
        pos += 1
        if first & 0x1F == 0x1F:
            while True:
                if pos >= end:
                    raise DecodeError("tag truncated", offset=tag_start, tag=tag)
                byte = data[pos]
                tag = (tag << 8) | byte
                pos += 1
                if not byte & 0x80:
                    break
                if pos - tag_start >= MAX_TAG_BYTES:
                    raise DecodeError(
                        f"tag longer than {MAX_TAG_BYTES} bytes", offset=tag_start, tag=tag
                    )
        if pos >= end:
            raise DecodeError("length missing", offset=pos, tag=tag)
        length = data[pos]
        pos += 1
        length_octets = 0
        if length & 0x80:
            count = length & 0x7F
            if count == 0:
                raise DecodeError("indefinite length (80) not allowed", offset=pos - 1, tag=tag)
            if count >= MAX_LENGTH_OCTETS:
                raise DecodeError("length field too long", offset=pos - 1, tag=tag)
            if pos + count > end:
                raise DecodeError(
                    f"length truncated, expecting {count} byte(s)", offset=pos, tag=tag
                )
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
            if count + 1 != _minimal_length_octets(length):
                length_octets = count + 1
        if length > end - pos:
            raise DecodeError(f"value truncated, expecting {length} byte(s)", offset=pos, tag=tag)
        if first & 0x20:
            if depth > MAX_DEPTH:
                raise DecodeError(
                    f"templates nested deeper than {MAX_DEPTH}", offset=tag_start, tag=tag
                )
            append(_new(tag, tuple(_parse(data, pos, pos + length, depth + 1)), length_octets))
        else:
            append(_new(tag, data[pos : pos + length], length_octets))
        pos += length
    return out


def decode(data: bytes) -> list[Tlv]:
    """Decode BER-TLV ``data`` into its data objects, in order, duplicates kept.

    Constructed objects are decoded into children recursively; padding bytes ``00`` and
    ``FF`` between objects are skipped; empty input gives ``[]``.

    Raises :class:`DecodeError` for a truncated tag, length or value, an indefinite or
    over-long length field, a template whose value does not parse (with the offset in
    the whole input), or nesting deeper than :data:`MAX_DEPTH`.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    return _parse(data, 0, len(data), 1)


def _encode_into(out: bytearray, tlvs: Iterable[Tlv]) -> None:
    for tlv in tlvs:
        out += tlv.tag_bytes
        body = encode(tlv.value) if isinstance(tlv.value, tuple) else tlv.value
        out += _length_field(len(body), tlv.length_octets)
        out += body


def encode(tlvs: Iterable[Tlv]) -> bytes:
    """Encode data objects back to bytes (the inverse of :func:`decode` without padding).

    Raises ValueError when an object's ``length_octets`` is too small for its length.
    """
    out = bytearray()
    _encode_into(out, tlvs)
    return bytes(out)


def iter_tlvs(tlvs: Iterable[Tlv]) -> Iterator[Tlv]:
    """Every data object, depth first: each template before its children."""
    stack: list[Iterator[Tlv]] = [iter(tlvs)]
    while stack:
        for tlv in stack[-1]:
            yield tlv
            if isinstance(tlv.value, tuple):
                stack.append(iter(tlv.value))
                break
        else:
            stack.pop()


def find(tlvs: Iterable[Tlv], tag: int) -> Tlv | None:
    """The first object with ``tag``, depth first (a template before its children)."""
    for tlv in iter_tlvs(tlvs):
        if tlv.tag == tag:
            return tlv
    return None


def find_all(tlvs: Iterable[Tlv], tag: int) -> list[Tlv]:
    """Every object with ``tag``, depth first."""
    return [tlv for tlv in iter_tlvs(tlvs) if tlv.tag == tag]


def flatten(tlvs: Iterable[Tlv]) -> dict[int, bytes]:
    """Every primitive tag mapped to its value, the first occurrence (depth first) winning.

    This is the kernel's "tag source" for DOL building and lookups.
    """
    out: dict[int, bytes] = {}
    for tlv in iter_tlvs(tlvs):
        if isinstance(tlv.value, bytes) and tlv.tag not in out:
            out[tlv.tag] = tlv.value
    return out
