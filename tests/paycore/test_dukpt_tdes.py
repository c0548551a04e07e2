"""TDES DUKPT (ANSI X9.24-1:2009): known answers from tests/vectors, host vs originator.

Every value in tests/vectors/dukpt_tdes_x9_24_1.json is checked: the IPEK, the transaction
key and all five variant keys of the 21-transaction initial sequence, the PIN blocks,
X9.19 MACs and TDES-CBC data samples of that sequence (computed here with plain
cryptography under the derived keys), the A.4.3 KSN advance order and the Shopify/IDTech
sample (PIN-variant key used for data).
"""

from __future__ import annotations

from math import comb
from typing import Any

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore.dukpt import (
    TDES_MAX_COUNTER,
    TDES_MAX_ONE_BITS,
    KsnError,
    TdesOriginator,
    tdes_ipek,
    tdes_transaction_key,
    tdes_working_key,
)
from paycore.errors import CodecError, KeyExhausted
from tests.vectors import load

VECTORS: dict[str, Any] = load("dukpt_tdes_x9_24_1")
INPUTS = VECTORS["inputs"]
SEQUENCE: list[dict[str, Any]] = VECTORS["initial_sequence"]
KEY_FIELDS = {
    "pin": "pin_encryption_key",
    "mac_request": "mac_request_key",
    "mac_response": "mac_response_key",
    "data_request": "data_request_key",
    "data_response": "data_response_key",
}
TOTAL_KEYS = 1_048_575


def h(text: str) -> bytes:
    return bytes.fromhex(text)


BDK = h(INPUTS["bdk"])
INITIAL_KSN = h(INPUTS["initial_ksn"])
IPEK = tdes_ipek(BDK, INITIAL_KSN)


def tdes(key16: bytes, mode: modes.CBC | modes.ECB, data: bytes, *, decrypt: bool = False) -> bytes:
    cipher = Cipher(TripleDES(key16 + key16[:8]), mode)
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def zero_pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 8)


def retail_mac(key16: bytes, message: bytes) -> bytes:
    """ANSI X9.19 (ISO 9797-1 MAC algorithm 3), padding method 1."""
    data = zero_pad(message)
    left = key16[:8]
    chain = bytes(8)
    if len(data) > 8:
        chain = tdes(left + left, modes.CBC(bytes(8)), data[:-8])[-8:]
    last = bytes(x ^ y for x, y in zip(chain, data[-8:], strict=True))
    return tdes(key16, modes.ECB(), last)


# --- known answers ----------------------------------------------------------------------


def test_ipek() -> None:
    assert IPEK.hex().upper() == VECTORS["ipek"]["value"]


@pytest.mark.parametrize("counter", [1, 8, 0x1FFFFF])
def test_ipek_ignores_the_counter_bits(counter: int) -> None:
    ksn = (int.from_bytes(INITIAL_KSN, "big") | counter).to_bytes(10, "big")
    assert tdes_ipek(BDK, ksn) == IPEK


@pytest.mark.parametrize("entry", SEQUENCE, ids=[e["ksn"] for e in SEQUENCE])
def test_transaction_key(entry: dict[str, Any]) -> None:
    ksn = h(entry["ksn"])
    assert int.from_bytes(ksn[7:], "big") & 0x1FFFFF == int(entry["transaction_counter"], 16)
    assert tdes_transaction_key(IPEK, ksn).hex().upper() == entry["transaction_key"]


WORKING = [
    (entry["ksn"], usage, entry[field]) for entry in SEQUENCE for usage, field in KEY_FIELDS.items()
]


@pytest.mark.parametrize(("ksn", "usage", "expected"), WORKING)
def test_working_key(ksn: str, usage: str, expected: str) -> None:
    assert tdes_working_key(IPEK, h(ksn), usage).hex().upper() == expected


def test_sequence_is_consecutive_from_one() -> None:
    counters = [int(entry["transaction_counter"], 16) for entry in SEQUENCE]
    assert counters == list(range(1, len(SEQUENCE) + 1))


def test_originator_reproduces_the_initial_sequence() -> None:
    originator = TdesOriginator(IPEK, INITIAL_KSN)
    for entry in SEQUENCE:
        txn = originator.next_transaction()
        assert txn.ksn.hex().upper() == entry["ksn"]
        for usage, field in KEY_FIELDS.items():
            assert txn.working_key(usage).hex().upper() == entry[field]


@pytest.mark.parametrize("entry", SEQUENCE, ids=[e["ksn"] for e in SEQUENCE])
def test_encrypted_pin_block(entry: dict[str, Any]) -> None:
    key = tdes_working_key(IPEK, h(entry["ksn"]), "pin")
    block = tdes(key, modes.ECB(), h(INPUTS["clear_pin_block_iso0"]))
    assert block.hex().upper() == entry["encrypted_pin_block"]


