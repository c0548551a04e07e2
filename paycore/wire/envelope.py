"""The encrypted envelope (DESIGN section 4, docs/mqtt-protocol.md).

Every request and response crosses the broker as one JSON object::

    {"version": 1, "kind": "auth_request", "terminal_id": "T0001",
     "message_id": "<32 hex>", "correlation_id": null, "ksn": "<24 hex>",
     "alg": "A128GCM", "sent_at": <ms>, "expires_at": <ms>, "nonce": "<b64>",
     "ciphertext": "<b64>"}

``ciphertext`` is AES-GCM (NIST SP 800-38D, 96-bit nonce, 128-bit tag) of the body's JSON
under the AES DUKPT working key (ANSI X9.24-3-2017) of the envelope's KSN: usage
``data_encrypt`` for what the terminal sends, ``data_decrypt`` for what it receives. The
associated data is the canonical JSON of every header field (sorted keys, no spaces), so
no header field can be changed, and no ciphertext moved under another header, without the
tag failing. Correlation, expiry and reply routing live here, not in MQTT 5 properties,
so the protocol runs the same on an MQTT 3.1.1 broker.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Callable
from typing import Annotated, Literal, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import AfterValidator, Field, ValidationError

from paycore.dukpt import AesHostKeys, aes_working_key
from paycore.errors import EnvelopeError
from paycore.wire.messages import (
    BODY_MODELS,
    KIND_OF,
    REQUEST_KINDS,
    REVEAL,
    Body,
    Kind,
    Message,
    MessageError,
    MessageId,
    TerminalId,
)

VERSION: Literal[1] = 1
NONCE_BYTES = 12
#: Largest payload the decoder looks at; a real request is about 1.5 KiB.
MAX_PAYLOAD_BYTES = 64 * 1024

Alg = Literal["A128GCM", "A256GCM"]
_KEY_TYPE: dict[str, Literal["AES128", "AES256"]] = {"A128GCM": "AES128", "A256GCM": "AES256"}


class Aead(Protocol):
    """An AES-GCM key that may live elsewhere (an HSM): cryptography's ``AESGCM`` shape.

    ``decrypt`` raises :class:`cryptography.exceptions.InvalidTag` or
    :class:`~paycore.errors.EnvelopeError` when authentication fails.
    """

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


def _aead(key: bytes | Aead) -> Aead:
    if isinstance(key, bytes):
        if len(key) not in (16, 32):
            raise ValueError("envelope keys are AES-128 or AES-256")
        return AESGCM(key)
    return key


class EnvelopeExpired(EnvelopeError):
    """An authentic envelope whose ``expires_at`` has passed (or that comes from the future)."""


def _b64(max_bytes: int, exact: int | None = None) -> AfterValidator:
    def check(value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("expected standard base64") from None
        if len(raw) > max_bytes or (exact is not None and len(raw) != exact):
            raise ValueError("decoded length out of range")
        return value

    return AfterValidator(check)


class EnvelopeHeader(Message):
    """Everything the envelope authenticates but does not hide."""

    version: Literal[1]
    kind: Kind
    terminal_id: TerminalId
    message_id: MessageId
    correlation_id: MessageId | None
    ksn: Annotated[str, Field(pattern=r"^[0-9A-F]{24}$")]
    alg: Alg
    sent_at: Annotated[int, Field(ge=0)]
    expires_at: Annotated[int, Field(ge=0)]
    nonce: Annotated[str, _b64(NONCE_BYTES, exact=NONCE_BYTES)]

    def associated_data(self) -> bytes:
        """The canonical header bytes AES-GCM authenticates."""
        fields = self.model_dump(mode="json", include=set(EnvelopeHeader.model_fields))
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    @property
    def ksn_bytes(self) -> bytes:
        return bytes.fromhex(self.ksn)

    @property
    def usage(self) -> Literal["data_encrypt", "data_decrypt"]:
        """The DUKPT key usage this envelope is sealed under."""
        return "data_encrypt" if self.kind in REQUEST_KINDS else "data_decrypt"

    @property
    def key_type(self) -> Literal["AES128", "AES256"]:
        return _KEY_TYPE[self.alg]


class Envelope(EnvelopeHeader):
    ciphertext: Annotated[str, _b64(MAX_PAYLOAD_BYTES)]

    def to_json(self) -> bytes:
        """The MQTT payload."""
        return self.model_dump_json().encode()


def decode_envelope(payload: bytes) -> Envelope:
    """Parse an MQTT payload into an (unopened) envelope; :class:`MessageError` if malformed."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageError("envelope too large", field="payload")
    try:
        return Envelope.model_validate_json(payload)
    except ValidationError as exc:
        raise MessageError.from_validation("envelope", exc) from None


