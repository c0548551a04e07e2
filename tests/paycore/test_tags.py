"""The EMV tag dictionary (EMV 4.4 Book 3 Annex A): shape and spot checks."""

from __future__ import annotations

from typing import get_args

import pytest

from paycore import tags
from paycore.tags import TAGS, Format, Source, is_sensitive, lookup
from paycore.tlv import Tlv

BOOK3_ANNEX_A = [
    *(0x42, 0x4F, 0x50, 0x57, 0x5A),
    *(0x5F20, 0x5F24, 0x5F25, 0x5F28, 0x5F2A, 0x5F2D, 0x5F30, 0x5F34, 0x5F36, 0x5F50),
    *(0x5F53, 0x5F54, 0x5F55, 0x5F56, 0x5F57),
    *(0x61, 0x6F, 0x70, 0x71, 0x72, 0x73, 0x77),
    *(0x80, 0x81, 0x82, 0x83, 0x84, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x8D, 0x8E, 0x8F),
    *(0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D),
    *range(0x9F01, 0x9F18 + 1),
    *range(0x9F1A, 0x9F23 + 1),
    *(0x9F26, 0x9F27, 0x9F2D, 0x9F2E, 0x9F2F, 0x9F32),
    *range(0x9F33, 0x9F3D + 1),  # 9F3E and 9F3F are not Book 3 data elements
    *range(0x9F40, 0x9F4F + 1),
    *(0xA5, 0xBF0C),
]
SCHEME = [0x56, 0x9F19, 0x9F24, 0x9F25, 0x9F5B, 0x9F60, 0x9F61, 0x9F62, 0x9F63, 0x9F66]
SCHEME += [0x9F6B, 0x9F6C, 0x9F6E, 0x9F7C]
MUST_BE_SENSITIVE = [0x5A, 0x57, 0x56, 0x9F1F, 0x9F20, 0x5F20, 0x9F6B, 0x99, 0x9F0B]


def test_every_annex_a_and_scheme_tag_is_present() -> None:
    missing = [f"{t:X}" for t in [*BOOK3_ANNEX_A, *SCHEME] if t not in TAGS]
    assert missing == []


def test_no_duplicate_tags_and_keys_match_entries() -> None:
    entries = tags._ENTRIES
    assert len({e.tag for e in entries}) == len(entries) == len(TAGS)
    assert all(key == info.tag for key, info in TAGS.items())


def test_every_entry_is_well_formed() -> None:
    for tag, info in TAGS.items():
        assert info.format in tags.FORMATS
        assert info.format in get_args(Format)
        assert info.source in tags.SOURCES
        assert info.source in get_args(Source)
        assert info.name.strip() == info.name != ""
        if info.min_length is not None and info.max_length is not None:
            assert 0 < info.min_length <= info.max_length, info.tag_hex
        # every dictionary tag is a well-formed BER tag whose b6 agrees with TagInfo
        obj = Tlv(tag, () if info.constructed else b"")
        assert obj.constructed == info.constructed
        assert obj.tag_hex == info.tag_hex


@pytest.mark.parametrize(
    ("tag", "name_part", "fmt", "source", "length"),
    [
        (0x9F02, "Amount, Authorised", "n", "terminal", (6, 6)),
        (0x5A, "PAN", "cn", "ICC", (None, 10)),
        (0x57, "Track 2 Equivalent", "b", "ICC", (None, 19)),
        (0x5F2A, "Transaction Currency Code", "n", "terminal", (2, 2)),
        (0x95, "Terminal Verification Results", "b", "terminal", (5, 5)),
        (0x9F26, "Application Cryptogram", "b", "ICC", (8, 8)),
        (0x4F, "AID", "b", "ICC", (5, 16)),
        (0x50, "Application Label", "ans", "ICC", (1, 16)),
        (0x5F2D, "Language Preference", "an", "ICC", (2, 8)),
        (0x9F20, "Track 2 Discretionary", "cn", "ICC", (None, None)),
        (0x91, "Issuer Authentication Data", "b", "issuer", (8, 16)),
        (0x8E, "CVM", "b", "ICC", (10, 252)),
        (0x9A, "Transaction Date", "n", "terminal", (3, 3)),
        (0x9F37, "Unpredictable Number", "b", "terminal", (4, 4)),
        (0x5F20, "Cardholder Name", "ans", "ICC", (2, 26)),
        (0x9F0B, "Cardholder Name Extended", "ans", "ICC", (27, 45)),
    ],
)
def test_spot_checks_against_book3(
    tag: int, name_part: str, fmt: str, source: str, length: tuple[int | None, int | None]
) -> None:
    info = lookup(tag)
    assert info is not None
    assert name_part in info.name
    assert info.format == fmt
    assert info.source == source
    assert (info.min_length, info.max_length) == length


def test_templates_are_constructed() -> None:
    for tag in (0x61, 0x6F, 0x70, 0x71, 0x72, 0x73, 0x77, 0xA5, 0xBF0C):
        info = lookup(tag)
        assert info is not None
        assert info.constructed, f"{tag:X}"
    for tag in (0x80, 0x5A, 0x9F02, 0xDF8129):
        info = lookup(tag)
        assert info is not None
        assert not info.constructed, f"{tag:X}"


def test_sensitive_set() -> None:
    for tag in MUST_BE_SENSITIVE:
        assert is_sensitive(tag), f"{tag:X}"
    # decided in paycore.tags: PCI cardholder data next to the PAN is hidden as well
    assert is_sensitive(0x5F24)
    assert is_sensitive(0x5F30)
    for tag in (0x9F02, 0x82, 0x95, 0x9F26, 0x42, 0x9F25, 0x9F24, 0x50, 0x4F, 0x5F34):
        assert not is_sensitive(tag), f"{tag:X}"


def test_unknown_tags() -> None:
    assert lookup(0xDF7F) is None
    assert not is_sensitive(0xDF7F)
    assert tags.TAGS.get(0x9F7F) is None


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TAGS[0x9F02] = TAGS[0x9F03]  # type: ignore[index]
