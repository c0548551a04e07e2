"""Tests for paycore.pinblock: ISO 9564-1 formats 0, 3, 4 and the DUKPT-enciphered paths."""

from __future__ import annotations

import itertools
import secrets
import traceback
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore import dukpt
from paycore.errors import CodecError
from paycore.pinblock import (
    PinBlockError,
    decipher_format0_tdes_dukpt,
    decipher_format4,
    decipher_format4_dukpt,
    decode_format0,
    decode_format3,
    decode_format4_pin_field,
    encipher_format0_tdes_dukpt,
    encipher_format4,
    encipher_format4_dukpt,
    encode_format0,
    encode_format3,
    encode_format4_fields,
)
from tests.vectors import load

ISO: dict[str, Any] = load("iso9564_pin_blocks")
AES_DUKPT: dict[str, Any] = load("dukpt_aes_x9_24_3")
TDES_DUKPT: dict[str, Any] = load("dukpt_tdes_x9_24_1")


def _vectors(fmt: int, key: str) -> list[dict[str, Any]]:
    return [v for v in ISO["vectors"] if v["format"] == fmt and key in v]


def _fixed(data: bytes) -> Callable[[int], bytes]:
    """A random source that must be asked for exactly ``len(data)`` bytes."""

    def source(count: int) -> bytes:
        assert count == len(data)
        return data

    return source


def _aes_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _vector_id(v: dict[str, Any]) -> str:
    return f"{v['pin']}-{v.get('pan', '')}"


PINS = st.text(alphabet="0123456789", min_size=4, max_size=12)
PANS_13_19 = st.text(alphabet="0123456789", min_size=13, max_size=19)
PANS_1_19 = st.text(alphabet="0123456789", min_size=1, max_size=19)


# -- format 0 -------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _vectors(0, "clear_pin_block"), ids=_vector_id)
def test_format0_vectors(vector: dict[str, Any]) -> None:
    block = bytes.fromhex(vector["clear_pin_block"])
    assert encode_format0(vector["pin"], vector["pan"]) == block
    assert decode_format0(block, vector["pan"]) == vector["pin"]


@pytest.mark.parametrize("vector", _vectors(0, "pin_field"), ids=_vector_id)
def test_format0_is_pin_field_xor_pan_field(vector: dict[str, Any]) -> None:
    pin_field = bytes.fromhex(vector["pin_field"])
    pan_field = bytes.fromhex(vector["pan_field"])
    expected = bytes(a ^ b for a, b in zip(pin_field, pan_field, strict=True))
    assert encode_format0(vector["pin"], vector["pan"]) == expected


@pytest.mark.parametrize(
    ("vector", "field"),
    list(
        zip(
            ISO["negative_decode_vectors_format0"],
            ["control", "pin length", "fill", "pin"],
            strict=True,
        )
    ),
    ids=lambda v: v["why_invalid"] if isinstance(v, dict) else v,
)
def test_format0_negative_vectors(vector: dict[str, Any], field: str) -> None:
    with pytest.raises(PinBlockError) as info:
        decode_format0(bytes.fromhex(vector["clear_pin_block"]), vector["pan"])
    assert info.value.field == field
    # psec's message quotes the offending digits; ours must not, and must not chain it.
    assert info.value.__context__ is None
    assert info.value.__cause__ is None
    text = "".join(traceback.format_exception(info.value))
    assert "AAAAEDCBA" not in text.upper()
    assert vector["pan"] not in text


@settings(max_examples=150)
@given(pin=PINS, pan=PANS_13_19)
def test_format0_round_trip(pin: str, pan: str) -> None:
    block = encode_format0(pin, pan)
    assert len(block) == 8
    assert decode_format0(block, pan) == pin


# -- format 3 -------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _vectors(3, "clear_pin_block"), ids=_vector_id)
def test_format3_decode_vectors(vector: dict[str, Any]) -> None:
    assert decode_format3(bytes.fromhex(vector["clear_pin_block"]), vector["pan"]) == vector["pin"]


@pytest.mark.parametrize("vector", _vectors(3, "clear_pin_block"), ids=_vector_id)
def test_format3_encode_reproduces_vectors_given_their_fill(vector: dict[str, Any]) -> None:
    # Recover the fill digits from the published block, then map each back to a random
    # byte value (A..F = byte % 6 for bytes < 252) and check the encoder rebuilds the block.
    block = bytes.fromhex(vector["clear_pin_block"])
    pan_field = b"\x00\x00" + bytes.fromhex(vector["pan"][-13:-1])
    clear = bytes(a ^ b for a, b in zip(block, pan_field, strict=True)).hex().upper()
    fill = clear[2 + len(vector["pin"]) :]
    random_bytes = bytes("ABCDEF".index(ch) + 6 * 7 for ch in fill)
    assert encode_format3(vector["pin"], vector["pan"], random=_fixed(random_bytes)) == block


