"""ISO 8583:1987 dialects as data: pyiso8583 spec dicts, typed, and the one codec that reads them.

A dialect is a pyiso8583 specification (``iso8583/specs.py``: one entry per data element
with ``data_enc``, ``len_enc``, ``len_type``, ``max_len`` and optional ``len_count`` and
pads) derived from one of pyiso8583's built-in specs with a table of overrides. Entries are
:class:`FieldSpec` / :class:`FieldOverride` TypedDicts, so a misspelt key is a mypy error.

Two dialects ship:

``binary``
    ``iso8583.specs.default`` (binary bitmaps, binary PIN block and ICC data) with the
    numeric elements in packed BCD (``n`` fields as ``data_enc="b"``, counted in nibbles,
    odd lengths left-padded with ``0``), the PAN and track 2 as BCD LLVAR with a one-byte
    BCD length counted in nibbles (PAN right-padded ``0``, as in the pyiso8583 howto;
    track 2 right-padded ``F``, as EMV tag 57 is), the MTI as two BCD bytes, and DE55 ICC
    data as binary LLLVAR with a two-byte BCD length (``len_enc="bcd"``, ``len_type=2``).
``ascii``
    ``iso8583.specs.default_ascii`` unchanged: hex-ASCII bitmaps (16 characters each), ASCII
    numerics and lengths, the PIN block and DE55 as hex characters (DE55 up to 510
    characters, 255 bytes, the same capacity as the binary dialect).

Both decode to the same field dictionary (``{"t": "0100", "2": "4761...", "55": "9F26..."}``:
numerics as digit strings, binary elements as upper-case hex), so the field mapping in
:mod:`.messages` is written once.

The PIN block (DE52) is 8 bytes for an ISO 9564 format 0 zone key (TDES) and 16 bytes for
a format 4 zone key (AES): :meth:`Dialect.for_pin_format` gives the dialect with DE52 sized
for the zone format the connector is configured with.

:func:`measure` walks a spec over a byte buffer to find where a message ends; the framing
uses it when there is no length header.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NotRequired, TypeAlias, TypedDict

import iso8583
import iso8583.specs

from gateway_bridge.connectors.iso8583.errors import MessageDecodeError, MessageEncodeError

__all__ = [
    "ASCII",
    "BINARY",
    "DIALECTS",
    "Dialect",
    "DialectName",
    "FieldOverride",
    "FieldSpec",
    "Fields",
    "Spec",
    "decode_message",
    "derive",
    "dialect",
    "encode_message",
    "measure",
]

DialectName: TypeAlias = Literal["binary", "ascii"]
Fields: TypeAlias = dict[str, str]
"""A decoded message: ``"t"`` the MTI, ``"p"``/``"1"`` bitmaps, ``"2"``..``"128"`` elements."""


class FieldSpec(TypedDict):
    """One data element in a pyiso8583 spec (see pyiso8583 ``iso8583/specs.py``)."""

    data_enc: str  # "b" (binary / BCD) or a Python codec name ("ascii", "cp500")
    len_enc: str  # "b" (binary integer), "bcd", or a Python codec name
    len_type: int  # bytes in the length prefix; 0 = fixed length
    max_len: int  # bytes, or nibbles when len_count == "nibbles"
    desc: str
    len_count: NotRequired[Literal["bytes", "nibbles"]]
    left_pad: NotRequired[str]
    right_pad: NotRequired[str]


class FieldOverride(TypedDict, total=False):
    """A partial :class:`FieldSpec`: the keys it names replace the base spec's."""

    data_enc: str
    len_enc: str
    len_type: int
    max_len: int
    desc: str
    len_count: Literal["bytes", "nibbles"]
    left_pad: str
    right_pad: str


Spec: TypeAlias = Mapping[str, FieldSpec]

_REQUIRED: Final = ("data_enc", "len_enc", "len_type", "max_len")


def _field_from_builtin(key: str, raw: Mapping[str, Any]) -> FieldSpec:
    """A built-in (untyped) pyiso8583 entry as a checked :class:`FieldSpec`."""
    for name in _REQUIRED:
        if name not in raw:
            raise ValueError(f"spec entry {key} has no {name}")
    entry: FieldSpec = {
        "data_enc": str(raw["data_enc"]),
        "len_enc": str(raw["len_enc"]),
        "len_type": int(raw["len_type"]),
        "max_len": int(raw["max_len"]),
        "desc": str(raw.get("desc", "")),
    }
    if raw.get("len_count") == "nibbles":
        entry["len_count"] = "nibbles"
    if "left_pad" in raw:
        entry["left_pad"] = str(raw["left_pad"])
    if "right_pad" in raw:
        entry["right_pad"] = str(raw["right_pad"])
    return entry


