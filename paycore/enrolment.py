"""Remote enrolment of a terminal: the wire contract and its cryptography.

A terminal that has nothing but an enrolment code gets, in one exchange with the bridge's
enrolment service (docs/provisioning.md), its TLS client certificate, the CA bundle, and
its AES DUKPT initial key. The key exchange follows the approach of ANSI X9 TR-34 remote
key loading, with EC keys instead of RSA:

* the receiving device (KRD, the terminal) generates its key pair on the device and sends
  its public key inside a PKCS#10 request (which proves possession of the private key),
  with a fresh 32-byte random nonce;
* the key distribution host (KDH, the enrolment service) generates an ephemeral EC P-256
  key, agrees a secret with the terminal's key (ECDH, SP 800-56A), and derives the
  key-block protection key with HKDF-SHA256 (RFC 5869): salt = the terminal's nonce,
  info = a label and the terminal id. The initial key travels as a TR-31 block (version D,
  usage B1) under that AES-256 KBPK;
* the KDH signs a transcript binding the nonce, the terminal id, the terminal's public key,
  the certificate, the ephemeral key and every key block (ECDSA P-256 / SHA-256) with its
  enrolment signing key, whose certificate the terminal CA issued with the enrolment
  signing extended key usage (:data:`ENROLMENT_SIGNING_EKU`).

Freshness and replay: the terminal accepts only a response signed over *its* nonce of this
attempt, so an old response replayed to it fails; the ephemeral key makes every KBPK new.
The enrolment code is single use on the bridge side, so a request replayed to the bridge
gets nothing.

The terminal learns whom to trust from a pin typed with the code: the SHA-256 of a CA
certificate's SubjectPublicKeyInfo (``sha256:<hex>``, as :func:`ca_pin` computes). It
fetches the CA bundle over an unauthenticated channel, keeps it only if a certificate in
it matches the pin, and verifies everything after that against it.

Pure: randomness and time are parameters. Decoders raise :class:`EnrolmentError` only;
verification failures are :class:`EnrolmentRefused`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Literal, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paycore.errors import CodecError, PaycoreError
from paycore.wire.topics import TERMINAL_ID_PATTERN

Random = Callable[[int], bytes]

#: The extended key usage of the enrolment service's signing certificate: an OID under
#: the UUID arc 2.25 (ITU-T X.667), which needs no registration.
ENROLMENT_SIGNING_EKU = x509.ObjectIdentifier("2.25.305911920107338665159421484610135664893")

PROTOCOL_VERSION = 1
NONCE_SIZE = 32
KBPK_SIZE = 32
_KBPK_LABEL = b"pos-enrol v1 kbpk"
_RESPONSE_LABEL = b"pos-enrol v1 response"
_CONFIRM_LABEL = b"pos-enrol v1 confirm"
_CODE_LABEL = b"pos-enrol v1 code"

#: Crockford base32 without I, L, O, U: 20 characters = 100 bits.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 20
_CODE_FIXUPS = str.maketrans({"O": "0", "I": "1", "L": "1", "-": None, " ": None})
_PIN = re.compile(r"^sha256:[0-9a-f]{64}$")


class EnrolmentError(CodecError):
    """An enrolment message, code or pin that is not valid; names fields, never values."""


class EnrolmentRefused(PaycoreError):
    """An authentic-looking answer that fails verification: signature, chain, key, KCV."""


# -- enrolment codes ----------------------------------------------------------------------


def new_code(random: Random) -> str:
    """A fresh code, ``XXXXX-XXXXX-XXXXX-XXXXX`` (100 bits from ``random``)."""
    value = int.from_bytes(random(13), "big") >> 4  # 100 bits
    chars = "".join(CODE_ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(20)))
    return "-".join(chars[i : i + 5] for i in range(0, CODE_LENGTH, 5))


def normalise_code(text: str) -> str:
    """The 20 code characters as typed, upper case, without dashes or spaces.

    Crockford's reading rules apply: O is 0, I and L are 1.
    """
    code = text.upper().translate(_CODE_FIXUPS)
    if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        raise EnrolmentError("an enrolment code is 20 letters and digits", field="code")
    return code


def code_digest(terminal_id: str, code: str) -> bytes:
    """What the bridge stores: SHA-256 over a label, the terminal id and the code.

    The code carries 100 random bits, so a plain hash is not open to guessing; binding the
    terminal id makes a code useless for any other terminal.
    """
    normalised = normalise_code(code)
    return hashlib.sha256(_lv(_CODE_LABEL, terminal_id.encode(), normalised.encode())).digest()


# -- pins ---------------------------------------------------------------------------------


def ca_pin(certificate: x509.Certificate) -> str:
    """``sha256:<hex>`` of the certificate's SubjectPublicKeyInfo (DER)."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def check_pin_text(pin: str) -> str:
    pin = pin.strip().lower()
    if not _PIN.fullmatch(pin):
        raise EnrolmentError("a CA pin is sha256: and 64 hex digits", field="ca_pin")
    return pin


