"""Known keys and builders shared by the key store tests."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from gateway_bridge.keystore.base import KeyAlgorithm, KeyInfo, KeyPurpose, KeyStore
from paycore import dukpt, pinblock, tr31
from paycore.wire import EncryptedPinBlock, Envelope, ReversalRequest, ReversalResponse, seal

# ANSI X9.24-3-2017 supplement test BDK and Initial Key ID (tests/vectors/dukpt_aes_x9_24_3).
DATA_BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
PIN_BDK = bytes.fromhex("0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF")
TDES_PIN_BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # X9.24-1 test BDK
KBPK = bytes.fromhex("88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6")
ZONE_AES = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
ZONE_TDES = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")[::-1]
IKID = bytes.fromhex("1234567890123456")
PAN = "4012345678909"
NOW = 1_700_000_000_000
ALL_KEYS = (DATA_BDK, PIN_BDK, TDES_PIN_BDK, KBPK, ZONE_AES, ZONE_TDES)


def components(key: bytes, algorithm: str, count: int = 2) -> list[tuple[bytes, str]]:
    parts = [secrets.token_bytes(len(key)) for _ in range(count - 1)]
    last = bytearray(key)
    for part in parts:
        for index, byte in enumerate(part):
            last[index] ^= byte
    kind = "TDES" if algorithm == "TDES2" else "AES"
    return [(part, tr31.kcv(part, kind)) for part in [*parts, bytes(last)]]


def load(
    store: KeyStore, key_id: str, algorithm: KeyAlgorithm, purpose: KeyPurpose, key: bytes
) -> KeyInfo:
    return store.import_components(key_id, algorithm, purpose, components(key, algorithm))


def load_standard(store: KeyStore) -> None:
    """The data BDK, the AES PIN BDK and the KBPK, from components."""
    load(store, "data-bdk", "AES128", "data", DATA_BDK)
    load(store, "pin-bdk", "AES256", "pin", PIN_BDK)
    load(store, "kbpk", "AES256", "kbpk", KBPK)


def ksn(counter: int) -> bytes:
    return IKID + counter.to_bytes(4, "big")


def request_envelope(counter: int, bdk: bytes = DATA_BDK, alg: str = "A128GCM") -> Envelope:
    """A reversal request sealed as a terminal does, with paycore's own key derivation."""
    key_type = "AES128" if alg == "A128GCM" else "AES256"
    key = dukpt.aes_working_key(
        dukpt.aes_initial_key(bdk, IKID), ksn(counter), "data_encrypt", key_type
    )
    body = ReversalRequest(
        original_message_id="0" * 31 + "1",
        idempotency_key="sale-1",
        reason="host_timeout",
        amount=1250,
        currency="EUR",
    )
    return seal(
        body,
        key=key,
        terminal_id="T0001",
        ksn=ksn(counter),
        message_id=f"{counter:032x}",
        sent_at=NOW,
        ttl_ms=60_000,
    )


def response_body() -> ReversalResponse:
    return ReversalResponse(original_message_id="0" * 31 + "1", outcome="reversed")


def format4_block(pin: str, counter: int = 7, pan: str = PAN) -> EncryptedPinBlock:
    initial = dukpt.aes_initial_key(PIN_BDK, IKID)
    block = pinblock.encipher_format4_dukpt(
        initial, ksn(counter), pin, pan, random=secrets.token_bytes
    )
    return EncryptedPinBlock(format=4, ksn=ksn(counter).hex().upper(), block=block.hex().upper())


TDES_KSN = bytes.fromhex("FFFF9876543210E00003")


def format0_block(pin: str, pan: str = PAN) -> EncryptedPinBlock:
    ipek = dukpt.tdes_ipek(TDES_PIN_BDK, TDES_KSN)
    block = pinblock.encipher_format0_tdes_dukpt(ipek, TDES_KSN, pin, pan)
    return EncryptedPinBlock(format=0, ksn=TDES_KSN.hex().upper(), block=block.hex().upper())


def tr31_block(key: bytes, usage: str, algorithm: str = "A", mode: str = "X") -> str:
    header = tr31.KeyBlockHeader(
        version_id="D", key_usage=usage, algorithm=algorithm, mode_of_use=mode
    )
    return tr31.wrap(KBPK, header, key, random=None)


def created(info: KeyInfo) -> datetime:
    return info.created_at.astimezone(UTC)
