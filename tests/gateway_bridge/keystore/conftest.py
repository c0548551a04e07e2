"""Fixtures for the key store tests: a private SoftHSM2 token and both stores.

The SoftHSM2 token lives in a temporary directory named by a private ``SOFTHSM2_CONF``
(set before the PKCS#11 library is first loaded: SoftHSM2 reads it at ``C_Initialize``).
It is initialised once per session with ``softhsm2-util --init-token --free --label``
and selected by label; each test's PKCS#11 store is wiped of token objects afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from gateway_bridge.keystore.base import KeyStore
from gateway_bridge.keystore.software import SoftwareKeyStore
from tests.gateway_bridge.conftest import SoftHsm

__all__ = ["SoftHsm", "wipe_token"]


def wipe_token(hsm: SoftHsm) -> None:
    """Destroy every object in the test token (test isolation)."""
    import pkcs11

    token = pkcs11.lib(str(hsm.module)).get_token(token_label=hsm.label)
    with token.open(rw=True, user_pin=hsm.pin) as session:
        for obj in list(session.get_objects()):
            obj.destroy()


@dataclass
class Kit:
    """A store under test and what the tests need to know about it."""

    kind: Literal["software", "pkcs11"]
    store: KeyStore
    path: Path | None = None
    kek: bytes | None = None


@pytest.fixture
def software_kit(tmp_path: Path) -> Kit:
    kek = secrets.token_bytes(32)
    path = tmp_path / "keys.json"
    return Kit("software", SoftwareKeyStore(path, kek, create=True), path=path, kek=kek)


@pytest.fixture
def pkcs11_kit(softhsm: SoftHsm) -> Iterator[Kit]:
    from gateway_bridge.keystore.pkcs11 import Pkcs11KeyStore

    store = Pkcs11KeyStore(softhsm.module, softhsm.label, softhsm.pin)
    try:
        yield Kit("pkcs11", store)
    finally:
        store.close()
        wipe_token(softhsm)


@pytest.fixture(params=["software", "pkcs11"])
def kit(request: pytest.FixtureRequest) -> Kit:
    name = "software_kit" if request.param == "software" else "pkcs11_kit"
    result = request.getfixturevalue(name)
    assert isinstance(result, Kit)
    return result
