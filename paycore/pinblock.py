"""ISO 9564-1 PIN blocks, formats 0, 3 and 4, and their DUKPT-enciphered forms, through psec.

Standards:

* ISO 9564-1:2017, 9.3.2 (format 0) and 9.3.5 (format 3): an 8-byte block, the PIN field
  ``C | N | P..P | fill`` XOR the PAN field ``0000 | 12 rightmost PAN digits excluding the
  check digit``. Format 0 fills with ``F``; format 3 with random digits ``A`` to ``F``.
* ISO 9564-1:2017, 9.4 (format 4, AES): a 16-byte plaintext PIN field
  ``4 | N | P..P | A..A (to 8 bytes) | 8 random bytes`` and a 16-byte plaintext PAN field
  ``M | PAN (12 + M digits, left-justified) | 0 pad`` (``M = len(PAN) - 12``; PANs shorter
  than 12 digits are right-justified in 12 digits with ``M = 0``), enciphered as
  ``EPB = E(K, E(K, PIN field) XOR PAN field)``; deciphering reverses the steps and checks
  the PIN field.
* ANSI X9.24-3-2017 (AES DUKPT): the format 4 block is enciphered under the AES-128 PIN
  working key for the KSN (:func:`paycore.dukpt.aes_working_key` usage ``"pin"``), as in the
  X9.24-3 supplement "Calculation of AES PIN Block Format 4".
* ANSI X9.24-1:2009 (TDES DUKPT, legacy PIN pads): a format 0 block TDES-ECB enciphered
  under the PIN variant of the transaction key (:func:`paycore.dukpt.tdes_working_key`).

psec does the block arithmetic and the ciphers where its API fits (format 0 encode and
decode, format 3 decode, the format 4 PAN field, format 4 decipher, AES/TDES). psec draws
its own random numbers for format 3 fill and the format 4 PIN field, so those two are built
here from the ``random`` argument instead (``random(n)`` must return ``n`` bytes; pass
``secrets.token_bytes`` in production).

Lengths accepted: PIN 4 to 12 decimal digits (all formats); PAN 13 to 19 digits for formats
0 and 3 (psec needs a digit left of the 12 it uses; every real PAN under these formats is
at least 13 digits), 1 to 19 digits for format 4 (ISO 9564-1 allows short PANs there).

Errors: :class:`PinBlockError` for a bad PIN, PAN, block length, control field, PIN length
field, fill or key length. psec's own messages can quote the PIN, fill digits or the clear
block, so they are never passed on, not even as ``__cause__``/``__context__``: the error is
raised outside psec's ``except`` clause with a message and ``field`` of our own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

from psec import aes as _aes
from psec import des as _des
from psec import pinblock as _psec_pinblock

from paycore import dukpt
from paycore.errors import CodecError

__all__ = [
    "PinBlockError",
    "RandomSource",
    "decipher_format0_tdes_dukpt",
    "decipher_format4",
    "decipher_format4_dukpt",
    "decode_format0",
    "decode_format3",
    "decode_format4_pin_field",
    "encipher_format0_tdes_dukpt",
    "encipher_format4",
    "encipher_format4_dukpt",
    "encode_format0",
    "encode_format3",
    "encode_format4_fields",
]

RandomSource = Callable[[int], bytes]
"""``random(n)`` returns ``n`` random bytes (``secrets.token_bytes`` in production)."""

_P = ParamSpec("_P")
_T = TypeVar("_T")

_DIGITS: Final = frozenset("0123456789")
_MIN_PIN: Final = 4
_MAX_PIN: Final = 12
_FORMAT3_FILL: Final = "ABCDEF"
_AES_KEY_LENGTHS: Final = frozenset({16, 24, 32})
_TDES_KEY_LENGTHS: Final = frozenset({16, 24})
# A random source that keeps returning bytes >= 252 is broken; give up after this many draws.
_MAX_FILL_DRAWS: Final = 32


class PinBlockError(CodecError):
    """A PIN, PAN or PIN block that is not valid. Never carries the PIN, PAN or block."""


# -- validation -----------------------------------------------------------------------------


def _is_digits(text: object) -> bool:
    return isinstance(text, str) and bool(text) and all(ch in _DIGITS for ch in text)


def _check_pin(pin: str) -> None:
    if not _is_digits(pin) or not _MIN_PIN <= len(pin) <= _MAX_PIN:
        raise PinBlockError("PIN must be 4 to 12 decimal digits", field="pin")


def _check_pan(pan: str, minimum: int) -> None:
    if not _is_digits(pan) or not minimum <= len(pan) <= 19:
        raise PinBlockError(f"PAN must be {minimum} to 19 decimal digits", field="pan")


def _check_block(block: bytes, length: int) -> bytes:
    if not isinstance(block, bytes | bytearray) or len(block) != length:
        raise PinBlockError(f"PIN block must be {length} bytes", field="block")
    return bytes(block)


def _check_key(key: bytes, lengths: frozenset[int], what: str) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) not in lengths:
        raise PinBlockError(f"{what} key has a wrong length", field="key")


def _draw(random: RandomSource, count: int) -> bytes:
    data = random(count)
    if not isinstance(data, bytes | bytearray) or len(data) != count:
        raise PinBlockError("random source returned the wrong number of bytes", field="random")
    return bytes(data)


# -- psec adapter ---------------------------------------------------------------------------

# psec's ValueError messages, by prefix, mapped to ours. Anything else is reported generically.
_PSEC_REASONS: Final[tuple[tuple[str, str, str], ...]] = (
    ("PIN block is not ISO format", "control field does not name this format", "control"),
    ("PIN length must be", "PIN length field is out of range 4 to 12", "pin length"),
    ("PIN block filler is incorrect", "fill digits are not valid for this format", "fill"),
    ("PIN field filler is incorrect", "fill digits are not valid for this format", "fill"),
    ("PIN is not numeric", "PIN digits are not decimal", "pin"),
    ("PIN block must be", "PIN block has the wrong length", "block"),
    ("PIN field must be", "PIN field has the wrong length", "block"),
    ("Data length must be", "PIN block has the wrong length", "block"),
    ("PAN must be", "PAN is not valid for this format", "pan"),
    ("PIN must be", "PIN must be 4 to 12 decimal digits", "pin"),
)


def _translate(exc: ValueError) -> PinBlockError:
    text = str(exc)
    for prefix, message, field in _PSEC_REASONS:
        if text.startswith(prefix):
            return PinBlockError(message, field=field)
    return PinBlockError("PIN block is not valid")


def _psec(function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Call psec; turn its ValueError into a PinBlockError that does not chain psec's text."""
    failure: PinBlockError
    try:
        return function(*args, **kwargs)
    except ValueError as exc:
        failure = _translate(exc)
    # Raised here, outside the except clause, so psec's exception is not the __context__.
    raise failure


