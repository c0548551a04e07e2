from __future__ import annotations

import pytest

from paycore.currency import CURRENCIES, by_alpha, by_numeric
from paycore.errors import CodecError


def test_known_codes_and_exponents() -> None:
    assert by_alpha("EUR").numeric == "978"
    assert by_numeric("840").alpha == "USD"
    assert by_alpha("JPY").exponent == 0
    assert by_alpha("KWD").exponent == 3


def test_table_is_consistent() -> None:
    numerics = [c.numeric for c in CURRENCIES.values()]
    assert len(numerics) == len(set(numerics))
    for code, cur in CURRENCIES.items():
        assert code == cur.alpha and len(code) == 3 and code.isupper()
        assert len(cur.numeric) == 3 and cur.numeric.isdigit()
        assert by_numeric(cur.numeric) is cur


@pytest.mark.parametrize(
    ("alpha", "minor", "text"),
    [
        ("EUR", 1234, "12.34 EUR"),
        ("EUR", 5, "0.05 EUR"),
        ("JPY", 500, "500 JPY"),
        ("BHD", 1, "0.001 BHD"),
        ("GBP", -250, "-2.50 GBP"),
    ],
)
def test_format(alpha: str, minor: int, text: str) -> None:
    assert by_alpha(alpha).format(minor) == text


def test_unknown_codes_are_codec_errors() -> None:
    with pytest.raises(CodecError):
        by_alpha("XXX")
    with pytest.raises(CodecError):
        by_numeric("000")
