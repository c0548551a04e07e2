"""The systemd units, sysusers.d and tmpfiles.d files in deploy/ (systemd.exec(5)).

Units are read with a small INI reader that keeps repeated keys (systemd allows
``SystemCallFilter=`` twice), then checked for the hardening directives, the service
users, and an ``ExecStart=`` that the real CLI parsers accept with paths that match the
directories systemd creates. When ``systemd-analyze`` is installed (Debian 12: the
``systemd`` package, 252), ``verify`` runs against a throw-away root holding the units
and stand-in executables, ``security --offline`` scores them, and ``systemd-sysusers
--root`` creates the users in a temporary directory: nothing on the host changes.
Without the binary, the test asserts its absence and says so.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from gateway_bridge import cli as bridge_cli
from terminal_agent import cli as agent_cli
from terminal_agent.config import JournalSection
from terminal_agent.pinpad import PinpadSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
AGENT = "pos-terminal-agent.service"
BRIDGE = "pos-gateway-bridge.service"
ENROLMENT = "pos-enrolment.service"
Unit = dict[str, dict[str, list[str]]]


def read_unit(text: str) -> Unit:
    """Sections -> key -> every value in order; comments and blank lines dropped."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if section is None or not sep or not re.fullmatch(r"[A-Za-z]+", key):
            raise ValueError(f"line {number}: not a key=value in a section")
        section.setdefault(key, []).append(value)
    return unit


def _unit(name: str) -> Unit:
    return read_unit((DEPLOY / name).read_text(encoding="utf-8"))


def _one(unit: Unit, section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, f"{key} set {len(values)} times"
    return values[0]


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "Restart": "on-failure",
    "UMask": "0077",
    "RestrictSUIDSGID": "yes",
    "ProtectKernelModules": "yes",
    "SystemCallArchitectures": "native",
}


@pytest.mark.parametrize(
    ("name", "user"), [(AGENT, "pos-agent"), (BRIDGE, "pos-bridge"), (ENROLMENT, "pos-bridge")]
)
def test_units_are_hardened_and_run_as_their_own_user(name: str, user: str) -> None:
    unit = _unit(name)
    service = unit["Service"]
    for key, value in HARDENING.items():
        assert _one(unit, "Service", key) == value, key
    assert service["SystemCallFilter"][0] == "@system-service"
    assert all(v.startswith("~") for v in service["SystemCallFilter"][1:])
    assert _one(unit, "Service", "User") == user == _one(unit, "Service", "Group")
    for kind in ("StateDirectory", "RuntimeDirectory", "ConfigurationDirectory"):
        assert _one(unit, "Service", kind) == user
    assert _one(unit, "Service", "StateDirectoryMode") == "0700"
    assert float(_one(unit, "Service", "RestartSec").removesuffix("s")) >= 1
    if name == ENROLMENT:  # sends no notifications: a watchdog would kill it
        assert _one(unit, "Service", "Type") == "simple"
        assert "WatchdogSec" not in service and "NotifyAccess" not in service
    else:  # READY=1 and WATCHDOG=1 from paycore/systemd.py (tested with the programs)
        assert _one(unit, "Service", "Type") == "notify"
        assert _one(unit, "Service", "NotifyAccess") == "main"
        assert 10 <= int(_one(unit, "Service", "WatchdogSec").removesuffix("s")) <= 120
    assert "ReadWritePaths" not in service  # the state directory is all they write
    assert "network-online.target" in unit["Unit"]["After"][0].split()
    assert "network-online.target" in unit["Unit"]["Wants"][0].split()
    assert _one(unit, "Install", "WantedBy") == "multi-user.target"


def test_the_agent_reaches_the_pinpad_and_pcscd() -> None:
    unit = _unit(AGENT)
    assert _one(unit, "Service", "SupplementaryGroups") == "pos"
    assert "PrivateDevices" not in unit["Service"]  # the pad's tty lives in /dev
    assert {"pcscd.socket", "pcscd.service"} <= set(_one(unit, "Unit", "After").split())
    assert "pcscd.socket" in _one(unit, "Unit", "Wants").split()
    # The udev rule's symlink is the agent's default port.
    rules = (ROOT / "udev" / "70-pos-pinpad.rules").read_text(encoding="utf-8")
    assert re.search(r'SYMLINK\+="pos-pinpad".*GROUP="pos"', rules)
    assert PinpadSettings().port == "/dev/pos-pinpad"