def working_key(initial_key: bytes | AesHostKeys, header: EnvelopeHeader) -> bytes:
    """The AES DUKPT working key that seals or opens ``header``'s envelope.

    ``initial_key`` is the terminal's initial key, or (on the bridge's hot path) an
    :class:`~paycore.dukpt.AesHostKeys` that caches the terminal's derivation path.
    """
    if isinstance(initial_key, AesHostKeys):
        return initial_key.working_key(header.ksn_bytes, header.usage, header.key_type)
    return aes_working_key(initial_key, header.ksn_bytes, header.usage, header.key_type)


def seal(
    body: Body,
    *,
    key: bytes | Aead,
    terminal_id: str,
    ksn: bytes,
    message_id: str,
    sent_at: int,
    ttl_ms: int,
    correlation_id: str | None = None,
    alg: Alg | None = None,
    random: Callable[[int], bytes] = secrets.token_bytes,
) -> Envelope:
    """Encrypt ``body`` into an envelope under ``key`` (the working key for ``ksn``).

    ``key`` is the working key itself, 16 bytes (A128GCM) or 32 bytes (A256GCM), or an
    :class:`Aead` for a key held in a key store, with ``alg`` saying which it is. Times
    are milliseconds since the Unix epoch, supplied by the caller.
    """
    aead = _aead(key)
    if alg is None:
        if not isinstance(key, bytes):
            raise ValueError("say the alg of a key held elsewhere")
        alg = "A128GCM" if len(key) == 16 else "A256GCM"
    header = EnvelopeHeader(
        version=VERSION,
        kind=KIND_OF[type(body)],
        terminal_id=terminal_id,
        message_id=message_id,
        correlation_id=correlation_id,
        ksn=ksn.hex().upper(),
        alg=alg,
        sent_at=sent_at,
        expires_at=sent_at + ttl_ms,
        nonce=base64.b64encode(random(NONCE_BYTES)).decode(),
    )
    plaintext = body.model_dump_json(context=REVEAL).encode()
    sealed = aead.encrypt(base64.b64decode(header.nonce), plaintext, header.associated_data())
    return Envelope(**header.model_dump(), ciphertext=base64.b64encode(sealed).decode())


def open_envelope(
    envelope: Envelope,
    *,
    key: bytes | Aead,
    now: int,
    max_clock_skew_ms: int = 300_000,
    check_expiry: bool = True,
) -> Body:
    """Authenticate and decrypt ``envelope`` and return its body.

    Raises :class:`EnvelopeError` when the envelope was tampered with, truncated, moved
    under another header or sealed under another key (one error for all: no oracle), and
    :class:`EnvelopeExpired` when it is authentic but past ``expires_at`` or sent more
    than ``max_clock_skew_ms`` in the future. Nothing is returned unless all checks pass.
    ``check_expiry=False`` is for one case only: a terminal reading the bridge's stored
    answer to an envelope it sent earlier itself (the answer is bound to that envelope by
    its correlation id; its age says nothing about whether it is the outcome).
    """
    if isinstance(key, bytes) and len(key) != (16 if envelope.alg == "A128GCM" else 32):
        raise EnvelopeError("envelope cannot be opened")
    try:
        plaintext = _aead(key).decrypt(
            base64.b64decode(envelope.nonce),
            base64.b64decode(envelope.ciphertext),
            envelope.associated_data(),
        )
    except (InvalidTag, EnvelopeError):
        raise EnvelopeError("envelope cannot be opened") from None
    if check_expiry and (now > envelope.expires_at or envelope.sent_at > now + max_clock_skew_ms):
        raise EnvelopeExpired("envelope expired")
    try:
        return BODY_MODELS[envelope.kind].model_validate_json(plaintext)
    except ValidationError:
        raise EnvelopeError("envelope body is not a valid " + envelope.kind) from None
