"""BER-TLV codec (EMV Book 3 Annex B) against card traces, edge cases and generated trees."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore import tlv
from paycore.errors import CodecError
from paycore.tlv import DecodeError, Tlv, decode, encode, find, find_all, flatten
from tests.vectors import load

VECTORS = load("emv_tlv_card_traces")
CARD_SAMPLES = [
    pytest.param(sample, id=sample["name"][:60])
    for group in ("barclays_card_data_python_emv", "synthetic_contact_pse_openemv")
    for sample in VECTORS[group]
]
EDGE = VECTORS["tlv_codec_edge_cases"]


def as_pyemv_dict(objects: list[Tlv]) -> dict[str, Any]:
    """The vectors' representation: tag hex -> hex value or nested dict, last one winning."""
    out: dict[str, Any] = {}
    for obj in objects:
        if isinstance(obj.value, tuple):
            out[obj.tag_hex] = as_pyemv_dict(list(obj.value))
        else:
            out[obj.tag_hex] = obj.value.hex().upper()
    return out


# --- vectors -------------------------------------------------------------------------


@pytest.mark.parametrize("sample", CARD_SAMPLES)
def test_card_trace_decodes_to_its_structure_and_round_trips(sample: dict[str, Any]) -> None:
    raw = bytes.fromhex(sample["response_data"])
    objects = decode(raw)
    assert as_pyemv_dict(objects) == sample["decoded"]
    assert encode(objects) == raw


def test_duplicate_templates_are_all_kept() -> None:
    raw = bytes.fromhex(VECTORS["barclays_card_data_python_emv"][2]["response_data"])
    (record,) = decode(raw)
    entries = find_all([record], 0x61)
    assert [e.tag for e in record.children] == [0x61, 0x61, 0x61]
    labels = [find(e.children, 0x50) for e in entries]
    assert [label.value for label in labels if label is not None] == [
        b"LINK ATM",
        b"VISA DEBIT",
        b"BARCLAYS",
    ]
    # flatten keeps the first occurrence, the vectors' dict kept the last one
    assert flatten([record])[0x50] == b"LINK ATM"
    assert as_pyemv_dict([record])["70"]["61"]["50"] == b"BARCLAYS".hex().upper()


def test_generate_ac_response_keeps_trailing_9000_in_the_iad() -> None:
    raw = bytes.fromhex(VECTORS["barclays_card_data_python_emv"][1]["response_data"])
    assert flatten(decode(raw))[0x9F10] == bytes.fromhex("060B0A03A49000")


@pytest.mark.parametrize("case", EDGE["decode"], ids=lambda c: c["tlv"])
def test_edge_case_decode(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["tlv"])
    if raw == bytes.fromhex("9C80"):
        # pyemv reads 80 as a zero length; Annex B has no indefinite form: we refuse it.
        with pytest.raises(DecodeError) as info:
            decode(raw)
        assert (info.value.offset, info.value.tag) == (1, 0x9C)
        return
    objects = decode(raw)
    assert as_pyemv_dict(objects) == case["decoded"]
    assert encode(objects) == raw


def test_non_minimal_lengths_are_remembered() -> None:
    assert decode(bytes.fromhex("9C8101FF")) == [Tlv(0x9C, b"\xff", 2)]
    assert decode(bytes.fromhex("9C8400000001FF")) == [Tlv(0x9C, b"\xff", 5)]
    assert decode(bytes.fromhex("9C01FF")) == [Tlv(0x9C, b"\xff")]
    # minimal long form is reported as 0
    assert decode(bytes.fromhex("9C8180" + "00" * 128))[0].length_octets == 0


@pytest.mark.parametrize("case", EDGE["encode"], ids=lambda c: c["tlv"][:24])
def test_edge_case_encode(case: dict[str, Any]) -> None:
    def build(spec: dict[str, Any]) -> list[Tlv]:
        out = []
        for tag_hex, value in spec.items():
            if isinstance(value, dict):
                out.append(Tlv.constructed_of(int(tag_hex, 16), build(value)))
            else:
                out.append(Tlv.primitive(int(tag_hex, 16), bytes.fromhex(value)))
        return out

    objects = build(case["value"])
    assert encode(objects).hex().upper() == case["tlv"]
    assert decode(bytes.fromhex(case["tlv"])) == objects


_PYEMV_ERROR = re.compile(r"tag '([0-9A-F]+)', offset (\d+)")


@pytest.mark.parametrize("case", EDGE["malformed"], ids=lambda c: c["tlv"])
def test_edge_case_malformed(case: dict[str, Any]) -> None:
    match = _PYEMV_ERROR.search(case["error"])
    assert match is not None
    with pytest.raises(DecodeError) as info:
        decode(bytes.fromhex(case["tlv"]))
    assert info.value.tag == int(match.group(1), 16)
    assert info.value.offset == int(match.group(2))
    assert isinstance(info.value, CodecError)
    assert isinstance(info.value, ValueError)


