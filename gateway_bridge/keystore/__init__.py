"""The bridge's key store: the interface and its two implementations (DESIGN section 5).

:class:`SoftwareKeyStore` keeps keys AES-GCM-encrypted at rest under a KEK;
:class:`~gateway_bridge.keystore.pkcs11.Pkcs11KeyStore` (imported from its module, since it
needs python-pkcs11) keeps them in a PKCS#11 token and derives AES DUKPT keys inside it.
docs/key-store.md describes both and their security boundaries.
"""

from gateway_bridge.keystore.base import (
    KeyAlgorithm,
    KeyBlockRefused,
    KeyInfo,
    KeyPurpose,
    KeyStore,
    KeyStoreError,
    KeyStoreLocked,
    UnknownKey,
)
from gateway_bridge.keystore.software import SoftwareKeyStore, read_kek_file

__all__ = [
    "KeyAlgorithm",
    "KeyBlockRefused",
    "KeyInfo",
    "KeyPurpose",
    "KeyStore",
    "KeyStoreError",
    "KeyStoreLocked",
    "SoftwareKeyStore",
    "UnknownKey",
    "read_kek_file",
]
