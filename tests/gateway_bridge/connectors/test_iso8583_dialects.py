"""Dialects as pyiso8583 specs: known answers from tests/vectors/iso8583_messages.json, fuzz."""

from __future__ import annotations

from typing import Any, cast

import iso8583
import iso8583.specs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_bridge.connectors.iso8583 import (
    ASCII,
    BINARY,
    DIALECTS,
    FieldOverride,
    Iso8583Error,
    MessageDecodeError,
    MessageEncodeError,
    decode_message,
    derive,
    dialect,
    encode_message,
    measure,
)
from tests.vectors import load

VECTORS = load("iso8583_messages")
MESSAGES: list[dict[str, Any]] = VECTORS["messages"]
BUILTIN = {
    "iso8583.specs.default_ascii": iso8583.specs.default_ascii,
    "iso8583.specs.default": iso8583.specs.default,
}


def _raw(vector: dict[str, Any]) -> bytes:
    return bytes.fromhex(vector["raw_hex_full"])


@pytest.mark.parametrize("vector", MESSAGES, ids=[m["name"] for m in MESSAGES])
def test_vector_decodes_and_encodes_with_its_spec(vector: dict[str, Any]) -> None:
    # The vector's own spec (a built-in with its overrides, e.g. len_enc='bcd' where the
    # howto's 2.x 'b' meant BCD) through derive(): byte for byte both ways.
    overrides = cast(dict[str, FieldOverride], vector.get("spec_overrides", {}))
    spec = derive(BUILTIN[vector["spec"]], overrides)
    raw = _raw(vector)
    assert decode_message(spec, raw) == vector["decoded"]
    assert encode_message(spec, vector["decoded"]) == raw
    assert measure(spec, raw) == len(raw)
    for key, encoding in vector["field_encodings"].items():
        for name in ("data_enc", "len_enc", "len_type", "max_len"):
            assert spec[key][name] == encoding[name], (key, name)


def _emv_vector(spec_name: str) -> dict[str, Any]:
    return next(m for m in MESSAGES if m["name"].startswith("0100 EMV") and m["spec"] == spec_name)


def test_ascii_dialect_reads_the_published_ascii_emv_request() -> None:
    vector = _emv_vector("iso8583.specs.default_ascii")
    raw = _raw(vector)
    assert decode_message(ASCII.spec, raw) == vector["decoded"]
    fields = {k: v for k, v in vector["decoded"].items() if k != "p"}
    assert encode_message(ASCII.spec, fields) == raw


# The same EMV request under the binary dialect, assembled by hand from the BCD rules:
# MTI 2 BCD bytes; 8-byte bitmap; LLVAR lengths one BCD byte in nibbles; odd n3 fields
# left-padded 0; ANS fields ASCII; DE55 length 2 BCD bytes (0041 = 41 bytes).
BINARY_EMV_REQUEST = bytes.fromhex(
    "0100"
    "723C068028C08200"
    "16"
    "4761739001010010"  # DE2 n..19
    "000000"  # DE3
    "000000001000"  # DE4
    "0704123456"  # DE7
    "000123"  # DE11
    "123456"  # DE12
    "0704"  # DE13
    "2512"  # DE14
    "0051"  # DE22 n3
    "0001"  # DE23 n3
    "00"  # DE25
    "34"
    "4761739001010010D25122010000000000"  # DE35 z..37, 34 nibbles
    + b"418512000123".hex()  # DE37 an12
    + b"TERM0001".hex()  # DE41
    + b"MERCHANT0000001".hex()  # DE42
    + "0840"  # DE49 n3
    "0041"
    "9F2608A1B2C3D4E5F607089F2701809F360200019F3704CAFEBABE820218009F1A0208409A03250704"
)


def test_binary_dialect_known_answer() -> None:
    vector = _emv_vector("iso8583.specs.default")
    fields = {k: v for k, v in vector["decoded"].items() if k != "p"}
    assert encode_message(BINARY.spec, fields) == BINARY_EMV_REQUEST
    assert decode_message(BINARY.spec, BINARY_EMV_REQUEST) == vector["decoded"]
    assert measure(BINARY.spec, BINARY_EMV_REQUEST) == len(BINARY_EMV_REQUEST)


def test_binary_pan_matches_the_published_bcd_llvar() -> None:
    # The howto's BCD PAN (15 digits, length 0x15, right pad 0) is DE2 of the binary dialect.
    vector = next(m for m in MESSAGES if "Binary Coded Decimal" in m["name"])
    published_de2 = _raw(vector)[20:]
    raw = encode_message(BINARY.spec, {"t": "0200", "2": vector["decoded"]["2"]})
    assert raw == bytes.fromhex("0200") + bytes.fromhex("4000000000000000") + published_de2


def test_binary_dialect_icc_length_is_bcd() -> None:
    spec = BINARY.spec["55"]
    assert (spec["data_enc"], spec["len_enc"], spec["len_type"]) == ("b", "bcd", 2)
    raw = encode_message(BINARY.spec, {"t": "0110", "55": "910A" + "11" * 10})
    assert raw[-14:-12] == bytes.fromhex("0012")  # 12 bytes, in BCD


def _filler(spec_entry: dict[str, Any]) -> str:
    length = spec_entry["max_len"] if spec_entry["len_type"] == 0 else 2
    if spec_entry["data_enc"] == "b" and spec_entry.get("len_count") != "nibbles":
        return "00" * length
    return "0" * length


