"""How the journal keeps a PAN: encrypted, keyed-hashed and masked (DESIGN section 6).

- ``pan_encrypted`` = nonce (12 bytes) || AES-GCM(pan_key, nonce, PAN digits, AAD), with
  the AAD binding the ciphertext to its row (terminal id and idempotency key), so a
  ciphertext moved to another row does not decrypt (NIST SP 800-38D).
- ``pan_hash`` = HMAC-SHA256(pan_hash_key, "pos-journal/pan-lookup/v1|" || digits)
  (RFC 2104): equal PANs give equal hashes, for lookups, without a table of all PANs
  being reversible by brute force without the key.
- ``masked_pan``: first six, last four (:func:`paycore.pan.mask_pan`).

The two keys are separate and the caller passes both in (from its key store or
configuration); the journal never generates or stores them. Randomness (the nonce) is a
parameter.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway_bridge.journal.base import JournalError
from paycore.pan import Pan

NONCE_SIZE = 12
_HASH_LABEL = b"pos-journal/pan-lookup/v1|"
_AAD_LABEL = b"pos-journal/pan/v1|"


class PanDecryptError(JournalError):
    """A stored PAN could not be decrypted (wrong key, tampered or moved ciphertext)."""


@dataclass(frozen=True, slots=True)
class JournalKeys:
    """The journal's data keys. ``repr`` never shows them.

    ``pan_key`` is an AES key (16, 24 or 32 bytes) for AES-GCM; ``pan_hash_key`` an
    HMAC-SHA256 key of at least 32 bytes, different from ``pan_key``. ``key_id`` is
    stored beside each ciphertext, for rotation.
    """

    pan_key: bytes = field(repr=False)
    pan_hash_key: bytes = field(repr=False)
    key_id: str = "1"

    def __post_init__(self) -> None:
        if len(self.pan_key) not in (16, 24, 32):
            raise ValueError("pan_key must be an AES key of 16, 24 or 32 bytes")
        if len(self.pan_hash_key) < 32:
            raise ValueError("pan_hash_key must be at least 32 bytes")
        if hmac.compare_digest(self.pan_key, self.pan_hash_key[: len(self.pan_key)]):
            raise ValueError("pan_key and pan_hash_key must be different keys")
        if not self.key_id:
            raise ValueError("key_id must not be empty")


def _aad(terminal_id: str, idempotency_key: str) -> bytes:
    return _AAD_LABEL + terminal_id.encode() + b"|" + idempotency_key.encode()


def encrypt_pan(
    keys: JournalKeys,
    pan: Pan,
    terminal_id: str,
    idempotency_key: str,
    random: Callable[[int], bytes],
) -> bytes:
    """nonce || AES-GCM ciphertext and tag of the PAN digits, bound to its row."""
    nonce = random(NONCE_SIZE)
    if len(nonce) != NONCE_SIZE:
        raise ValueError("random source returned the wrong number of bytes")
    sealed = AESGCM(keys.pan_key).encrypt(
        nonce, pan.digits.encode("ascii"), _aad(terminal_id, idempotency_key)
    )
    return nonce + sealed


def decrypt_pan(keys: JournalKeys, blob: bytes, terminal_id: str, idempotency_key: str) -> Pan:
    """The PAN sealed by :func:`encrypt_pan`; :class:`PanDecryptError` if it does not open."""
    nonce, sealed = blob[:NONCE_SIZE], blob[NONCE_SIZE:]
    try:
        clear = AESGCM(keys.pan_key).decrypt(nonce, sealed, _aad(terminal_id, idempotency_key))
    except (InvalidTag, ValueError):
        raise PanDecryptError("stored PAN does not decrypt under this key") from None
    return Pan(clear.decode("ascii"))


def pan_hash(keys: JournalKeys, pan: Pan) -> bytes:
    """HMAC-SHA256 of the PAN digits under the lookup key (32 bytes)."""
    message = _HASH_LABEL + pan.digits.encode("ascii")
    return hmac.new(keys.pan_hash_key, message, hashlib.sha256).digest()
