"""The key store interface: every use of a BDK goes through it (DESIGN section 5).

Two implementations: :mod:`gateway_bridge.keystore.software` (BDKs encrypted at rest under
a key-encryption key) and :mod:`gateway_bridge.keystore.pkcs11` (BDKs inside a PKCS#11
token, AES DUKPT keys derived inside it). Callers never see a BDK or a derived key: they
get an :class:`~paycore.wire.Aead` for an envelope, and PIN blocks are verified or
translated by the store.

Exception tree::

    KeyStoreError
    ├── UnknownKey          no key with that id
    ├── KeyStoreLocked      the store cannot be opened (wrong KEK, token PIN, file mode)
    └── KeyBlockRefused     an imported TR-31 block or component set is refused
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from paycore.wire import Aead, EncryptedPinBlock, EnvelopeHeader

KeyAlgorithm = Literal["AES128", "AES192", "AES256", "TDES2"]
KeyPurpose = Literal["data", "pin", "kbpk"]


class KeyStoreError(Exception):
    """Base of the key store's errors. Messages carry key ids and KCVs, never keys."""


class UnknownKey(KeyStoreError):
    pass


class KeyStoreLocked(KeyStoreError):
    pass


class KeyBlockRefused(KeyStoreError):
    pass


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What may be shown about a key: never its value."""

    key_id: str
    algorithm: KeyAlgorithm
    purpose: KeyPurpose
    kcv: str
    created_at: datetime


class KeyStore(Protocol):
    """What the bridge needs from a key store."""

    # -- administration (gateway-bridge keys) ------------------------------------------
    def create_bdk(self, key_id: str, algorithm: KeyAlgorithm, purpose: KeyPurpose) -> KeyInfo: ...

    def list_keys(self) -> list[KeyInfo]: ...

    def import_tr31(
        self, key_id: str, purpose: KeyPurpose, kbpk_id: str, key_block: str
    ) -> KeyInfo:
        """Import a key from a TR-31 block wrapped under the stored KBPK ``kbpk_id``."""
        ...

    def import_components(
        self,
        key_id: str,
        algorithm: KeyAlgorithm,
        purpose: KeyPurpose,
        components: list[tuple[bytes, str]],
    ) -> KeyInfo:
        """Import a key as the XOR of 2 or 3 (component, KCV) pairs; each KCV is checked."""
        ...

    def export_initial_key_tr31(self, bdk_id: str, initial_key_id: bytes, kbpk_id: str) -> str:
        """A device's AES DUKPT initial key as a TR-31 block (version D, usage B1)."""
        ...

    def export_initial_key_tr31_under(
        self, bdk_id: str, initial_key_id: bytes, kbpk: bytes
    ) -> tuple[str, str]:
        """As export_initial_key_tr31, wrapped under ``kbpk`` (16/24/32-byte AES key given by
        value, used once); returns (TR-31 block, the initial key's KCV).

        Enrolment agrees ``kbpk`` by ECDH with the terminal; the store does not keep it.
        A ``kbpk`` of another length raises :class:`KeyStoreError` (the message never
        holds the value)."""
        ...

    # -- the hot path ------------------------------------------------------------------
    def envelope_aead(self, bdk_id: str, header: EnvelopeHeader) -> Aead:
        """The AES-GCM key that opens or seals ``header``'s envelope (its KSN and usage)."""
        ...

    def verify_pin(
        self,
        bdk_id: str,
        pin_block: EncryptedPinBlock,
        pan: str,
        check: Callable[[bytearray], bool],
    ) -> bool:
        """Decrypt the PIN block inside the store and give the clear PIN to ``check`` only.

        The clear PIN (ASCII digits in a bytearray) exists only for the duration of
        ``check`` and is overwritten with zeros when it returns (see docs/key-store.md).
        """
        ...

    def translate_pin_block(
        self,
        bdk_id: str,
        pin_block: EncryptedPinBlock,
        pan: str,
        zone_key_id: str,
        zone_format: Literal[0, 4],
    ) -> bytes:
        """Re-encipher the PIN block under the acquirer zone PIN key ``zone_key_id``."""
        ...
