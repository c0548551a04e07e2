"""The enrolment service: an enrolment code and a CSR in, a certificate and keys out.

One exchange per terminal (:mod:`paycore.enrolment` describes the protocol and its
cryptography; docs/provisioning.md the procedure). The service

1. checks the request: a CSR for this terminal id with an EC P-256 key, and, when a PIN pad
   is named, a pad key-block protection key the key store holds (matched by check value);
   nothing is consumed while anything is still wrong with the request itself;
2. redeems the code in the journal in one transaction (single use, expiring, burned after
   ``max_attempts`` wrong codes); the terminal gets a fresh data Initial Key ID there, so a
   re-enrolled terminal never reuses a DUKPT counter;
3. issues the client certificate (earlier certificates of the terminal are revoked as
   superseded and the CRL is published), wraps the data initial key under the ECDH-agreed
   KBPK and the pad's initial key under the pad's KBPK, and signs the answer;
4. writes every step to the audit log: who (the technician the terminal named, and the
   address it came from), the terminal, certificate serial, key ids and KCVs.

The service can do nothing else: it has no MQTT access and answers only these requests.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway_bridge.config import BridgeSettings, ConfigError, EnrolmentSettings
from gateway_bridge.fleet.audit import AuditLog
from gateway_bridge.fleet.broker_config import install_file
from gateway_bridge.fleet.ca import CaError, TerminalCA, check_csr
from gateway_bridge.fleet.cli import PASSPHRASE_ENV
from gateway_bridge.journal.base import (
    EnrolmentCodeRecord,
    Journal,
    TerminalRecord,
    UnknownTerminal,
)
from gateway_bridge.keystore.base import KeyStore, KeyStoreError
from paycore import enrolment as proto
from paycore import tr31

log = logging.getLogger(__name__)

Random = Callable[[int], bytes]
Clock = Callable[[], datetime]


class EnrolmentDenied(Exception):
    """A request the service refuses; ``status`` is the HTTP status, the message is for the
    technician and names no secret."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


_REFUSALS: dict[str, tuple[int, str]] = {
    "unknown": (404, "no enrolment code is waiting for this terminal: check the terminal id"),
    "wrong": (403, "the enrolment code is not right"),
    "expired": (403, "the enrolment code has expired: ask the operator for a new one"),
    "used": (409, "the enrolment code was used already: ask the operator for a new one"),
    "locked": (403, "too many wrong codes: this code is burned, ask the operator for a new one"),
}


@dataclass(frozen=True)
class IssuedCode:
    code: str
    record: EnrolmentCodeRecord

    def __repr__(self) -> str:
        return f"IssuedCode(terminal_id={self.record.terminal_id!r})"


def publish_crl(ca: TerminalCA, install_path: Path | None, reload_command: Sequence[str]) -> str:
    """Install the CA's CRL where the broker reads it and ask the broker to reload.

    Returns what was done, for the operator. Mosquitto reads its ``crlfile`` only when it
    starts or reloads (SIGHUP), so a revocation takes effect with the reload.
    """
    done = [f"CRL re-signed: {ca.crl_path}"]
    if install_path is not None:
        install_file(install_path, ca.crl_path.read_bytes(), mode=0o644, group=None)
        done.append(f"installed at {install_path}")
    if reload_command:
        result = subprocess.run(  # noqa: S603 - the operator's configured command
            list(reload_command), capture_output=True, text=True, timeout=30, check=False
        )
        if result.returncode != 0:
            raise CaError(
                f"the broker reload command failed ({result.returncode}): "
                f"{result.stderr.strip()[:200]}"
            )
        done.append("broker reloaded")
    elif install_path is None:
        done.append(
            "pos-broker-crl.path hands it to the broker; without it, copy it to the "
            "broker's crlfile and systemctl reload mosquitto"
        )
    else:
        done.append("reload the broker now (systemctl reload mosquitto)")
    return "; ".join(done)


