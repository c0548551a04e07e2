"""A private pcscd (pcsc-lite 1.9.9) whose only reader is a vsmartcard vpcd reader.

How it is arranged, and why (DESIGN 7 and 9):

* ``reader.conf``: one vpcd entry in a private config directory, passed with
  ``pcscd --config DIR``. vpcd 3.3 takes its TCP port from ``CHANNELID``; ``DEVICENAME
  /dev/null:PORT`` keeps it in server mode (a ``host:port`` DEVICENAME makes vpcd dial
  out to the card instead, and vpcd 3.3 then aborts pcscd with an ``fd_set`` overflow
  while no card listens, so that mode is not used). vpcd binds the port on *all*
  interfaces without authentication (not configurable in 3.3): development only.
* One entry gives two readers, ``"<name> 00 00"`` on ``PORT`` and ``"<name> 00 01"`` on
  ``PORT + 1``; the card link uses the first (:attr:`PcscdService.card_reader`).
* pcscd 1.9.9 always puts its socket at ``/run/pcscd/pcscd.comm`` (it ignores
  ``PCSCLITE_CSOCK_NAME``), so it runs in a private mount namespace where a private
  directory is bind-mounted on ``/run/pcscd``. Clients are pointed at the socket with
  ``PCSCLITE_CSOCK_NAME`` (:attr:`PcscdService.client_env`).
* libpcsclite reads ``PCSCLITE_CSOCK_NAME`` **once per process** (``getSocketName()``
  behind ``pthread_once`` in ``winscard_msg.c``): a process that has established one
  PC/SC context cannot be pointed at another pcscd. Hence one pcscd per test session.
* pcscd runs as a child with ``--foreground`` (no ``--auto-exit``), its log goes to a
  file in the private directory, and it is stopped with terminate and ``wait()``: an
  unreaped child's stale pid file would stop the next pcscd (DESIGN 9). USB hotplug
  (libudev) cannot be switched off in 1.9.9; on a machine without USB readers it only
  finds our vpcd entry.

Running as root, ``unshare --mount`` is enough; otherwise ``unshare --user
--map-root-user --mount`` is tried (needs unprivileged user namespaces). Without an
existing ``/run/pcscd`` a tmpfs is mounted on ``/run`` inside the namespace, so the
host's ``/run`` is never written.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from hardware.services import (
    MissingPackageError,
    ServiceError,
    free_tcp_port,
    read_log,
    require_program,
    stop_process,
    tcp_listening,
    wait_until,
)

VPCD_PACKAGE = "vsmartcard-vpcd"
PCSCD_RUN_DIR = "/run/pcscd"

# Run inside the new mount namespace: give pcscd a private /run/pcscd, then become it.
_NAMESPACE_SCRIPT = """set -e
if [ ! -d /run/pcscd ]; then
    mkdir /run/pcscd 2>/dev/null || { mount -t tmpfs -o mode=0755 tmpfs /run; mkdir /run/pcscd; }
