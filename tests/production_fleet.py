"""The production broker for tests: Mosquitto 2 on what ``gateway-bridge broker-config``
writes (DESIGN 4, 7 and 9; docs/broker.md).

:func:`production_fleet` makes a terminal CA with ``gateway-bridge ca init``, a server
certificate for ``127.0.0.1``/``localhost`` and the bridges' client certificates with
``ca issue-server`` / ``ca issue-bridge``, writes the broker directory with
``gateway-bridge broker-config`` (mTLS listener, ``use_identity_as_username``, the
per-terminal ACL, persistence) and starts ``mosquitto -c`` on it. Terminal certificates
(CN = terminal id) are issued on request from a CSR with ``ca issue-terminal``, also
back-dated or from a foreign CA for the refusal tests. On exit the broker is stopped and
reaped and the directory removed.

The CLIs are called as functions (``ca_main`` and ``broker_config_main`` are what
``gateway-bridge ca`` and ``gateway-bridge broker-config`` run). The root is a fresh
``/tmp`` directory with mode 0755 because Mosquitto drops to user ``mosquitto``, which
must read the configuration, certificates, CRL and ACL again on SIGHUP; the persistence
directory is owned by that user.

:class:`GeneratedBroker` is a :class:`hardware.mosquitto.MosquittoService` whose
configuration is the generated file, so code written for the plain test broker (the
bridge rig, ``restart()``, ``log_text()``) runs unchanged on the production one.
"""

from __future__ import annotations

import contextlib
import io
import os
import pwd
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from gateway_bridge.fleet.ca import TerminalCA, build_csr, new_ec_key, now_utc
from gateway_bridge.fleet.cli import broker_config_main, ca_main
from hardware.mosquitto import BrokerConfig, MosquittoService
from hardware.services import (
    ServiceError,
    free_tcp_port,
    require_program,
    tcp_accepts,
    wait_until,
)

__all__ = [
    "HOST",
    "FleetSetupError",
    "GeneratedBroker",
    "ProductionFleet",
    "production_fleet",
]

HOST = "127.0.0.1"
PASSPHRASE = "correct horse battery staple"  # the test CA's passphrase (a test value)


class FleetSetupError(RuntimeError):
    """A ``gateway-bridge ca`` / ``broker-config`` step failed; carries its output."""


def _private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