def test_the_bridge_has_no_devices_and_follows_its_broker() -> None:
    unit = _unit(BRIDGE)
    assert _one(unit, "Service", "PrivateDevices") == "yes"
    assert "SupplementaryGroups" not in unit["Service"]
    assert "mosquitto.service" in _one(unit, "Unit", "After").split()


def _scripts() -> dict[str, str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    scripts: dict[str, str] = pyproject["project"]["scripts"]
    return scripts


def test_agent_exec_start_is_what_its_cli_takes() -> None:
    argv = shlex.split(_one(_unit(AGENT), "Service", "ExecStart"))
    assert argv[0] == "/opt/pos/.venv/bin/terminal-agent"
    assert _scripts()["terminal-agent"] == "terminal_agent.cli:main"
    args = agent_cli._parser().parse_args(argv[1:])
    assert args.command == "run"
    assert args.config == Path("/etc/pos-agent/agent.toml")
    assert args.config.parent == Path("/etc") / _one(
        _unit(AGENT), "Service", "ConfigurationDirectory"
    )
    state = Path("/var/lib") / _one(_unit(AGENT), "Service", "StateDirectory")
    assert JournalSection().path.parent == state  # the journal's default is writable


def test_bridge_exec_start_is_what_its_cli_takes() -> None:
    argv = shlex.split(_one(_unit(BRIDGE), "Service", "ExecStart"))
    assert argv[0] == "/opt/pos/.venv/bin/gateway-bridge"
    assert _scripts()["gateway-bridge"] == "gateway_bridge.cli:main"
    args = bridge_cli._parser().parse_args(argv[1:])
    assert args.command == "run"
    assert args.config == Path("/etc/pos-bridge/bridge.toml")
    assert args.config.parent == Path("/etc") / _one(
        _unit(BRIDGE), "Service", "ConfigurationDirectory"
    )
    # The documented state paths (docs/bridge.md) are inside the state directory.
    state = Path("/var/lib") / _one(_unit(BRIDGE), "Service", "StateDirectory")
    doc = (ROOT / "docs" / "bridge.md").read_text(encoding="utf-8")
    for path in re.findall(r'^path = "(/var/lib/[^"]+)"', doc, flags=re.MULTILINE):
        assert Path(path).parent == state


def test_enrolment_exec_start_and_the_crl_hand_over() -> None:
    unit = _unit(ENROLMENT)
    argv = shlex.split(_one(unit, "Service", "ExecStart"))
    assert argv[0] == "/opt/pos/.venv/bin/gateway-bridge"
    args = bridge_cli._parser().parse_args(argv[1:])
    assert args.command == "enrol-server"
    assert args.config == Path("/etc/pos-bridge/bridge.toml")
    # The default audit log is in the unit's logs directory.
    from gateway_bridge.config import EnrolmentSettings

    default = EnrolmentSettings.model_fields["audit_log"].default
    assert default.parent == Path("/var/log") / _one(unit, "Service", "LogsDirectory")
    # The CRL the CA writes in the shared state directory is what the path unit watches,
    # and its service installs it where broker-config points Mosquitto.
    path = _unit("pos-broker-crl.path")
    watched = Path(_one(path, "Path", "PathChanged"))
    assert watched.parent.parent == Path("/var/lib") / _one(unit, "Service", "StateDirectory")
    assert _one(path, "Path", "Unit") == "pos-broker-crl.service"
    install, reload = _unit("pos-broker-crl.service")["Service"]["ExecStart"]
    assert shlex.split(install)[-2:] == [str(watched), "/etc/mosquitto/pos/crl.pem"]
    assert reload.endswith("systemctl reload mosquitto.service")


def test_sysusers_and_tmpfiles_declare_the_users_and_config_dirs() -> None:
    lines = {
        name: [
            ln.split()
            for ln in (DEPLOY / name).read_text(encoding="utf-8").splitlines()
            if ln.strip() and not ln.startswith("#")
        ]
        for name in (
            "sysusers.d/pos-agent.conf",
            "sysusers.d/pos-bridge.conf",
            "tmpfiles.d/pos-agent.conf",
            "tmpfiles.d/pos-bridge.conf",
        )
    }
    agent_users = {(f[0], f[1]) for f in lines["sysusers.d/pos-agent.conf"]}
    assert agent_users == {("g", "pos"), ("u", "pos-agent")}
    assert {(f[0], f[1]) for f in lines["sysusers.d/pos-bridge.conf"]} == {("u", "pos-bridge")}
    assert lines["tmpfiles.d/pos-agent.conf"] == [
        ["d", "/etc/pos-agent", "0750", "root", "pos-agent", "-"]
    ]
    assert lines["tmpfiles.d/pos-bridge.conf"] == [
        ["d", "/etc/pos-bridge", "0750", "root", "pos-bridge", "-"]
    ]


def test_the_unit_reader_keeps_repeats_and_refuses_garbage() -> None:
    unit = read_unit("[Service]\nA=1\n# c\nA=2\nB=\n")
    assert unit == {"Service": {"A": ["1", "2"], "B": [""]}}
    with pytest.raises(ValueError, match="line 1"):
        read_unit("A=1\n")
    with pytest.raises(ValueError, match="line 2"):
        read_unit("[Unit]\nnot a directive\n")


# -- systemd's own tools, on copies in a temporary root --------------------------------------


def _analyze() -> str | None:
    found = shutil.which("systemd-analyze")
    if found is None:
        print("systemd-analyze is not installed: verify/security/sysusers checks not run")
    return found


def test_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    analyze = _analyze()
    if analyze is None:
        # Conditional by design (docs/deployment.md): the binary's absence is asserted.
        assert shutil.which("systemd-analyze") is None
        return
    system = Path("/lib/systemd/system")
    assert system.is_dir()
    shutil.copytree(system, tmp_path / "usr/lib/systemd/system", symlinks=True)
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    bin_dir = tmp_path / "opt/pos/.venv/bin"
    bin_dir.mkdir(parents=True)
    stand_ins = [bin_dir / "terminal-agent", bin_dir / "gateway-bridge"]
    stand_ins += [tmp_path / "usr/bin/install", tmp_path / "bin/systemctl"]
    for program in stand_ins:
        program.parent.mkdir(parents=True, exist_ok=True)
        program.write_text("#!/bin/sh\n", encoding="ascii")
        program.chmod(0o755)
    checked = (AGENT, BRIDGE, ENROLMENT, "pos-broker-crl.path", "pos-broker-crl.service")
    for name in checked:
        shutil.copy(DEPLOY / name, units / name)
    verify = subprocess.run(
        [analyze, "verify", "--man=no", f"--root={tmp_path}"]
        + [f"/etc/systemd/system/{name}" for name in checked],
        capture_output=True,
        text=True,
        check=False,
    )
    # systemd-analyze exits 0 even for unknown keys; any message at all is a finding.
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    for name in (AGENT, BRIDGE, ENROLMENT):
        security = subprocess.run(
            [analyze, "security", "--offline=true", "--man=no", str(DEPLOY / name)],
            capture_output=True,
            text=True,
            check=False,
        )
        score = re.search(r"Overall exposure level for \S+: (\d+\.\d)", security.stdout)
        assert score is not None, security.stderr
        print(f"{name}: exposure {score[1]}")
        assert float(score[1]) <= 2.0  # "OK" in systemd-analyze's scale (0 safest, 10 worst)


def test_systemd_sysusers_creates_the_users_in_a_scratch_root(tmp_path: Path) -> None:
    sysusers = shutil.which("systemd-sysusers")
    if _analyze() is None or sysusers is None:
        assert shutil.which("systemd-sysusers") is None or shutil.which("systemd-analyze") is None
        return
    conf = tmp_path / "usr/lib/sysusers.d"
    conf.mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    for name in ("pos-agent.conf", "pos-bridge.conf"):
        shutil.copy(DEPLOY / "sysusers.d" / name, conf / name)
    subprocess.run([sysusers, f"--root={tmp_path}"], capture_output=True, check=True)
    passwd = {
        ln.split(":")[0]: ln.split(":") for ln in (tmp_path / "etc/passwd").read_text().splitlines()
    }
    groups = {ln.split(":")[0] for ln in (tmp_path / "etc/group").read_text().splitlines()}
    assert {"pos-agent", "pos-bridge"} <= set(passwd) and {
        "pos",
        "pos-agent",
        "pos-bridge",
    } <= groups
    assert passwd["pos-agent"][5] == "/var/lib/pos-agent"
    assert passwd["pos-agent"][6].endswith("nologin")
    assert int(passwd["pos-bridge"][2]) < 1000  # a system user
