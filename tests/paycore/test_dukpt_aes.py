"""AES DUKPT (ANSI X9.24-3-2017): known answers from tests/vectors, host vs originator.

Every value in tests/vectors/dukpt_aes_x9_24_3.json is checked: the initial key, the
derivation key and every working key of the first eight transactions, the update keys and
the transaction key at counter FFFFFFFF, and the AES PIN block format 4 samples and message
samples that follow from the working keys (computed here with plain cryptography).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore.dukpt import (
    AES_MAX_COUNTER,
    AES_MAX_ONE_BITS,
    AesOriginator,
    KsnError,
    _aes_derive,
    _count_usable_below,
    aes_derivation_key,
    aes_initial_key,
    aes_update_key,
    aes_working_key,
)
from paycore.errors import CodecError, KeyExhausted
from tests.vectors import load

VECTORS: dict[str, Any] = load("dukpt_aes_x9_24_3")
BDK_SECTIONS = [key for key in VECTORS if key.endswith("_bdk")]
TRANSACTIONS = [
    (section, index, txn)
    for section in BDK_SECTIONS
    for index, txn in enumerate(VECTORS[section]["first_eight_transactions"])
]
WORKING_KEYS = [
    (section, txn["ksn"], name, value)
    for section, _, txn in TRANSACTIONS
    for name, value in txn["working_keys"].items()
]
USAGES = ["pin", "mac_gen", "mac_verify", "mac_both", "data_encrypt", "data_decrypt"]
USAGES += ["data_both", "kek"]
TYPES = ["2TDEA", "3TDEA", "AES128", "AES192", "AES256"]
AES128_TYPES = ["2TDEA", "3TDEA", "AES128"]


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def initial_key(section: str) -> bytes:
    return aes_initial_key(h(VECTORS[section]["bdk"]), h(VECTORS[section]["initial_key_id"]))


def initial_key_id(section: str) -> bytes:
    return h(VECTORS[section]["initial_key_id"])


def split_name(name: str) -> tuple[str, str]:
    """``data_encrypt_AES128`` -> (``data_encrypt``, ``AES128``)."""
    usage, _, key_type = name.rpartition("_")
    return usage, key_type


def aes_ecb(key: bytes, data: bytes) -> bytes:
    return Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(data)


def ksn_for(section: str, counter: int) -> bytes:
    return initial_key_id(section) + counter.to_bytes(4, "big")


# --- known answers ----------------------------------------------------------------------


def test_vector_file_has_a_bdk_section() -> None:
    assert BDK_SECTIONS
    assert len(TRANSACTIONS) == 8 * len(BDK_SECTIONS)


@pytest.mark.parametrize("section", BDK_SECTIONS)
def test_initial_key(section: str) -> None:
    vec = VECTORS[section]
    ik = initial_key(section)
    assert ik.hex().upper() == vec["initial_key"]["value"]
    assert len(ik) == len(h(vec["bdk"]))


@pytest.mark.parametrize("section", BDK_SECTIONS)
def test_initial_key_derivation_data(section: str) -> None:
    """The vector's derivation data, encrypted under the BDK, is the initial key."""
    vec = VECTORS[section]
    data = h(vec["initial_key_derivation_data"])
    assert aes_ecb(h(vec["bdk"]), data).hex().upper() == vec["initial_key"]["value"]
    assert data.endswith(initial_key_id(section))


@pytest.mark.parametrize(("section", "index", "txn"), TRANSACTIONS)
def test_derivation_key(section: str, index: int, txn: dict[str, Any]) -> None:
    ksn = h(txn["ksn"])
    assert int.from_bytes(ksn[8:], "big") == int(txn["transaction_counter"], 16) == index + 1
    key = aes_derivation_key(initial_key(section), ksn)
    assert key.hex().upper() == txn["derivation_key"]


@pytest.mark.parametrize(("section", "ksn", "name", "expected"), WORKING_KEYS)
def test_working_key(section: str, ksn: str, name: str, expected: str) -> None:
    usage, key_type = split_name(name)
    key = aes_working_key(initial_key(section), h(ksn), usage, key_type)
    assert key.hex().upper() == expected