def trusted_bundle(bundle_pem: bytes, pin: str) -> list[x509.Certificate]:
    """The CA certificates of ``bundle_pem``, if one of them matches ``pin``."""
    pin = check_pin_text(pin)
    try:
        certificates = x509.load_pem_x509_certificates(bundle_pem)
    except ValueError:
        raise EnrolmentError("the CA bundle does not parse", field="ca_bundle") from None
    if not any(ca_pin(c) == pin for c in certificates):
        raise EnrolmentRefused("no certificate in the CA bundle matches the pin")
    return certificates


# -- messages -----------------------------------------------------------------------------

_MESSAGE = ConfigDict(extra="forbid", frozen=True, strict=True)
TerminalId = Annotated[str, Field(pattern=TERMINAL_ID_PATTERN)]
B64 = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,400}={0,2}$")]
Hex = Annotated[str, Field(pattern=r"^[0-9A-F]{2,32}$")]
Text = Annotated[str, Field(max_length=64, pattern=r"^[ -~]*$")]
Pem = Annotated[str, Field(min_length=1, max_length=16_384)]


class PinpadIdentity(BaseModel):
    """What the PIN pad said about itself (IDENTIFY, docs/pinpad-protocol.md 5.1)."""

    model_config = _MESSAGE
    model: Text
    serial: Text
    #: The check value of the pad's key-block protection key: which KBPK the bridge wraps
    #: the pad's PIN key under.
    kbpk_kcv: Hex


class EnrolRequest(BaseModel):
    model_config = _MESSAGE
    version: Literal[1] = 1
    terminal_id: TerminalId
    code: Annotated[str, Field(min_length=1, max_length=64)]
    csr_pem: Pem
    nonce: B64
    pinpad: PinpadIdentity | None = None
    #: Who is provisioning (recorded in both audit logs).
    technician: Text = ""

    def nonce_bytes(self) -> bytes:
        return _b64(self.nonce, "nonce", NONCE_SIZE)

    def __repr__(self) -> str:  # the code never appears in a repr or a log line
        return f"EnrolRequest(terminal_id={self.terminal_id!r})"

    __str__ = __repr__


class KeyDelivery(BaseModel):
    """A DUKPT initial key as a TR-31 block, with its Initial Key ID and KCV."""

    model_config = _MESSAGE
    initial_key_id: Annotated[str, Field(pattern=r"^[0-9A-F]{16}$")]
    key_block: Annotated[str, Field(min_length=16, max_length=1024, pattern=r"^[ -~]+$")]
    kcv: Hex


class EnrolResponse(BaseModel):
    model_config = _MESSAGE
    version: Literal[1] = 1
    terminal_id: TerminalId
    certificate_pem: Pem
    ca_bundle_pem: Pem
    broker_host: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:-]+$")]
    broker_port: Annotated[int, Field(ge=1, le=65535)]
    #: The terminal's data initial key, under the KBPK agreed by ECDH.
    data_key: KeyDelivery
    #: The PIN pad's initial key, under the pad's own KBPK (when a pad was named).
    pin_key: KeyDelivery | None = None
    ephemeral_public_key: B64
    signer_certificate_pem: Pem
    signature: B64 = ""