# --- rules of Annex B ----------------------------------------------------------------


def test_empty_input_and_padding_only_decode_to_nothing() -> None:
    assert decode(b"") == []
    assert decode(b"\x00\xff\x00") == []


def test_padding_before_between_after_and_inside_templates_is_skipped() -> None:
    clean = bytes.fromhex("9F020600000000100070039A01019C0100")
    padded = bytes.fromhex("00FF9F02060000000010000000FF70059A0101FF00FF9C0100FF00")
    assert decode(padded) == decode(clean)
    assert len(decode(clean)) == 3


@pytest.mark.parametrize(
    ("hex_input", "offset", "tag"),
    [
        ("9C80", 1, 0x9C),  # indefinite length
        ("9C85000000000001", 1, 0x9C),  # more than four length bytes
        ("9C8301", 2, 0x9C),  # long-form length truncated
        ("9C05AABB", 2, 0x9C),  # value beyond the data
        ("5F", 0, 0x5F),  # tag truncated
        ("9F8181818101", 0, 0x9F818181),  # tag longer than four bytes
        ("9C", 1, 0x9C),  # no length at all
        ("700357029999", 4, 0x57),  # child's value runs out of its template
        ("0000700357029999", 6, 0x57),  # same, offset counted in the whole input
    ],
)
def test_malformed_input(hex_input: str, offset: int, tag: int) -> None:
    with pytest.raises(DecodeError) as info:
        decode(bytes.fromhex(hex_input))
    assert (info.value.offset, info.value.tag) == (offset, tag)


def test_error_message_never_contains_the_value() -> None:
    pan_bcd = "4761739001010010"  # a well-known public test PAN, BCD
    with pytest.raises(DecodeError) as info:
        decode(bytes.fromhex("700B5A08" + pan_bcd + "5F"))
    assert pan_bcd not in str(info.value)
    assert pan_bcd not in repr(info.value)


def test_depth_limit() -> None:
    def nest(levels: int) -> bytes:
        data = b""
        for _ in range(levels):
            data = b"\xe0" + bytes((len(data),)) + data
        return data

    depth_ok = decode(nest(tlv.MAX_DEPTH))
    assert encode(depth_ok) == nest(tlv.MAX_DEPTH)
    with pytest.raises(DecodeError, match="nested"):
        decode(nest(tlv.MAX_DEPTH + 1))


def test_multi_byte_tags() -> None:
    (obj,) = decode(bytes.fromhex("DF812903AABBCC"))
    assert obj.tag == 0xDF8129
    assert obj.tag_bytes == bytes.fromhex("DF8129")
    assert obj.tag_hex == "DF8129"
    assert not obj.constructed
    (tmpl,) = decode(bytes.fromhex("BF0C039F0A00"))
    assert tmpl.constructed
    assert tmpl.children == (Tlv(0x9F0A, b""),)


