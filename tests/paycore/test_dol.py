"""DOL parsing and building (EMV Book 3 section 5.4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore import dol
from paycore.dol import DolEntry, DolError, build, parse, total_length
from paycore.errors import CodecError
from tests.vectors import load

EXAMPLE = load("emv_tlv_card_traces")["dol_example"]


def test_parse_the_barclays_cdol1() -> None:
    entries = parse(bytes.fromhex(EXAMPLE["dol"]))
    assert entries == [
        DolEntry(0x9F02, 6),
        DolEntry(0x9F03, 6),
        DolEntry(0x9F1A, 2),
        DolEntry(0x95, 5),
        DolEntry(0x5F2A, 2),
        DolEntry(0x9A, 3),
        DolEntry(0x9C, 1),
        DolEntry(0x9F37, 4),
    ]
    assert sum(e.length for e in entries) == EXAMPLE["dol_total_length"]
    assert total_length(bytes.fromhex(EXAMPLE["dol"])) == EXAMPLE["dol_total_length"]


def test_build_the_published_serialisation() -> None:
    meaning = dict(item.split("=") for item in EXAMPLE["serialised_example_meaning"].split())
    # the example's non-zero values are the source; every other tag is absent
    source = {int(tag, 16): bytes.fromhex(v) for tag, v in meaning.items() if int(v, 16)}
    assert set(source) == {0x95, 0x9A}
    built = build(bytes.fromhex(EXAMPLE["dol"]), source)
    assert built.hex().upper() == EXAMPLE["serialised_example"]
    # the same from parsed entries
    assert build(parse(bytes.fromhex(EXAMPLE["dol"])), source) == built


@pytest.mark.parametrize(
    ("entry", "value", "expected"),
    [
        # rule a: absent -> zeros
        (DolEntry(0x9F37, 4), None, "00000000"),
        # rule a: constructed tag -> zeros even when present
        (DolEntry(0x70, 3), "AABBCC", "000000"),
        (DolEntry(0xBF0C, 2), "AABB", "0000"),
        # exact length: unchanged
        (DolEntry(0x9F02, 6), "000000001234", "000000001234"),
        # n longer: keep the rightmost bytes
        (DolEntry(0x9F02, 4), "000000001234", "00001234"),
        (DolEntry(0x9A, 2), "250131", "0131"),
        # cn longer: keep the leftmost bytes
        (DolEntry(0x5A, 4), "4761739001010010", "47617390"),
        # b longer: keep the leftmost bytes (the card's 9F33 case from Book 3 users)
        (DolEntry(0x9F33, 2), "E0F8C8", "E0F8"),
        # ans longer: keep the leftmost bytes
        (DolEntry(0x9F4E, 3), "53484F50", "53484F"),
        # n shorter: leading zeros
        (DolEntry(0x9F02, 8), "000000001234", "0000000000001234"),
        (DolEntry(0x5F2A, 3), "0978", "000978"),
        # cn shorter: trailing FF
        (DolEntry(0x5A, 10), "4761739001010010", "4761739001010010FFFF"),
        # b shorter: trailing zeros
        (DolEntry(0x9F33, 5), "E0F8C8", "E0F8C80000"),
        # an / ans shorter: trailing zeros
        (DolEntry(0x9F1C, 10), "5445524D", "5445524D000000000000"),
        # unknown tag: treated as b
        (DolEntry(0xDF7F, 3), "01", "010000"),
        (DolEntry(0xDF7F, 1), "0102", "01"),
        # zero-length entry
        (DolEntry(0x9F02, 0), "000000001234", ""),
    ],
)
def test_build_rules(entry: DolEntry, value: str | None, expected: str) -> None:
    source = {} if value is None else {entry.tag: bytes.fromhex(value)}
    assert build([entry], source).hex().upper() == expected


def test_build_concatenates_in_dol_order() -> None:
    source = {0x9C: b"\x00", 0x9F02: bytes.fromhex("000000000100")}
    out = build([DolEntry(0x9C, 1), DolEntry(0x9F02, 6), DolEntry(0x9C, 2)], source)
    assert out == bytes.fromhex("00" + "000000000100" + "0000")


@pytest.mark.parametrize(
    ("hex_dol", "offset", "tag"),
    [
        ("9F", 0, 0x9F),  # tag truncated
        ("9F02", 2, 0x9F02),  # length missing
        ("9F02069F", 3, 0x9F),
        ("9F818181810106", 0, 0x9F818181),  # tag too long
        ("009F0206", 0, None),  # padding is not a tag
    ],
)
def test_parse_errors(hex_dol: str, offset: int, tag: int | None) -> None:
    with pytest.raises(DolError) as info:
        parse(bytes.fromhex(hex_dol))
    assert (info.value.offset, info.value.tag) == (offset, tag)
    assert isinstance(info.value, CodecError)
    with pytest.raises(DolError):
        build(bytes.fromhex(hex_dol), {})


def test_parse_empty_and_multibyte() -> None:
    assert parse(b"") == []
    assert parse(bytes.fromhex("DF812908")) == [DolEntry(0xDF8129, 8)]
    assert build(b"", {0x9F02: b"\x01"}) == b""


def test_dol_entry_checks() -> None:
    with pytest.raises(ValueError, match="one byte"):
        DolEntry(0x9F02, 256)
    with pytest.raises(ValueError, match="bytes"):
        DolEntry(0, 1)


# --- hypothesis ----------------------------------------------------------------------

TAG = st.one_of(
    st.integers(0x01, 0xFE).filter(lambda b: b & 0x1F != 0x1F),
    st.builds(
        lambda first, last: (first << 8) | last,
        st.sampled_from([0x5F, 0x9F, 0xBF, 0xDF]),
        st.integers(0x00, 0x7F),
    ),
    st.builds(
        lambda mid, last: (0xDF << 16) | (mid << 8) | last,
        st.integers(0x80, 0xFF),
        st.integers(0x00, 0x7F),
    ),
)
ENTRIES = st.lists(st.builds(DolEntry, TAG, st.integers(0, 255)), max_size=12)
KNOWN_OR_NOT = st.one_of(TAG, st.sampled_from([0x9F02, 0x5A, 0x9F33, 0x5F20, 0x70, 0x9A]))


@settings(max_examples=200)
@given(ENTRIES)
def test_parse_encode_round_trip(entries: list[DolEntry]) -> None:
    raw = dol.encode(entries)
    assert parse(raw) == entries
    assert dol.encode(parse(raw)) == raw


@settings(max_examples=200)
@given(
    st.lists(st.builds(DolEntry, KNOWN_OR_NOT, st.integers(0, 40)), max_size=10),
    st.dictionaries(KNOWN_OR_NOT, st.binary(max_size=50), max_size=10),
)
def test_built_length_is_the_dol_total(entries: list[DolEntry], source: dict[int, bytes]) -> None:
    raw = dol.encode(entries)
    built = build(raw, source)
    assert len(built) == total_length(raw) == sum(e.length for e in entries)


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_parse_arbitrary_bytes_raises_only_dol_error(data: bytes) -> None:
    try:
        entries = parse(data)
    except DolError:
        return
    assert dol.encode(entries) == data