@pytest.mark.parametrize(("section", "index", "txn"), TRANSACTIONS)
def test_originator_matches_vectors(section: str, index: int, txn: dict[str, Any]) -> None:
    originator = AesOriginator(
        initial_key(section), initial_key_id(section), next_counter=index + 1
    )
    transaction = originator.next_transaction()
    assert transaction.ksn.hex().upper() == txn["ksn"]
    assert transaction.counter == index + 1
    for name, expected in txn["working_keys"].items():
        assert transaction.working_key(*split_name(name)).hex().upper() == expected


@pytest.mark.parametrize(("section", "index", "txn"), TRANSACTIONS)
def test_pin_block_format4(section: str, index: int, txn: dict[str, Any]) -> None:
    """ISO 9564 format 4 under the PIN key: AES(K, AES(K, PIN field) XOR PAN field)."""
    example = VECTORS["pin_block_format4_example"]
    key = aes_working_key(initial_key(section), h(txn["ksn"]), "pin", "AES128")
    block_a = aes_ecb(key, h(example["plaintext_pin_field"]))
    block_b = bytes(x ^ y for x, y in zip(block_a, h(example["plaintext_pan_field"]), strict=True))
    assert aes_ecb(key, block_b).hex().upper() == txn["encrypted_pin_block_format4"]


def test_pin_block_format4_intermediates() -> None:
    """The worked example's intermediate blocks, under the counter-1 PIN key."""
    example = VECTORS["pin_block_format4_example"]
    section = BDK_SECTIONS[0]
    first = VECTORS[section]["first_eight_transactions"][0]
    key = aes_working_key(initial_key(section), h(first["ksn"]), "pin", "AES128")
    block_a = aes_ecb(key, h(example["plaintext_pin_field"]))
    assert block_a.hex().upper() == example["intermediate_block_A"]
    block_b = bytes(x ^ y for x, y in zip(block_a, h(example["plaintext_pan_field"]), strict=True))
    assert block_b.hex().upper() == example["intermediate_block_B"]


MESSAGE_SAMPLES = [
    (section, txn["ksn"], name, value)
    for section, _, txn in TRANSACTIONS
    for name, value in txn["message_samples_aes128_keys"].items()
]


@pytest.mark.parametrize(("section", "ksn", "name", "expected"), MESSAGE_SAMPLES)
def test_message_samples(section: str, ksn: str, name: str, expected: str) -> None:
    """moov-io style samples: CMAC, HMAC-SHA256 (128-bit key, algorithm 0005), AES-CBC."""
    message = b"4012345678909D987"
    ik = initial_key(section)
    direction = name.rsplit("_", 1)[1]
    if name.startswith("cmac_"):
        usage = "mac_gen" if direction == "request" else "mac_verify"
        mac = cmac.CMAC(algorithms.AES(aes_working_key(ik, h(ksn), usage, "AES128")))
        mac.update(message)
        assert mac.finalize().hex().upper() == expected
    elif name.startswith("hmac_sha256_"):
        usage_code = "2000" if direction == "request" else "2001"
        # HMAC keys are not one of the API's key types: derive the one block by hand from
        # the derivation key (X9.24-3-2017 6.3.2: algorithm 0005, length 0080).
        data = h("0101" + usage_code + "0005" + "0080") + h(ksn)[4:12]
        key = aes_ecb(aes_derivation_key(ik, h(ksn)), data)
        digest = hmac.new(key, message, hashlib.sha256).digest()
        assert digest.hex().upper() == expected
    else:
        assert name.startswith("encrypted_data_")
        usage = "data_encrypt" if direction == "request" else "data_decrypt"
        key = aes_working_key(ik, h(ksn), usage, "AES128")
        padded = message + bytes(-len(message) % 16)
        cipher = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
        assert cipher.update(padded).hex().upper() == expected


@pytest.mark.parametrize("section", BDK_SECTIONS)
def test_transaction_key_at_counter_ffffffff(section: str) -> None:
    """Counter FFFFFFFF: the update keys' derivation key (all 32 bits walked).

    It has 32 one-bits, so aes_derivation_key refuses it as a transaction; the walk itself
    (without the KSN checks) gives the key the update keys below are derived from.
    """
    expected = VECTORS[section]["update_keys"]["transaction_key_at_counter_FFFFFFFF"]["value"]
    key = _aes_derive(initial_key(section), initial_key_id(section)[4:], AES_MAX_COUNTER)
    assert key.hex().upper() == expected
    with pytest.raises(KsnError):
        aes_derivation_key(initial_key(section), ksn_for(section, AES_MAX_COUNTER))