class EnrolmentService:
    """What ``gateway-bridge enrol-server`` serves, and what ``terminals enrol-code`` uses."""

    def __init__(
        self,
        *,
        journal: Journal,
        keystore: KeyStore,
        ca: TerminalCA,
        settings: EnrolmentSettings,
        signer_key: ec.EllipticCurvePrivateKey,
        signer_certificate_pem: str,
        audit: AuditLog,
        crl_install_path: Path | None = None,
        reload_command: Sequence[str] = (),
        clock: Clock | None = None,
        random: Random = secrets.token_bytes,
    ) -> None:
        self.journal = journal
        self.keystore = keystore
        self.ca = ca
        self.settings = settings
        self._signer_key = signer_key
        self._signer_pem = signer_certificate_pem
        self.audit = audit
        self._crl_install_path = crl_install_path
        self._reload_command = tuple(reload_command)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._random = random
        self._ca_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"EnrolmentService(ca={self.ca.directory})"

    # -- codes -------------------------------------------------------------------------

    async def issue_code(
        self, terminal_id: str, created_by: str, *, recommission: bool = False
    ) -> IssuedCode:
        """A new single-use code for a registered terminal (replaces any earlier one).

        A revoked terminal gets one only with ``recommission``: enrolling it returns it to
        service, which the operator must mean.
        """
        terminal = await self.journal.get_terminal(terminal_id)
        if terminal is None:
            raise UnknownTerminal(f"no terminal {terminal_id!r}")
        if terminal.status == "revoked" and not recommission:
            raise EnrolmentDenied(
                409,
                "revoked",
                f"{terminal_id} is revoked: enrolling it returns it to service; give "
                "--recommission if that is what you mean",
            )
        code = proto.new_code(self._random)
        expires = self._clock() + timedelta(seconds=self.settings.code_ttl_s)
        record = await self.journal.create_enrolment_code(
            terminal_id, proto.code_digest(terminal_id, code), expires, created_by
        )
        self.audit.record(
            "code_issued",
            terminal_id=terminal_id,
            by=created_by,
            expires_at=record.expires_at,
            recommission=terminal.status == "revoked",
        )
        return IssuedCode(code, record)

    def ca_pin(self) -> str:
        """The pin a technician types: SHA-256 of the current CA's public key."""
        return proto.ca_pin(self.ca.ca_certificate())

    def ca_bundle(self) -> bytes:
        return self.ca.bundle_path.read_bytes()

    # -- enrolment -----------------------------------------------------------------------

    def _pad_kbpk(self, request: proto.EnrolRequest) -> str | None:
        if request.pinpad is None:
            return None
        wanted = request.pinpad.kbpk_kcv.upper()
        for info in self.keystore.list_keys():
            if info.key_id in self.settings.pinpad_kbpk_ids and info.purpose == "kbpk":
                known = info.kcv.upper()
                if wanted.startswith(known) or known.startswith(wanted):
                    return info.key_id
        raise EnrolmentDenied(
            422,
            "pinpad_kbpk",
            f"the PIN pad's key-block protection key (KCV {wanted}) is not one the bridge "
            "holds: the pad was not injected for this estate",
        )

    def _check_csr(self, request: proto.EnrolRequest) -> ec.EllipticCurvePublicKey:
        try:
            name, public = check_csr(request.csr_pem.encode("ascii"))
        except (CaError, UnicodeEncodeError) as exc:
            raise EnrolmentDenied(
                400, "csr", f"the certificate request is refused: {exc}"
            ) from None
        if name != request.terminal_id:
            raise EnrolmentDenied(400, "csr", "the certificate request names another terminal")
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
            public.curve, ec.SECP256R1
        ):
            raise EnrolmentDenied(400, "csr", "the terminal key must be EC P-256")
        return public

    async def enrol(self, request: proto.EnrolRequest, peer: str) -> proto.EnrolResponse:
        """Redeem the code and deliver certificate and keys; :class:`EnrolmentDenied`."""
        who = {"terminal_id": request.terminal_id, "technician": request.technician, "peer": peer}
        try:
            terminal_key = self._check_csr(request)
            nonce = request.nonce_bytes()
            pad_kbpk_id = await asyncio.to_thread(self._pad_kbpk, request)
            digest = proto.code_digest(request.terminal_id, request.code)
        except proto.EnrolmentError as exc:
            self.audit.record("enrol_refused", reason="request", detail=str(exc), **who)
            raise EnrolmentDenied(400, "request", str(exc)) from None
        except EnrolmentDenied as exc:
            self.audit.record("enrol_refused", reason=exc.reason, detail=str(exc), **who)
            raise
        data_ikid = self._random(8).hex().upper()
        redemption = await self.journal.redeem_enrolment_code(
            request.terminal_id,
            digest,
            max_attempts=self.settings.max_attempts,
            new_data_initial_key_id=data_ikid,
        )
        if redemption.outcome != "ok" or redemption.terminal is None:
            status, message = _REFUSALS[redemption.outcome]
            if redemption.outcome == "wrong":
                left = self.settings.max_attempts - redemption.failed_attempts
                message += f" ({left} tries left before it is burned)"
            self.audit.record(
                "enrol_refused",
                reason=redemption.outcome,
                failed_attempts=redemption.failed_attempts,
                **who,
            )
            raise EnrolmentDenied(status, redemption.outcome, message)
        terminal = redemption.terminal
        self.audit.record("code_redeemed", data_initial_key_id=data_ikid, **who)
        try:
            response = await self._deliver(request, terminal, terminal_key, nonce, pad_kbpk_id)
        except (CaError, KeyStoreError, tr31.KeyBlockError) as exc:
            self.audit.record("enrol_failed", detail=str(exc)[:200], **who)
            log.error(
                "enrolment of %s failed after the code was used: %s", terminal.terminal_id, exc
            )
            raise EnrolmentDenied(
                503, "server", "the bridge could not finish the enrolment: ask for a new code"
            ) from None
        return response

    async def _deliver(
        self,
        request: proto.EnrolRequest,
        terminal: TerminalRecord,
        terminal_key: ec.EllipticCurvePublicKey,
        nonce: bytes,
        pad_kbpk_id: str | None,
    ) -> proto.EnrolResponse:
        now = self._clock()
        async with self._ca_lock:
            earlier = [
                r
                for r in self.ca.records()
                if r.kind == "terminal" and r.name == terminal.terminal_id and r.revoked_at is None
            ]
            issued = await asyncio.to_thread(
                self.ca.issue_terminal,
                request.csr_pem.encode("ascii"),
                terminal_id=terminal.terminal_id,
                now=now,
            )
            for record in earlier:
                await asyncio.to_thread(
                    self.ca.revoke, serial=record.serial_number, reason="superseded", now=now
                )
            if earlier:
                done = await asyncio.to_thread(
                    publish_crl, self.ca, self._crl_install_path, self._reload_command
                )
                self.audit.record(
                    "certificate_superseded",
                    terminal_id=terminal.terminal_id,
                    serials=[r.serial for r in earlier],
                    crl=done,
                )
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        kbpk = proto.derive_kbpk(ephemeral, terminal_key, nonce, terminal.terminal_id)
        data_block, data_kcv = await asyncio.to_thread(
            self.keystore.export_initial_key_tr31_under,
            terminal.data_bdk_id,
            bytes.fromhex(terminal.data_initial_key_id),
            kbpk,
        )
        del kbpk
        pin_key = None
        if pad_kbpk_id is not None:
            pin_ikid = self._random(8)
            pin_block = await asyncio.to_thread(
                self.keystore.export_initial_key_tr31,
                terminal.pin_bdk_id,
                pin_ikid,
                pad_kbpk_id,
            )
            header = tr31.KeyBlockHeader.parse(pin_block)
            pin_kcv = dict(header.optional_blocks).get("KC", "01")[2:]
            pin_key = proto.KeyDelivery(
                initial_key_id=pin_ikid.hex().upper(), key_block=pin_block, kcv=pin_kcv
            )
        unsigned = proto.EnrolResponse(
            terminal_id=terminal.terminal_id,
            certificate_pem=issued.pem.decode("ascii"),
            ca_bundle_pem=self.ca_bundle().decode("ascii"),
            broker_host=self.settings.broker_host,
            broker_port=self.settings.broker_port,
            data_key=proto.KeyDelivery(
                initial_key_id=terminal.data_initial_key_id, key_block=data_block, kcv=data_kcv
            ),
            pin_key=pin_key,
            ephemeral_public_key=proto.b64(proto.public_point(ephemeral.public_key())),
            signer_certificate_pem=self._signer_pem,
        )
        signature = proto.sign(
            self._signer_key, proto.response_transcript(unsigned, nonce, terminal_key)
        )
        self.audit.record(
            "enrolled",
            terminal_id=terminal.terminal_id,
            technician=request.technician,
            certificate_serial=issued.record.serial,
            not_after=issued.record.not_after,
            data_bdk_id=terminal.data_bdk_id,
            data_initial_key_id=terminal.data_initial_key_id,
            data_kcv=data_kcv,
            pin_bdk_id=terminal.pin_bdk_id if pin_key else None,
            pin_kbpk_id=pad_kbpk_id,
            pin_initial_key_id=pin_key.initial_key_id if pin_key else None,
            pin_kcv=pin_key.kcv if pin_key else None,
            pinpad_serial=request.pinpad.serial if request.pinpad else None,
        )
        return unsigned.model_copy(update={"signature": signature})

    async def confirm(self, confirm: proto.ConfirmRequest, peer: str) -> None:
        """The terminal's report that its keys are loaded, signed with its new key."""
        certificate = self._current_certificate(confirm.terminal_id)
        public = certificate.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise EnrolmentDenied(400, "confirm", "no EC certificate for this terminal")
        try:
            proto.check_signature(public, confirm.signature, proto.confirm_transcript(confirm))
        except proto.EnrolmentRefused:
            self.audit.record("confirm_refused", terminal_id=confirm.terminal_id, peer=peer)
            raise EnrolmentDenied(
                403, "confirm", "the confirmation is not signed by the terminal"
            ) from None
        self.audit.record(
            "keys_confirmed" if confirm.outcome == "loaded" else "keys_failed",
            terminal_id=confirm.terminal_id,
            peer=peer,
            data_kcv=confirm.data_kcv,
            pin_kcv=confirm.pin_kcv,
            detail=confirm.detail,
        )

    def _current_certificate(self, terminal_id: str) -> x509.Certificate:
        live = [
            r
            for r in self.ca.records()
            if r.kind == "terminal" and r.name == terminal_id and r.revoked_at is None
        ]
        if not live:
            raise EnrolmentDenied(404, "confirm", "this terminal has no certificate")
        path = self.ca.directory / "issued" / f"{live[-1].serial}.pem"
        return x509.load_pem_x509_certificate(path.read_bytes())


