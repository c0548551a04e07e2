"""AesHostKeys: the host's cached derivation must give exactly aes_working_key's keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paycore.dukpt import AES_MAX_ONE_BITS, AesHostKeys, KsnError, aes_initial_key, aes_working_key
from tests.vectors import load

VECTORS = load("dukpt_aes_x9_24_3")["aes128_bdk"]
IKID = bytes.fromhex(VECTORS["initial_key_id"])
INITIAL = bytes.fromhex(VECTORS["initial_key"]["value"])


def _ksn(counter: int) -> bytes:
    return IKID + counter.to_bytes(4, "big")


def test_published_working_keys_through_the_cache() -> None:
    host = AesHostKeys(INITIAL, IKID)
    for tx in VECTORS["first_eight_transactions"]:
        ksn = bytes.fromhex(tx["ksn"])
        expected = tx["working_keys"]["data_encrypt_AES128"]
        assert host.working_key(ksn, "data_encrypt", "AES128").hex().upper() == expected


def test_sequential_counters_agree_with_the_uncached_derivation() -> None:
    host = AesHostKeys(INITIAL, IKID)
    for counter in range(0x1F0, 0x1F0 + 600):
        if bin(counter).count("1") > AES_MAX_ONE_BITS:
            continue
        ksn = _ksn(counter)
        assert host.working_key(ksn, "pin", "AES128") == aes_working_key(
            INITIAL, ksn, "pin", "AES128"
        )


@given(st.lists(st.integers(1, 0xFFFF0000), min_size=1, max_size=20))
def test_any_order_of_counters_agrees(counters: list[int]) -> None:
    host = AesHostKeys(INITIAL, IKID)
    for counter in counters:
        if bin(counter).count("1") > AES_MAX_ONE_BITS:
            with pytest.raises(KsnError):
                host.working_key(_ksn(counter), "data_decrypt", "AES128")
            continue
        expected = aes_working_key(INITIAL, _ksn(counter), "data_decrypt", "AES128")
        assert host.working_key(_ksn(counter), "data_decrypt", "AES128") == expected


def test_ksn_of_another_initial_key_is_refused() -> None:
    host = AesHostKeys(INITIAL, IKID)
    other = bytes.fromhex("1234567890123457") + (1).to_bytes(4, "big")
    with pytest.raises(KsnError):
        host.working_key(other, "pin", "AES128")


def test_aes256_initial_key_agrees() -> None:
    initial = aes_initial_key(bytes(range(32)), IKID)
    host = AesHostKeys(initial, IKID)
    for counter in (1, 2, 3, 0x80, 0xFFFF0000):
        ksn = _ksn(counter)
        assert host.working_key(ksn, "data_encrypt", "AES256") == aes_working_key(
            initial, ksn, "data_encrypt", "AES256"
        )


def test_repr_shows_no_key_material() -> None:
    host = AesHostKeys(INITIAL, IKID)
    host.working_key(_ksn(5), "pin", "AES128")
    assert INITIAL.hex() not in repr(host).lower()
    assert VECTORS["initial_key"]["value"] not in repr(host)
