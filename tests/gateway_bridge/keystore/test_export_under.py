"""Export of an AES DUKPT initial key under a KBPK given by value (enrolment, issue 8).

Enrolment agrees a fresh AES KBPK with each terminal by ECDH; the key store wraps the
terminal's initial key (X9.24-3-2017 6.3.3) under it as a TR-31 / X9.143 version D block.
The expected key is computed with :mod:`paycore.dukpt` from the BDK the test imported by
components, so its value is known.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from pkcs11 import Attribute, ObjectClass

from gateway_bridge.keystore.base import KeyStoreError, UnknownKey
from paycore import dukpt, tr31
from tests.gateway_bridge.keystore.conftest import Kit
from tests.gateway_bridge.keystore.helpers import (
    DATA_BDK,
    IKID,
    KBPK,
    PIN_BDK,
    load,
    load_standard,
)

KBPKS = {
    16: bytes.fromhex("00112233445566778899AABBCCDDEEFF"),
    24: bytes.fromhex("8E73B0F7DA0E6452C810F32B809079E562F8EAD2522C6B7B"),
    32: bytes.fromhex("603DEB1015CA71BE2B73AEF0857D77811F352C073B6108D72D9810A30914DFF4"),
}


@pytest.mark.parametrize("size", sorted(KBPKS))
def test_block_unwraps_to_the_initial_key_with_its_kcv(kit: Kit, size: int) -> None:
    load_standard(kit.store)
    kbpk = KBPKS[size]
    block, kcv = kit.store.export_initial_key_tr31_under("data-bdk", IKID, kbpk)
    header, key = tr31.unwrap(kbpk, block)
    expected = dukpt.aes_initial_key(DATA_BDK, IKID)
    assert key == expected
    assert kcv == tr31.kcv_aes_cmac(expected)
    assert len(kcv) == 6
    assert (header.version_id, header.key_usage, header.algorithm, header.mode_of_use) == (
        "D",
        "B1",
        "A",
        "X",
    )
    assert header.exportability == "N"
    blocks = dict(header.optional_blocks)
    assert blocks["IK"] == IKID.hex().upper()
    assert blocks["KC"] == "01" + kcv
    # Only the given KBPK opens it: not the stored one, not a neighbour.
    for other in (KBPK, bytes(b ^ 1 for b in kbpk)):
        assert other != kbpk
        with pytest.raises(tr31.KeyBlockError):
            tr31.unwrap(other, block)


def test_pin_bdk_and_aes256_initial_key(kit: Kit) -> None:
    load_standard(kit.store)
    block, kcv = kit.store.export_initial_key_tr31_under("pin-bdk", IKID, KBPKS[32])
    _, key = tr31.unwrap(KBPKS[32], block)
    expected = dukpt.aes_initial_key(PIN_BDK, IKID)
    assert len(key) == 32 and key == expected
    assert kcv == tr31.kcv_aes_cmac(expected)


def test_same_key_as_the_export_under_the_stored_kbpk(kit: Kit) -> None:
    load_standard(kit.store)
    stored = kit.store.export_initial_key_tr31("data-bdk", IKID, "kbpk")
    given, kcv = kit.store.export_initial_key_tr31_under("data-bdk", IKID, KBPK)
    assert tr31.unwrap(KBPK, stored) == tr31.unwrap(KBPK, given)
    assert dict(tr31.unwrap(KBPK, stored)[0].optional_blocks)["KC"] == "01" + kcv
    # Fresh padding each time: same key, different blocks.
    again, kcv_again = kit.store.export_initial_key_tr31_under("data-bdk", IKID, KBPK)
    assert again != given and kcv_again == kcv


def test_both_stores_give_blocks_of_the_same_key(software_kit: Kit, pkcs11_kit: Kit) -> None:
    kbpk = secrets.token_bytes(32)
    results = []
    for kit in (software_kit, pkcs11_kit):
        load(kit.store, "data-bdk", "AES128", "data", DATA_BDK)
        results.append(kit.store.export_initial_key_tr31_under("data-bdk", IKID, kbpk))
    (soft_block, soft_kcv), (hsm_block, hsm_kcv) = results
    assert soft_kcv == hsm_kcv == tr31.kcv_aes_cmac(dukpt.aes_initial_key(DATA_BDK, IKID))
    assert tr31.unwrap(kbpk, soft_block) == tr31.unwrap(kbpk, hsm_block)
    assert soft_block[:16] == hsm_block[:16]  # same header fields and length


@pytest.mark.parametrize("size", [0, 1, 8, 15, 17, 23, 25, 31, 33, 48, 64])
def test_wrong_kbpk_length_is_refused_without_the_value(kit: Kit, size: int) -> None:
    load_standard(kit.store)
    kbpk = bytes(range(0xA0, 0xA0 + size)) if size <= 0x5F else secrets.token_bytes(size)
    with pytest.raises(KeyStoreError, match="16, 24 or 32-byte") as info:
        kit.store.export_initial_key_tr31_under("data-bdk", IKID, kbpk)
    text = str(info.value)
    if size:
        assert kbpk.hex() not in text.lower()
        assert repr(kbpk) not in text


def test_other_refusals(kit: Kit) -> None:
    load_standard(kit.store)
    bad_type: Any = KBPKS[16].hex()
    with pytest.raises(KeyStoreError, match="16, 24 or 32-byte") as info:
        kit.store.export_initial_key_tr31_under("data-bdk", IKID, bad_type)
    assert bad_type not in str(info.value).upper() and KBPKS[16].hex() not in str(info.value)
    with pytest.raises(UnknownKey):
        kit.store.export_initial_key_tr31_under("no-such-bdk", IKID, KBPKS[16])
    with pytest.raises(KeyStoreError, match="8 bytes"):
        kit.store.export_initial_key_tr31_under("data-bdk", IKID[:7], KBPKS[16])
    with pytest.raises(KeyStoreError, match="not a kbpk bdk"):
        kit.store.export_initial_key_tr31_under("kbpk", IKID, KBPKS[16])


# -- PKCS#11: the given KBPK lives in the token for one export only --------------------------


def _session_keys(kit: Kit) -> int:
    session = kit.store._session  # type: ignore[attr-defined]
    return len(
        list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.TOKEN: False}))
    )


def test_pkcs11_kbpk_is_a_locked_session_object_destroyed_after_use(
    pkcs11_kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: Any = pkcs11_kit.store
    load_standard(store)
    before = _session_keys(pkcs11_kit)
    seen: list[dict[str, Any]] = []
    original = store._export_initial

    def spy(*args: Any) -> tuple[str, str]:
        kbpk = args[3]
        seen.append(
            {
                "token": kbpk[Attribute.TOKEN],
                "sensitive": kbpk[Attribute.SENSITIVE],
                "extractable": kbpk[Attribute.EXTRACTABLE],
                "wrap": kbpk[Attribute.WRAP],
                "decrypt": kbpk[Attribute.DECRYPT],
            }
        )
        result: tuple[str, str] = original(*args)
        return result

    monkeypatch.setattr(store, "_export_initial", spy)
    block, _ = store.export_initial_key_tr31_under("data-bdk", IKID, KBPKS[32])
    assert tr31.unwrap(KBPKS[32], block)[1] == dukpt.aes_initial_key(DATA_BDK, IKID)
    assert seen == [
        {"token": False, "sensitive": True, "extractable": False, "wrap": False, "decrypt": False}
    ]
    assert _session_keys(pkcs11_kit) == before

    def failing(*args: Any) -> tuple[str, str]:
        raise KeyStoreError("simulated failure inside the export")

    monkeypatch.setattr(store, "_export_initial", failing)
    with pytest.raises(KeyStoreError, match="simulated"):
        store.export_initial_key_tr31_under("data-bdk", IKID, KBPKS[16])
    assert _session_keys(pkcs11_kit) == before


def test_pkcs11_kbpk_value_cannot_be_read_back(
    pkcs11_kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pkcs11.exceptions

    store: Any = pkcs11_kit.store
    load_standard(store)
    original = store._export_initial
    refused: list[bool] = []

    def spy(*args: Any) -> tuple[str, str]:
        try:
            args[3][Attribute.VALUE]
        except pkcs11.exceptions.PKCS11Error:
            refused.append(True)
        else:
            refused.append(False)
        result: tuple[str, str] = original(*args)
        return result

    monkeypatch.setattr(store, "_export_initial", spy)
    store.export_initial_key_tr31_under("data-bdk", IKID, KBPKS[24])
    assert refused == [True]
