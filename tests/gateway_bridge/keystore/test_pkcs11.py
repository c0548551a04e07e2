"""What only the PKCS#11 store has: derived keys stay in the token, tokens by label, PINs."""

from __future__ import annotations

from typing import Any

import pkcs11
import pytest
from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import AttributeSensitive

from gateway_bridge.keystore.base import KeyStoreLocked
from gateway_bridge.keystore.pkcs11 import Pkcs11KeyStore, TokenKey, dukpt_data
from paycore import dukpt
from paycore.wire import open_envelope
from tests.gateway_bridge.keystore.conftest import Kit, SoftHsm
from tests.gateway_bridge.keystore.helpers import (
    DATA_BDK,
    IKID,
    NOW,
    PAN,
    ZONE_AES,
    format4_block,
    load_standard,
    request_envelope,
    tr31_block,
)


def _assert_unreadable(key: TokenKey) -> None:
    assert key[Attribute.SENSITIVE] is True
    assert key[Attribute.EXTRACTABLE] is False
    with pytest.raises(AttributeSensitive):
        key[Attribute.VALUE]


def test_every_derived_key_is_unreadable(pkcs11_kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    store = pkcs11_kit.store
    assert isinstance(store, Pkcs11KeyStore)
    derived: list[TokenKey] = []
    original = Pkcs11KeyStore._derive

    def spy(self: Pkcs11KeyStore, parent: TokenKey, data: bytes, size: int, uses: Any) -> TokenKey:
        key = original(self, parent, data, size, uses)
        assert key[Attribute.TOKEN] is False
        _assert_unreadable(key)
        derived.append(key)
        return key

    monkeypatch.setattr(Pkcs11KeyStore, "_derive", spy)
    load_standard(store)
    for counter in (1, 2, 0x8000, 0xFFFF0000):
        envelope = request_envelope(counter)
        assert open_envelope(envelope, key=store.envelope_aead("data-bdk", envelope), now=NOW)
    assert store.verify_pin("pin-bdk", format4_block("1234"), PAN, lambda p: bytes(p) == b"1234")
    store.import_tr31("zpk", "pin", "kbpk", tr31_block(ZONE_AES, "P0", mode="E"))
    store.translate_pin_block("pin-bdk", format4_block("1234"), PAN, "zpk", 4)
    store.export_initial_key_tr31("data-bdk", IKID, "kbpk")
    # initial keys, 16 walk steps, working keys, PIN keys, KBEK/KBAK pairs
    assert len(derived) >= 30
    # Stored keys are unreadable too.
    for info in store.list_keys():
        key, _, _ = store._keys[info.key_id]
        _assert_unreadable(key)
        assert key[Attribute.TOKEN] is True


def test_the_export_path_is_the_only_readable_derivation(pkcs11_kit: Kit) -> None:
    """Export reads the initial key once and destroys its session object."""
    store = pkcs11_kit.store
    assert isinstance(store, Pkcs11KeyStore)
    load_standard(store)
    bdk, _, _ = store._keys["data-bdk"]
    before = _session_key_count(store)
    value = store._derive_for_export(bdk, dukpt_data("initial", "AES128", IKID), 16)
    assert value == dukpt.aes_initial_key(DATA_BDK, IKID)
    assert _session_key_count(store) == before


def _session_key_count(store: Pkcs11KeyStore) -> int:
    objects = store._session.get_objects(
        {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.TOKEN: False}
    )
    return len(list(objects))


def test_working_keys_do_not_pile_up_in_the_session(pkcs11_kit: Kit) -> None:
    store = pkcs11_kit.store
    assert isinstance(store, Pkcs11KeyStore)
    load_standard(store)
    for counter in range(1, 40):
        envelope = request_envelope(counter)
        open_envelope(envelope, key=store.envelope_aead("data-bdk", envelope), now=NOW)
    # one initial key plus at most 16 path keys for the one terminal
    assert _session_key_count(store) <= 17


def test_wrong_pin_and_unknown_label_are_locked(softhsm: SoftHsm) -> None:
    with pytest.raises(KeyStoreLocked, match="refused"):
        Pkcs11KeyStore(softhsm.module, softhsm.label, "000000")
    with pytest.raises(KeyStoreLocked, match="labelled"):
        Pkcs11KeyStore(softhsm.module, "no-such-token", softhsm.pin)
    with pytest.raises(KeyStoreLocked, match="cannot load"):
        Pkcs11KeyStore("/nonexistent/libnothing.so", softhsm.label, softhsm.pin)


def test_keys_survive_a_new_session(pkcs11_kit: Kit, softhsm: SoftHsm) -> None:
    load_standard(pkcs11_kit.store)
    with Pkcs11KeyStore(softhsm.module, softhsm.label, softhsm.pin) as other:
        assert other.list_keys() == pkcs11_kit.store.list_keys()
        envelope = request_envelope(11)
        assert open_envelope(envelope, key=other.envelope_aead("data-bdk", envelope), now=NOW)


def test_module_is_the_same_library_object() -> None:
    # The fixture and the stores share one loaded module (SoftHSM2 initialises once).
    assert pkcs11.lib is not None
