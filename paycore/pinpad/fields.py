"""PIN pad protocol field types (docs/pinpad-protocol.md section 4.1): one codec per type.

Message DATA is a fixed sequence of fields, no tags: the command table says which fields
and in what order. Each field type here encodes a Python value to bytes and decodes it back
from ``(data, offset)``; errors carry the field name and offset, never the value.
"""

from __future__ import annotations

import enum
from typing import Generic, TypeVar

from paycore.pinpad.frames import PinpadProtocolError

T = TypeVar("T")
E = TypeVar("E", bound=enum.IntEnum)


class FieldLengthError(PinpadProtocolError):
    """DATA too short for its fields, or with bytes left over (status BAD_LENGTH)."""


class FieldValueError(PinpadProtocolError):
    """A field whose value is not allowed (status BAD_VALUE)."""


def _take(data: bytes, offset: int, count: int, name: str) -> bytes:
    if offset + count > len(data):
        raise FieldLengthError("data too short", offset=offset, field=name)
    return data[offset : offset + count]


class FieldType(Generic[T]):
    """A wire type: ``encode(value, name) -> bytes``, ``decode(data, offset, name)``."""

    wire_name = "?"

    def encode(self, value: T, name: str) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes, offset: int, name: str) -> tuple[T, int]:
        raise NotImplementedError


class UInt(FieldType[int]):
    """Unsigned big-endian integer of ``size`` bytes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.wire_name = f"u{8 * size}"

    def encode(self, value: int, name: str) -> bytes:
        if not isinstance(value, int) or not 0 <= value < 1 << (8 * self.size):
            raise FieldValueError(f"not a {self.wire_name}", field=name)
        return value.to_bytes(self.size, "big")

    def decode(self, data: bytes, offset: int, name: str) -> tuple[int, int]:
        raw = _take(data, offset, self.size, name)
        return int.from_bytes(raw, "big"), offset + self.size


class Bool(FieldType[bool]):
    """One byte, 0x00 false or 0x01 true; anything else is refused."""

    wire_name = "bool"

    def encode(self, value: bool, name: str) -> bytes:
        if not isinstance(value, bool):
            raise FieldValueError("not a bool", field=name)
        return b"\x01" if value else b"\x00"

    def decode(self, data: bytes, offset: int, name: str) -> tuple[bool, int]:
        raw = _take(data, offset, 1, name)[0]
        if raw > 1:
            raise FieldValueError("bool must be 0 or 1", offset=offset, field=name)
        return raw == 1, offset + 1


class Bcd(FieldType[int]):
    """Unsigned packed BCD of ``size`` bytes (EMV format n, e.g. amount 9F02 is n12)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.wire_name = f"n{2 * size} BCD"

    def encode(self, value: int, name: str) -> bytes:
        if not isinstance(value, int) or not 0 <= value < 10 ** (2 * self.size):
            raise FieldValueError(f"not an {self.wire_name}", field=name)
        return bytes.fromhex(f"{value:0{2 * self.size}d}")

    def decode(self, data: bytes, offset: int, name: str) -> tuple[int, int]:
        raw = _take(data, offset, self.size, name)
        text = raw.hex()
        if not text.isdigit():
            raise FieldValueError("BCD nibble above 9", offset=offset, field=name)
        return int(text), offset + self.size


class Enum(FieldType[E]):
    """One byte holding a member of an :class:`enum.IntEnum`."""

    def __init__(self, cls: type[E]) -> None:
        self.cls = cls
        self.wire_name = f"u8 ({cls.__name__})"

    def encode(self, value: E, name: str) -> bytes:
        if not isinstance(value, self.cls):
            raise FieldValueError(f"not a {self.cls.__name__}", field=name)
        return bytes((int(value),))

    def decode(self, data: bytes, offset: int, name: str) -> tuple[E, int]:
        raw = _take(data, offset, 1, name)[0]
        try:
            return self.cls(raw), offset + 1
        except ValueError:
            raise FieldValueError(
                f"unknown {self.cls.__name__}", offset=offset, field=name
            ) from None


