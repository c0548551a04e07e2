"""ISO 4217 currencies: alphabetic code, numeric code (EMV tag 5F2A) and minor-unit exponent.

Amounts everywhere in this project are integers in minor units; the exponent says where
the decimal point goes for display and receipts. The table holds the currencies a
terminal in the field is likely to be configured for; add a row to support another.
"""

from __future__ import annotations

from dataclasses import dataclass

from paycore.errors import CodecError


@dataclass(frozen=True, slots=True)
class Currency:
    alpha: str
    numeric: str
    exponent: int
    name: str

    def format(self, minor_units: int) -> str:
        """``1234`` EUR -> ``"12.34 EUR"``; no locale, no rounding."""
        sign = "-" if minor_units < 0 else ""
        units = abs(minor_units)
        if self.exponent == 0:
            return f"{sign}{units} {self.alpha}"
        whole, frac = divmod(units, 10**self.exponent)
        return f"{sign}{whole}.{frac:0{self.exponent}d} {self.alpha}"


_ROWS = (
    ("AUD", "036", 2, "Australian dollar"),
    ("BHD", "048", 3, "Bahraini dinar"),
    ("BRL", "986", 2, "Brazilian real"),
    ("CAD", "124", 2, "Canadian dollar"),
    ("CHF", "756", 2, "Swiss franc"),
    ("CLP", "152", 0, "Chilean peso"),
    ("CNY", "156", 2, "Renminbi"),
    ("CZK", "203", 2, "Czech koruna"),
    ("DKK", "208", 2, "Danish krone"),
    ("EUR", "978", 2, "Euro"),
    ("GBP", "826", 2, "Pound sterling"),
    ("HKD", "344", 2, "Hong Kong dollar"),
    ("HUF", "348", 2, "Hungarian forint"),
    ("INR", "356", 2, "Indian rupee"),
    ("ISK", "352", 0, "Icelandic krona"),
    ("JOD", "400", 3, "Jordanian dinar"),
    ("JPY", "392", 0, "Japanese yen"),
    ("KRW", "410", 0, "South Korean won"),
    ("KWD", "414", 3, "Kuwaiti dinar"),
    ("MXN", "484", 2, "Mexican peso"),
    ("NOK", "578", 2, "Norwegian krone"),
    ("NZD", "554", 2, "New Zealand dollar"),
    ("PLN", "985", 2, "Polish zloty"),
    ("RON", "946", 2, "Romanian leu"),
    ("SAR", "682", 2, "Saudi riyal"),
    ("SEK", "752", 2, "Swedish krona"),
    ("SGD", "702", 2, "Singapore dollar"),
    ("TND", "788", 3, "Tunisian dinar"),
    ("TRY", "949", 2, "Turkish lira"),
    ("USD", "840", 2, "United States dollar"),
    ("ZAR", "710", 2, "South African rand"),
)

CURRENCIES: dict[str, Currency] = {row[0]: Currency(*row) for row in _ROWS}
_BY_NUMERIC: dict[str, Currency] = {c.numeric: c for c in CURRENCIES.values()}


def by_alpha(code: str) -> Currency:
    """The currency for an alphabetic code (``"EUR"``); CodecError if unknown."""
    try:
        return CURRENCIES[code]
    except KeyError:
        raise CodecError("unknown ISO 4217 currency", field="currency") from None


def by_numeric(code: str) -> Currency:
    """The currency for a numeric code (``"978"``, as in EMV tag 5F2A); CodecError if unknown."""
    try:
        return _BY_NUMERIC[code]
    except KeyError:
        raise CodecError("unknown ISO 4217 numeric currency", field="currency") from None