fi
mount --bind "$1" /run/pcscd
shift
exec "$@"
"""


def find_vpcd_driver() -> Path:
    """The vpcd IFD handler library, as installed by the ``vsmartcard-vpcd`` package."""
    candidates: list[Path] = []
    dpkg = shutil.which("dpkg")
    if dpkg is not None:
        listing = subprocess.run(  # noqa: S603 - fixed arguments
            [dpkg, "-L", VPCD_PACKAGE], capture_output=True, text=True, check=False
        )
        candidates += [
            Path(line) for line in listing.stdout.splitlines() if "libifdvpcd.so" in line
        ]
    candidates += sorted(Path("/usr/lib/pcsc/drivers").glob("**/libifdvpcd.so*"))
    for path in sorted(candidates, key=lambda p: (p.name != "libifdvpcd.so", str(p))):
        if path.is_file():
            return path
    raise MissingPackageError("libifdvpcd.so", VPCD_PACKAGE)


def render_reader_conf(friendly_name: str, port: int, driver: Path) -> str:
    """A pcsc-lite reader.conf entry for a vpcd reader (server mode) on ``port``."""
    if not 1 <= port <= 65534:
        raise ValueError("vpcd needs a port and its successor")
    return (
        f'FRIENDLYNAME "{friendly_name}"\n'
        f"DEVICENAME   /dev/null:0x{port:04X}\n"
        f"LIBPATH      {driver}\n"
        f"CHANNELID    0x{port:04X}\n"
    )


class PcscdService:
    """A private pcscd with one vpcd reader entry; a context manager.

    ``port`` is vpcd's TCP port (both it and ``port + 1`` must be free); by default a free
    one is chosen. ``workdir`` (default: a fresh temporary directory, removed on stop)
    holds ``reader.conf.d/``, ``run/pcscd.comm`` and ``pcscd.log``.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        workdir: Path | None = None,
        friendly_name: str = "Virtual PCD",
        start_timeout: float = 10.0,
        debug: bool = False,
    ) -> None:
        self.friendly_name = friendly_name
        self.start_timeout = start_timeout
        self.debug = debug
        self._given_port = port
        self._given_workdir = workdir
        self._workdir: Path | None = None
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- what clients need ----------------------------------------------------------

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise ServiceError("pcscd has not been started")
        return self._workdir

    @property
    def vpcd_port(self) -> int:
        """The TCP port the card connects to (the first reader's)."""
        if self._port is None:
            raise ServiceError("pcscd has not been started")
        return self._port

    @property
    def socket_path(self) -> Path:
        """pcscd's client socket (what ``PCSCLITE_CSOCK_NAME`` must name)."""
        return self.workdir / "run" / "pcscd.comm"

    @property
    def client_env(self) -> dict[str, str]:
        """Environment entries that point a PC/SC client process at this pcscd."""
        return {"PCSCLITE_CSOCK_NAME": str(self.socket_path)}

    @property
    def reader_names(self) -> tuple[str, str]:
        """The two readers of the vpcd entry: on ``vpcd_port`` and on ``vpcd_port + 1``."""
        return (f"{self.friendly_name} 00 00", f"{self.friendly_name} 00 01")

    @property
    def card_reader(self) -> str:
        """The reader a card connected to :attr:`vpcd_port` appears in."""
        return self.reader_names[0]

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        """pcscd's output so far (for failure messages)."""
        return read_log(self.workdir / "pcscd.log") if self._workdir else ""

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> PcscdService:
        if self.running:
            raise ServiceError("pcscd is already running")
        pcscd = require_program("pcscd", "pcscd")
        unshare = require_program("unshare", "util-linux")
        driver = find_vpcd_driver()
        if self._workdir is None:
            if self._given_workdir is not None:
                self._given_workdir.mkdir(parents=True, exist_ok=True)
                self._workdir = self._given_workdir
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="pcscd-"))
        if self._port is None:
            self._port = self._given_port or free_tcp_port(span=2)
        conf_dir = self.workdir / "reader.conf.d"
        run_dir = self.workdir / "run"
        conf_dir.mkdir(exist_ok=True)
        run_dir.mkdir(exist_ok=True)
        for stale in run_dir.iterdir():  # a previous run's socket and pid file
            stale.unlink()
        (conf_dir / "vpcd").write_text(
            render_reader_conf(self.friendly_name, self.vpcd_port, driver)
        )

        namespace = [unshare, "--mount", "--propagation", "private"]
        if os.geteuid() != 0:
            namespace[1:1] = ["--user", "--map-root-user"]
        command = [pcscd, "--foreground", "--config", str(conf_dir)]
        if self.debug:
            command.append("--debug")
        with (self.workdir / "pcscd.log").open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own binaries and paths
                [*namespace, "sh", "-c", _NAMESPACE_SCRIPT, "pcscd-ns", str(run_dir), *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(
                lambda: (
                    self.socket_path.exists()
                    and tcp_listening(self.vpcd_port)
                    and tcp_listening(self.vpcd_port + 1)
                ),
                timeout=self.start_timeout,
                process=self._process,
                what=f"pcscd with a vpcd reader on port {self.vpcd_port}",
                log=self._failure_log,
            )
        except ServiceError:
            self.stop()
            raise
        return self

    def _failure_log(self) -> str:
        hint = ""
        if os.geteuid() != 0:
            hint = (
                "(not root: pcscd runs in a user namespace, which needs unprivileged "
                "user namespaces and an existing /run/pcscd or a mountable /run)\n"
            )
        return f"{hint}pcscd output:\n{self.log_text()}"

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate pcscd and reap it; a temporary workdir is removed."""
        if self._process is not None:
            stop_process(self._process, timeout)
            self._process = None
        if self._workdir is not None and self._given_workdir is None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._port = None if self._given_port is None else self._port

    def restart(self) -> None:
        """Stop and start again with the same port and socket path."""
        if self._process is not None:
            stop_process(self._process)
            self._process = None
        self.start()

    def __enter__(self) -> PcscdService:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclasses.dataclass(frozen=True)
class ReaderState:
    """What PC/SC reports for one reader."""

    present: bool
    atr: bytes
    events: int
    """pcscd's card event counter for the reader (high word of ``dwEventState``)."""


def wait_for_card(
    reader: str, *, present: bool, timeout: float = 5.0, after_events: int | None = None
) -> ReaderState:
    """Block until PC/SC reports a card in ``reader`` (or none) and return the state.

    With ``after_events``, also wait until pcscd's event counter has passed that value,
    i.e. pcscd's own polling has seen the change. This matters: when a transmit fails
    because the card left, pcscd can report the reader empty before its polling thread
    has noticed; a card inserted in that window looks to the polling thread as if the
    old card never left, and no insertion event ever comes.

    Uses ``SCardGetStatusChange`` through pyscard in this process, so the process must
    already point at the right pcscd (``PCSCLITE_CSOCK_NAME``, read once per process).
    pcscd polls vpcd about every 400 ms, so an insertion or removal shows within ~0.5 s.
    """
    from smartcard import scard  # type: ignore[import-untyped]  # pyscard has no stubs

    result, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if result != scard.SCARD_S_SUCCESS:
        raise ServiceError(f"no PC/SC context: {scard.SCardGetErrorMessage(result)}")
    try:
        deadline = time.monotonic() + timeout
        known = scard.SCARD_STATE_UNAWARE
        while True:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            result, states = scard.SCardGetStatusChange(context, remaining_ms, [(reader, known)])
            if result not in (scard.SCARD_S_SUCCESS, scard.SCARD_E_TIMEOUT):
                raise ServiceError(
                    f"SCardGetStatusChange on {reader!r}: {scard.SCardGetErrorMessage(result)}"
                )
            _, event_state, atr = states[0]
            state = ReaderState(
                present=bool(event_state & scard.SCARD_STATE_PRESENT),
                atr=bytes(atr) if event_state & scard.SCARD_STATE_PRESENT else b"",
                events=(event_state >> 16) & 0xFFFF,
            )
            if state.present == present and (after_events is None or state.events > after_events):
                return state
            if result == scard.SCARD_E_TIMEOUT or remaining_ms == 0:
                wanted = "a card" if present else "no card"
                raise ServiceError(f"{reader!r} did not show {wanted} within {timeout} s")
            known = event_state & ~scard.SCARD_STATE_CHANGED
    finally:
        scard.SCardReleaseContext(context)