class VarBytes(FieldType[bytes]):
    """A length prefix of ``prefix`` bytes, then that many bytes (at most ``limit``)."""

    def __init__(self, prefix: int = 1, limit: int = 255) -> None:
        self.prefix = prefix
        self.limit = min(limit, (1 << (8 * prefix)) - 1)
        self.wire_name = f"var{8 * prefix} bytes"

    def encode(self, value: bytes, name: str) -> bytes:
        if not isinstance(value, bytes) or len(value) > self.limit:
            raise FieldValueError("bytes missing or too long", field=name)
        return len(value).to_bytes(self.prefix, "big") + value

    def decode(self, data: bytes, offset: int, name: str) -> tuple[bytes, int]:
        count = int.from_bytes(_take(data, offset, self.prefix, name), "big")
        if count > self.limit:
            raise FieldValueError("length above limit", offset=offset, field=name)
        start = offset + self.prefix
        return _take(data, start, count, name), start + count


class Text(FieldType[str]):
    """UTF-8 text behind a length prefix (``prefix`` bytes, counting encoded bytes).

    ``alphabet``, when given, is the set of characters allowed (e.g. digits for a PAN);
    control characters are always refused.
    """

    def __init__(self, prefix: int = 1, limit: int = 255, alphabet: str | None = None) -> None:
        self.raw = VarBytes(prefix, limit)
        self.alphabet = None if alphabet is None else frozenset(alphabet)
        self.wire_name = f"var{8 * prefix} text" if alphabet is None else "var8 digits"

    def _check(self, value: str, name: str, offset: int | None) -> None:
        if self.alphabet is not None:
            if not all(ch in self.alphabet for ch in value):
                raise FieldValueError("character not allowed", offset=offset, field=name)
        elif not value.isprintable():
            raise FieldValueError("control character in text", offset=offset, field=name)

    def encode(self, value: str, name: str) -> bytes:
        if not isinstance(value, str):
            raise FieldValueError("not text", field=name)
        self._check(value, name, None)
        return self.raw.encode(value.encode("utf-8"), name)

    def decode(self, data: bytes, offset: int, name: str) -> tuple[str, int]:
        raw, end = self.raw.decode(data, offset, name)
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FieldValueError("text is not UTF-8", offset=offset, field=name) from None
        self._check(value, name, offset)
        return value, end


class TextList(FieldType[tuple[str, ...]]):
    """A count byte, then that many :class:`Text` items (at most ``limit``)."""

    def __init__(self, item: Text, limit: int = 16) -> None:
        self.item = item
        self.limit = limit
        self.wire_name = "u8 count + var8 text each"

    def encode(self, value: tuple[str, ...], name: str) -> bytes:
        if not isinstance(value, tuple) or len(value) > self.limit:
            raise FieldValueError("not a tuple of text or too many items", field=name)
        return bytes((len(value),)) + b"".join(self.item.encode(v, name) for v in value)

    def decode(self, data: bytes, offset: int, name: str) -> tuple[tuple[str, ...], int]:
        count = _take(data, offset, 1, name)[0]
        if count > self.limit:
            raise FieldValueError("too many items", offset=offset, field=name)
        offset += 1
        items = []
        for _ in range(count):
            item, offset = self.item.decode(data, offset, name)
            items.append(item)
        return tuple(items), offset


U8 = UInt(1)
U16 = UInt(2)
U32 = UInt(4)
BOOL = Bool()
AMOUNT = Bcd(6)
CURRENCY = Bcd(2)
TEXT = Text()
LONG_TEXT = Text(prefix=2, limit=1000)
DIGITS = Text(limit=19, alphabet="0123456789")
BYTES = VarBytes()
LINES = TextList(TEXT, limit=8)