def test_bytearray_and_memoryview_input() -> None:
    raw = bytes.fromhex("6F038401AA")
    assert decode(bytearray(raw)) == decode(raw) == decode(memoryview(raw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tag", "value"),
    [
        (0x00, b""),
        (0xFF01, b""),
        (0x1F, b""),  # announces a second byte it does not have
        (0x9F, b""),
        (0x9F81, b""),  # last tag byte with b8 set
        (0x5A01, b""),  # two bytes without the 11111 announcement
        (0x70, b"raw"),  # constructed tag with bytes
        (0x5A, ()),  # primitive tag with children
        (0x123456789A, b""),  # too long
    ],
)
def test_invalid_tlv_construction_is_refused(tag: int, value: Any) -> None:
    with pytest.raises(ValueError, match=r"."):
        Tlv(tag, value)


def test_too_few_length_octets_is_refused_at_encode() -> None:
    with pytest.raises(ValueError, match="length octets"):
        encode([Tlv(0x9C, bytes(200), 1)])
    with pytest.raises(ValueError, match="length_octets"):
        Tlv(0x9C, b"", 6)


def test_find_and_flatten_are_depth_first() -> None:
    data = bytes.fromhex("70089F0201019F0201025F2A0201029F020103")
    objects = decode(data)
    found = find(objects, 0x9F02)
    assert found is not None
    assert found.value == b"\x01"
    assert [o.value for o in find_all(objects, 0x9F02)] == [b"\x01", b"\x02", b"\x03"]
    assert find(objects, 0x9A) is None
    assert find(objects, 0x70) is objects[0]
    assert flatten(objects) == {0x9F02: b"\x01", 0x5F2A: b"\x01\x02"}


def test_repr_hides_sensitive_and_unknown_values() -> None:
    obj = Tlv(0x70, (Tlv(0x5A, bytes.fromhex("4761739001010010")), Tlv(0x9F36, b"\x00\x05")))
    text = repr(obj)
    assert "4761739001010010" not in text
    assert "<8 bytes, hidden>" in text
    assert "0005" in text
    assert "C0FFEE" not in repr(Tlv(0xDF7F, bytes.fromhex("C0FFEE")))


def test_data_property() -> None:
    (obj,) = decode(bytes.fromhex("6F038401AA"))
    assert obj.data == bytes.fromhex("8401AA")
    assert obj.children[0].data == b"\xaa"


# --- hypothesis ----------------------------------------------------------------------


def _tag(constructed: bool) -> st.SearchStrategy[int]:
    cbit = 0x20 if constructed else 0x00
    one = st.integers(0, 0x1E).flatmap(
        lambda n: st.sampled_from([0x00, 0x40, 0x80, 0xC0]).map(lambda c: c | cbit | n)
    )
    first_multi = st.sampled_from([0x1F, 0x5F, 0x9F, 0xDF]).map(lambda b: b | cbit)

    def multi(first: int, middles: list[int], last: int) -> int:
        value = first
        for b in [*middles, last]:
            value = (value << 8) | b
        return value

    many = st.builds(
        multi,
        first_multi,
        st.lists(st.integers(0x80, 0xFF), max_size=2),
        st.integers(0x00, 0x7F),
    )
    return st.one_of(one, many).filter(
        lambda t: t > 0 and (t >> (8 * ((t.bit_length() - 1) // 8))) not in (0x00, 0xFF)
    )


def _length_octets(length: int) -> st.SearchStrategy[int]:
    minimal = 1 if length < 0x80 else 1 + (length.bit_length() + 7) // 8
    return st.one_of(st.just(0), st.integers(minimal + 1, tlv.MAX_LENGTH_OCTETS))


def _primitive() -> st.SearchStrategy[Tlv]:
    # short values, and long ones that need the 81 and 82 long forms
    values = st.one_of(st.binary(max_size=40), st.binary(min_size=120, max_size=300))
    return st.tuples(_tag(False), values).flatmap(
        lambda tv: _length_octets(len(tv[1])).map(lambda lo: Tlv(tv[0], tv[1], lo))
    )


def _constructed(children: st.SearchStrategy[list[Tlv]]) -> st.SearchStrategy[Tlv]:
    return st.tuples(_tag(True), children).flatmap(
        lambda tc: _length_octets(len(encode(tc[1]))).map(lambda lo: Tlv(tc[0], tuple(tc[1]), lo))
    )


TREES = st.recursive(
    st.lists(_primitive(), max_size=3),
    lambda inner: st.lists(st.one_of(_primitive(), _constructed(inner)), min_size=1, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300)
@given(TREES)
def test_encode_decode_round_trip(tree: list[Tlv]) -> None:
    data = encode(tree)
    decoded = decode(data)
    assert decoded == tree
    assert encode(decoded) == data


@settings(max_examples=150)
@given(TREES, st.lists(st.sampled_from([b"\x00", b"\xff"]), min_size=1, max_size=6), st.data())
def test_padding_between_objects_is_skipped(
    tree: list[Tlv], pads: list[bytes], data: st.DataObject
) -> None:
    pieces = [encode([obj]) for obj in tree]
    out = b""
    for piece in pieces:
        out += data.draw(st.sampled_from(pads)) * data.draw(st.integers(0, 3)) + piece
    out += data.draw(st.sampled_from(pads))
    assert decode(out) == tree


@settings(max_examples=1000)
@given(st.binary(max_size=200))
def test_decode_arbitrary_bytes_raises_only_decode_error(data: bytes) -> None:
    error: DecodeError | None = None
    objects: list[Tlv] = []
    try:
        objects = decode(data)
    except DecodeError as exc:
        error = exc
    if error is not None:
        assert error.offset is not None
        assert 0 <= error.offset <= len(data)
    else:
        # what decodes re-encodes to the input without its padding, which decodes the same
        assert decode(encode(objects)) == objects


def test_decode_is_fast() -> None:
    raw = bytes.fromhex(VECTORS["barclays_card_data_python_emv"][3]["response_data"])
    rounds = 2000
    start = time.perf_counter()
    for _ in range(rounds):
        decode(raw)
    per_call = (time.perf_counter() - start) / rounds
    # about 10 us on a 2-core machine; a generous bound so shared CI does not flake
    assert per_call < 500e-6
