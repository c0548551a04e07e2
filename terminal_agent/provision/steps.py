"""``terminal-agent provision``: from nothing to taking payments (docs/provisioning.md).

The technician types one command with the enrolment URL, the terminal id, the CA pin and
the enrolment code the operator issued. Each step prints a numbered line with its result;
the first failure stops the run with what to do about it, and nothing is left half
written: files are written only once every key has been checked, each atomically.

 1. CA       fetch the CA bundle; keep it only if a certificate in it matches the pin
 2. PIN pad  IDENTIFY: model, serial and the check value of its key-block protection key
 3. key      generate the terminal's EC P-256 key pair here (it never leaves the device)
 4. enrol    send the CSR, a fresh nonce and the code over HTTPS verified by the CA
 5. verify   the answer's signature, the certificate, the ECDH-agreed KBPK, the data key
             block's MAC, usage, Initial Key ID and KCV
 6. PIN key  load the pad's initial key through its load-key command; compare the KCV
 7. files    agent.toml, TLS files, key block, KBPK, journal key (0600 where secret)
 8. confirm  tell the bridge the keys are in (signed with the new key)
 9. system   udev rules, the systemd unit (enabled when systemd runs here)
10. doctor   the self-test, with the new configuration

Every step goes to the audit log (who, when, what, key ids and KCVs; never a key value).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import secrets
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from paycore import enrolment as proto
from paycore import tr31
from terminal_agent.pinpad import PinpadDriver, PinpadError, PinpadSettings

SOURCE_DIR = Path(__file__).resolve().parents[2]
"""The checkout the agent runs from (/opt/pos): udev/ and deploy/ are read from here."""

AGENT_UNIT = "pos-terminal-agent.service"


class ProvisionError(Exception):
    """A step failed; the message says what and what to do."""


@dataclass
class ProvisionOptions:
    url: str
    terminal_id: str
    code: str
    ca_pin: str
    technician: str
    config_dir: Path = Path("/etc/pos-agent")
    state_dir: Path = Path("/var/lib/pos-agent")
    pinpad_port: str = "/dev/pos-pinpad"
    pin_key_slot: int = 1
    reader: str | None = None
    currency: str = "GBP"
    udev_dir: Path | None = Path("/etc/udev/rules.d")
    systemd_dir: Path | None = Path("/etc/systemd/system")
    pinpad_usb_serial: str | None = None
    source_dir: Path = SOURCE_DIR
    self_test: bool = True
    timeout_s: float = 20.0
    #: Extra agent.toml text (sections the operator's image adds: [ecr], [receipts] ...).
    extra_config: str = ""
    run: Callable[[list[str]], int] = field(
        default=lambda argv: subprocess.run(argv, check=False).returncode  # noqa: S603
    )

    def __repr__(self) -> str:  # the code stays out of reprs
        return f"ProvisionOptions(url={self.url!r}, terminal_id={self.terminal_id!r})"


class Steps:
    """Numbered progress lines and the terminal's audit log."""

    TOTAL = 10

    def __init__(self, out: TextIO, audit_path: Path, who: str, terminal_id: str) -> None:
        self.out = out
        self.audit_path = audit_path
        self.who = who
        self.terminal_id = terminal_id
        self.number = 0
        self._pending: list[bytes] = []

    def step(self, name: str, result: str, **audit: object) -> None:
        self.number += 1
        self.out.write(f"[{self.number:>2}/{self.TOTAL}] {name:<8} {result}\n")
        self.out.flush()
        self.audit(name, outcome="ok", **audit)

    def audit(self, event: str, **fields: object) -> None:
        line = proto.audit_line(
            event,
            datetime.now(UTC),
            {"terminal_id": self.terminal_id, "technician": self.who, **fields},
        )
        self._pending.append(line)
        with contextlib.suppress(OSError):  # the state folder may not exist before step 7
            self.flush()

    def flush(self) -> None:
        self.audit_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            for line in self._pending:
                os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._pending.clear()


