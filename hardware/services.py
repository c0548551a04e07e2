"""Small process helpers shared by the device services (pcscd, Mosquitto).

Every service the hardware harness starts is a *child* of the harness: it is started
with :class:`subprocess.Popen`, its output goes to a log file in a private directory
(never to a pipe that could fill up and stall it), and it is stopped with terminate then
``wait()`` so no zombie is left behind (a zombie's stale pid file stops the next pcscd
from starting; DESIGN 9).

Exception tree::

    ServiceError (RuntimeError)        a service could not be started or stopped
    └── MissingPackageError            a binary is missing; names the Debian package
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class ServiceError(RuntimeError):
    """A device service could not be started or stopped."""


class MissingPackageError(ServiceError):
    """A program the harness needs is not installed; the message names the package."""

    def __init__(self, program: str, package: str) -> None:
        self.program = program
        self.package = package
        super().__init__(
            f"{program!r} not found: install the Debian package {package!r} "
            f"(apt-get install {package}; `make test` does it for you)"
        )


def require_program(program: str, package: str) -> str:
    """The absolute path of ``program``, or :class:`MissingPackageError` naming ``package``."""
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise MissingPackageError(program, package)
    return path


def free_tcp_port(host: str = "127.0.0.1", *, span: int = 1) -> int:
    """A TCP port on ``host`` that is free now, and whose ``span - 1`` successors are too.

    The port is only known to be free at the moment of the check; services that bind it
    a few milliseconds later accept that race (the kernel hands out ephemeral ports in
    an order that makes a collision unlikely).
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port: int = probe.getsockname()[1]
        if port + span - 1 <= 65535 and all(_port_free(host, p) for p in range(port, port + span)):
            return port
    raise ServiceError(f"no run of {span} free TCP ports found on {host}")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def tcp_listening(port: int) -> bool:
    """Whether some socket listens on TCP ``port`` (any address), without connecting.

    Read from ``/proc/net/tcp`` and ``/proc/net/tcp6`` so that the check does not itself
    open a connection (a connection to vpcd would look like a card being inserted).
    """
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[1].endswith(wanted) and fields[3] == "0A":
                    return True
    return False


def tcp_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds (the probe closes it at once)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    what: str,
    log: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``ready`` until it is true; fail clearly on timeout or if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if process is not None and process.poll() is not None:
            raise ServiceError(
                f"{what}: the process exited with status {process.returncode}\n{log()}"
            )
        if time.monotonic() >= deadline:
            raise ServiceError(f"{what}: not ready after {timeout:.1f} s\n{log()}")
        time.sleep(0.01)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    """Terminate a child and reap it (kill if it ignores SIGTERM); its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    return process.returncode


def read_log(path: Path, limit: int = 20_000) -> str:
    """The last ``limit`` characters of a service's log file ('' when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-limit:]
