"""The leak guard itself must catch what it claims to catch."""

from __future__ import annotations

from tests.conftest import card_data_in


def test_guard_flags_a_known_test_pan() -> None:
    assert card_data_in("card 4242424242424242 read")


def test_guard_flags_any_luhn_valid_pan_and_track2() -> None:
    assert card_data_in("pan=5413330089600119")  # Luhn-valid, not in the vector list
    assert card_data_in("t2=4761739001010010D22122011143804400000")


def test_guard_passes_masked_and_non_luhn_data() -> None:
    assert card_data_in("card 424242******4242 read") == []
    assert card_data_in("ts=1700000000123 id=1234567890123") == []


def test_guard_ignores_digit_runs_inside_hex_ids_but_not_known_pans() -> None:
    assert card_data_in("message 9f5413330089600119ab0c") == []
    assert card_data_in("message 9f4242424242424242ab0c")  # a known test PAN, anywhere
