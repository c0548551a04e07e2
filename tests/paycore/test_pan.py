"""Tests for paycore.pan: Luhn (ISO/IEC 7812-1 Annex B), masking (PCI DSS 3.4.1), Pan."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore.errors import CodecError
from paycore.pan import Pan, PanError, luhn_check_digit, luhn_valid, mask_pan
from tests.vectors import load

VECTORS: dict[str, Any] = load("luhn_test_pans")
TEST_PANS: list[str] = [entry["pan"] for entry in VECTORS["test_pans"]]


def _reference_luhn_ok(digits: str) -> bool:
    """Independent Luhn: the sum-of-digits form of ISO/IEC 7812-1 Annex B."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        doubled = int(char) * (2 if index % 2 else 1)
        total += sum(int(d) for d in str(doubled))
    return total % 10 == 0


# -- Luhn ---------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["check_digit_vectors"], ids=lambda v: v["payload"])
def test_check_digit_vectors(vector: dict[str, str]) -> None:
    assert luhn_check_digit(vector["payload"]) == vector["check_digit"]
    assert vector["payload"] + vector["check_digit"] == vector["full"]
    assert luhn_valid(vector["full"])


@pytest.mark.parametrize("vector", VECTORS["validation_vectors"], ids=lambda v: v["number"])
def test_validation_vectors(vector: dict[str, Any]) -> None:
    assert luhn_valid(vector["number"]) is vector["valid"]


@pytest.mark.parametrize("entry", VECTORS["test_pans"], ids=lambda e: e["brand"])
def test_test_pans_luhn_flag_and_length(entry: dict[str, Any]) -> None:
    assert luhn_valid(entry["pan"]) is entry["luhn_valid"]
    assert len(entry["pan"]) == entry["length"]


@pytest.mark.parametrize(
    "text", ["", "12a4", "\uff11\uff12\uff13\uff14", " 79927398713", "7992739871-3"]
)
def test_luhn_valid_is_false_for_non_digit_strings(text: str) -> None:
    assert luhn_valid(text) is False


def test_check_digit_rejects_non_digits_without_quoting_them() -> None:
    with pytest.raises(PanError) as info:
        luhn_check_digit("79927x9871")
    assert info.value.offset == 5
    assert "79927" not in str(info.value)


@given(st.text(alphabet="0123456789", max_size=40))
def test_appending_the_check_digit_makes_the_number_valid(payload: str) -> None:
    full = payload + luhn_check_digit(payload)
    assert luhn_valid(full)
    assert luhn_valid(full) == _reference_luhn_ok(full)
    # exactly one check digit works
    others = [d for d in "0123456789" if d != full[-1]]
    assert not any(luhn_valid(payload + d) for d in others)


@given(st.text(alphabet="0123456789", min_size=1, max_size=30))
def test_luhn_valid_agrees_with_reference(number: str) -> None:
    assert luhn_valid(number) == _reference_luhn_ok(number)


# -- masking ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pan", "masked"),
    [
        ("4111111111111111", "411111******1111"),
        ("378282246310005", "378282*****0005"),
        ("30569309025904", "30569*****5904"),
        ("4012345678909", "4012*****8909"),
        ("123456789012", "1234****9012"),
        ("6799990200000001114", "679999*********1114"),
        ("1234", "**34"),
        ("12", "*2"),
        ("1", "*"),
        ("", ""),
    ],
)
def test_mask_pan_examples(pan: str, masked: str) -> None:
    assert mask_pan(pan) == masked


def test_mask_pan_eight_digit_bin_still_shows_only_six() -> None:
    # A 16-digit PAN under an 8-digit BIN (ISO/IEC 7812-1:2017): PCI DSS still caps at 6 + 4.
    pan = "4000056655665556"
    assert mask_pan(pan) == "400005******5556"


def test_mask_pan_rejects_non_digits() -> None:
    with pytest.raises(PanError):
        mask_pan("4111-1111-1111-1111")


