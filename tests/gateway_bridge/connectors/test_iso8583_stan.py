"""STAN, RRN, dates and DE90; the response field mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway_bridge.connectors.iso8583 import MessageDecodeError, messages
from gateway_bridge.connectors.iso8583.stan import (
    StanCounter,
    original_data_elements,
    parse_original_data_elements,
    rrn,
    transmission_datetime,
)


def test_stan_counter_rolls_over_and_skips_stans_in_flight() -> None:
    counter = StanCounter(999_998)
    assert [counter.next(), counter.next(), counter.next()] == [999_998, 999_999, 1]
    busy = {2, 3}
    assert counter.next(lambda n: n in busy) == 4
    with pytest.raises(ValueError, match="STAN"):
        StanCounter(0)


def test_rrn_and_dates() -> None:
    moment = datetime(2025, 7, 4, 12, 34, 56, tzinfo=UTC)
    assert rrn(moment, 123) == "518512000123"  # 5 = 2025, day 185, hour 12
    assert rrn(datetime(2030, 1, 1, 0, 0), 999_999) == "000100999999"
    plus_two = moment.astimezone(timezone(timedelta(hours=2)))
    assert transmission_datetime(plus_two) == "0704123456"  # DE7 is in UTC
    with pytest.raises(ValueError, match="STAN"):
        rrn(moment, 1_000_000)


def test_original_data_elements_round_trip() -> None:
    value = original_data_elements("0200", 123, "0704123456", "12345")
    assert value == "020000012307041234560000001234500000000000"
    assert len(value) == 42
    assert parse_original_data_elements(value) == ("0200", 123, "0704123456")
    with pytest.raises(ValueError, match="42"):
        parse_original_data_elements(value[:-1])


def test_mti_helpers() -> None:
    assert messages.response_mti("0100") == "0110"
    assert messages.response_mti("0421") == "0430"
    assert messages.mti_class("0430") == "04"


def test_response_mapping() -> None:
    scripts = "7207860580CA9F1700"
    response = messages.parse_authorization_response(
        {"t": "0110", "37": "518512000123", "38": "ABC123", "39": "00",
         "55": "910A" + "11" * 10 + scripts + "9F3602AAAA"}
    )  # fmt: skip
    assert response.approved and response.authorization_code == "ABC123"
    assert response.issuer_authentication_data == "11" * 10
    assert response.issuer_scripts == scripts
    declined = messages.parse_authorization_response({"t": "0210", "39": "05", "38": "      "})
    assert (declined.approved, declined.authorization_code) == (False, None)
    assert declined.display_text == "DO NOT HONOUR"
    with pytest.raises(MessageDecodeError) as caught:
        messages.parse_authorization_response({"t": "0210"})
    assert caught.value.field == "39"
    with pytest.raises(MessageDecodeError) as caught:
        messages.parse_authorization_response({"t": "0210", "39": "00", "55": "9F"})
    assert caught.value.field == "55"
    with pytest.raises(MessageDecodeError):
        messages.parse_authorization_response({"t": "0210", "39": "0!"})


def test_reversal_outcomes() -> None:
    assert messages.reversal_outcome({"39": "00"}) == "reversed"
    assert messages.reversal_outcome({"39": "94"}) == "already_reversed"
    assert messages.reversal_outcome({"39": "25"}) == "unknown_original"
    assert messages.reversal_outcome({"39": "96"}) is None


def test_cvm_from_icc_results() -> None:
    assert messages.cvm_from_icc("9F34031E0300") == "signature"
    assert messages.cvm_from_icc("9F3403410302") == "offline_pin"
    assert messages.cvm_from_icc("9F34031F0002") == "no_cvm"
    assert messages.cvm_from_icc("9F34033F0000") is None
    assert messages.cvm_from_icc("9F34") is None
    assert messages.cvm_from_icc("") is None


def test_identity_is_fixed_width() -> None:
    identity = messages.Identity("T1", "M1", "123")
    assert (identity.terminal_id, identity.merchant_id) == ("T1      ", "M1" + " " * 13)
    with pytest.raises(ValueError, match="DE41"):
        messages.Identity("TOOLONGID", "M1")
    with pytest.raises(ValueError, match="DE32"):
        messages.Identity("T1", "M1", "12A")