class GeneratedBroker(MosquittoService):
    """Mosquitto started with ``mosquitto -c CONF`` on a configuration it did not write.

    ``workdir`` holds the log (``mosquitto.log``); it is not removed on stop (the fleet
    owns it). ``restart()`` keeps the port, and with it the persisted sessions.
    """

    def __init__(
        self, conf: Path, *, port: int, workdir: Path, start_timeout: float = 10.0
    ) -> None:
        super().__init__(
            BrokerConfig(host=HOST, allow_anonymous=False),
            port=port,
            workdir=workdir,
            start_timeout=start_timeout,
        )
        self.conf = conf
        self._workdir = workdir

    @property
    def pid(self) -> int:
        if self._process is None:
            raise ServiceError("the broker is not running")
        return self._process.pid

    def start(self) -> GeneratedBroker:
        if self.running:
            raise ServiceError("the broker is already running")
        mosquitto = require_program("mosquitto", "mosquitto")
        with (self.workdir / "mosquitto.log").open("wb") as log:
            self._process = subprocess.Popen(
                [mosquitto, "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(
                lambda: tcp_accepts(self.host, self.port),
                timeout=self.start_timeout,
                process=self._process,
                what="mosquitto with the generated config",
                log=lambda: f"mosquitto output:\n{self.log_text()}",
            )
        except ServiceError:
            self.stop()
            raise
        return self

    def reload(self, timeout: float = 5.0) -> None:
        """SIGHUP (re-read config, ACL, CRL) and wait until the broker logged it."""
        before = self.log_text().count("Reloading config")
        os.kill(self.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.log_text().count("Reloading config") == before:
            if time.monotonic() > deadline:
                raise ServiceError(f"mosquitto did not reload:\n{self.log_text()}")
            time.sleep(0.02)


@dataclass
class ProductionFleet:
    """A CA, its broker and the credentials issued so far (all under ``root``)."""

    root: Path
    ca: TerminalCA
    broker_dir: Path
    persistence_dir: Path
    broker: GeneratedBroker
    bridges: tuple[str, ...]
    output: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def ca_dir(self) -> Path:
        return self.ca.directory

    @property
    def bundle(self) -> Path:
        """The CA bundle every client verifies the broker with."""
        return self.ca.bundle_path

    def creds(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) files of a bridge or terminal issued under ``name``."""
        return self.root / f"{name}-cert.pem", self.root / f"{name}-key.pem"

    def log(self) -> str:
        return self.broker.log_text()

    def ca_cli(self, *args: str, now: datetime | None = None) -> str:
        """Run ``gateway-bridge ca ARGS --dir CA``; its output. :class:`FleetSetupError`."""
        return _ca(self.ca_dir, list(args), now=now, root=self.root)

    def issue_terminal(
        self,
        terminal_id: str,
        *,
        days_ago: int = 0,
        days: int | None = None,
        ca_dir: Path | None = None,
    ) -> tuple[Path, Path]:
        """A terminal's key and certificate (CN = ``terminal_id``) as provisioning makes
        them: the key stays here, a CSR goes to ``ca issue-terminal``. ``days_ago``
        back-dates the issue (with a short ``days``: an expired certificate); ``ca_dir``
        names another CA (a foreign one)."""
        cert, key_file = self.creds(terminal_id)
        key = new_ec_key()
        _private(
            key_file,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        csr = self.root / f"{terminal_id}.csr"
        csr.write_bytes(build_csr(key, terminal_id).public_bytes(serialization.Encoding.PEM))
        args = ["issue-terminal", "--csr", str(csr), "--id", terminal_id, "--out", str(cert)]
        if days is not None:
            args += ["--days", str(days)]
        _ca(ca_dir or self.ca_dir, args, now=now_utc() - timedelta(days=days_ago), root=self.root)
        return cert, key_file

    def foreign_ca(self, name: str = "foreign") -> Path:
        """Another CA the broker does not trust; its directory."""
        directory = self.root / name
        if not directory.exists():
            _ca(directory, ["init"], now=None, root=self.root)
        return directory

    def tls_context(self, name: str) -> ssl.SSLContext:
        """A client context verifying the broker, presenting ``name``'s certificate."""
        context = ssl.create_default_context(cafile=str(self.bundle))
        cert, key = self.creds(name)
        context.load_cert_chain(str(cert), str(key))
        return context

    def persisted(self) -> bytes:
        """The broker's persistence files (retained messages, queued sessions); complete
        once the broker has stopped (Mosquitto saves on exit)."""
        return b"".join(p.read_bytes() for p in sorted(self.persistence_dir.iterdir()))


def _ca(
    ca_dir: Path,
    args: list[str],
    *,
    now: datetime | None,
    root: Path,
) -> str:
    out = io.StringIO()
    argv = [*args, "--dir", str(ca_dir), "--passphrase-file", str(root / "ca-passphrase")]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = ca_main(argv, environ={}, out=out, now=now)
    if code != 0:
        raise FleetSetupError(f"gateway-bridge ca {args[0]} failed: {err.getvalue()}")
    return out.getvalue()


@contextlib.contextmanager
def production_fleet(
    *, terminals: Iterable[str] = (), bridges: Iterable[str] = ("bridge-1",)
) -> Iterator[ProductionFleet]:
    """A CA and a running Mosquitto on the generated production configuration.

    ``bridges`` get client certificates and their ACL block; ``terminals`` get
    certificates now (more with :meth:`ProductionFleet.issue_terminal`). Everything
    started is stopped, and the directory removed, on exit.
    """
    bridges = tuple(bridges)
    root = Path(tempfile.mkdtemp(prefix="fleet-"))
    root.chmod(0o755)  # the broker, as user mosquitto, reads its files below
    broker: GeneratedBroker | None = None
    try:
        _private(root / "ca-passphrase", PASSPHRASE.encode())
        ca_dir = root / "ca"
        _ca(ca_dir, ["init"], now=None, root=root)
        for bridge in bridges:
            cert = root / f"{bridge}-cert.pem"
            key = root / f"{bridge}-key.pem"
            _ca(
                ca_dir,
                ["issue-bridge", "--name", bridge, "--out", str(cert), "--key-out", str(key)],
                now=None,
                root=root,
            )
        server = ["--out", str(root / "server-cert.pem"), "--key-out", str(root / "server-key.pem")]
        _ca(
            ca_dir,
            ["issue-server", "--dns", "localhost", "--ip", HOST, *server],
            now=None,
            root=root,
        )
        persist = root / "persist"
        persist.mkdir()
        user = pwd.getpwnam("mosquitto")
        os.chown(persist, user.pw_uid, user.pw_gid)
        port = free_tcp_port(HOST)
        broker_dir = root / "broker"
        argv = [
            "--ca-dir", str(ca_dir),
            "--server-cert", str(root / "server-cert.pem"),
            "--server-key", str(root / "server-key.pem"),
            *(word for bridge in bridges for word in ("--bridge", bridge)),
            "--out", str(broker_dir),
            "--port", str(port),
            "--bind", HOST,
            "--persistence-dir", str(persist),
        ]  # fmt: skip
        out = io.StringIO()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = broker_config_main(argv, environ={}, out=out)
        if code != 0:
            raise FleetSetupError(f"gateway-bridge broker-config failed: {err.getvalue()}")
        fleet = ProductionFleet(
            root=root,
            ca=TerminalCA(ca_dir, passphrase=PASSPHRASE.encode()),
            broker_dir=broker_dir,
            persistence_dir=persist,
            broker=GeneratedBroker(broker_dir / "mosquitto.conf", port=port, workdir=root),
            bridges=bridges,
            output=[out.getvalue()],
        )
        for terminal in terminals:
            fleet.issue_terminal(terminal)
        broker = fleet.broker.start()
        # Only the TLS listener: a listener option before `listener` would make Mosquitto
        # open a default plain listener on 1883 as well.
        if fleet.log().count("listen socket on port") != 1:
            raise FleetSetupError(f"more than the TLS listener:\n{fleet.log()}")
        yield fleet
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)