@pytest.mark.parametrize("entry", SEQUENCE, ids=[e["ksn"] for e in SEQUENCE])
@pytest.mark.parametrize("direction", ["request", "response"])
def test_mac_x9_19(entry: dict[str, Any], direction: str) -> None:
    message = INPUTS["message_ascii"].encode("ascii")
    assert message.hex().upper() == INPUTS["message_hex"]
    key = tdes_working_key(IPEK, h(entry["ksn"]), f"mac_{direction}")
    assert retail_mac(key, message).hex().upper() == entry[f"mac_{direction}_x9_19"]


@pytest.mark.parametrize("entry", SEQUENCE, ids=[e["ksn"] for e in SEQUENCE])
@pytest.mark.parametrize("direction", ["request", "response"])
def test_data_encryption(entry: dict[str, Any], direction: str) -> None:
    key = tdes_working_key(IPEK, h(entry["ksn"]), f"data_{direction}")
    data = zero_pad(h(INPUTS["message_hex"]))
    encrypted = tdes(key, modes.CBC(bytes(8)), data)
    assert encrypted.hex().upper() == entry[f"encrypted_data_{direction}"]


def test_ksn_advance_examples() -> None:
    """X9.24-1:2009 A.4.3: from EFF800 the counter skips everything above 10 one-bits."""
    expected = [h(ksn) for ksn in VECTORS["ksn_advance_examples"]["sequence"]]
    first_counter = int.from_bytes(expected[0][7:], "big") & TDES_MAX_COUNTER
    originator = TdesOriginator(IPEK, INITIAL_KSN, next_counter=first_counter)
    got = [originator.next_transaction().ksn for _ in expected]
    assert got == expected
    for ksn in got:
        assert (int.from_bytes(ksn[7:], "big") & TDES_MAX_COUNTER).bit_count() <= 10


@pytest.mark.parametrize("sample", VECTORS["other_samples"], ids=lambda s: s["name"][:20])
def test_other_samples(sample: dict[str, Any]) -> None:
    """Shopify/IDTech: the PIN-variant key of the KSN decrypts the track data (TDES-CBC)."""
    key = tdes_working_key(tdes_ipek(BDK, h(sample["ksn"])), h(sample["ksn"]), "pin")
    assert key.hex().upper() == sample["key_used"]
    clear = tdes(key, modes.CBC(bytes(8)), h(sample["ciphertext"]), decrypt=True)
    assert clear == h(sample["plaintext_hex"])
    assert clear.rstrip(b"\x00") == sample["plaintext_ascii"].encode("ascii")


# --- originator ------------------------------------------------------------------------


def test_originator_and_host_agree_for_2000_consecutive_transactions() -> None:
    originator = TdesOriginator(IPEK, INITIAL_KSN)
    seen: set[bytes] = set()
    for counter in range(1, 2001):
        txn = originator.next_transaction()
        assert txn.counter == counter
        assert txn.ksn not in seen
        seen.add(txn.ksn)
        usage = list(KEY_FIELDS)[counter % 5]
        assert txn.working_key(usage) == tdes_working_key(IPEK, txn.ksn, usage)


@settings(max_examples=60)
@given(
    counter=st.integers(1, TDES_MAX_COUNTER).filter(lambda c: c.bit_count() <= 10),
    usage=st.sampled_from(list(KEY_FIELDS)),
)
def test_originator_started_anywhere_agrees_with_host(counter: int, usage: str) -> None:
    originator = TdesOriginator(IPEK, INITIAL_KSN, next_counter=counter)
    for _ in range(2):
        txn = originator.next_transaction()
        assert txn.counter >= counter
        assert txn.working_key(usage) == tdes_working_key(IPEK, txn.ksn, usage)
    assert txn.counter > counter


def test_skips_counters_with_more_than_10_one_bits() -> None:
    start = 0x0003FE  # 9 one-bits
    originator = TdesOriginator(IPEK, INITIAL_KSN, next_counter=start)
    got = [originator.next_transaction().counter for _ in range(300)]
    expected = [c for c in range(start, TDES_MAX_COUNTER + 1) if c.bit_count() <= 10][:300]
    assert got == expected
    assert 0x0007FF not in got  # 11 one-bits


def test_total_number_of_keys() -> None:
    brute = sum(1 for c in range(1, TDES_MAX_COUNTER + 1) if c.bit_count() <= TDES_MAX_ONE_BITS)
    assert brute == sum(comb(21, k) for k in range(1, 11)) == TOTAL_KEYS
    assert TdesOriginator(IPEK, INITIAL_KSN).keys_left == TOTAL_KEYS