def derive(base: Mapping[str, Mapping[str, Any]], overrides: Mapping[str, FieldOverride]) -> Spec:
    """``base`` (a pyiso8583 built-in spec) with ``overrides`` applied entry by entry.

    An override naming a key the base does not have is refused (it would be a typo).
    """
    spec: dict[str, FieldSpec] = {key: _field_from_builtin(key, raw) for key, raw in base.items()}
    for key, override in overrides.items():
        if key not in spec:
            raise ValueError(f"override for unknown data element {key}")
        merged = spec[key].copy()
        merged.update(override)
        if "left_pad" in override:
            merged.pop("right_pad", None)
        spec[key] = merged
    return spec


# -- the two shipped dialects -----------------------------------------------------------------


def _bcd(digits: int) -> FieldOverride:
    """A fixed numeric element of ``digits`` digits in packed BCD (odd: left-padded 0)."""
    return {
        "data_enc": "b",
        "len_type": 0,
        "max_len": digits,
        "len_count": "nibbles",
        "left_pad": "0",
    }


def _bcd_llvar(max_digits: int, *, pad: Literal["0", "F"], right: bool) -> FieldOverride:
    """A variable numeric element in BCD with a one-byte BCD length counted in nibbles."""
    entry: FieldOverride = {
        "data_enc": "b",
        "len_enc": "bcd",
        "len_type": 1,
        "max_len": max_digits,
        "len_count": "nibbles",
    }
    if right:
        entry["right_pad"] = pad
    else:
        entry["left_pad"] = pad
    return entry


BINARY_OVERRIDES: Final[Mapping[str, FieldOverride]] = {
    "t": {"data_enc": "b", "max_len": 2},
    "2": _bcd_llvar(19, pad="0", right=True),
    "3": _bcd(6),
    "4": _bcd(12),
    "7": _bcd(10),
    "11": _bcd(6),
    "12": _bcd(6),
    "13": _bcd(4),
    "14": _bcd(4),
    "22": _bcd(3),
    "23": _bcd(3),
    "25": _bcd(2),
    "32": _bcd_llvar(11, pad="0", right=False),
    "35": _bcd_llvar(37, pad="F", right=True),
    "49": _bcd(3),
    "55": {"data_enc": "b", "len_enc": "bcd", "len_type": 2, "max_len": 255},
    "70": _bcd(3),
    "90": _bcd(42),
}

ASCII_OVERRIDES: Final[Mapping[str, FieldOverride]] = {
    # default_ascii already carries DE55 as hex characters (510 = 255 bytes); stated here
    # so that both dialects name their ICC data capacity.
    "55": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 3, "max_len": 510},
}


@dataclass(frozen=True, slots=True)
class Dialect:
    """A named spec, and how DE52 is sized for a zone PIN block format."""

    name: DialectName
    spec: Spec
    #: Spec units per PIN block byte: 1 for a binary DE52, 2 for hex characters.
    pin_units_per_byte: int

    def for_pin_format(self, zone_format: Literal[0, 4]) -> Dialect:
        """This dialect with DE52 sized for a format 0 (8-byte) or format 4 (16-byte) block."""
        size = 16 if zone_format == 4 else 8
        spec = dict(self.spec)
        entry = spec["52"].copy()
        entry["max_len"] = size * self.pin_units_per_byte
        spec["52"] = entry
        return Dialect(self.name, spec, self.pin_units_per_byte)


BINARY: Final = Dialect("binary", derive(iso8583.specs.default, BINARY_OVERRIDES), 1)
ASCII: Final = Dialect("ascii", derive(iso8583.specs.default_ascii, ASCII_OVERRIDES), 2)
DIALECTS: Final[Mapping[DialectName, Dialect]] = {"binary": BINARY, "ascii": ASCII}


def dialect(name: DialectName, zone_format: Literal[0, 4] = 0) -> Dialect:
    """The dialect called ``name`` with DE52 sized for ``zone_format``."""
    return DIALECTS[name].for_pin_format(zone_format)


# -- the codec -----------------------------------------------------------------------------------