class ConfirmRequest(BaseModel):
    """The terminal's report once the keys are in place, signed with its new key."""

    model_config = _MESSAGE
    version: Literal[1] = 1
    terminal_id: TerminalId
    nonce: B64
    data_kcv: Hex
    pin_kcv: Hex | None = None
    outcome: Literal["loaded", "failed"]
    detail: Annotated[str, Field(max_length=200, pattern=r"^[ -~]*$")] = ""
    signature: B64 = ""


_M = TypeVar("_M", bound=BaseModel)


def _decode(model: type[_M], data: bytes | str, what: str) -> _M:
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise EnrolmentError(f"{what} is not JSON") from None
    if not isinstance(raw, dict):
        raise EnrolmentError(f"{what} is not a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "(root)" for e in exc.errors()})
        raise EnrolmentError(f"invalid {what}", field=", ".join(fields[:5])) from None
    except RecursionError:
        raise EnrolmentError(f"{what} nests too deeply") from None


def decode_request(data: bytes | str) -> EnrolRequest:
    return _decode(EnrolRequest, data, "enrolment request")


def decode_response(data: bytes | str) -> EnrolResponse:
    return _decode(EnrolResponse, data, "enrolment response")


def decode_confirm(data: bytes | str) -> ConfirmRequest:
    return _decode(ConfirmRequest, data, "enrolment confirmation")


# -- key agreement and signatures ---------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def _b64(text: str, field: str, size: int | None = None) -> bytes:
    try:
        value = base64.urlsafe_b64decode(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise EnrolmentError("not base64", field=field) from None
    if size is not None and len(value) != size:
        raise EnrolmentError(f"expected {size} bytes", field=field)
    return value


def _lv(*parts: bytes) -> bytes:
    """Length-prefixed concatenation: no two different field lists give the same bytes."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def public_point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_point(text: str) -> ec.EllipticCurvePublicKey:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), _b64(text, "ephemeral_public_key", 65)
        )
    except ValueError:
        raise EnrolmentError("not a P-256 point", field="ephemeral_public_key") from None


def derive_kbpk(
    own: ec.EllipticCurvePrivateKey,
    peer: ec.EllipticCurvePublicKey,
    nonce: bytes,
    terminal_id: str,
) -> bytes:
    """The AES-256 key-block protection key both sides compute (ECDH, then HKDF-SHA256)."""
    if len(nonce) != NONCE_SIZE:
        raise EnrolmentError(f"the nonce is {NONCE_SIZE} bytes", field="nonce")
    if not isinstance(peer.curve, ec.SECP256R1) or not isinstance(own.curve, ec.SECP256R1):
        raise EnrolmentRefused("enrolment keys are EC P-256")
    shared = own.exchange(ec.ECDH(), peer)
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KBPK_SIZE,
        salt=nonce,
        info=_lv(_KBPK_LABEL, terminal_id.encode()),
    ).derive(shared)


def _key_fields(delivery: KeyDelivery | None) -> tuple[bytes, bytes, bytes]:
    if delivery is None:
        return b"", b"", b""
    return (
        delivery.initial_key_id.encode(),
        delivery.key_block.encode(),
        delivery.kcv.encode(),
    )


def response_transcript(
    response: EnrolResponse, nonce: bytes, terminal_key: ec.EllipticCurvePublicKey
) -> bytes:
    """What the enrolment service signs: every field of the response but the signature,
    with the terminal's nonce and public key."""
    return _lv(
        _RESPONSE_LABEL,
        response.terminal_id.encode(),
        nonce,
        spki(terminal_key),
        response.certificate_pem.encode(),
        response.ca_bundle_pem.encode(),
        response.broker_host.encode(),
        str(response.broker_port).encode(),
        *_key_fields(response.data_key),
        *_key_fields(response.pin_key),
        response.ephemeral_public_key.encode(),
        response.signer_certificate_pem.encode(),
    )


def confirm_transcript(confirm: ConfirmRequest) -> bytes:
    return _lv(
        _CONFIRM_LABEL,
        confirm.terminal_id.encode(),
        confirm.nonce.encode(),
        confirm.data_kcv.encode(),
        (confirm.pin_kcv or "").encode(),
        confirm.outcome.encode(),
        confirm.detail.encode(),
    )


def sign(key: ec.EllipticCurvePrivateKey, transcript: bytes) -> str:
    return b64(key.sign(transcript, ec.ECDSA(hashes.SHA256())))


def check_signature(key: ec.EllipticCurvePublicKey, signature: str, transcript: bytes) -> None:
    try:
        key.verify(_b64(signature, "signature"), transcript, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, EnrolmentError):
        raise EnrolmentRefused("the signature does not verify") from None


def _issued_by(certificate: x509.Certificate, cas: Sequence[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            certificate.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def _valid_at(certificate: x509.Certificate, now: datetime) -> bool:
    return certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc


def _extended_usages(certificate: x509.Certificate) -> list[x509.ObjectIdentifier]:
    try:
        return list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return []


def _load_pem(text: str, field: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise EnrolmentError("not a PEM certificate", field=field) from None


def verify_response(
    response: EnrolResponse,
    *,
    request: EnrolRequest,
    terminal_key: ec.EllipticCurvePublicKey,
    trusted: Sequence[x509.Certificate],
    now: datetime,
) -> x509.Certificate:
    """Check an enrolment response on the terminal; returns the terminal's certificate.

    The signer must hold a certificate from a trusted CA with the enrolment signing EKU,
    valid now, and its signature must cover this request's nonce and this terminal's key;
    the terminal certificate must be for this terminal id and this key, clientAuth, from a
    trusted CA.
    """
    if response.terminal_id != request.terminal_id:
        raise EnrolmentRefused("the answer is for another terminal")
    signer = _load_pem(response.signer_certificate_pem, "signer_certificate_pem")
    if not _issued_by(signer, trusted) or not _valid_at(signer, now):
        raise EnrolmentRefused("the signer's certificate is not from the pinned CA, or not valid")
    if ENROLMENT_SIGNING_EKU not in _extended_usages(signer):
        raise EnrolmentRefused("the signer's certificate is not for enrolment signing")
    signer_key = signer.public_key()
    if not isinstance(signer_key, ec.EllipticCurvePublicKey):
        raise EnrolmentRefused("the signer's key is not an EC key")
    transcript = response_transcript(response, request.nonce_bytes(), terminal_key)
    check_signature(signer_key, response.signature, transcript)
    certificate = _load_pem(response.certificate_pem, "certificate_pem")
    if not _issued_by(certificate, trusted) or not _valid_at(certificate, now):
        raise EnrolmentRefused("the terminal certificate is not from the pinned CA, or not valid")
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if [n.value for n in names] != [request.terminal_id]:
        raise EnrolmentRefused("the terminal certificate names another terminal")
    if spki(terminal_key) != certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise EnrolmentRefused("the terminal certificate is not for this terminal's key")
    if ExtendedKeyUsageOID.CLIENT_AUTH not in _extended_usages(certificate):
        raise EnrolmentRefused("the terminal certificate is not a TLS client certificate")
    return certificate


# -- audit lines --------------------------------------------------------------------------

#: Field names that must never reach an audit line (a programming error if they do).
AUDIT_FORBIDDEN = frozenset({"code", "key", "kbpk", "pin", "pan", "passphrase", "private_key"})


def audit_line(event: str, at: datetime, fields: dict[str, object]) -> bytes:
    """One line of a provisioning audit log (JSON, newline-terminated): who, when, what,
    key ids and check values. Refuses field names that would hold secrets."""
    leaked = AUDIT_FORBIDDEN.intersection(fields)
    if leaked:
        raise ValueError(f"audit fields {sorted(leaked)} would hold secrets")
    entry = {"at": at.isoformat(timespec="milliseconds"), "event": event, **fields}
    return (json.dumps(entry, default=str) + "\n").encode()