UPDATE_KEYS = [
    (section, key_type, entry["value"])
    for section in BDK_SECTIONS
    for key_type, entry in VECTORS[section]["update_keys"].items()
    if key_type in TYPES
]


@pytest.mark.parametrize(("section", "key_type", "expected"), UPDATE_KEYS)
def test_update_key(section: str, key_type: str, expected: str) -> None:
    key = aes_update_key(initial_key(section), initial_key_id(section), key_type)
    assert key.hex().upper() == expected


def test_every_update_key_entry_is_checked() -> None:
    for section in BDK_SECTIONS:
        names = set(VECTORS[section]["update_keys"])
        checked = {key_type for s, key_type, _ in UPDATE_KEYS if s == section}
        assert names - checked == {"transaction_key_at_counter_FFFFFFFF"}


# --- other key sizes ------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 24, 32])
def test_initial_key_has_bdk_length(size: int) -> None:
    bdk = bytes(range(size))
    ik = aes_initial_key(bdk, bytes(8))
    assert len(ik) == size
    # Independent check: derivation data blocks 01, 02 encrypted under the BDK.
    algorithm, bits = {16: ("0002", "0080"), 24: ("0003", "00C0"), 32: ("0004", "0100")}[size]
    blocks = [h(f"01{n:02X}8001{algorithm}{bits}") + bytes(8) for n in (1, 2)]
    assert ik == aes_ecb(bdk, b"".join(blocks))[:size]


@pytest.mark.parametrize("size", [24, 32])
def test_long_initial_keys_host_and_originator_agree(size: int) -> None:
    ik = aes_initial_key(bytes(range(size)), bytes(range(8)))
    originator = AesOriginator(ik, bytes(range(8)), next_counter=0x1234)
    for _ in range(40):
        txn = originator.next_transaction()
        allowed = ["2TDEA", "3TDEA", "AES128", "AES192"] + (["AES256"] if size == 32 else [])
        for key_type in allowed:
            assert txn.working_key("data_both", key_type) == aes_working_key(
                ik, txn.ksn, "data_both", key_type
            )
    assert len(aes_working_key(ik, txn.ksn, "kek", "AES256" if size == 32 else "AES192")) == size


# --- originator vs host -----------------------------------------------------------------

IK = initial_key(BDK_SECTIONS[0])
IKID = initial_key_id(BDK_SECTIONS[0])


def test_originator_and_host_agree_for_3000_consecutive_counters() -> None:
    originator = AesOriginator(IK, IKID)
    seen: set[bytes] = set()
    for counter in range(1, 3001):
        txn = originator.next_transaction()
        assert txn.counter == counter
        assert txn.ksn == IKID + counter.to_bytes(4, "big")
        assert txn.ksn not in seen
        seen.add(txn.ksn)
        assert txn.working_key("data_encrypt", "AES128") == aes_working_key(
            IK, txn.ksn, "data_encrypt", "AES128"
        )
    assert originator.next_counter == 3001


usable_counters = st.integers(1, AES_MAX_COUNTER).filter(lambda c: c.bit_count() <= 16)


@settings(max_examples=60)
@given(
    counter=usable_counters,
    usage=st.sampled_from(USAGES),
    key_type=st.sampled_from(AES128_TYPES),
)
def test_originator_started_anywhere_agrees_with_host(
    counter: int, usage: str, key_type: str
) -> None:
    originator = AesOriginator(IK, IKID, next_counter=counter)
    txn = originator.next_transaction()
    assert txn.counter == counter
    assert txn.working_key(usage, key_type) == aes_working_key(IK, txn.ksn, usage, key_type)
    # And the next one, which reuses part of the cached path.
    after = originator.next_transaction()
    assert after.counter > counter
    assert after.working_key(usage, key_type) == aes_working_key(IK, after.ksn, usage, key_type)