@pytest.mark.parametrize("vector", _vectors(3, "clear_pin_block_prefix"), ids=_vector_id)
def test_format3_encode_prefix_vectors(vector: dict[str, Any]) -> None:
    block = encode_format3(vector["pin"], vector["pan"], random=secrets.token_bytes)
    prefix = vector["clear_pin_block_prefix"]
    assert block.hex().upper().startswith(prefix)
    assert decode_format3(block, vector["pan"]) == vector["pin"]


def test_format3_fill_uses_only_a_to_f_and_rejects_biased_bytes() -> None:
    pan = "5555555551234567"
    draws: list[int] = []

    def source(count: int) -> bytes:
        draws.append(count)
        # first call: all bytes >= 252 (must be rejected), then a usable pattern
        return bytes([255] * count) if len(draws) == 1 else bytes(range(count))

    block = encode_format3("1234", pan, random=source)
    assert draws == [10, 10]
    pan_field = b"\x00\x00" + bytes.fromhex(pan[-13:-1])
    clear = bytes(a ^ b for a, b in zip(block, pan_field, strict=True)).hex().upper()
    assert clear == "341234" + "ABCDEFABCD"


def test_format3_gives_up_on_a_stuck_random_source() -> None:
    with pytest.raises(PinBlockError) as info:
        encode_format3("1234", "5555555551234567", random=lambda n: b"\xff" * n)
    assert info.value.field == "random"


def test_format3_refuses_a_short_random_source() -> None:
    with pytest.raises(PinBlockError) as info:
        encode_format3("1234", "5555555551234567", random=lambda n: b"\x00")
    assert info.value.field == "random"


@settings(max_examples=150)
@given(pin=PINS, pan=PANS_13_19, seed=st.binary(min_size=64, max_size=64))
def test_format3_round_trip(pin: str, pan: str, seed: bytes) -> None:
    pool = itertools.cycle(seed)

    def source(count: int) -> bytes:
        return bytes(next(pool) for _ in range(count))

    try:
        block = encode_format3(pin, pan, random=source)
    except PinBlockError as exc:  # only when every seed byte is >= 252
        failed_field = exc.field
    else:
        failed_field = None
        assert decode_format3(block, pan) == pin
        with pytest.raises(PinBlockError):
            decode_format0(block, pan)
    assert failed_field in (None, "random")


# -- format 4 -------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _vectors(4, "encrypted_pin_block"), ids=_vector_id)
def test_format4_vectors(vector: dict[str, Any]) -> None:
    key = bytes.fromhex(vector["key"])
    fill = bytes.fromhex(vector.get("random_fill", "FF" * 8))
    pin_field, pan_field = encode_format4_fields(vector["pin"], vector["pan"], random=_fixed(fill))
    assert pin_field.hex().upper() == vector["pin_field"]
    assert pan_field.hex().upper() == vector["pan_field"]
    if "intermediate_block_A" in vector:
        assert _aes_ecb_encrypt(key, pin_field).hex().upper() == vector["intermediate_block_A"]
    block = bytes.fromhex(vector["encrypted_pin_block"])
    assert encipher_format4(key, vector["pin"], vector["pan"], random=_fixed(fill)) == block
    assert decipher_format4(key, block, vector["pan"]) == vector["pin"]
    assert decode_format4_pin_field(pin_field) == vector["pin"]


@pytest.mark.parametrize(
    "vector",
    [v for v in ISO["field_encoding_vectors"] if "pan_field" in v],
    ids=lambda v: v["pan"],
)
def test_format4_pan_field_vectors(vector: dict[str, Any]) -> None:
    _, pan_field = encode_format4_fields("1234", vector["pan"], random=_fixed(bytes(8)))
    assert pan_field.hex().upper() == vector["pan_field"]


@pytest.mark.parametrize(
    "vector",
    [v for v in ISO["field_encoding_vectors"] if "pin_field_first8" in v],
    ids=lambda v: v["pin"],
)
def test_format4_pin_field_vectors(vector: dict[str, Any]) -> None:
    fill = secrets.token_bytes(8)
    pin_field, _ = encode_format4_fields(vector["pin"], "4111111111111111", random=_fixed(fill))
    assert pin_field[:8].hex().upper() == vector["pin_field_first8"]
    assert pin_field[8:] == fill


