"""Primary account numbers: the Luhn check digit, masking for display, and a validated type.

Standards:

* ISO/IEC 7812-1:2017, Annex B: the Luhn (modulus 10, "double-add-double") check digit.
  From the rightmost digit (the check digit) leftwards, every second digit is doubled and
  9 is subtracted from results above 9; the number is valid when the sum is a multiple of 10.
* ISO/IEC 7812-1:2017, 4.3: a PAN has up to 19 digits. :class:`Pan` accepts 12 to 19
  (ISO 9564 PIN blocks and EMV tag 5A need at least 12 digits to be meaningful).
* PCI DSS v4.0 requirement 3.4.1: a displayed PAN shows at most the BIN (first six) and
  the last four digits. An 8-digit BIN does *not* allow the first eight to be shown here:
  the first six are the maximum, whatever the BIN length.

Masking rule (:func:`mask_pan`), for a digit string of length ``L``:

* at least ``hidden = max(1, ceil(L / 3))`` digits are replaced by ``*`` (``L > 0``);
* the visible budget is ``min(10, L - hidden)`` digits, given first to the last four
  (``last = min(4, budget)``) and then to the leading digits (``first = min(6, budget - last)``);
* only a prefix and a suffix are ever visible; the middle is always hidden, and the output
  has the same length as the input.

So 13 to 14 digit PANs show 4+4 and 5+4, 15 to 19 digit PANs show 6+4, a 12 digit PAN 4+4,
and very short strings only a few trailing digits (``"1234"`` -> ``"**34"``).

:class:`Pan` never shows its digits in ``str()``, ``repr()``, error messages or pydantic
validation errors (our messages never quote the input; models should also set
``hide_input_in_errors=True``, as the house style requires). The clear value is available
only through :attr:`Pan.digits` / :meth:`Pan.reveal`, for code that must have it
(PIN blocks, key derivation, the encrypted wire payload).

Pydantic: a ``Pan`` field validates from a ``str`` (or a ``Pan``). Dumping in Python mode
(``model_dump()``) keeps the ``Pan`` object, so an accidental log of the dump stays masked;
JSON mode (``model_dump(mode="json")``, ``model_dump_json()``) writes the clear digits,
because the JSON is the plaintext of the AES-GCM envelope and the receiver needs the PAN.
A model's ``repr`` shows the masked value.
"""

from __future__ import annotations

import hmac
from typing import Final

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from paycore.errors import CodecError

__all__ = [
    "MAX_PAN_LENGTH",
    "MIN_PAN_LENGTH",
    "Pan",
    "PanError",
    "luhn_check_digit",
    "luhn_valid",
    "mask_pan",
]

MIN_PAN_LENGTH: Final = 12
MAX_PAN_LENGTH: Final = 19

_DIGITS: Final = frozenset("0123456789")
_MAX_FIRST: Final = 6
_MAX_LAST: Final = 4
_MAX_VISIBLE: Final = _MAX_FIRST + _MAX_LAST


class PanError(CodecError):
    """A PAN (or a Luhn payload) that is not valid. The message never contains the digits."""


def _first_non_digit(text: str) -> int | None:
    for index, char in enumerate(text):
        if char not in _DIGITS:
            return index
    return None


