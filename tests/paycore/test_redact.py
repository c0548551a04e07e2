"""The redactor: sensitive tags never show, PANs and track 2 are masked in any text."""

from __future__ import annotations

import logging
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore.redact import (
    REDACTED,
    RedactingFilter,
    luhn_valid,
    mask_pan,
    redact_tags,
    redact_text,
    redact_tlv,
)
from paycore.tags import TAGS
from paycore.tlv import Tlv, decode, encode, flatten
from tests.conftest import card_data_in
from tests.vectors import load

TRACES = load("emv_tlv_card_traces")
LUHN = load("luhn_test_pans")
TEST_PANS = sorted({e["pan"] for e in LUHN["test_pans"] if len(e["pan"]) >= 13})
VALID_TEST_PANS = [p for p in TEST_PANS if luhn_valid(p)]
PAN = "4761739001010010"  # Visa's public test PAN
TRACK2_HEX = PAN + "D25122011234567890123F"
SENSITIVE = sorted(tag for tag, info in TAGS.items() if info.sensitive and not info.constructed)


def _card_record() -> bytes:
    return encode(
        [
            Tlv(
                0x70,
                (
                    Tlv(0x57, bytes.fromhex(TRACK2_HEX)),
                    Tlv(0x5A, bytes.fromhex(PAN)),
                    Tlv(0x5F20, b"CARDHOLDER/TEST"),
                    Tlv(0x5F24, bytes.fromhex("251231")),
                    Tlv(0x9F1F, b"0123456789"),
                    Tlv(0x5F34, b"\x01"),
                    Tlv(0x9F07, bytes.fromhex("FF00")),
                ),
            )
        ]
    )


# --- Luhn and masking ------------------------------------------------------------------


def test_luhn_against_the_vectors() -> None:
    for vector in LUHN["check_digit_vectors"]:
        assert luhn_valid(vector["full"])
    for vector in LUHN["validation_vectors"]:
        assert luhn_valid(vector["number"]) == vector["valid"], vector["number"]


@pytest.mark.parametrize(
    ("pan", "masked"),
    [
        ("4761739001010010", "476173******0010"),
        ("4761739001010010123", "476173*********0123"),
        ("378282246310005", "37828******0005"),
        ("4222222222222", "422******2222"),
        ("123456789012", "12******9012"),
        ("4111 1111 1111 1111", "4111 11** **** 1111"),
    ],
)
def test_mask_pan(pan: str, masked: str) -> None:
    assert mask_pan(pan) == masked


# --- redact_text ----------------------------------------------------------------------


def test_every_luhn_valid_test_pan_is_masked() -> None:
    assert VALID_TEST_PANS, "the vectors carry Luhn-valid test PANs"
    for pan in VALID_TEST_PANS:
        out = redact_text(f"card {pan}, again:{pan}.")
        assert pan not in out
        assert card_data_in(out) == []
        assert out.startswith(f"card {pan[:6]}") or len(pan) < 16


def test_text_around_is_kept() -> None:
    out = redact_text(f"PAN={PAN} amount 000000001000 ref 12345")
    assert out == "PAN=476173******0010 amount 000000001000 ref 12345"


def test_non_luhn_runs_are_kept() -> None:
    run = "4999999999999999"  # masked trace PAN, not Luhn-valid
    assert not luhn_valid(run)
    assert redact_text(f"x {run} y") == f"x {run} y"
    assert redact_text("no digits here") == "no digits here"


@pytest.mark.parametrize(
    "track2",
    [
        f"{PAN}=25122011234567890123",
        f";{PAN}=2512201123?",
        TRACK2_HEX,
        TRACK2_HEX.lower(),
        f"57{len(TRACK2_HEX) // 2:02X}{TRACK2_HEX}9F0701FF",
    ],
)
def test_track2_is_masked(track2: str) -> None:
    out = redact_text(f"read: {track2} done")
    assert PAN not in out
    assert "2512" not in out  # expiry
    assert "1234567890123" not in out  # discretionary data
    assert card_data_in(out) == []
    assert out.startswith("read: ")
    assert out.endswith(" done")


def test_grouped_pan_is_masked() -> None:
    out = redact_text("card 4761 7390 0101 0010 and 4761-7390-0101-0010")
    assert "7390 0101" not in out
    assert "7390-0101" not in out
    assert "4761 73** **** 0010" in out


_RUN = re.compile(r"(?<!\d)\d{13,19}(?!\d)")


@settings(max_examples=400)
@given(
    st.lists(
        st.one_of(
            st.text(alphabet="0123456789", min_size=1, max_size=25),
            st.text(alphabet="0123456789 -=Dd*abcF;?", max_size=8),
            st.sampled_from(VALID_TEST_PANS),
            st.text(max_size=5),
        ),
        max_size=8,
    )
)
def test_output_never_holds_a_luhn_valid_run(pieces: list[str]) -> None:
    out = redact_text("".join(pieces))
    leaked = [run for run in _RUN.findall(out) if luhn_valid(run)]
    assert leaked == []
    assert redact_text(out) == out  # idempotent


@settings(max_examples=200)
@given(st.text(max_size=60))
def test_redact_text_total(text: str) -> None:
    out = redact_text(text)
    assert isinstance(out, str)


# --- redact_tlv and redact_tags ---------------------------------------------------------


