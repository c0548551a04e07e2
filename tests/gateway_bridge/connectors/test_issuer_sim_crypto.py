"""The simulator's cryptogram and PIN arithmetic against published vectors, and the DE55 fuzz."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_bridge.connectors.issuer_sim.cryptogram import (
    IccData,
    IccDataError,
    arpc,
    arpc_method_1,
    arpc_method_2,
    derive_icc_keys,
    generate_ac,
    parse_icc_data,
    verify_arqc,
)
from gateway_bridge.connectors.issuer_sim.pin import Ibm3624, VisaPvv, ibm3624_offset, visa_pvv
from tests.vectors import load

VECTORS = load("emv_cryptograms")
SCHEME = {
    "Visa CVN 10": 10,
    "Visa CVN 18": 18,
    "Mastercard CVN 16 (M/Chip 4)": 16,
    "Mastercard CVN 17 (M/Chip 4 with counters)": 17,
    "Mastercard CVN 20 (M/Chip Advance, EMV CSK)": 20,
    "Mastercard CVN 21 (M/Chip Advance, EMV CSK, counters)": 21,
}


def _iad(cvn: int, inputs: dict[str, str]) -> bytes:
    if cvn == 18:
        return bytes.fromhex(inputs["tag_9f10"])
    if cvn == 10:
        return bytes((0x06, 0x01, 0x0A)) + bytes.fromhex(inputs["cvr"])
    counters = bytes.fromhex(inputs.get("counters", "00" * 8))
    return bytes((0x01, cvn)) + bytes.fromhex(inputs["cvr"]) + bytes(2) + counters


def _icc(cvn: int, example: dict[str, Any]) -> IccData:
    i = example["ac_inputs"]
    h = bytes.fromhex
    return IccData(
        arqc=h(example["arqc"]),
        cid=b"\x80",
        iad=_iad(cvn, i),
        atc=h(i["tag_9f36"]),
        unpredictable_number=h(i["tag_9f37"]),
        amount_authorised=h(i["tag_9f02"]),
        amount_other=h(i["tag_9f03"]),
        terminal_country=h(i["tag_9f1a"]),
        tvr=h(i["tag_95"]),
        currency=h(i["tag_5f2a"]),
        date=h(i["tag_9a"]),
        transaction_type=h(i["tag_9c"]),
        aip=h(i["tag_82"]),
    )


SCHEME_EXAMPLES = [e for e in VECTORS["scheme_cvn_examples"] if e["cvn"] in SCHEME]


@pytest.mark.parametrize("example", SCHEME_EXAMPLES, ids=[e["cvn"] for e in SCHEME_EXAMPLES])
def test_scheme_cvn_vectors(example: dict[str, Any]) -> None:
    cvn = SCHEME[example["cvn"]]
    keys = derive_icc_keys(
        cvn,
        bytes.fromhex(example["issuer_master_keys"]["iss_mk_ac"]),
        example["pan"],
        example["psn"],
    )
    assert keys.icc_mk_ac.hex().upper() == example["icc_master_keys"]["ac"]
    icc = _icc(cvn, example)
    assert generate_ac(keys, icc).hex().upper() == example["arqc"]
    assert verify_arqc(keys, icc)
    spec = example["arpc"]
    arc_or_csu = bytes.fromhex(spec["csu"] if spec["method"] == 2 else spec["arpc_rc"])
    assert arpc(keys, icc, arc_or_csu).hex().upper() == spec["value"]


def test_all_six_cvns_have_a_vector() -> None:
    assert sorted(SCHEME[e["cvn"]] for e in SCHEME_EXAMPLES) == [10, 16, 17, 18, 20, 21]


GENERIC = VECTORS["pyemv_generic_arqc_arpc"]


@pytest.mark.parametrize("vector", GENERIC, ids=[v["name"] for v in GENERIC])
def test_generic_arpc_vectors(vector: dict[str, Any]) -> None:
    arqc = bytes.fromhex(vector["arqc"])
    inputs = [bytes.fromhex(x) for x in vector["arpc_inputs"]]
    method = vector["arpc_method"]
    if method == "2":
        key = bytes.fromhex(vector["session_key"])
        result = arpc_method_2(key, arqc, inputs[0], inputs[1] if len(inputs) > 1 else b"")
    else:
        name = "icc_master_key" if method == "1-icc" else "session_key"
        result = arpc_method_1(bytes.fromhex(vector[name]), arqc, inputs[0])
    assert result.hex().upper() == vector["arpc"]


@pytest.mark.parametrize("entry", VECTORS["icc_master_key_derivation"])
def test_icc_master_key_derivation(entry: dict[str, Any]) -> None:
    psn = "00" if entry["psn"].startswith("(") else entry["psn"]
    cvn = 10 if entry["option"] == "A" else 18
    keys = derive_icc_keys(cvn, bytes.fromhex(entry["issuer_master_key"]), entry["pan"], psn)
    assert keys.icc_mk_ac.hex().upper() == entry["icc_master_key"]


def test_wrong_cvn_byte_fails_verification() -> None:
    example = SCHEME_EXAMPLES[0]
    keys = derive_icc_keys(
        10,
        bytes.fromhex(example["issuer_master_keys"]["iss_mk_ac"]),
        example["pan"],
        example["psn"],
    )
    icc = _icc(10, example)
    bad = IccData(
        **{**{f: getattr(icc, f) for f in icc.__slots__}, "iad": b"\x06\x01\x12" + icc.iad[3:]}
    )
    assert not verify_arqc(keys, bad)
    with pytest.raises(IccDataError):
        generate_ac(keys, bad)


def test_unsupported_cvn() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        derive_icc_keys(22, bytes(16), "4761739001010010", "00")


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_fuzz_parse_icc_data(data: bytes) -> None:
    error: IccDataError | None = None
    try:
        icc = parse_icc_data(data)
    except IccDataError as exc:
        error = exc
    if error is None:
        assert len(icc.arqc) == 8
    else:
        assert error.field is None or error.field.startswith("tag")


# -- PIN verification values ---------------------------------------------------------------

PVK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def test_visa_pvv_known_answer() -> None:
    """psec's published example: PVKI 3, PIN 4524, PAN 1122334455667788 -> 4021."""
    assert visa_pvv(PVK, 3, "4524", "1122334455667788") == "4021"
    check = VisaPvv(PVK, 3, "4021").check("1122334455667788")
    assert check(bytearray(b"4524"))
    assert not check(bytearray(b"4525"))
    assert not check(bytearray(b"45"))
    assert not check(bytearray(b"45x4"))
    assert "4021" not in repr(VisaPvv(PVK, 3, "4021"))


def test_ibm3624_known_answer() -> None:
    """psec's published example: table 1234567890123456, natural PIN 4524 (offset 0000)."""
    args = (PVK, "1234567890123456", "4524", "1122334455667788", 0, 16, "F")
    assert ibm3624_offset(*args) == "0000"
    record = Ibm3624(PVK, "1234567890123456", "1111", 0, 16, "F")
    check = record.check("1122334455667788")
    assert check(bytearray(b"5635"))  # 4524 + 1111 digit by digit
    assert not check(bytearray(b"4524"))
    assert not check(bytearray(b"56350"))
    assert "1111" not in repr(record)
