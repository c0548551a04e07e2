"""The terminal certificate authority: X.509 for Mosquitto mTLS (DESIGN 4, docs/broker.md).

A terminal's MQTT identity is the CN of its client certificate (Mosquitto's
``use_identity_as_username``), so this module is what decides who may speak for a terminal.
Certificates follow RFC 5280 profiles:

* the CA (section 4.2.1.9 basicConstraints ``CA:TRUE, pathlen:0``, critical; 4.2.1.3
  keyUsage ``keyCertSign, cRLSign``, critical), EC P-256, ECDSA with SHA-256;
* a terminal or bridge client certificate: subject ``CN=<id>`` only, keyUsage
  ``digitalSignature``, extendedKeyUsage ``clientAuth`` (4.2.1.12), no subjectAltName
  (the CN is the identity), a random positive serial of at most 159 bits (4.1.2.2);
* the broker's server certificate: subjectAltName with the DNS names and IP addresses given
  (4.2.1.6), extendedKeyUsage ``serverAuth``;
* the enrolment service's signing certificate: CN only, keyUsage ``digitalSignature``,
  extendedKeyUsage :data:`paycore.enrolment.ENROLMENT_SIGNING_EKU` alone (a terminal
  accepts enrolment answers signed under it, and under nothing else);
* a CRL per CA generation (section 5) with cRLNumber and nextUpdate; OpenSSL (hence
  Mosquitto's ``crlfile``) refuses *every* client of a CA whose CRL is missing or past its
  nextUpdate, so ``crl.pem`` holds one CRL for each CA in the bundle and must be re-signed
  before nextUpdate.

The pure ``build_*`` functions take the time and the serial as parameters; :class:`TerminalCA`
keeps the state in a directory (keys, certificates, ``index.json``, ``ca-bundle.pem``,
``crl.pem``) and draws serials from the ``random`` callable it is given.

Exception tree::

    CaError (ValueError)              the CA refuses the request or its state is unusable
    ├── CaLocked                      the CA key cannot be decrypted (passphrase missing/wrong)
    ├── CsrRejected                   a CSR that is malformed, badly signed or names a bad id
    ├── NameInUse                     the CN already belongs to a certificate of another kind
    └── UnknownCertificate            nothing in the index matches a serial or name

The CA key is stored as PKCS#8 PEM, encrypted with the passphrase (cryptography's
``BestAvailableEncryption``) unless the CA was created explicitly without one; mode 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Concatenate, Literal, ParamSpec, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paycore.enrolment import ENROLMENT_SIGNING_EKU
from paycore.errors import CodecError
from paycore.wire.topics import check_terminal_id

CertificateKind = Literal["terminal", "bridge", "server", "enrolment"]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
CaPrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

#: Leaf certificates start this much before "now", so a broker whose clock is slightly
#: behind still accepts a certificate issued a moment ago.
CLOCK_SKEW = timedelta(minutes=5)

REVOCATION_REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
}


class CaError(ValueError):
    """The CA refuses the request, or its directory is not a usable CA."""


class CaLocked(CaError):
    """The CA key cannot be decrypted: no passphrase, or a wrong one."""


class CsrRejected(CaError):
    """A certificate signing request that cannot be used."""


class NameInUse(CaError):
    """A CN that already names a certificate of another kind (a terminal vs a bridge)."""


class UnknownCertificate(CaError):
    """No certificate in the index matches."""


# -- pure building blocks --------------------------------------------------------------


def random_serial(random: Callable[[int], bytes]) -> int:
    """A positive serial of at most 159 bits from ``random`` (RFC 5280 4.1.2.2: <= 20 octets)."""
    serial = int.from_bytes(random(20), "big") >> 1
    return serial or 1


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 private key (cryptography draws from the OS generator)."""
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def build_ca_certificate(
    key: CaPrivateKey,
    common_name: str,
    *,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A self-signed CA certificate: basicConstraints CA:TRUE pathlen 0, keyCertSign/cRLSign."""
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_builder(
    public_key: PublicKey,
    common_name: str,
    ca_certificate: x509.Certificate,
    *,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    ca_ski = ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )


def build_client_certificate(
    public_key: PublicKey,
    common_name: str,
    ca_certificate: x509.Certificate,
    ca_key: CaPrivateKey,
    *,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
) -> x509.Certificate:
    """A CN-only certificate with digitalSignature and one extended key usage: clientAuth
    for a terminal or a bridge, :data:`ENROLMENT_SIGNING_EKU` for the enrolment signer."""
    check_terminal_id(common_name)
    return (
        _leaf_builder(
            public_key,
            common_name,
            ca_certificate,
            serial=serial,
            not_before=not_before,
            not_after=not_after,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def build_server_certificate(
    public_key: PublicKey,
    dns_names: Sequence[str],
    ip_addresses: Sequence[IpAddress],
    ca_certificate: x509.Certificate,
    ca_key: CaPrivateKey,
    *,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """The broker's TLS server certificate; subjectAltName = the names and addresses given."""
    if not dns_names and not ip_addresses:
        raise CaError("a server certificate needs at least one DNS name or IP address")
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(address) for address in ip_addresses]
    common_name = dns_names[0] if dns_names else str(ip_addresses[0])
    return (
        _leaf_builder(
            public_key,
            common_name,
            ca_certificate,
            serial=serial,
            not_before=not_before,
            not_after=not_after,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def build_crl(
    ca_certificate: x509.Certificate,
    ca_key: CaPrivateKey,
    revoked: Iterable[tuple[int, datetime, x509.ReasonFlags]],
    *,
    number: int,
    this_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationList:
    """An RFC 5280 section 5 CRL of ``(serial, revocation date, reason)`` entries."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_certificate.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
    )
    for serial, when, reason in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(when)
            .add_extension(x509.CRLReason(reason), critical=False)
            .build()
        )
    return builder.sign(ca_key, hashes.SHA256())


def build_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> x509.CertificateSigningRequest:
    """What a terminal sends to be certified: ``CN=<terminal id>``, signed by its key."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(common_name))
        .sign(key, hashes.SHA256())
    )


def check_csr(csr_pem: bytes) -> tuple[str, PublicKey]:
    """The CN and public key of a PEM CSR; :class:`CsrRejected` unless it is usable.

    Usable: it parses, its self-signature verifies, its subject is exactly one CN, and its
    key is EC P-256/P-384 or RSA of at least 2048 bits. Its extensions are ignored: the CA
    decides what a certificate may do.
    """
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise CsrRejected("not a PEM certificate signing request") from exc
    try:
        valid = csr.is_signature_valid
    except (ValueError, InvalidSignature, x509.UnsupportedGeneralNameType) as exc:
        raise CsrRejected("the CSR signature cannot be checked") from exc
    if not valid:
        raise CsrRejected("the CSR signature does not verify")
    attributes = list(csr.subject)
    if len(attributes) != 1 or attributes[0].oid != NameOID.COMMON_NAME:
        raise CsrRejected("the CSR subject must be exactly one CN")
    common_name = attributes[0].value
    if not isinstance(common_name, str):
        raise CsrRejected("the CSR CN is not text")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise CsrRejected("EC keys must be on P-256 or P-384")
        return common_name, key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise CsrRejected("RSA keys must have at least 2048 bits")
        return common_name, key
    raise CsrRejected("the CSR key must be EC or RSA")


# -- the index -------------------------------------------------------------------------

_RECORD = ConfigDict(extra="forbid", frozen=True, strict=False)


class CaPolicy(BaseModel):
    """How long things live; fixed at ``ca init``, stored in the index."""

    model_config = _RECORD
    name: str = "POS terminal CA"
    ca_days: int = Field(default=1825, ge=1)
    terminal_days: int = Field(default=90, ge=1)
    bridge_days: int = Field(default=365, ge=1)
    server_days: int = Field(default=365, ge=1)
    crl_days: int = Field(default=7, ge=1)
    """nextUpdate of each CRL: re-sign (``gateway-bridge ca crl``) well before it."""


class AuthorityRecord(BaseModel):
    model_config = _RECORD
    generation: int
    serial: str
    common_name: str
    not_before: datetime
    not_after: datetime
    retired: bool = False
    crl_number: int = 0


class CertificateRecord(BaseModel):
    """One issued certificate; ``name`` is the CN (terminal id, bridge name, server name)."""

    model_config = _RECORD
    kind: CertificateKind
    name: str
    serial: str
    generation: int
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None = None
    revocation_reason: str | None = None

    @property
    def serial_number(self) -> int:
        return int(self.serial, 16)

    def expired(self, now: datetime) -> bool:
        return now >= self.not_after


class CaIndex(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = 1
    policy: CaPolicy
    current_generation: int
    authorities: list[AuthorityRecord]
    certificates: list[CertificateRecord] = []


@dataclass(frozen=True)
class Issued:
    """A certificate just issued, with its index record."""

    record: CertificateRecord
    certificate: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _hex(serial: int) -> str:
    return f"{serial:x}"


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _mutation(
    method: Callable[Concatenate[TerminalCA, _P], _R],
) -> Callable[Concatenate[TerminalCA, _P], _R]:
    """Run ``method`` holding the CA's lock, on the index as it is on disk now."""

    def locked(ca: TerminalCA, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with ca._locked():
            return method(ca, *args, **kwargs)

    locked.__name__, locked.__doc__ = method.__name__, method.__doc__
    return locked


class TerminalCA:
    """A CA kept in a directory::

        index.json            policy, CA generations, every issued certificate
        gen-<N>/ca-cert.pem   the CA certificate of generation N
        gen-<N>/ca-key.pem    its key (PKCS#8, encrypted unless created without; 0600)
        ca-bundle.pem         the certificates of every generation not retired (cafile)
        crl.pem               one CRL per generation not retired (crlfile)
        issued/<serial>.pem   a copy of every certificate issued

    ``passphrase`` unlocks the CA keys (None for a CA created without one); ``random``
    supplies serial numbers.

    Several processes use one CA (the enrolment service for as long as it runs, the
    operator's ``terminals revoke`` and ``ca`` commands): every change takes an exclusive
    lock on ``.lock`` in the directory and starts from the index as it is on disk, so no
    process writes back a stale index (a revocation lost from the CRL), and every read of
    the records reads the disk.
    """

    def __init__(
        self,
        directory: Path,
        *,
        passphrase: bytes | None,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.directory = directory
        self._passphrase = passphrase
        self._random = random
        self._depth = 0
        self.index = self._load()

    def _load(self) -> CaIndex:
        try:
            return CaIndex.model_validate_json(self.index_path.read_bytes())
        except FileNotFoundError as exc:
            raise CaError(f"{self.directory} is not a CA directory (no index.json)") from exc
        except ValidationError as exc:
            raise CaError(f"{self.index_path} is not a valid CA index") from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The CA's exclusive lock (reentrant within this object), index reloaded."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        # Read-only and 0644: whoever made it first, the service and the operator can lock it.
        fd = os.open(self.directory / ".lock", os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.index = self._load()
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0
        finally:
            os.close(fd)  # closing releases the lock

    # paths ----------------------------------------------------------------------------

    @property
    def index_path(self) -> Path:
        return self.directory / "index.json"

    @property
    def bundle_path(self) -> Path:
        return self.directory / "ca-bundle.pem"

    @property
    def crl_path(self) -> Path:
        return self.directory / "crl.pem"

    def _generation_dir(self, generation: int) -> Path:
        return self.directory / f"gen-{generation}"

    # creation --------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        passphrase: bytes | None,
        policy: CaPolicy | None = None,
        now: datetime,
        random: Callable[[int], bytes] = os.urandom,
    ) -> TerminalCA:
        """Make a new CA (generation 1) in ``directory``, which must not hold one."""
        policy = policy or CaPolicy()
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / "index.json").exists():
            raise CaError(f"{directory} already holds a CA")
        os.chmod(directory, 0o700)
        index = CaIndex(policy=policy, current_generation=0, authorities=[])
        _write_atomic(directory / "index.json", index.model_dump_json(indent=2).encode(), 0o600)
        ca = cls(directory, passphrase=passphrase, random=random)
        ca._new_generation(now)
        return ca

    @_mutation
    def _new_generation(self, now: datetime) -> AuthorityRecord:
        generation = max((a.generation for a in self.index.authorities), default=0) + 1
        key = new_ec_key()
        common_name = f"{self.index.policy.name} G{generation}"
        serial = random_serial(self._random)
        not_after = now + timedelta(days=self.index.policy.ca_days)
        cert = build_ca_certificate(
            key, common_name, serial=serial, not_before=now - CLOCK_SKEW, not_after=not_after
        )
        folder = self._generation_dir(generation)
        folder.mkdir(mode=0o700)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(self._passphrase)
            if self._passphrase
            else serialization.NoEncryption()
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        _write_atomic(folder / "ca-key.pem", key_pem, 0o600)
        _write_atomic(folder / "ca-cert.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
        record = AuthorityRecord(
            generation=generation,
            serial=_hex(serial),
            common_name=common_name,
            not_before=now - CLOCK_SKEW,
            not_after=not_after,
        )
        self.index.authorities.append(record)
        self.index.current_generation = generation
        self._save()
        self.write_bundle()
        self.write_crl(now)
        return record

    # state -----------------------------------------------------------------------------

    def _save(self) -> None:
        _write_atomic(self.index_path, self.index.model_dump_json(indent=2).encode(), 0o600)

    def _authority(self, generation: int) -> AuthorityRecord:
        for authority in self.index.authorities:
            if authority.generation == generation:
                return authority
        raise UnknownCertificate(f"no CA generation {generation}")

    def active_generations(self) -> list[int]:
        return [a.generation for a in self.index.authorities if not a.retired]

    def ca_certificate(self, generation: int | None = None) -> x509.Certificate:
        generation = self.index.current_generation if generation is None else generation
        pem = (self._generation_dir(generation) / "ca-cert.pem").read_bytes()
        return x509.load_pem_x509_certificate(pem)

    def _ca_key(self, generation: int) -> CaPrivateKey:
        pem = (self._generation_dir(generation) / "ca-key.pem").read_bytes()
        try:
            key = serialization.load_pem_private_key(pem, password=self._passphrase or None)
        except TypeError as exc:  # encrypted but no passphrase, or the reverse
            raise CaLocked("the CA key needs a passphrase (or was stored without one)") from exc
        except ValueError as exc:
            raise CaLocked("the CA key cannot be decrypted with this passphrase") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CaError("the CA key is not an EC key")
        return key

    def records(self) -> list[CertificateRecord]:
        """Every certificate issued, as the index on disk says now."""
        if not self._depth:
            self.index = self._load()
        return list(self.index.certificates)

    # issuing ---------------------------------------------------------------------------

    def _check_name(self, kind: CertificateKind, name: str) -> None:
        for record in self.index.certificates:
            if record.name == name and record.kind != kind:
                raise NameInUse(f"{name!r} already names a {record.kind} certificate")

    def _record(self, kind: CertificateKind, name: str, cert: x509.Certificate) -> Issued:
        record = CertificateRecord(
            kind=kind,
            name=name,
            serial=_hex(cert.serial_number),
            generation=self.index.current_generation,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )
        issued_dir = self.directory / "issued"
        issued_dir.mkdir(mode=0o700, exist_ok=True)
        pem = cert.public_bytes(serialization.Encoding.PEM)
        _write_atomic(issued_dir / f"{record.serial}.pem", pem, 0o644)
        self.index.certificates.append(record)
        self._save()
        return Issued(record, cert)

    def _window(self, now: datetime, days: int) -> tuple[datetime, datetime]:
        return now - CLOCK_SKEW, now + timedelta(days=days)

    @_mutation
    def issue_client(
        self,
        kind: Literal["terminal", "bridge", "enrolment"],
        public_key: PublicKey,
        name: str,
        *,
        now: datetime,
        days: int | None = None,
    ) -> Issued:
        """A CN-only certificate (CN = ``name``): a terminal's or a bridge's TLS client
        certificate, or the enrolment service's signing certificate."""
        try:
            check_terminal_id(name)
        except CodecError as exc:
            raise CsrRejected(f"not a valid {kind} name") from exc
        self._check_name(kind, name)
        policy = self.index.policy
        default, usage = {
            "terminal": (policy.terminal_days, ExtendedKeyUsageOID.CLIENT_AUTH),
            "bridge": (policy.bridge_days, ExtendedKeyUsageOID.CLIENT_AUTH),
            "enrolment": (policy.server_days, ENROLMENT_SIGNING_EKU),
        }[kind]
        not_before, not_after = self._window(now, days or default)
        generation = self.index.current_generation
        cert = build_client_certificate(
            public_key,
            name,
            self.ca_certificate(generation),
            self._ca_key(generation),
            serial=random_serial(self._random),
            not_before=not_before,
            not_after=not_after,
            usage=usage,
        )
        return self._record(kind, name, cert)

    def issue_enrolment(
        self, public_key: PublicKey, name: str, *, now: datetime, days: int | None = None
    ) -> Issued:
        """The enrolment service's signing certificate (CN = ``name``)."""
        return self.issue_client("enrolment", public_key, name, now=now, days=days)

    @_mutation
    def issue_terminal(
        self,
        csr_pem: bytes,
        *,
        terminal_id: str | None = None,
        now: datetime,
        days: int | None = None,
    ) -> Issued:
        """Certify a terminal's CSR; its CN must be ``terminal_id`` when one is given."""
        common_name, public_key = check_csr(csr_pem)
        if terminal_id is not None and common_name != terminal_id:
            raise CsrRejected("the CSR CN is not the terminal id requested")
        return self.issue_client("terminal", public_key, common_name, now=now, days=days)

    @_mutation
    def issue_server(
        self,
        public_key: PublicKey,
        dns_names: Sequence[str],
        ip_addresses: Sequence[IpAddress],
        *,
        now: datetime,
        days: int | None = None,
    ) -> Issued:
        not_before, not_after = self._window(now, days or self.index.policy.server_days)
        generation = self.index.current_generation
        cert = build_server_certificate(
            public_key,
            dns_names,
            ip_addresses,
            self.ca_certificate(generation),
            self._ca_key(generation),
            serial=random_serial(self._random),
            not_before=not_before,
            not_after=not_after,
        )
        name = dns_names[0] if dns_names else str(ip_addresses[0])
        return self._record("server", name, cert)

    # revocation ------------------------------------------------------------------------

    @_mutation
    def revoke(
        self,
        *,
        serial: int | None = None,
        name: str | None = None,
        reason: str = "unspecified",
        now: datetime,
    ) -> list[CertificateRecord]:
        """Revoke one certificate by serial, or every unrevoked one named ``name``.

        The CRL is re-signed at once; the broker sees it after its ``crlfile`` is replaced
        and it is reloaded (SIGHUP).
        """
        if (serial is None) == (name is None):
            raise CaError("revoke by serial or by name, not both")
        if reason not in REVOCATION_REASONS:
            raise CaError(f"unknown revocation reason {reason!r}")
        changed: list[CertificateRecord] = []
        updated: list[CertificateRecord] = []
        for record in self.index.certificates:
            match = record.serial_number == serial if serial is not None else record.name == name
            if match and record.revoked_at is None:
                record = record.model_copy(update={"revoked_at": now, "revocation_reason": reason})
                changed.append(record)
            updated.append(record)
        if not changed:
            raise UnknownCertificate("no unrevoked certificate matches")
        self.index.certificates = updated
        self._save()
        self.write_crl(now)
        return changed

    @_mutation
    def write_crl(self, now: datetime) -> Path:
        """Re-sign one CRL per active generation into ``crl.pem``; returns its path."""
        pems: list[bytes] = []
        for generation in self.active_generations():
            authority = self._authority(generation)
            revoked = [
                (r.serial_number, r.revoked_at, REVOCATION_REASONS[r.revocation_reason or ""])
                for r in self.index.certificates
                if r.generation == generation and r.revoked_at is not None
            ]
            number = authority.crl_number + 1
            crl = build_crl(
                self.ca_certificate(generation),
                self._ca_key(generation),
                revoked,
                number=number,
                this_update=now,
                next_update=now + timedelta(days=self.index.policy.crl_days),
            )
            pems.append(crl.public_bytes(serialization.Encoding.PEM))
            self.index.authorities = [
                a.model_copy(update={"crl_number": number}) if a.generation == generation else a
                for a in self.index.authorities
            ]
        self._save()
        _write_atomic(self.crl_path, b"".join(pems), 0o644)
        return self.crl_path

    @_mutation
    def write_bundle(self) -> Path:
        pems = [
            self.ca_certificate(g).public_bytes(serialization.Encoding.PEM)
            for g in self.active_generations()
        ]
        _write_atomic(self.bundle_path, b"".join(pems), 0o644)
        return self.bundle_path

    # rotation --------------------------------------------------------------------------

    @_mutation
    def rotate(self, now: datetime) -> AuthorityRecord:
        """Start a new CA generation; the old one stays in the bundle and CRL until retired."""
        for generation in self.active_generations():
            self._ca_key(generation)  # fail before changing anything if locked
        return self._new_generation(now)

    @_mutation
    def retire(self, generation: int, now: datetime) -> AuthorityRecord:
        """Drop ``generation`` from the bundle and CRL: its certificates stop working."""
        if generation == self.index.current_generation:
            raise CaError("the current generation cannot be retired; rotate first")
        authority = self._authority(generation)
        self.index.authorities = [
            a.model_copy(update={"retired": True}) if a.generation == generation else a
            for a in self.index.authorities
        ]
        self._save()
        self.write_bundle()
        self.write_crl(now)
        return authority


def now_utc() -> datetime:
    return datetime.now(UTC)


def record_json(records: Iterable[CertificateRecord]) -> str:
    """The index rows as JSON lines for ``ca list --json``."""
    return "\n".join(json.dumps(r.model_dump(mode="json"), sort_keys=True) for r in records)