def _xor(left: bytes, right: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(left, right, strict=True))


def _pan_field_format0(pan: str) -> bytes:
    """ISO 9564-1 9.3.2 PAN field: 0000 and the 12 rightmost digits before the check digit."""
    return b"\x00\x00" + bytes.fromhex(pan[-13:-1])


# -- format 0 -------------------------------------------------------------------------------


def encode_format0(pin: str, pan: str) -> bytes:
    """ISO 9564-1 format 0 clear PIN block (8 bytes).

    >>> encode_format0("1234", "4012345678909").hex().upper()
    '041274EDCBA9876F'
    """
    _check_pin(pin)
    _check_pan(pan, 13)
    return _psec(_psec_pinblock.encode_pinblock_iso_0, pin, pan)


def decode_format0(block: bytes, pan: str) -> str:
    """The PIN in an ISO 9564-1 format 0 clear PIN block.

    >>> decode_format0(bytes.fromhex("041274EDCBA9876F"), "4012345678909")
    '1234'
    """
    _check_pan(pan, 13)
    clear = _check_block(block, 8)
    return _psec(_psec_pinblock.decode_pinblock_iso_0, clear, pan)


# -- format 3 -------------------------------------------------------------------------------


def _format3_fill(random: RandomSource, count: int) -> str:
    """``count`` uniformly random digits A to F (rejection sampling over random bytes)."""
    fill: list[str] = []
    for _ in range(_MAX_FILL_DRAWS):
        for byte in _draw(random, count):
            if byte < 252:  # 252 = 42 * 6: keeps the six digits equally likely
                fill.append(_FORMAT3_FILL[byte % 6])
                if len(fill) == count:
                    return "".join(fill)
    raise PinBlockError("random source does not look random", field="random")


def encode_format3(pin: str, pan: str, *, random: RandomSource) -> bytes:
    """ISO 9564-1 format 3 clear PIN block (8 bytes), fill digits A-F drawn from ``random``."""
    _check_pin(pin)
    _check_pan(pan, 13)
    fill = _format3_fill(random, 14 - len(pin))
    pin_field = bytes.fromhex(f"3{len(pin):X}{pin}{fill}")
    return _xor(pin_field, _pan_field_format0(pan))


