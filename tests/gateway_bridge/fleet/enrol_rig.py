"""An enrolment service under test with real parts: a terminal CA in a directory, the
software key store with BDKs and a PIN pad KBPK loaded from components, a SQLite journal
with the terminal registered by ``gateway-bridge terminals add``, and the HTTPS server on
a free loopback port (uvicorn with the CA's server certificate).
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway_bridge.cli import main as bridge_cli
from gateway_bridge.config import BridgeSettings, load_settings
from gateway_bridge.fleet.ca import TerminalCA, new_ec_key
from gateway_bridge.fleet.enrolment import EnrolmentService
from gateway_bridge.fleet.terminals import enrolment_server
from gateway_bridge.keystore.software import SoftwareKeyStore, kcv_of
from hardware.services import free_tcp_port, tcp_accepts

TERMINAL_ID = "T-ENROL-1"
MERCHANT = "M000000000000009"


def _private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class EnrolRig:
    root: Path
    config: Path
    settings: BridgeSettings
    kek: bytes
    ca_dir: Path
    #: The PIN pads' key-block protection key (injected into the pads at the factory).
    pad_kbpk: bytes
    port: int = 0

    @property
    def ca(self) -> TerminalCA:
        """The CA as it is on disk now (the service changes it)."""
        return TerminalCA(self.ca_dir, passphrase=None)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def store(self) -> SoftwareKeyStore:
        return SoftwareKeyStore(self.root / "keys.json", self.kek)

    def cli(self, *args: str) -> tuple[int, str]:
        out = io.StringIO()
        code = bridge_cli([*args], out=out, environ={})
        return code, out.getvalue()

    def issue_code(self, terminal_id: str = TERMINAL_ID) -> tuple[str, str]:
        """``terminals enrol-code`` as the operator runs it: (code, CA pin) from its output."""
        code, text = self.cli("terminals", "enrol-code", "--config", str(self.config),
                              "--id", terminal_id, "--by", "operator-ann")  # fmt: skip
        assert code == 0, text
        words = text.split()
        return words[words.index("code") + 3], words[words.index("--ca-pin") + 1]


def make_enrol_rig(
    root: Path,
    *,
    terminals: tuple[str, ...] = (TERMINAL_ID,),
    ca_dir: Path | None = None,
    ca_passphrase_file: Path | None = None,
    extra_toml: str = "",
) -> EnrolRig:
    """The bridge side. ``ca_dir`` (with its passphrase file) is an existing terminal CA,
    the production broker's; by default a new one is made. ``extra_toml`` is added to the
    bridge configuration (its [broker] section, for one)."""
    now = datetime.now(UTC)
    root.mkdir(parents=True, exist_ok=True)
    if ca_dir is None:
        ca_dir = root / "ca"
        TerminalCA.create(ca_dir, passphrase=None, now=now)
    passphrase = None if ca_passphrase_file is None else ca_passphrase_file.read_bytes().strip()
    ca = TerminalCA(ca_dir, passphrase=passphrase)
    server_key, signer_key = new_ec_key(), new_ec_key()
    server = ca.issue_server(
        server_key.public_key(), ["localhost"], [ipaddress.ip_address("127.0.0.1")], now=now
    )
    (root / "server-cert.pem").write_bytes(server.pem)
    _private(root / "server-key.pem", _key_pem(server_key))
    signer = ca.issue_enrolment(signer_key.public_key(), "enrol-signer-1", now=now)
    (root / "signer-cert.pem").write_bytes(signer.pem)
    _private(root / "signer-key.pem", _key_pem(signer_key))

    kek = secrets.token_bytes(32)
    _private(root / "kek.hex", kek.hex().encode())
    store = SoftwareKeyStore(root / "keys.json", kek, create=True)
    store.create_bdk("data-bdk", "AES128", "data")
    store.create_bdk("pin-bdk", "AES128", "pin")
    part1, part2 = secrets.token_bytes(32), secrets.token_bytes(32)
    pad_kbpk = bytes(a ^ b for a, b in zip(part1, part2, strict=True))
    store.import_components(
        "kbpk-pad",
        "AES256",
        "kbpk",
        [(part1, kcv_of(part1, "AES256")), (part2, kcv_of(part2, "AES256"))],
    )
    out = io.StringIO()
    assert bridge_cli(["journal-keys", str(root / "journal.keys")], out=out) == 0
    port = free_tcp_port()
    config = root / "bridge.toml"
    config.write_text(
        'bridge_id = "bridge-enrol"\n'
        '[keystore]\nkind = "software"\npath = "keys.json"\nkek_file = "kek.hex"\n'
        '[journal]\nkind = "sqlite"\npath = "journal.db"\n'
        '[journal_keys]\nkey_file = "journal.keys"\n'
        "[enrolment]\n"
        f'host = "127.0.0.1"\nport = {port}\nca_dir = "{ca_dir}"\n'
        + ("" if ca_passphrase_file is None else f'ca_passphrase_file = "{ca_passphrase_file}"\n')
        + 'tls_cert_file = "server-cert.pem"\ntls_key_file = "server-key.pem"\n'
        'signer_cert_file = "signer-cert.pem"\nsigner_key_file = "signer-key.pem"\n'
        'broker_host = "127.0.0.1"\nbroker_port = 8883\n'
        'pinpad_kbpk_ids = ["kbpk-pad"]\n'
        "max_attempts = 3\nrate_per_minute = 1000\n"
        'audit_log = "enrolment-audit.jsonl"\n'
        f"{extra_toml}"
    )
    rig = EnrolRig(root, config, load_settings(config), kek, ca_dir, pad_kbpk, port)
    for tid in terminals:
        code, text = rig.cli("terminals", "add", "--config", str(config), "--id", tid,
                             "--merchant", MERCHANT, "--data-bdk", "data-bdk",
                             "--pin-bdk", "pin-bdk")  # fmt: skip
        assert code == 0, text
    return rig


@contextlib.asynccontextmanager
async def serving(rig: EnrolRig) -> AsyncIterator[EnrolmentService]:
    """The HTTPS enrolment service of ``rig``, in this event loop."""
    async with enrolment_server(rig.settings, environ={}) as service:
        assert tcp_accepts("127.0.0.1", rig.port)
        yield service
