"""Fixtures shared by the bridge's tests: a private PostgreSQL cluster and a SoftHSM2 token.

Both are started once per session and stopped at its end; a missing Debian package is a
failure that names it, never a skip.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway_bridge.journal.pgcluster import (
    PostgresNotInstalled,
    PrivateCluster,
    start_private_cluster,
)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PrivateCluster]:
    try:
        cluster = start_private_cluster()
    except PostgresNotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


TOKEN_LABEL = "gateway-bridge-test"
USER_PIN = "246813"
SO_PIN = "97531024"
_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)
_MISSING = (
    "SoftHSM2 is not installed: install the Debian package 'softhsm2' "
    "(apt-get install -y softhsm2; it brings libsofthsm2) and python-pkcs11"
)


@dataclass(frozen=True)
class SoftHsm:
    module: Path
    label: str
    pin: str
    conf: Path


def _module_path() -> Path:
    listed: list[str] = []
    if shutil.which("dpkg") is not None:
        for package in ("libsofthsm2", "softhsm2"):
            result = subprocess.run(
                ["dpkg", "-L", package], capture_output=True, text=True, check=False
            )
            listed += [line for line in result.stdout.splitlines() if line.endswith(".so")]
    for candidate in [*listed, *_MODULE_CANDIDATES]:
        if candidate.endswith("libsofthsm2.so") and Path(candidate).is_file():
            return Path(candidate)
    pytest.fail(_MISSING)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    util = shutil.which("softhsm2-util")
    if util is None:
        pytest.fail(_MISSING)
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        pytest.fail("python-pkcs11 is not installed: .venv/bin/pip install python-pkcs11")
    module = _module_path()
    base = tmp_path_factory.mktemp("softhsm")
    (base / "tokens").mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    patch = pytest.MonkeyPatch()
    patch.setenv("SOFTHSM2_CONF", str(conf))
    try:
        subprocess.run(
            [
                util,
                "--init-token",
                "--free",
                "--label",
                TOKEN_LABEL,
                "--pin",
                USER_PIN,
                "--so-pin",
                SO_PIN,
            ],
            check=True,
            capture_output=True,
        )
        yield SoftHsm(module=module, label=TOKEN_LABEL, pin=USER_PIN, conf=conf)
    finally:
        patch.undo()
