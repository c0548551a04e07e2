"""PAN protection in the journal: AES-GCM bound to its row, HMAC-SHA256 lookup hash."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_bridge.journal.pan_crypto import (
    NONCE_SIZE,
    JournalKeys,
    PanDecryptError,
    decrypt_pan,
    encrypt_pan,
    pan_hash,
)
from paycore.pan import Pan
from tests.gateway_bridge.journal.conftest import KEYS, OTHER_KEYS
from tests.gateway_bridge.journal.test_journal import OTHER_PAN, PAN


def fixed(size: int) -> bytes:
    return b"\x07" * size


def test_round_trip_and_layout() -> None:
    blob = encrypt_pan(KEYS, PAN, "T1", "k1", fixed)
    assert blob[:NONCE_SIZE] == b"\x07" * NONCE_SIZE
    assert len(blob) == NONCE_SIZE + len(PAN.digits) + 16  # ciphertext + GCM tag
    assert PAN.digits.encode() not in blob
    assert decrypt_pan(KEYS, blob, "T1", "k1") == PAN


def test_randomness_is_a_parameter() -> None:
    assert encrypt_pan(KEYS, PAN, "T1", "k1", fixed) == encrypt_pan(KEYS, PAN, "T1", "k1", fixed)
    other = encrypt_pan(KEYS, PAN, "T1", "k1", lambda n: b"\x08" * n)
    assert other != encrypt_pan(KEYS, PAN, "T1", "k1", fixed)
    with pytest.raises(ValueError, match="wrong number"):
        encrypt_pan(KEYS, PAN, "T1", "k1", lambda n: b"\x00")


@pytest.mark.parametrize(
    ("keys", "terminal", "key"),
    [(OTHER_KEYS, "T1", "k1"), (KEYS, "T2", "k1"), (KEYS, "T1", "k2")],
)
def test_ciphertext_is_bound_to_key_and_row(keys: JournalKeys, terminal: str, key: str) -> None:
    blob = encrypt_pan(KEYS, PAN, "T1", "k1", fixed)
    with pytest.raises(PanDecryptError):
        decrypt_pan(keys, blob, terminal, key)


def test_tampering_is_detected() -> None:
    blob = bytearray(encrypt_pan(KEYS, PAN, "T1", "k1", fixed))
    blob[NONCE_SIZE + 2] ^= 1
    with pytest.raises(PanDecryptError):
        decrypt_pan(KEYS, bytes(blob), "T1", "k1")


@settings(max_examples=200)
@given(st.binary(max_size=80))
def test_decrypt_fuzz_only_raises_its_own_error(blob: bytes) -> None:
    with pytest.raises(PanDecryptError):
        decrypt_pan(KEYS, blob, "T1", "k1")


def test_lookup_hash_is_keyed_and_deterministic() -> None:
    assert pan_hash(KEYS, PAN) == pan_hash(KEYS, Pan(PAN.digits))
    assert len(pan_hash(KEYS, PAN)) == 32
    assert pan_hash(KEYS, PAN) != pan_hash(KEYS, OTHER_PAN)
    assert pan_hash(KEYS, PAN) != pan_hash(OTHER_KEYS, PAN)


def test_key_checks_and_repr() -> None:
    with pytest.raises(ValueError, match="AES key"):
        JournalKeys(b"short", bytes(32))
    with pytest.raises(ValueError, match="at least 32"):
        JournalKeys(bytes(32), bytes(16))
    with pytest.raises(ValueError, match="different"):
        JournalKeys(bytes(range(32)), bytes(range(32)))
    assert bytes(range(32)).hex() not in repr(KEYS)
    assert "pan_key" not in repr(KEYS)