@pytest.mark.parametrize("start", [1, 0x7FF, 0x0FF800, 0x1FF000, 0x1FF7FF])
def test_keys_left_matches_brute_force(start: int) -> None:
    brute = sum(1 for c in range(start, TDES_MAX_COUNTER + 1) if c.bit_count() <= 10)
    assert TdesOriginator(IPEK, INITIAL_KSN, next_counter=start).keys_left == brute


def test_exhaustion() -> None:
    originator = TdesOriginator(IPEK, INITIAL_KSN, next_counter=0x1FE000)
    left = originator.keys_left
    counters = [originator.next_transaction().counter for _ in range(left)]
    with pytest.raises(KeyExhausted, match="last transaction counter"):
        originator.next_transaction()
    assert counters == [c for c in range(0x1FE000, 0x200000) if c.bit_count() <= 10]
    assert counters[-1] == 0x1FF800
    assert originator.keys_left == 0
    assert originator.next_counter == TDES_MAX_COUNTER + 1
    with pytest.raises(KeyExhausted):
        originator.next_transaction()


@pytest.mark.parametrize("start", [0x1FF801, 0x1FFFFF, TDES_MAX_COUNTER + 1])
def test_exhausted_from_the_start(start: int) -> None:
    originator = TdesOriginator(IPEK, INITIAL_KSN, next_counter=start)
    assert originator.keys_left == 0
    with pytest.raises(KeyExhausted):
        originator.next_transaction()


def test_restart_never_repeats() -> None:
    first = TdesOriginator(IPEK, INITIAL_KSN, next_counter=0x3FD)
    ksns = [first.next_transaction().ksn for _ in range(4)]
    second = TdesOriginator(IPEK, INITIAL_KSN, next_counter=first.next_counter)
    ksns += [second.next_transaction().ksn for _ in range(4)]
    assert len(set(ksns)) == 8


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("counter", [0, 0x7FF, 0x1FFFFF])
def test_unusable_counters(counter: int) -> None:
    ksn = (int.from_bytes(INITIAL_KSN, "big") | counter).to_bytes(10, "big")
    with pytest.raises(KsnError) as info:
        tdes_working_key(IPEK, ksn, "pin")
    assert isinstance(info.value, CodecError)
    assert info.value.field == "ksn transaction counter"
    with pytest.raises(KsnError):
        tdes_transaction_key(IPEK, ksn)


@pytest.mark.parametrize("length", [0, 8, 9, 11, 12])
def test_wrong_ksn_length(length: int) -> None:
    with pytest.raises(KsnError, match="10 bytes"):
        tdes_working_key(IPEK, bytes(range(1, length + 1)), "pin")
    with pytest.raises(KsnError, match="10 bytes"):
        tdes_ipek(BDK, bytes(length))


def test_bad_arguments() -> None:
    ksn = h(SEQUENCE[0]["ksn"])
    with pytest.raises(ValueError, match="unknown TDES DUKPT key usage") as info:
        tdes_working_key(IPEK, ksn, "data_encrypt")
    assert not isinstance(info.value, CodecError)
    with pytest.raises(ValueError, match="16 bytes"):
        tdes_working_key(IPEK[:8], ksn, "pin")
    with pytest.raises(ValueError, match="16 bytes"):
        tdes_ipek(BDK + BDK[:8], INITIAL_KSN)
    with pytest.raises(ValueError, match="zero counter"):
        TdesOriginator(IPEK, ksn)
    with pytest.raises(ValueError, match="next_counter"):
        TdesOriginator(IPEK, INITIAL_KSN, next_counter=0)
    with pytest.raises(ValueError, match="next_counter"):
        TdesOriginator(IPEK, INITIAL_KSN, next_counter=TDES_MAX_COUNTER + 2)
    txn = TdesOriginator(IPEK, INITIAL_KSN).next_transaction()
    with pytest.raises(ValueError, match="unknown"):
        txn.working_key("kek")


@settings(max_examples=300)
@given(st.binary(max_size=14))
def test_fuzz_ksn(ksn: bytes) -> None:
    """Any bytes as a KSN: a 16-byte key or a KsnError, nothing else."""
    try:
        key = tdes_working_key(IPEK, ksn, "data_request")
    except KsnError:
        return
    assert len(ksn) == 10
    assert len(key) == 16


def test_reprs_show_no_key_material() -> None:
    originator = TdesOriginator(IPEK, INITIAL_KSN, next_counter=3)
    txn = originator.next_transaction()
    secrets = [IPEK, tdes_transaction_key(IPEK, txn.ksn)]
    secrets += [txn.working_key(usage) for usage in KEY_FIELDS]
    for text in (repr(originator), repr(txn)):
        for secret in secrets:
            assert secret.hex() not in text.lower()
            assert repr(secret) not in text
    assert "FFFF9876543210E00003" in repr(txn)
    assert not hasattr(txn, "__dict__")