def brute_next_usable(counter: int) -> int:
    while counter.bit_count() > AES_MAX_ONE_BITS:
        counter += 1
    return counter


def test_skips_counters_with_more_than_16_one_bits() -> None:
    # 0x0000FFFF has 16 one-bits; 0x0001FFFF.. region is full of 17+ counters.
    start = 0x0000FFFE
    originator = AesOriginator(IK, IKID, next_counter=start)
    got = [originator.next_transaction().counter for _ in range(6)]
    expected: list[int] = []
    counter = start
    while len(expected) < 6:
        counter = brute_next_usable(counter)
        expected.append(counter)
        counter += 1
    assert got == expected
    assert all(c.bit_count() <= 16 for c in got)
    assert 0x0001FFFF not in got  # 17 one-bits
    assert got[:3] == [0xFFFE, 0xFFFF, 0x10000]


@settings(max_examples=200)
@given(st.integers(1, AES_MAX_COUNTER))
def test_next_counter_is_the_least_usable_at_or_after(counter: int) -> None:
    originator = AesOriginator(IK, IKID, next_counter=counter)
    first = originator.next_counter
    assert first >= counter
    if first <= AES_MAX_COUNTER:
        assert first.bit_count() <= 16
    # No usable counter was jumped over (counted by a different algorithm than the skip).
    assert _count_usable_below(first, 16) == _count_usable_below(counter, 16)
    if first > counter:
        assert counter.bit_count() > 16
        assert AesOriginator(IK, IKID, next_counter=first - 1).next_counter == first


@pytest.mark.parametrize("max_ones", [0, 1, 3, 8, 16])
def test_count_usable_below_matches_brute_force(max_ones: int) -> None:
    for limit in [*range(0, 300), 4095, 4096, 65_535, 65_536, 70_001]:
        brute = sum(1 for c in range(limit) if c.bit_count() <= max_ones)
        assert _count_usable_below(limit, max_ones) == brute


def test_keys_left() -> None:
    from math import comb

    total = sum(comb(32, k) for k in range(1, 17))
    originator = AesOriginator(IK, IKID)
    assert originator.keys_left == total == 2_448_023_842
    originator.next_transaction()
    assert originator.keys_left == total - 1


def test_small_window_keys_left_matches_brute_force() -> None:
    start = 0xFFFE_FF00
    brute = sum(1 for c in range(start, AES_MAX_COUNTER + 1) if c.bit_count() <= 16)
    # range is only 65,792 long
    assert AesOriginator(IK, IKID, next_counter=start).keys_left == brute


def test_exhaustion_at_the_top() -> None:
    # The last usable counter is FFFF0000 (16 one-bits).
    start = 0xFFFE_0000
    originator = AesOriginator(IK, IKID, next_counter=start)
    left = originator.keys_left
    counters = [originator.next_transaction().counter for _ in range(left)]
    with pytest.raises(KeyExhausted, match="last transaction counter"):
        originator.next_transaction()
    assert counters == [c for c in range(start, AES_MAX_COUNTER + 1) if c.bit_count() <= 16]
    assert counters[-1] == 0xFFFF_0000
    assert originator.keys_left == 0
    assert originator.next_counter == AES_MAX_COUNTER + 1
    with pytest.raises(KeyExhausted):
        originator.next_transaction()


@pytest.mark.parametrize("start", [0xFFFF_0001, 0xFFFF_FFF0, AES_MAX_COUNTER, AES_MAX_COUNTER + 1])
def test_exhausted_from_the_start(start: int) -> None:
    originator = AesOriginator(IK, IKID, next_counter=start)
    assert originator.keys_left == 0
    with pytest.raises(KeyExhausted):
        originator.next_transaction()