def _with_empty_secondary(name: str, raw: bytes) -> bytes:
    """``raw`` with bit 1 set and an all-zero secondary bitmap (pyiso8583 never writes one)."""
    if name == "binary":
        primary = int.from_bytes(raw[2:10], "big") | 1 << 63
        return raw[:2] + primary.to_bytes(8, "big") + bytes(8) + raw[10:]
    primary = int(raw[4:20], 16) | 1 << 63
    return raw[:4] + f"{primary:016X}".encode() + b"0" * 16 + raw[20:]


@pytest.mark.parametrize("name", sorted(DIALECTS))
@pytest.mark.parametrize(
    "example", VECTORS["bitmap_examples"], ids=[e["bitmap"] for e in VECTORS["bitmap_examples"]]
)
def test_published_bitmaps(name: str, example: dict[str, Any]) -> None:
    spec = DIALECTS[name].spec  # type: ignore[index]
    numbers = [n for n in example["fields"] if n != 1]
    fields = {"t": "0200"} | {str(n): _filler(dict(spec[str(n)])) for n in numbers}
    raw = encode_message(spec, fields)
    if 1 in example["fields"] and max(numbers) <= 64:
        raw = _with_empty_secondary(name, raw)
    assert measure(spec, raw) == len(raw)
    decoded = decode_message(spec, raw)
    present = sorted(int(k) for k in decoded if k.isdigit())
    assert [n for n in present if n != 1] == sorted(numbers)
    if example.get("note", "").startswith("secondary"):
        assert decoded["1"] == example["bitmap"]
    else:
        assert decoded["p"] == example["bitmap"]


def test_derive_refuses_unknown_elements_and_keeps_the_base() -> None:
    with pytest.raises(ValueError, match="unknown data element"):
        derive(iso8583.specs.default, {"200": {"max_len": 3}})
    spec = derive(iso8583.specs.default, {"2": {"left_pad": "0", "len_count": "nibbles"}})
    assert spec["2"]["left_pad"] == "0"
    assert iso8583.specs.default["2"].get("left_pad") is None  # the built-in is untouched


def test_pin_block_follows_the_zone_format() -> None:
    assert dialect("binary", 0).spec["52"]["max_len"] == 8
    assert dialect("binary", 4).spec["52"]["max_len"] == 16
    assert dialect("ascii", 0).spec["52"]["max_len"] == 16
    assert dialect("ascii", 4).spec["52"]["max_len"] == 32
    spec = dialect("binary", 4).spec
    raw = encode_message(spec, {"t": "0200", "52": "AB" * 16})
    assert decode_message(spec, raw)["52"] == "AB" * 16


def test_encode_errors_name_the_field_not_the_value() -> None:
    with pytest.raises(MessageEncodeError) as caught:
        encode_message(BINARY.spec, {"t": "0200", "2": "4761739001010010999999"})
    assert caught.value.field == "2"
    assert "4761739001010010" not in str(caught.value)
    with pytest.raises(MessageEncodeError):
        encode_message(BINARY.spec, {"t": "0200", "55": "not hex"})


def test_decode_errors_name_the_field_and_do_not_chain() -> None:
    raw = BINARY_EMV_REQUEST[:-3]
    with pytest.raises(MessageDecodeError) as caught:
        decode_message(BINARY.spec, raw)
    assert caught.value.field == "55"
    assert caught.value.offset is not None
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert measure(BINARY.spec, raw) is None


def test_tertiary_bitmap_is_refused() -> None:
    raw = encode_message(ASCII.spec, {"t": "0800", "70": "301"})
    # set bit 65 (first bit of the secondary bitmap)
    tampered = raw[:20] + b"8" + raw[21:]
    with pytest.raises(MessageDecodeError):
        decode_message(ASCII.spec, tampered)
    with pytest.raises(MessageDecodeError):
        measure(ASCII.spec, tampered)


@pytest.mark.parametrize("name", sorted(DIALECTS))
@settings(max_examples=300)
@given(data=st.binary(max_size=300))
def test_fuzz_decode_raises_only_our_error(name: str, data: bytes) -> None:
    spec = DIALECTS[name].spec  # type: ignore[index]
    try:
        fields = decode_message(spec, data)
    except Iso8583Error:
        pass
    else:
        assert fields["t"]
    try:
        length = measure(spec, data)
    except Iso8583Error:
        return
    assert length is None or 0 < length <= len(data)


@pytest.mark.parametrize("name", sorted(DIALECTS))
@settings(max_examples=100)
@given(
    pan=st.from_regex(r"[0-9]{12,19}", fullmatch=True),
    amount=st.integers(0, 999_999_999_999),
    icc=st.binary(max_size=255),
    tail=st.binary(max_size=20),
)
def test_measure_finds_the_end_of_a_message(
    name: str, pan: str, amount: int, icc: bytes, tail: bytes
) -> None:
    spec = DIALECTS[name].spec  # type: ignore[index]
    fields = {"t": "0200", "2": pan, "4": f"{amount:012d}", "41": "TERM0001"}
    if icc:
        fields["55"] = icc.hex().upper()
    raw = encode_message(spec, fields)
    assert measure(spec, raw + tail) == len(raw)
    assert measure(spec, raw[:-1]) is None
    decoded = decode_message(spec, raw)
    assert {k: decoded[k] for k in fields} == fields


def test_pyiso8583_is_version_4() -> None:
    assert iso8583.__version__.startswith("4.")