def decode_format3(block: bytes, pan: str) -> str:
    """The PIN in an ISO 9564-1 format 3 clear PIN block.

    >>> decode_format3(bytes.fromhex("341261AAAAEDCBA9"), "5555555551234567")
    '1234'
    """
    _check_pan(pan, 13)
    clear = _check_block(block, 8)
    return _psec(_psec_pinblock.decode_pinblock_iso_3, clear, pan)


# -- format 4 -------------------------------------------------------------------------------


def encode_format4_fields(pin: str, pan: str, *, random: RandomSource) -> tuple[bytes, bytes]:
    """The ISO 9564-1 format 4 plaintext PIN field and PAN field (16 bytes each).

    The last 8 bytes of the PIN field come from ``random``.
    """
    _check_pin(pin)
    _check_pan(pan, 1)
    pin_field = bytes.fromhex(f"4{len(pin):X}{pin}" + "A" * (14 - len(pin))) + _draw(random, 8)
    pan_field = _psec(_psec_pinblock.encode_pan_field_iso_4, pan)
    return pin_field, pan_field


def decode_format4_pin_field(pin_field: bytes) -> str:
    """The PIN in a format 4 plaintext PIN field (control 4, length 4-12, fill ``A``)."""
    clear = _check_block(pin_field, 16)
    return _psec(_psec_pinblock.decode_pin_field_iso_4, clear)


def encipher_format4(key: bytes, pin: str, pan: str, *, random: RandomSource) -> bytes:
    """ISO 9564-1 format 4 enciphered PIN block: ``E(K, E(K, PIN field) XOR PAN field)``."""
    _check_key(key, _AES_KEY_LENGTHS, "AES")
    pin_field, pan_field = encode_format4_fields(pin, pan, random=random)
    block_a = _psec(_aes.encrypt_aes_ecb, bytes(key), pin_field)
    return _psec(_aes.encrypt_aes_ecb, bytes(key), _xor(block_a, pan_field))


def decipher_format4(key: bytes, block: bytes, pan: str) -> str:
    """The PIN in a format 4 enciphered PIN block (the PIN field is checked, not just read)."""
    _check_key(key, _AES_KEY_LENGTHS, "AES")
    _check_pan(pan, 1)
    enciphered = _check_block(block, 16)
    return _psec(_psec_pinblock.decipher_pinblock_iso_4, bytes(key), enciphered, pan)


# -- DUKPT ----------------------------------------------------------------------------------


def encipher_format4_dukpt(
    initial_key: bytes, ksn: bytes, pin: str, pan: str, *, random: RandomSource
) -> bytes:
    """Format 4 block under the AES DUKPT (X9.24-3) AES-128 PIN key for ``ksn``.

    Errors from the key derivation (a bad KSN or initial key) are paycore.dukpt's own.
    """
    key = dukpt.aes_working_key(initial_key, ksn, "pin", "AES128")
    return encipher_format4(key, pin, pan, random=random)


def decipher_format4_dukpt(initial_key: bytes, ksn: bytes, block: bytes, pan: str) -> str:
    """The PIN in a format 4 block enciphered under the AES DUKPT PIN key for ``ksn``."""
    key = dukpt.aes_working_key(initial_key, ksn, "pin", "AES128")
    return decipher_format4(key, block, pan)


def encipher_format0_tdes_dukpt(ipek: bytes, ksn: bytes, pin: str, pan: str) -> bytes:
    """Format 0 block TDES-ECB enciphered under the TDES DUKPT (X9.24-1) PIN key for ``ksn``.

    Errors from the key derivation (a bad KSN or IPEK) are paycore.dukpt's own.
    """
    key = dukpt.tdes_working_key(ipek, ksn, "pin")
    _check_key(key, _TDES_KEY_LENGTHS, "TDES")
    return _psec(_des.encrypt_tdes_ecb, bytes(key), encode_format0(pin, pan))


def decipher_format0_tdes_dukpt(ipek: bytes, ksn: bytes, block: bytes, pan: str) -> str:
    """The PIN in a format 0 block enciphered under the TDES DUKPT PIN key for ``ksn``."""
    _check_pan(pan, 13)
    enciphered = _check_block(block, 8)
    key = dukpt.tdes_working_key(ipek, ksn, "pin")
    _check_key(key, _TDES_KEY_LENGTHS, "TDES")
    return decode_format0(_psec(_des.decrypt_tdes_ecb, bytes(key), enciphered), pan)