def _luhn_sum(digits: str, *, double_rightmost: bool) -> int:
    """Luhn sum of ``digits``; ``double_rightmost`` when a check digit is still to come."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if (position % 2 == 0) == double_rightmost:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total


def luhn_check_digit(payload: str) -> str:
    """The ISO/IEC 7812-1 Annex B check digit to append to ``payload`` (any number of digits).

    >>> luhn_check_digit("7992739871")
    '3'

    Raises :class:`PanError` if ``payload`` contains anything but ASCII digits.
    """
    bad = _first_non_digit(payload)
    if bad is not None:
        raise PanError("Luhn payload must be ASCII digits", offset=bad, field="payload")
    return str((10 - _luhn_sum(payload, double_rightmost=True) % 10) % 10)


def luhn_valid(number: str) -> bool:
    """True if ``number`` (ASCII digits, check digit last) passes the Luhn check.

    Anything that is not a non-empty string of ASCII digits is simply not valid.

    >>> luhn_valid("79927398713"), luhn_valid("79927398710")
    (True, False)
    """
    if not number or _first_non_digit(number) is not None:
        return False
    return _luhn_sum(number, double_rightmost=False) % 10 == 0


def _visible_counts(length: int) -> tuple[int, int]:
    """(leading, trailing) digits that :func:`mask_pan` leaves visible for ``length``."""
    if length <= 0:
        return 0, 0
    hidden = max(1, -(-length // 3))
    budget = min(_MAX_VISIBLE, length - hidden)
    last = min(_MAX_LAST, budget)
    first = min(_MAX_FIRST, budget - last)
    return first, last


def mask_pan(pan: str) -> str:
    """``pan`` with everything but (at most) the first six and last four digits as ``*``.

    See the module docstring for the exact rule for short numbers.

    >>> mask_pan("4111111111111111")
    '411111******1111'

    Raises :class:`PanError` if ``pan`` contains anything but ASCII digits.
    """
    bad = _first_non_digit(pan)
    if bad is not None:
        raise PanError("PAN must be ASCII digits", offset=bad, field="pan")
    first, last = _visible_counts(len(pan))
    hidden = len(pan) - first - last
    return pan[:first] + "*" * hidden + (pan[len(pan) - last :] if last else "")


class Pan:
    """A validated primary account number: 12 to 19 ASCII digits with a valid Luhn digit.

    ``str()`` and ``repr()`` are masked; :attr:`digits` (or :meth:`reveal`) is the clear
    value. Equality and hashing are on the value. Immutable.
    """

    __slots__ = ("_digits",)
    _digits: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise PanError("PAN must be a string", field="pan")
        bad = _first_non_digit(value)
        if bad is not None:
            raise PanError("PAN must be ASCII digits", offset=bad, field="pan")
        if not MIN_PAN_LENGTH <= len(value) <= MAX_PAN_LENGTH:
            raise PanError(
                f"PAN must have {MIN_PAN_LENGTH} to {MAX_PAN_LENGTH} digits, not {len(value)}",
                field="pan",
            )
        if not luhn_valid(value):
            raise PanError("PAN fails the Luhn check", field="pan")
        object.__setattr__(self, "_digits", value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Pan is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Pan is immutable")

    @property
    def digits(self) -> str:
        """The clear PAN. Use only where the value itself is needed; never log it."""
        return self._digits

    def reveal(self) -> str:
        """The clear PAN (same as :attr:`digits`, as a call that is easy to grep for)."""
        return self._digits

    @property
    def masked(self) -> str:
        """The PAN as :func:`mask_pan` shows it."""
        return mask_pan(self._digits)

    @property
    def bin(self) -> str:
        """The first six digits (the issuer identification number as PCI DSS displays it)."""
        return self._digits[:_MAX_FIRST]

    @property
    def last4(self) -> str:
        """The last four digits."""
        return self._digits[-_MAX_LAST:]

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"Pan({self.masked!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pan):
            return NotImplemented
        return hmac.compare_digest(self._digits, other._digits)

    def __hash__(self) -> int:
        return hash(("Pan", self._digits))

    def __reduce__(self) -> tuple[type[Pan], tuple[str]]:
        return (Pan, (self._digits,))

    # -- pydantic ----------------------------------------------------------------------

    @classmethod
    def _coerce(cls, value: object) -> Pan:
        if isinstance(value, Pan):
            return value
        if isinstance(value, str):
            return cls(value)
        raise PanError("PAN must be a string", field="pan")

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source_type: object, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validate from ``str`` (or ``Pan``); serialise to the clear digits in JSON mode only."""
        from_str = core_schema.chain_schema(
            [
                core_schema.str_schema(strict=True),
                core_schema.no_info_plain_validator_function(cls),
            ]
        )
        return core_schema.json_or_python_schema(
            json_schema=from_str,
            python_schema=core_schema.no_info_plain_validator_function(cls._coerce),
            serialization=core_schema.plain_serializer_function_ser_schema(
                _serialise_pan, when_used="json"
            ),
        )


def _serialise_pan(value: Pan) -> str:
    """JSON form of a :class:`Pan` field: the clear digits (the JSON is encrypted on the wire)."""
    return value.digits