@given(st.text(alphabet="0123456789", max_size=30))
def test_mask_pan_properties(pan: str) -> None:
    masked = mask_pan(pan)
    assert len(masked) == len(pan)
    visible = [i for i, ch in enumerate(masked) if ch != "*"]
    assert len(visible) <= 10
    if pan:
        hidden = len(pan) - len(visible)
        assert hidden >= max(1, -(-len(pan) // 3))
    # every visible character is the original one, and only a prefix and a suffix show
    for i in visible:
        assert masked[i] == pan[i]
    first = len(masked) - len(masked.lstrip("0123456789"))
    last = len(masked) - len(masked.rstrip("0123456789"))
    assert set(masked[first : len(masked) - last]) <= {"*"}
    assert first <= 6
    assert last <= 4
    if len(pan) >= 15:
        assert (first, last) == (6, 4)


# -- Pan ------------------------------------------------------------------------------------


@pytest.mark.parametrize("digits", TEST_PANS)
def test_pan_accepts_test_pans(digits: str) -> None:
    pan = Pan(digits)
    assert pan.digits == digits
    assert pan.reveal() == digits
    assert pan.bin == digits[:6]
    assert pan.last4 == digits[-4:]
    assert pan.masked == mask_pan(digits)
    assert str(pan) == pan.masked
    assert digits not in repr(pan)
    assert digits not in str(pan)
    assert repr(pan) == f"Pan({mask_pan(digits)!r})"


@pytest.mark.parametrize(
    "bad",
    [
        "4111111111111112",  # Luhn fails
        "1234567890123456",  # the EMV cryptogram vectors' PAN, not Luhn-valid
        "79927398713",  # valid Luhn, 11 digits
        "49927398716000000007",  # 20 digits
        "4111 1111 1111 1111",
        "",
    ],
)
def test_pan_rejects_bad_input_without_quoting_it(bad: str) -> None:
    with pytest.raises(PanError) as info:
        Pan(bad)
    assert isinstance(info.value, CodecError)
    assert isinstance(info.value, ValueError)
    assert info.value.field == "pan"
    if bad:
        assert bad not in str(info.value)
        assert bad[:8] not in str(info.value)


def test_pan_rejects_non_strings() -> None:
    with pytest.raises(PanError):
        Pan(4111111111111111)  # type: ignore[arg-type]


def test_pan_equality_hash_and_immutability() -> None:
    a, b, c = Pan("4111111111111111"), Pan("4111111111111111"), Pan("4242424242424242")
    assert a == b
    assert hash(a) == hash(b)
    assert a != c
    assert a != "4111111111111111"
    assert len({a, b, c}) == 2
    with pytest.raises(AttributeError):
        a._digits = "4242424242424242"
    assert copy.deepcopy(a) == a
    assert pickle.loads(pickle.dumps(a)) == a


class _Card(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        frozen=True, extra="forbid", strict=True, hide_input_in_errors=True
    )

    pan: Pan


def test_pydantic_field_validates_serialises_and_stays_masked() -> None:
    card = _Card(pan="4111111111111111")  # type: ignore[arg-type]
    assert isinstance(card.pan, Pan)
    assert card.pan.digits == "4111111111111111"
    assert "4111111111111111" not in repr(card)
    assert "411111******1111" in repr(card)
    assert "4111111111111111" not in str(card.model_dump())
    assert card.model_dump(mode="json") == {"pan": "4111111111111111"}
    assert card.model_dump_json() == '{"pan":"4111111111111111"}'
    assert _Card.model_validate_json(card.model_dump_json()) == card
    assert _Card(pan=Pan("4111111111111111")) == card
    assert _Card.model_json_schema()["properties"]["pan"]["type"] == "string"


@pytest.mark.parametrize("bad", ["4111111111111112", "41111111111111a1", 4111111111111111])
def test_pydantic_errors_do_not_leak_the_pan(bad: object) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        _Card(pan=bad)  # type: ignore[arg-type]
    assert "41111111111111" not in str(info.value)


def test_pydantic_json_number_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError):
        _Card.model_validate_json('{"pan": 4111111111111111}')


@settings(max_examples=200)
@given(st.text(max_size=25))
def test_pan_constructor_raises_only_pan_error(text: str) -> None:
    try:
        pan = Pan(text)
    except PanError as exc:
        message = str(exc)
    else:
        message = ""
        assert pan.digits == text
        assert luhn_valid(text)
        assert 12 <= len(text) <= 19
    if text.isdigit() and len(text) >= 4:
        assert text not in message
