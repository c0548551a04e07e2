"""A private Mosquitto 2 broker for tests and hardware-in-the-loop runs (DESIGN 7).

:func:`render_config` writes ``mosquitto.conf`` from a typed :class:`BrokerConfig`; the
provisioning work adds TLS and ACL fields there. :class:`MosquittoService` starts
``mosquitto -c CONF`` as a child on a loopback port, waits until the port accepts
connections, and stops it with terminate and ``wait()``; :meth:`MosquittoService.restart`
brings it back on the same port so tests can exercise reconnects.

Traps it avoids (DESIGN 9): ``set_tcp_nodelay true`` (Nagle turns a request/response into
88 ms); ``max_queued_messages`` sized far above the default 1000 (past it QoS 1 messages
are dropped); logs to stderr (``log_dest stdout`` is block-buffered when redirected),
which goes to a file in the private directory. Started as root, Mosquitto drops to user
``mosquitto``: the private directory and everything the broker must read later
(certificates, password and ACL files) are made world-readable; keys that must not be
world-readable should be ``chown``-ed to that user instead.

The :func:`mosquitto_broker` pytest fixture lives here and is registered through
``hardware.pcsc.fixtures``.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from hardware.services import (
    ServiceError,
    free_tcp_port,
    read_log,
    require_program,
    stop_process,
    tcp_accepts,
    wait_until,
)


@dataclasses.dataclass(frozen=True)
class BrokerConfig:
    """What goes into ``mosquitto.conf``. Defaults are the plain test broker."""

    host: str = "127.0.0.1"
    allow_anonymous: bool = True
    max_queued_messages: int = 100_000
    max_inflight_messages: int = 1_000
    log_types: tuple[str, ...] = ("error", "warning", "notice", "information")
    extra_lines: tuple[str, ...] = ()
    """Further ``mosquitto.conf`` lines (TLS, ACL ...) until they get typed fields."""


def render_config(config: BrokerConfig, port: int) -> str:
    """The text of ``mosquitto.conf`` (Mosquitto 2.0) for ``config`` listening on ``port``."""
    if not 1 <= port <= 65535:
        raise ValueError("port out of range")
    lines = [
        "# written by hardware.mosquitto",
        "per_listener_settings false",
        f"listener {port} {config.host}",
        f"allow_anonymous {'true' if config.allow_anonymous else 'false'}",
        "set_tcp_nodelay true",
        f"max_queued_messages {config.max_queued_messages}",
        f"max_inflight_messages {config.max_inflight_messages}",
        "persistence false",
        "log_dest stderr",
        *(f"log_type {kind}" for kind in config.log_types),
        "log_timestamp_format %H:%M:%S",
        "connection_messages true",
        *config.extra_lines,
    ]
    return "\n".join(lines) + "\n"


class MosquittoService:
    """A Mosquitto broker on a private config and a free loopback port; a context manager."""

    def __init__(
        self,
        config: BrokerConfig | None = None,
        *,
        port: int | None = None,
        workdir: Path | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.config = config or BrokerConfig()
        self.start_timeout = start_timeout
        self._port = port
        self._given_workdir = workdir
        self._workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_chunks: list[str] = []

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        if self._port is None:
            raise ServiceError("the broker has not been started")
        return self._port

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise ServiceError("the broker has not been started")
        return self._workdir

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        """Everything the broker logged, across restarts (for failure messages)."""
        current = read_log(self.workdir / "mosquitto.log") if self._workdir else ""
        return "".join(self._log_chunks) + current

    def start(self) -> MosquittoService:
        if self.running:
            raise ServiceError("the broker is already running")
        mosquitto = require_program("mosquitto", "mosquitto")
        if self._workdir is None:
            if self._given_workdir is not None:
                self._given_workdir.mkdir(parents=True, exist_ok=True)
                self._workdir = self._given_workdir
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="mosquitto-"))
            self._workdir.chmod(0o755)  # the broker drops to user mosquitto
        if self._port is None:
            self._port = free_tcp_port(self.host)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(render_config(self.config, self.port))
        conf.chmod(0o644)
        with (self.workdir / "mosquitto.log").open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our binary, our config
                [mosquitto, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(
                lambda: tcp_accepts(self.host, self.port),
                timeout=self.start_timeout,
                process=self._process,
                what=f"mosquitto on {self.host}:{self.port}",
                log=lambda: f"mosquitto output:\n{self.log_text()}",
            )
        except ServiceError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker and reap it; a temporary workdir is removed."""
        self._halt(timeout)
        if self._workdir is not None and self._given_workdir is None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def restart(self, timeout: float = 5.0) -> None:
        """Stop the broker and start it again on the same port (sessions are lost)."""
        self._halt(timeout)
        self.start()

    def _halt(self, timeout: float) -> None:
        if self._process is not None:
            stop_process(self._process, timeout)
            self._process = None
            if self._workdir is not None:
                self._log_chunks.append(read_log(self.workdir / "mosquitto.log"))

    def __enter__(self) -> MosquittoService:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture
def mosquitto_broker() -> Iterator[MosquittoService]:
    """A running plain (anonymous, no TLS) Mosquitto on a free loopback port.

    Its directory is a fresh ``/tmp/mosquitto-*`` rather than pytest's ``tmp_path``,
    whose 0700 parents user ``mosquitto`` could not enter once TLS files live there.
    """
    broker = MosquittoService()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