def load_signer(cert_file: Path, key_file: Path) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """The enrolment signing key and its certificate (PEM text); CaError if unusable."""
    try:
        cert_pem = cert_file.read_bytes()
        certificate = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CaError(f"the enrolment signer certificate or key does not load ({exc})") from None
    if (
        not isinstance(key, ec.EllipticCurvePrivateKey)
        or key.public_key() != certificate.public_key()
    ):
        raise CaError("the enrolment signer key does not belong to its certificate")
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    if proto.ENROLMENT_SIGNING_EKU not in list(usages):
        raise CaError("the signer certificate is not an enrolment certificate (ca issue-enrolment)")
    return key, cert_pem.decode("ascii")


async def revoke_terminal(
    journal: Journal,
    ca: TerminalCA | None,
    terminal_id: str,
    *,
    reason: str,
    by: str,
    audit: AuditLog | None,
    crl_install_path: Path | None = None,
    reload_command: Sequence[str] = (),
    now: datetime,
) -> list[str]:
    """Take a terminal out of service: registry ``revoked``, codes deleted, its certificates
    revoked, the CRL published. Returns lines for the operator."""
    if await journal.get_terminal(terminal_id) is None:
        raise UnknownTerminal(f"no terminal {terminal_id!r}")
    await journal.set_terminal_status(terminal_id, "revoked")
    lines = [f"{terminal_id}: registry status revoked (the bridge refuses its envelopes)"]
    if await journal.delete_enrolment_code(terminal_id):
        lines.append("its enrolment code is deleted")
    serials: list[str] = []
    if ca is not None:
        live = [
            r
            for r in ca.records()
            if r.kind == "terminal" and r.name == terminal_id and r.revoked_at is None
        ]
        if live:
            for record in ca.revoke(name=terminal_id, reason=reason, now=now):
                serials.append(record.serial)
                lines.append(f"certificate {record.serial} revoked ({reason})")
            lines.append(publish_crl(ca, crl_install_path, reload_command))
        else:
            lines.append("no unrevoked certificate to revoke")
    if audit is not None:
        audit.record(
            "terminal_revoked", terminal_id=terminal_id, by=by, reason=reason, serials=serials
        )
    return lines


