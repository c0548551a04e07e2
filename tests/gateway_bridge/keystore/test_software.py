"""What only the software store has: the file, its mode, the KEK, atomic writes."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest

from gateway_bridge.keystore.base import KeyStoreLocked
from gateway_bridge.keystore.software import SoftwareKeyStore, read_kek_file
from tests.gateway_bridge.keystore.conftest import Kit
from tests.gateway_bridge.keystore.helpers import ALL_KEYS, DATA_BDK, load_standard


def _store(software_kit: Kit) -> tuple[Path, bytes]:
    assert software_kit.path is not None and software_kit.kek is not None
    return software_kit.path, software_kit.kek


def test_reopen_with_the_kek_gives_the_same_keys(software_kit: Kit) -> None:
    path, kek = _store(software_kit)
    load_standard(software_kit.store)
    assert path.stat().st_mode & 0o777 == 0o600
    again = SoftwareKeyStore(path, kek)
    assert again.list_keys() == software_kit.store.list_keys()
    raw = path.read_text()
    for key in ALL_KEYS:
        assert key.hex() not in raw.lower()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_wrong_kek_is_refused(software_kit: Kit) -> None:
    path, _ = _store(software_kit)
    load_standard(software_kit.store)
    with pytest.raises(KeyStoreLocked, match="wrong KEK"):
        SoftwareKeyStore(path, secrets.token_bytes(32))


def test_wrong_kek_is_refused_on_an_empty_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    store = SoftwareKeyStore(path, bytes(32), create=True)
    store.create_bdk("one", "AES128", "data")
    with pytest.raises(KeyStoreLocked, match="wrong KEK"):
        SoftwareKeyStore(path, bytes(31) + b"\x01")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_store_file_mode_must_be_private(software_kit: Kit, mode: int) -> None:
    path, kek = _store(software_kit)
    load_standard(software_kit.store)
    path.chmod(mode)
    with pytest.raises(KeyStoreLocked) as caught:
        SoftwareKeyStore(path, kek)
    assert str(path) in str(caught.value)
    assert f"chmod 600 {path}" in str(caught.value)
    path.chmod(0o400)
    assert SoftwareKeyStore(path, kek).list_keys()


def test_kek_file_mode_and_content(tmp_path: Path) -> None:
    kek_file = tmp_path / "kek.hex"
    kek_file.write_text(DATA_BDK.hex() * 2 + "\n")
    kek_file.chmod(0o644)
    with pytest.raises(KeyStoreLocked, match="chmod 600"):
        read_kek_file(kek_file)
    kek_file.chmod(0o600)
    assert read_kek_file(kek_file) == DATA_BDK * 2
    kek_file.write_text("not hex")
    with pytest.raises(KeyStoreLocked, match="hex"):
        read_kek_file(kek_file)
    with pytest.raises(KeyStoreLocked, match="cannot open"):
        read_kek_file(tmp_path / "missing")


def test_missing_store_without_create(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreLocked, match="no key store"):
        SoftwareKeyStore(tmp_path / "nothing.json", bytes(32))


def test_an_edited_entry_is_refused(software_kit: Kit) -> None:
    path, kek = _store(software_kit)
    load_standard(software_kit.store)
    document = json.loads(path.read_text())
    document["keys"][0]["purpose"] = "kbpk"  # repurpose the data BDK
    path.write_text(json.dumps(document))
    os.chmod(path, 0o600)
    with pytest.raises(KeyStoreLocked, match="does not decrypt"):
        SoftwareKeyStore(path, kek)


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.json"
    path.write_bytes(b"\x00\xff not json")
    path.chmod(0o600)
    with pytest.raises(KeyStoreLocked, match="not a readable key store"):
        SoftwareKeyStore(path, bytes(32))


def test_lru_cache_is_bounded(tmp_path: Path) -> None:
    from paycore.wire import open_envelope
    from tests.gateway_bridge.keystore.helpers import NOW, request_envelope

    store = SoftwareKeyStore(tmp_path / "k.json", bytes(32), create=True, cache_size=2)
    load_standard(store)
    envelope = request_envelope(1)
    for ikid in ("1111111111111111", "2222222222222222", "3333333333333333"):
        other = envelope.model_copy(update={"ksn": ikid + "00000001"})
        store.envelope_aead("data-bdk", other)
    assert len(store._hosts) == 2
    assert open_envelope(envelope, key=store.envelope_aead("data-bdk", envelope), now=NOW)