def test_redact_tlv_hides_every_sensitive_value() -> None:
    out = redact_tlv(_card_record())
    assert f"57[13]={REDACTED}" in out
    assert f"5A[08]={REDACTED}" in out
    assert f"5F20[0F]={REDACTED}" in out
    assert f"5F24[03]={REDACTED}" in out
    assert f"9F1F[0A]={REDACTED}" in out
    for secret in (PAN, "251231", "D2512", b"CARDHOLDER".hex().upper(), "0123456789"):
        assert secret not in out.upper()
    assert card_data_in(out) == []
    # non-sensitive ones show
    assert "5F34[01]=01" in out
    assert "9F07[02]=FF00" in out
    assert out.startswith("70[")
    assert out.endswith("}")


@pytest.mark.parametrize("tag", SENSITIVE, ids=lambda t: f"{t:X}")
def test_each_sensitive_tag_is_hidden_in_a_dump(tag: int) -> None:
    value = bytes.fromhex("0102030405060708")
    out = redact_tlv(encode([Tlv(tag, value), Tlv(0x9F36, b"\x00\x05")]))
    assert "0102030405060708" not in out
    assert REDACTED in out
    assert "9F36[02]=0005" in out


def test_redact_tlv_shows_card_traces_without_leaks() -> None:
    for sample in TRACES["barclays_card_data_python_emv"]:
        out = redact_tlv(bytes.fromhex(sample["response_data"]))
        assert "undecodable" not in out
        assert card_data_in(out) == []
    fci = redact_tlv(bytes.fromhex(TRACES["barclays_card_data_python_emv"][0]["response_data"]))
    assert (
        fci
        == "6F[1D]{84[07]=A0000000038002 A5[12]{50[08]=424152434C415953 87[01]=00 5F2D[02]=656E}}"
    )


def test_unknown_tag_holding_a_pan_is_masked() -> None:
    out = redact_tlv(encode([Tlv(0xDF7F, bytes.fromhex(PAN)), Tlv(0xDF7E, bytes.fromhex("0102"))]))
    assert PAN not in out
    assert "DF7F[08]=476173******0010" in out
    assert "DF7E[02]=0102" in out


def test_undecodable_input_shows_only_its_size() -> None:
    raw = bytes.fromhex("5A08" + PAN + "9F")
    assert redact_tlv(raw) == f"<{len(raw)} bytes, undecodable>"
    assert redact_tlv(b"") == ""


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_redact_tlv_total(data: bytes) -> None:
    out = redact_tlv(data)
    assert card_data_in(out) == []


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.sampled_from(SENSITIVE), st.binary(min_size=6, max_size=40)),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.tuples(st.sampled_from([0x9F36, 0x82, 0x95]), st.binary(max_size=8)), max_size=4),
)
def test_sensitive_values_never_show_in_a_tree(
    secrets: list[tuple[int, bytes]], others: list[tuple[int, bytes]]
) -> None:
    children = [Tlv(t, v) for t, v in secrets] + [Tlv(t, v) for t, v in others]
    out = redact_tlv(encode([Tlv(0x77, tuple(children))]))
    assert out.count(REDACTED) == len(secrets)
    shown = " ".join(v.hex().upper() for _, v in others)
    for _, value in secrets:
        if value.hex().upper() not in shown:
            assert value.hex().upper() not in out


def test_redact_tags() -> None:
    values = flatten(decode(_card_record()))
    out = redact_tags(values)
    assert out["5A"] == REDACTED
    assert out["57"] == REDACTED
    assert out["5F20"] == REDACTED
    assert out["5F34"] == "01"
    assert out["9F07"] == "FF00"
    assert set(out) == {f"{t:X}" for t in values}
    assert out.get("DF7F") is None
    assert redact_tags({0xDF7F: bytes.fromhex(PAN)}) == {"DF7F": "476173******0010"}


# --- RedactingFilter ------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def safe_logger() -> tuple[logging.Logger, _Collect]:
    logger = logging.getLogger("tests.paycore.redact.safe")
    logger.propagate = False  # keep raw records away from the suite's leak guard
    handler = _Collect()
    handler.addFilter(RedactingFilter())
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    return logger, handler


def test_filter_on_a_real_logger(safe_logger: tuple[logging.Logger, _Collect]) -> None:
    logger, handler = safe_logger
    logger.info("card %s read, track2 %s, amount %d", PAN, f"{PAN}=2512201", 1000)
    logger.warning(f"direct {PAN}")
    assert handler.lines == [
        "card 476173******0010 read, track2 476173******0010=*******, amount 1000",
        "direct 476173******0010",
    ]
    assert all(r.args is None for r in handler.records)
    for line in handler.lines:
        assert card_data_in(line) == []


def test_filter_redacts_tracebacks(safe_logger: tuple[logging.Logger, _Collect]) -> None:
    logger, handler = safe_logger
    try:
        raise ValueError(f"bad card {PAN}")
    except ValueError:
        logger.exception("failed")
    (line,) = handler.lines
    assert "Traceback" in line
    assert PAN not in line
    assert "476173******0010" in line


def test_filter_survives_bad_format_arguments(
    safe_logger: tuple[logging.Logger, _Collect],
) -> None:
    logger, handler = safe_logger
    logger.error("two %s %s", PAN)
    (line,) = handler.lines
    assert PAN not in line
    assert "unformattable" in line


def test_filter_is_idempotent() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "pan %s", (PAN,), None)
    flt = RedactingFilter()
    assert flt.filter(record)
    first = record.getMessage()
    assert flt.filter(record)
    assert record.getMessage() == first == "pan 476173******0010"