def read_passphrase(settings: EnrolmentSettings, environ: Mapping[str, str]) -> bytes | None:
    """The CA passphrase from ``ca_passphrase_file`` or POS_BRIDGE_CA_PASSPHRASE."""
    if settings.ca_passphrase_file is not None:
        text = settings.ca_passphrase_file.read_text(encoding="utf-8").strip()
    else:
        text = environ.get(PASSPHRASE_ENV, "")
    return text.encode() if text else None


@asynccontextmanager
async def open_enrolment(
    settings: BridgeSettings, environ: Mapping[str, str]
) -> AsyncIterator[EnrolmentService]:
    """The service as ``enrol-server`` and ``terminals enrol-code`` assemble it."""
    from gateway_bridge.app import open_journal, open_keystore

    enrol = settings.enrolment
    if enrol is None:
        raise ConfigError("the configuration has no [enrolment] section")
    ca = TerminalCA(enrol.ca_dir, passphrase=read_passphrase(enrol, environ))
    signer_key, signer_pem = load_signer(enrol.signer_cert_file, enrol.signer_key_file)
    keystore = open_keystore(settings.keystore, environ)
    journal = await open_journal(settings)
    try:
        yield EnrolmentService(
            journal=journal,
            keystore=keystore,
            ca=ca,
            settings=enrol,
            signer_key=signer_key,
            signer_certificate_pem=signer_pem,
            audit=AuditLog(enrol.audit_log),
            crl_install_path=enrol.crl_install_file,
            reload_command=enrol.broker_reload_command,
        )
    finally:
        await journal.close()