def decode_message(spec: Spec, data: bytes) -> Fields:
    """Decode one whole message (no framing) with pyiso8583; :class:`MessageDecodeError` if not.

    The error names the element and the offset only (see :mod:`.errors` on chaining).
    """
    failure: MessageDecodeError
    try:
        decoded, _ = iso8583.decode(bytes(data), spec)
        return dict(decoded)
    except iso8583.DecodeError as exc:
        failure = MessageDecodeError(_reason(exc.msg), offset=exc.pos, field=exc.field)
    except KeyError:
        # A bitmap bit 65 announces a tertiary bitmap (elements 129-192), and pyiso8583
        # then looks those elements up in the spec; no dialect here defines them.
        failure = MessageDecodeError("message uses elements beyond 128", field="1")
    raise failure


def encode_message(spec: Spec, fields: Mapping[str, str]) -> bytes:
    """Encode ``fields`` (bitmaps are computed); :class:`MessageEncodeError` if they do not fit."""
    failure: MessageEncodeError
    try:
        raw, _ = iso8583.encode(dict(fields), spec)
        return bytes(raw)
    except iso8583.EncodeError as exc:
        failure = MessageEncodeError(_reason(exc.msg), field=exc.field)
    raise failure


def _reason(text: str) -> str:
    """pyiso8583's message up to any quoted detail (it can quote length digits or codecs)."""
    return text.split(",", 1)[0] if text.startswith("Failed") else text


# -- measuring a message without a length header ---------------------------------------------------


def _units_to_bytes(entry: FieldSpec, units: int) -> int:
    if entry.get("len_count") == "nibbles":
        return (units + 1) // 2
    return units


def _prefix_value(entry: FieldSpec, prefix: bytes, key: str, offset: int) -> int:
    encoding = entry["len_enc"]
    if encoding == "b":
        return int.from_bytes(prefix, "big")
    if encoding == "bcd":
        digits = prefix.hex()
    else:
        try:
            digits = prefix.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            raise MessageDecodeError(
                "length prefix is not text", field=key, offset=offset
            ) from None
    if not digits.isascii() or not digits.isdigit():
        raise MessageDecodeError("length prefix is not decimal", field=key, offset=offset)
    return int(digits)


def _bitmap_bits(entry: FieldSpec, raw: bytes, key: str, offset: int) -> int:
    if entry["data_enc"] == "b":
        return int.from_bytes(raw, "big")
    try:
        text = raw.decode(entry["data_enc"])
        return int.from_bytes(bytes.fromhex(text), "big") if len(text) == 16 else -1
    except (UnicodeDecodeError, LookupError, ValueError):
        raise MessageDecodeError("bitmap is not hex", field=key, offset=offset) from None


def measure(spec: Spec, data: bytes) -> int | None:
    """The length of the message at the start of ``data``, or None when more bytes are needed.

    Walks the MTI, the bitmaps and each present element's length prefix, the way the
    decoder would; :class:`MessageDecodeError` when a bitmap or a length prefix cannot be
    read (then no later boundary can be trusted).
    """
    pos = 0

    def take(size: int) -> bytes | None:
        nonlocal pos
        if pos + size > len(data):
            return None
        chunk = data[pos : pos + size]
        pos += size
        return chunk

    for key in ("h", "t"):
        entry = spec[key]
        if take(_units_to_bytes(entry, entry["max_len"])) is None:
            return None
    present: list[int] = []
    bitmap_keys = ["p"]
    while bitmap_keys:
        key = bitmap_keys.pop()
        entry = spec[key]
        start = pos
        raw = take(entry["max_len"])
        if raw is None:
            return None
        bits = _bitmap_bits(entry, raw, key, start)
        if bits < 0:
            raise MessageDecodeError("bitmap is not hex", field=key, offset=start)
        base = 0 if key == "p" else 64
        present += [base + n for n in range(1, 65) if bits >> (64 - n) & 1]
        if key == "p" and 1 in present:
            bitmap_keys.append("1")
    if 65 in present:
        raise MessageDecodeError("message uses elements beyond 128", field="1")
    for number in sorted(n for n in present if n != 1):
        key = str(number)
        entry = spec[key]
        start = pos
        if entry["len_type"] == 0:
            units = entry["max_len"]
        else:
            prefix = take(entry["len_type"])
            if prefix is None:
                return None
            units = _prefix_value(entry, prefix, key, start)
            if units > entry["max_len"]:
                raise MessageDecodeError("element longer than its maximum", field=key, offset=start)
        if take(_units_to_bytes(entry, units)) is None:
            return None
    return pos