def test_format4_wrong_pan_or_key_is_refused() -> None:
    vector = _vectors(4, "encrypted_pin_block")[0]
    key = bytes.fromhex(vector["key"])
    block = bytes.fromhex(vector["encrypted_pin_block"])
    with pytest.raises(PinBlockError):
        decipher_format4(key, block, "4111111111111129")
    with pytest.raises(PinBlockError):
        decipher_format4(bytes(16), block, vector["pan"])
    with pytest.raises(PinBlockError) as info:
        decipher_format4(key[:15], block, vector["pan"])
    assert info.value.field == "key"


@settings(max_examples=100)
@given(
    pin=PINS,
    pan=PANS_1_19,
    key=st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    fill=st.binary(min_size=8, max_size=8),
)
def test_format4_round_trip(pin: str, pan: str, key: bytes, fill: bytes) -> None:
    block = encipher_format4(key, pin, pan, random=_fixed(fill))
    assert len(block) == 16
    assert decipher_format4(key, block, pan) == pin
    pin_field, _ = encode_format4_fields(pin, pan, random=_fixed(fill))
    assert decode_format4_pin_field(pin_field) == pin


# -- input validation -----------------------------------------------------------------------


@pytest.mark.parametrize("pin", ["123", "1234567890123", "12a4", "", "\u0661\u0662\u0663\u0664"])
def test_bad_pins_are_refused_without_quoting_them(pin: str) -> None:
    pan = "4111111111111111"
    calls: list[Callable[[], object]] = [
        lambda: encode_format0(pin, pan),
        lambda: encode_format3(pin, pan, random=secrets.token_bytes),
        lambda: encode_format4_fields(pin, pan, random=secrets.token_bytes),
        lambda: encipher_format4(bytes(16), pin, pan, random=secrets.token_bytes),
    ]
    for call in calls:
        with pytest.raises(PinBlockError) as info:
            call()
        assert info.value.field == "pin"
        assert isinstance(info.value, CodecError)
        if len(pin) >= 3:
            assert pin not in str(info.value)


@pytest.mark.parametrize("pan", ["411111111111", "41111111111111111111", "4111x11111111111", ""])
def test_bad_pans_are_refused_for_formats_0_and_3(pan: str) -> None:
    for call in (
        lambda: encode_format0("1234", pan),
        lambda: decode_format0(bytes(8), pan),
        lambda: encode_format3("1234", pan, random=secrets.token_bytes),
        lambda: decode_format3(bytes(8), pan),
    ):
        with pytest.raises(PinBlockError) as info:
            call()
        assert info.value.field == "pan"
        if pan:
            assert pan not in str(info.value)


def test_format4_accepts_short_pans_but_not_long_ones() -> None:
    block = encipher_format4(bytes(16), "1234", "1", random=_fixed(bytes(8)))
    assert decipher_format4(bytes(16), block, "1") == "1234"
    with pytest.raises(PinBlockError):
        encipher_format4(bytes(16), "1234", "4" * 20, random=_fixed(bytes(8)))


@pytest.mark.parametrize("length", [0, 7, 9, 15, 17])
def test_wrong_block_lengths(length: int) -> None:
    with pytest.raises(PinBlockError) as info:
        decode_format0(bytes(length), "4111111111111111")
    assert info.value.field == "block"
    with pytest.raises(PinBlockError):
        decipher_format4(bytes(16), bytes(length), "4111111111111111")


# -- fuzzing: decoders raise only PinBlockError ---------------------------------------------


@settings(max_examples=300)
@given(block=st.binary(min_size=8, max_size=8), pan=PANS_13_19)
def test_fuzz_format0_and_3_decode_8_byte_blocks(block: bytes, pan: str) -> None:
    for decode in (decode_format0, decode_format3):
        try:
            pin = decode(block, pan)
        except PinBlockError:
            continue
        assert 4 <= len(pin) <= 12
        assert pin.isdigit()


@settings(max_examples=300)
@given(
    block=st.binary(min_size=16, max_size=16),
    pan=PANS_1_19,
    key=st.binary(min_size=16, max_size=16),
)
def test_fuzz_format4_decipher_16_byte_blocks(block: bytes, pan: str, key: bytes) -> None:
    try:
        pin = decipher_format4(key, block, pan)
    except PinBlockError:
        return
    assert 4 <= len(pin) <= 12