# -- HTTP ---------------------------------------------------------------------------------


def _request(url: str, context: ssl.SSLContext, timeout: float, body: bytes | None = None) -> bytes:
    request = urllib.request.Request(  # noqa: S310 - https only, checked by the caller
        url,
        data=body,
        method="POST" if body is not None else "GET",
        headers={"Content-Type": "application/json"} if body is not None else {},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout) as answer:  # noqa: S310
            data: bytes = answer.read(256 * 1024)
            return data
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read(4096)).get("message", "")
        except (ValueError, AttributeError):
            detail = ""
        raise ProvisionError(
            f"the enrolment service refused ({exc.code}): {detail or exc.reason}"
        ) from None
    except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ProvisionError(
            f"cannot reach the enrolment service at {url} ({reason}): check the URL, the "
            "network and the clock"
        ) from None


def _verified_context(bundle_pem: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=bundle_pem.decode("ascii"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _discovery_context() -> ssl.SSLContext:
    """For GET /v1/ca only: what it returns is trusted by the pin, not by the channel."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# -- files --------------------------------------------------------------------------------


def _owner() -> tuple[int, int] | None:
    """pos-agent's uid and gid when it exists and we are root (the service reads as it)."""
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam("pos-agent")
    except KeyError:
        return None
    return user.pw_uid, user.pw_gid


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically, with ``mode``, owned by pos-agent when provisioning as root."""
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    owner = _owner()
    if owner is not None:
        os.chown(tmp, *owner)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def render_agent_toml(options: ProvisionOptions, response: proto.EnrolResponse) -> str:
    reader = f'[reader]\nreader = "{options.reader}"\n' if options.reader else ""
    return (
        "# written by terminal-agent provision (docs/provisioning.md); re-provisioning\n"
        "# rewrites it. Secrets live in the 0600 files it names, never here.\n"
        f'terminal_id = "{response.terminal_id}"\n'
        f'currency = "{options.currency}"\n'
        f"pin_key_slot = {options.pin_key_slot}\n\n"
        "[broker]\n"
        f'host = "{response.broker_host}"\n'
        f"port = {response.broker_port}\n\n"
        "[broker.tls]\n"
        'ca_file = "tls/ca-bundle.pem"\n'
        'cert_file = "tls/terminal-cert.pem"\n'
        'key_file = "tls/terminal-key.pem"\n\n'
        "[keys]\n"
        'data_key_block_file = "keys/data-key.tr31"\n'
        'kbpk_file = "keys/kbpk.hex"\n\n'
        f"{reader}"
        "[pinpad]\n"
        f'port = "{options.pinpad_port}"\n\n'
        "[journal]\n"
        f'path = "{options.state_dir / "journal.db"}"\n'
        'key_file = "journal.key"\n'
        f"{options.extra_config}"
    )


def udev_rules(options: ProvisionOptions, usb_serial: str | None) -> dict[str, bytes]:
    """The rule files to install: the CCID readers always, the pad when its USB serial is
    known (filled into the rule in place of the placeholder)."""
    source = options.source_dir / "udev"
    rules = {"72-pos-ccid.rules": (source / "72-pos-ccid.rules").read_bytes()}
    if usb_serial is not None:
        if not usb_serial.replace("-", "").replace("_", "").isalnum():
            raise ProvisionError("the PIN pad's USB serial has characters a udev rule cannot match")
        text = (source / "70-pos-pinpad.rules").read_text(encoding="utf-8")
        rules["70-pos-pinpad.rules"] = text.replace("REPLACE_WITH_PAD_SERIAL", usb_serial).encode()
    return rules


def usb_serial_of(port: str) -> str | None:
    """The USB serial number of the adapter behind ``port``, read from sysfs (None for a
    pseudo-terminal or a device without one)."""
    try:
        name = Path(os.path.realpath(port)).name
        device = Path("/sys/class/tty", name, "device").resolve()
    except OSError:
        return None
    for parent in [device, *device.parents]:
        serial = parent / "serial"
        if (parent / "idVendor").exists() and serial.exists():
            return serial.read_text(encoding="ascii").strip() or None
    return None


def systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir()


def new_terminal_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def csr_pem(key: ec.EllipticCurvePrivateKey, terminal_id: str) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, terminal_id)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def open_response(
    response: proto.EnrolResponse,
    request: proto.EnrolRequest,
    key: ec.EllipticCurvePrivateKey,
    nonce: bytes,
    trusted: list[x509.Certificate],
) -> tuple[x509.Certificate, bytes, str]:
    """Verify an enrolment answer: (certificate, the agreed KBPK, the data key's KCV).

    The signature and certificates (:func:`paycore.enrolment.verify_response`), then the
    data key block under the ECDH-agreed KBPK: its MAC, usage B1, its Initial Key ID and
    its KCV against what the answer announced.
    """
    try:
        certificate = proto.verify_response(
            response,
            request=request,
            terminal_key=key.public_key(),
            trusted=trusted,
            now=datetime.now(UTC),
        )
        peer = proto.load_point(response.ephemeral_public_key)
        kbpk = proto.derive_kbpk(key, peer, nonce, request.terminal_id)
        header, data_key = tr31.unwrap(kbpk, response.data_key.key_block)
    except (proto.EnrolmentError, proto.EnrolmentRefused, tr31.KeyBlockError) as exc:
        raise ProvisionError(
            f"the answer does not verify ({exc}); nothing was written. Ask the operator for "
            "a new code"
        ) from None
    blocks = dict(header.optional_blocks)
    kcv = tr31.kcv(data_key, "AES")
    del data_key
    if header.key_usage != "B1" or blocks.get("IK") != response.data_key.initial_key_id:
        raise ProvisionError(
            f"the data key block is not this terminal's initial DUKPT key (usage "
            f"{header.key_usage}); nothing was written"
        )
    if kcv != response.data_key.kcv:
        raise ProvisionError(f"data key KCV {kcv} is not the {response.data_key.kcv} announced")
    return certificate, kbpk, kcv


# -- the run ------------------------------------------------------------------------------


async def provision(options: ProvisionOptions, out: TextIO) -> int:
    """Run every step; 0 when the terminal is ready, else the doctor's code or 2."""
    steps = Steps(
        out, options.state_dir / "provision-audit.jsonl", options.technician, options.terminal_id
    )
    steps.audit("provision_started", url=options.url)
    try:
        return await _provision(options, steps)
    except ProvisionError as exc:
        out.write(f"[{steps.number + 1:>2}/{Steps.TOTAL}] FAILED   {exc}\n")
        steps.audit("provision_failed", step=steps.number + 1, detail=str(exc)[:300])
        return 2


async def _provision(options: ProvisionOptions, steps: Steps) -> int:
    base = options.url.rstrip("/")
    if not base.startswith("https://"):
        raise ProvisionError("the enrolment URL must start with https://")
    try:
        code = proto.normalise_code(options.code)
        pin = proto.check_pin_text(options.ca_pin)
    except proto.EnrolmentError as exc:
        raise ProvisionError(f"{exc}: check what you typed") from None
    timeout = options.timeout_s

    # 1. the CA, trusted by its pin
    bundle_pem = await asyncio.to_thread(_request, f"{base}/v1/ca", _discovery_context(), timeout)
    try:
        trusted = proto.trusted_bundle(bundle_pem, pin)
    except (proto.EnrolmentError, proto.EnrolmentRefused) as exc:
        raise ProvisionError(
            f"{exc}: this is not the operator's enrolment service, or the pin is mistyped"
        ) from None
    context = _verified_context(bundle_pem)
    names = ", ".join(c.subject.rfc4514_string() for c in trusted)
    steps.step("CA", f"pin matches; trusting {names}", ca_pin=pin)

    # 2. the PIN pad
    driver = PinpadDriver(PinpadSettings(port=options.pinpad_port))
    await driver.start()
    try:
        try:
            async with asyncio.timeout(timeout):
                await driver.wait_connected()
                ident = await driver.identify()
        except (PinpadError, TimeoutError) as exc:
            raise ProvisionError(
                f"no PIN pad answering on {options.pinpad_port} ({type(exc).__name__}): check "
                "its cable and power, or give --pinpad PORT"
            ) from None
        pad = proto.PinpadIdentity(
            model=ident.model[:64], serial=ident.serial[:64], kbpk_kcv=ident.kbpk_kcv.hex().upper()
        )
        steps.step(
            "PIN pad",
            f"{ident.model} serial {ident.serial}, key-block protection key KCV {pad.kbpk_kcv}",
            pinpad_serial=pad.serial,
            pinpad_kbpk_kcv=pad.kbpk_kcv,
        )

        # 3. the terminal's key pair, made here
        key = new_terminal_key()
        steps.step("key", "EC P-256 key pair generated on this device")

        # 4. enrol
        nonce = secrets.token_bytes(proto.NONCE_SIZE)
        request = proto.EnrolRequest(
            terminal_id=options.terminal_id,
            code=code,
            csr_pem=csr_pem(key, options.terminal_id),
            nonce=proto.b64(nonce),
            pinpad=pad,
            technician=options.technician[:64],
        )
        body = request.model_dump_json().encode()
        raw = await asyncio.to_thread(_request, f"{base}/v1/enrol", context, timeout, body)
        try:
            response = proto.decode_response(raw)
        except proto.EnrolmentError as exc:
            raise ProvisionError(f"the enrolment service answered nonsense ({exc})") from None
        steps.step("enrol", "code accepted; certificate and keys received")

        # 5. verify everything before anything is written
        certificate, kbpk, kcv = open_response(response, request, key, nonce, trusted)
        serial = format(certificate.serial_number, "X")
        steps.step(
            "verify",
            f"signed by the enrolment service; certificate {serial} until "
            f"{certificate.not_valid_after_utc:%Y-%m-%d}; data key KCV {kcv}",
            certificate_serial=serial,
            data_initial_key_id=response.data_key.initial_key_id,
            data_kcv=kcv,
        )

        # 6. the PIN pad's key
        pin_kcv = None
        if response.pin_key is None:
            raise ProvisionError("the bridge sent no PIN key for the pad")
        try:
            async with asyncio.timeout(timeout):
                loaded = await driver.load_key_detail(
                    options.pin_key_slot, response.pin_key.key_block
                )
        except (PinpadError, TimeoutError) as exc:
            raise ProvisionError(
                f"the PIN pad refused its key ({exc}): the block is not for this pad's "
                "key-block protection key"
            ) from None
        pin_kcv = loaded.kcv.hex().upper()
        if not pin_kcv.startswith(response.pin_key.kcv) and not response.pin_key.kcv.startswith(
            pin_kcv
        ):
            await _confirm(
                base, context, timeout, key, request, kcv, pin_kcv, "failed", "KCV mismatch"
            )
            raise ProvisionError(
                f"the PIN pad reports KCV {pin_kcv} for the key the bridge sent as "
                f"{response.pin_key.kcv}: do not use this pad; call the operator"
            )
        steps.step(
            "PIN key",
            f"loaded into slot {options.pin_key_slot}: KCV {pin_kcv} matches",
            pin_initial_key_id=response.pin_key.initial_key_id,
            pin_kcv=pin_kcv,
            slot=options.pin_key_slot,
        )
    finally:
        await driver.close()

    # 7. files
    cfg = options.config_dir
    options.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_file(cfg / "tls" / "terminal-key.pem", private_pem(key), 0o600)
    write_file(cfg / "tls" / "terminal-cert.pem", response.certificate_pem.encode(), 0o644)
    write_file(cfg / "tls" / "ca-bundle.pem", response.ca_bundle_pem.encode(), 0o644)
    write_file(cfg / "keys" / "data-key.tr31", (response.data_key.key_block + "\n").encode(), 0o600)
    write_file(cfg / "keys" / "kbpk.hex", (kbpk.hex() + "\n").encode(), 0o600)
    del kbpk
    if not (cfg / "journal.key").exists():
        write_file(cfg / "journal.key", (secrets.token_hex(32) + "\n").encode(), 0o600)
    write_file(cfg / "agent.toml", render_agent_toml(options, response).encode(), 0o644)
    steps.step("files", f"{cfg / 'agent.toml'} and its key files written")

    # 8. tell the bridge
    await _confirm(base, context, timeout, key, request, kcv, pin_kcv, "loaded", "")
    steps.step("confirm", "the bridge recorded the keys as loaded")

    # 9. udev and systemd
    steps.step("system", _install_system(options))

    # 10. the self-test
    if not options.self_test:
        steps.step("doctor", "skipped (--no-self-test)")
        return 0
    from terminal_agent.doctor import main as doctor_main

    steps.out.write(f"[{Steps.TOTAL:>2}/{Steps.TOTAL}] doctor   self-test:\n")
    code_ = await asyncio.to_thread(
        doctor_main, ["--config", str(cfg / "agent.toml")], out=steps.out
    )
    steps.number += 1
    steps.audit("doctor", outcome="ok" if code_ == 0 else f"exit {code_}")
    verdict = {0: "ready to take payments", 1: "ready, with warnings above"}.get(
        code_, "NOT ready: fix the failures above, then run terminal-agent doctor again"
    )
    steps.out.write(f"terminal {options.terminal_id}: {verdict}\n")
    return code_


async def _confirm(
    base: str,
    context: ssl.SSLContext,
    timeout: float,
    key: ec.EllipticCurvePrivateKey,
    request: proto.EnrolRequest,
    data_kcv: str,
    pin_kcv: str | None,
    outcome: str,
    detail: str,
) -> None:
    confirm = proto.ConfirmRequest(
        terminal_id=request.terminal_id,
        nonce=request.nonce,
        data_kcv=data_kcv,
        pin_kcv=pin_kcv,
        outcome="loaded" if outcome == "loaded" else "failed",
        detail=detail,
    )
    signed = confirm.model_copy(
        update={"signature": proto.sign(key, proto.confirm_transcript(confirm))}
    )
    await asyncio.to_thread(
        _request,
        f"{base}/v1/enrol/confirm",
        context,
        timeout,
        signed.model_dump_json().encode(),
    )


def _install_system(options: ProvisionOptions) -> str:
    done: list[str] = []
    if options.udev_dir is not None:
        usb_serial = options.pinpad_usb_serial or usb_serial_of(options.pinpad_port)
        for name, data in udev_rules(options, usb_serial).items():
            write_file(options.udev_dir / name, data, 0o644)
            done.append(name)
        if usb_serial is None:
            done.append(
                "no pad rule: the pad is not a USB serial device (or give --pinpad-usb-serial)"
            )
        if shutil.which("udevadm") and systemd_running():
            options.run(["udevadm", "control", "--reload-rules"])
            options.run(["udevadm", "trigger", "--subsystem-match=tty"])
    if options.systemd_dir is not None:
        unit = (options.source_dir / "deploy" / AGENT_UNIT).read_bytes()
        write_file(options.systemd_dir / AGENT_UNIT, unit, 0o644)
        done.append(AGENT_UNIT)
        if systemd_running():
            options.run(["systemctl", "daemon-reload"])
            if options.run(["systemctl", "enable", AGENT_UNIT]) != 0:
                raise ProvisionError(f"systemctl enable {AGENT_UNIT} failed")
            done.append("enabled")
        else:
            done.append(f"systemd is not running here: run systemctl enable {AGENT_UNIT} on boot")
    return "; ".join(done) or "nothing to install (--no-udev --no-systemd)"