def test_restart_from_persisted_counter_never_repeats() -> None:
    first = AesOriginator(IK, IKID, next_counter=0x7FFE)
    ksns = [first.next_transaction().ksn for _ in range(5)]
    second = AesOriginator(IK, IKID, next_counter=first.next_counter)
    ksns += [second.next_transaction().ksn for _ in range(5)]
    assert len(set(ksns)) == 10
    counters = [int.from_bytes(k[8:], "big") for k in ksns]
    assert counters == sorted(counters)


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("counter", [0, 0x0001FFFF, 0xFFFFFFFF, 0xFFFF0001])
def test_unusable_counters_are_refused(counter: int) -> None:
    ksn = IKID + counter.to_bytes(4, "big")
    with pytest.raises(KsnError) as info:
        aes_working_key(IK, ksn, "pin", "AES128")
    assert isinstance(info.value, CodecError)
    assert info.value.field == "ksn transaction counter"
    assert info.value.offset == 8
    with pytest.raises(KsnError):
        aes_derivation_key(IK, ksn)


@pytest.mark.parametrize("length", [0, 8, 10, 11, 13, 16])
def test_wrong_ksn_length(length: int) -> None:
    with pytest.raises(KsnError, match="12 bytes") as info:
        aes_working_key(IK, bytes(range(1, length + 1)), "pin", "AES128")
    assert info.value.field == "ksn"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"usage": "pinn"}, "unknown AES DUKPT key usage"),
        ({"usage": "key_derivation"}, "unknown AES DUKPT key usage"),
        ({"key_type": "AES512"}, "unknown AES DUKPT key type"),
        ({"key_type": "AES256"}, "cannot be derived"),
        ({"key_type": "AES192"}, "cannot be derived"),
        ({"initial_key": bytes(15)}, "16, 24 or 32 bytes"),
        ({"initial_key": bytes(20)}, "16, 24 or 32 bytes"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "initial_key": IK,
        "ksn": IKID + b"\x00\x00\x00\x01",
        "usage": "pin",
        "key_type": "AES128",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message) as info:
        aes_working_key(**args)
    assert not isinstance(info.value, CodecError)


def test_bad_arguments_elsewhere() -> None:
    with pytest.raises(ValueError, match="Initial Key ID"):
        aes_initial_key(bytes(16), bytes(7))
    with pytest.raises(ValueError, match="BDK"):
        aes_initial_key(bytes(8), bytes(8))
    with pytest.raises(ValueError, match="next_counter"):
        AesOriginator(IK, IKID, next_counter=0)
    with pytest.raises(ValueError, match="next_counter"):
        AesOriginator(IK, IKID, next_counter=AES_MAX_COUNTER + 2)
    with pytest.raises(ValueError, match="Initial Key ID"):
        AesOriginator(IK, IKID[:7])
    txn = AesOriginator(IK, IKID).next_transaction()
    with pytest.raises(ValueError, match="cannot be derived"):
        txn.working_key("pin", "AES256")
    with pytest.raises(ValueError, match="unknown"):
        txn.working_key("verify", "AES128")
    with pytest.raises(ValueError, match="cannot be derived"):
        aes_update_key(IK, IKID, "AES256")


def test_error_messages_do_not_carry_keys_or_ksn() -> None:
    ksn = IKID + b"\xff\xff\xff\xff"
    with pytest.raises(KsnError) as info:
        aes_working_key(IK, ksn, "pin", "AES128")
    text = str(info.value) + repr(info.value)
    assert IK.hex() not in text.lower()
    assert ksn.hex() not in text.lower()


@settings(max_examples=300)
@given(st.binary(max_size=20))
def test_fuzz_ksn(ksn: bytes) -> None:
    """Any bytes as a KSN: a 16-byte key or a KsnError, nothing else."""
    try:
        key = aes_working_key(IK, ksn, "data_decrypt", "AES128")
    except KsnError:
        return
    assert len(ksn) == 12
    assert len(key) == 16


# --- reprs -----------------------------------------------------------------------------


def test_reprs_show_no_key_material() -> None:
    originator = AesOriginator(IK, IKID, next_counter=5)
    txn = originator.next_transaction()
    secrets = [IK, aes_derivation_key(IK, txn.ksn)]
    secrets += [txn.working_key(usage, "AES128") for usage in USAGES]
    for text in (repr(originator), repr(txn), str(originator), str(txn)):
        for secret in secrets:
            assert secret.hex() not in text.lower()
            assert repr(secret) not in text
    assert "123456789012345600000005" in repr(txn)
    assert "counter=5" in repr(txn)
    assert not hasattr(txn, "__dict__")