@settings(max_examples=300)
@given(data=st.binary(max_size=40), pan=st.text(max_size=25))
def test_fuzz_decoders_with_arbitrary_input(data: bytes, pan: str) -> None:
    decoders: list[Callable[[], str]] = [
        lambda: decode_format0(data, pan),
        lambda: decode_format3(data, pan),
        lambda: decode_format4_pin_field(data),
        lambda: decipher_format4(bytes(16), data, pan),
        lambda: decipher_format4(data, bytes(16), pan),
    ]
    for decode in decoders:
        context: BaseException | None = None
        try:
            decode()
        except PinBlockError as exc:
            context = exc.__context__
        assert context is None


# -- DUKPT ----------------------------------------------------------------------------------

_AES_EXAMPLE = AES_DUKPT["pin_block_format4_example"]
_AES_INITIAL_KEY = bytes.fromhex(AES_DUKPT["aes128_bdk"]["initial_key"]["value"])
_AES_TRANSACTIONS = AES_DUKPT["aes128_bdk"]["first_eight_transactions"]


def test_aes_dukpt_example_fields_and_intermediates() -> None:
    fill = bytes.fromhex(_AES_EXAMPLE["random_fill"])
    pin_field, pan_field = encode_format4_fields(
        _AES_EXAMPLE["pin"], _AES_EXAMPLE["pan"], random=_fixed(fill)
    )
    assert pin_field.hex().upper() == _AES_EXAMPLE["plaintext_pin_field"]
    assert pan_field.hex().upper() == _AES_EXAMPLE["plaintext_pan_field"]
    key = dukpt.aes_working_key(
        _AES_INITIAL_KEY, bytes.fromhex(_AES_TRANSACTIONS[0]["ksn"]), "pin", "AES128"
    )
    block_a = _aes_ecb_encrypt(key, pin_field)
    assert block_a.hex().upper() == _AES_EXAMPLE["intermediate_block_A"]
    block_b = bytes(a ^ b for a, b in zip(block_a, pan_field, strict=True))
    assert block_b.hex().upper() == _AES_EXAMPLE["intermediate_block_B"]


@pytest.mark.parametrize("transaction", _AES_TRANSACTIONS, ids=lambda t: t["ksn"])
def test_aes_dukpt_format4_known_answers(transaction: dict[str, Any]) -> None:
    ksn = bytes.fromhex(transaction["ksn"])
    fill = bytes.fromhex(_AES_EXAMPLE["random_fill"])
    expected = bytes.fromhex(transaction["encrypted_pin_block_format4"])
    block = encipher_format4_dukpt(
        _AES_INITIAL_KEY, ksn, _AES_EXAMPLE["pin"], _AES_EXAMPLE["pan"], random=_fixed(fill)
    )
    assert block == expected
    assert decipher_format4_dukpt(_AES_INITIAL_KEY, ksn, expected, _AES_EXAMPLE["pan"]) == "1234"


def test_aes_dukpt_wrong_ksn_does_not_give_the_pin() -> None:
    first = _AES_TRANSACTIONS[0]
    block = bytes.fromhex(first["encrypted_pin_block_format4"])
    other_ksn = bytes.fromhex(_AES_TRANSACTIONS[1]["ksn"])
    with pytest.raises(PinBlockError):
        decipher_format4_dukpt(_AES_INITIAL_KEY, other_ksn, block, _AES_EXAMPLE["pan"])


_TDES_IPEK = bytes.fromhex(TDES_DUKPT["ipek"]["value"])
_TDES_INPUTS = TDES_DUKPT["inputs"]
_TDES_SEQUENCE = [s for s in TDES_DUKPT["initial_sequence"] if "encrypted_pin_block" in s]


def test_tdes_inputs_clear_block_matches_format0() -> None:
    clear = encode_format0(_TDES_INPUTS["pin"], _TDES_INPUTS["pan"])
    assert clear.hex().upper() == _TDES_INPUTS["clear_pin_block_iso0"]


@pytest.mark.parametrize("step", _TDES_SEQUENCE, ids=lambda s: s["ksn"])
def test_tdes_dukpt_format0_known_answers(step: dict[str, Any]) -> None:
    ksn = bytes.fromhex(step["ksn"])
    expected = bytes.fromhex(step["encrypted_pin_block"])
    block = encipher_format0_tdes_dukpt(_TDES_IPEK, ksn, _TDES_INPUTS["pin"], _TDES_INPUTS["pan"])
    assert block == expected
    pin = decipher_format0_tdes_dukpt(_TDES_IPEK, ksn, expected, _TDES_INPUTS["pan"])
    assert pin == _TDES_INPUTS["pin"]


def test_tdes_dukpt_sequence_is_covered() -> None:
    assert len(_TDES_SEQUENCE) >= 10
