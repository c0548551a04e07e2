"""A private, throw-away PostgreSQL cluster for tests, benchmarks and demos (DESIGN 7).

:func:`start_private_cluster` runs ``initdb`` and ``pg_ctl`` from the Debian package
``postgresql`` on a private data directory, a free loopback port and a Unix socket
directory inside the private directory, listening on 127.0.0.1 only. ``initdb`` refuses
to run as root, so as root both run as the ``postgres`` user (``runuser -u postgres``)
and the private directory is handed to that user. Not for production: authentication is
``trust`` on loopback.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEBIAN_PACKAGE = "postgresql"


class PostgresNotInstalled(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian "
            f"package {DEBIAN_PACKAGE!r} (apt-get install -y {DEBIAN_PACKAGE})"
        )


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl`` (``pg_config --bindir`` first)."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            candidates.append(Path(done.stdout.strip()))

    def version(path: str) -> int:
        name = Path(path).parent.name
        return int(name) if name.isdigit() else 0

    candidates += [
        Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    ]
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresNotInstalled()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrivateCluster:
    """A running private cluster; :meth:`stop` stops it and removes its directory."""

    directory: Path
    port: int
    bindir: Path
    as_postgres: bool

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        return self.directory / "sock"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _command(self, *args: str) -> list[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        return [*prefix, *args]

    def stop(self) -> None:
        try:
            subprocess.run(  # noqa: S603 - fixed argv, no shell
                self._command(
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ),
                capture_output=True,
                check=False,
                timeout=60,
            )
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PrivateCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_private_cluster(*, fsync: bool = True) -> PrivateCluster:
    """initdb + pg_ctl start on a private directory; returns once the server accepts."""
    bindir = find_bindir()
    as_postgres = os.geteuid() == 0
    directory = Path(tempfile.mkdtemp(prefix="pos-pg-"))
    cluster = PrivateCluster(directory, _free_port(), bindir, as_postgres)
    cluster.socket_dir.mkdir()
    if as_postgres:
        for path in (directory, cluster.socket_dir):
            shutil.chown(path, user="postgres", group="postgres")
    try:
        _run(
            cluster._command(
                str(bindir / "initdb"),
                "-D",
                str(cluster.data_dir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ),
            "initdb",
        )
        options = (
            f"-p {cluster.port} -k {cluster.socket_dir} -c listen_addresses=127.0.0.1 "
            f"-c fsync={'on' if fsync else 'off'} -c max_connections=200"
        )
        _run(
            cluster._command(
                str(bindir / "pg_ctl"),
                "-D",
                str(cluster.data_dir),
                "-l",
                str(directory / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ),
            "pg_ctl start",
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(  # noqa: S603 - fixed argv, no shell
        command, capture_output=True, text=True, check=False, timeout=120
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{what} failed ({done.returncode}): " + " | ".join(tail))
