"""The udev rules in udev/, parsed and run against sample devices (udev(7) semantics).

A small rules engine stands in for systemd-udevd: it parses every line of every file
(keys, ``{attribute}``, operators ``==``, ``!=``, ``=``, ``+=``, ``-=``, ``:=``, quoted
values, ``,`` separators, ``\\`` continuations), refuses unknown keys and operators,
and evaluates rules in file order the way udev(7) describes: ``KERNEL``/``SUBSYSTEM``/
``ENV``/``ATTR`` look at the event's device, the ``*S`` keys (``ATTRS``, ``KERNELS``,
``SUBSYSTEMS``, ``DRIVERS``) must all hold on one device of the parent chain; patterns
are shell globs with ``|`` alternatives; ``GOTO`` jumps forward to a ``LABEL`` in the
same file; ``:=`` makes a value final. udev 252 (Debian 12) has no ``udevadm verify``
(it came with systemd 253); the last test runs it when the installed udevadm has it
and otherwise asserts that it does not.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

UDEV = Path(__file__).resolve().parents[2] / "udev"
PLACEHOLDER = "REPLACE_WITH_PAD_SERIAL"
PAD_SERIAL = "FT4PAD01"

MATCH = frozenset({"==", "!="})
ASSIGN = frozenset({"=", "+=", "-=", ":="})
#: key -> (attribute: required/forbidden, operators allowed)
KEYS: dict[str, tuple[bool, frozenset[str]]] = {
    "ACTION": (False, MATCH),
    "KERNEL": (False, MATCH),
    "KERNELS": (False, MATCH),
    "SUBSYSTEM": (False, MATCH),
    "SUBSYSTEMS": (False, MATCH),
    "DRIVERS": (False, MATCH),
    "ATTR": (True, MATCH),
    "ATTRS": (True, MATCH),
    "ENV": (True, MATCH | frozenset({"=", "+=", ":="})),
    "TAG": (False, MATCH | ASSIGN),
    "SYMLINK": (False, MATCH | ASSIGN),
    "OWNER": (False, frozenset({"=", ":="})),
    "GROUP": (False, frozenset({"=", ":="})),
    "MODE": (False, frozenset({"=", ":="})),
    "GOTO": (False, frozenset({"="})),
    "LABEL": (False, frozenset({"="})),
}
_PARENT_KEYS = frozenset({"ATTRS", "KERNELS", "SUBSYSTEMS", "DRIVERS"})
_TOKEN = re.compile(
    r'\s*(?P<key>[A-Z_]+)(?:\{(?P<attr>[^{}"]+)\})?\s*(?P<op>==|!=|\+=|-=|:=|=)\s*'
    r'"(?P<value>[^"]*)"\s*(?P<comma>,)?\s*'
)


class RuleSyntaxError(ValueError):
    """A rules line the parser refuses; names the file and line, as udev would."""


@dataclass(frozen=True)
class Token:
    key: str
    attr: str | None
    op: str
    value: str


@dataclass(frozen=True)
class Rule:
    file: str
    line: int
    tokens: tuple[Token, ...]


def parse_rules(text: str, name: str) -> list[Rule]:
    """Every rule of a rules file; :class:`RuleSyntaxError` on anything udev would not take."""
    rules: list[Rule] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        rules.append(Rule(name, start, _tokens(pending + line, name, start)))
        pending = ""
    if pending:
        raise RuleSyntaxError(f"{name}:{start}: continuation at end of file")
    labels = [t.value for r in rules for t in r.tokens if t.key == "LABEL"]
    for index, rule in enumerate(rules):
        for tok in rule.tokens:
            later = [t.value for r in rules[index + 1 :] for t in r.tokens if t.key == "LABEL"]
            if tok.key == "GOTO" and tok.value not in later:
                raise RuleSyntaxError(f"{name}:{rule.line}: GOTO {tok.value!r} has no later LABEL")
    if len(labels) != len(set(labels)):
        raise RuleSyntaxError(f"{name}: a LABEL is defined twice")
    return rules


def _tokens(line: str, name: str, number: int) -> tuple[Token, ...]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(line):
        m = _TOKEN.match(line, pos)
        if m is None or m.end() == pos:
            raise RuleSyntaxError(f"{name}:{number}: cannot parse at column {pos + 1}")
        key, attr, op = m["key"], m["attr"], m["op"]
        if key not in KEYS:
            raise RuleSyntaxError(f"{name}:{number}: unknown key {key}")
        needs_attr, ops = KEYS[key]
        if needs_attr != (attr is not None):
            raise RuleSyntaxError(
                f"{name}:{number}: {key} {'needs' if needs_attr else 'takes no'} {{attribute}}"
            )
        if op not in ops:
            raise RuleSyntaxError(f"{name}:{number}: operator {op} not allowed for {key}")
        if key == "MODE" and not re.fullmatch(r"0?[0-7]{3}", m["value"]):
            raise RuleSyntaxError(f"{name}:{number}: MODE must be octal")
        tokens.append(Token(key, attr, op, m["value"]))
        pos = m.end()
        if pos < len(line) and m["comma"] is None:
            raise RuleSyntaxError(f"{name}:{number}: missing comma at column {pos + 1}")
    if not tokens:
        raise RuleSyntaxError(f"{name}:{number}: empty rule")
    return tuple(tokens)


@dataclass(frozen=True)
class Device:
    """A device of the sysfs tree as udev sees it: its own keys and its parent."""

    subsystem: str
    kernel: str
    attrs: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    driver: str = ""
    parent: Device | None = None

    def chain(self) -> list[Device]:
        out: list[Device] = []
        dev: Device | None = self
        while dev is not None:
            out.append(dev)
            dev = dev.parent
        return out


@dataclass
class Outcome:
    """What the event leaves on the device node."""

    env: dict[str, str]
    tags: set[str]
    symlinks: list[str] = field(default_factory=list)
    owner: str | None = None
    group: str | None = None
    mode: str | None = None
    final: set[str] = field(default_factory=set)


def _glob(value: str, pattern: str) -> bool:
    return any(fnmatchcase(value, alt) for alt in pattern.split("|"))


def _holds(tok: Token, actual: str | None) -> bool:
    matched = actual is not None and _glob(actual, tok.value)
    return matched if tok.op == "==" else actual is not None and not matched


def _matches(rule: Rule, dev: Device, action: str, out: Outcome) -> bool:
    for tok in rule.tokens:
        if tok.op not in MATCH or tok.key in _PARENT_KEYS:
            continue
        actual: str | None
        if tok.key == "ACTION":
            actual = action
        elif tok.key == "KERNEL":
            actual = dev.kernel
        elif tok.key == "SUBSYSTEM":
            actual = dev.subsystem
        elif tok.key == "ENV":
            actual = out.env.get(tok.attr or "", "")
        elif tok.key == "ATTR":
            actual = dev.attrs.get(tok.attr or "")
        elif tok.key == "TAG":
            hit = any(_glob(t, tok.value) for t in out.tags)
            if hit != (tok.op == "=="):
                return False
            continue
        else:  # SYMLINK
            actual = " ".join(out.symlinks)
        if not _holds(tok, actual):
            return False
    parent_tokens = [t for t in rule.tokens if t.key in _PARENT_KEYS]
    if not parent_tokens:
        return True
    return any(all(_holds(t, _parent_value(t, d)) for t in parent_tokens) for d in dev.chain())


def _parent_value(tok: Token, dev: Device) -> str | None:
    if tok.key == "ATTRS":
        return dev.attrs.get(tok.attr or "")
    return {"KERNELS": dev.kernel, "SUBSYSTEMS": dev.subsystem, "DRIVERS": dev.driver}[tok.key]


def _assign(tok: Token, out: Outcome) -> None:
    name = tok.key if tok.attr is None else f"{tok.key}{{{tok.attr}}}"
    if name in out.final:
        return
    if tok.op == ":=":
        out.final.add(name)
    if tok.key == "ENV":
        out.env[tok.attr or ""] = tok.value
    elif tok.key in ("OWNER", "GROUP", "MODE"):
        setattr(out, tok.key.lower(), tok.value)
    elif tok.key == "TAG":
        if tok.op in ("=", ":="):
            out.tags.clear()
        if tok.op == "-=":
            out.tags.difference_update(tok.value.split())
        else:
            out.tags.update(tok.value.split())
    elif tok.key == "SYMLINK":
        if tok.op in ("=", ":="):
            out.symlinks.clear()
        for link in tok.value.split():
            if tok.op == "-=" and link in out.symlinks:
                out.symlinks.remove(link)
            elif tok.op != "-=" and link not in out.symlinks:
                out.symlinks.append(link)


def run_event(
    files: dict[str, list[Rule]],
    dev: Device,
    action: str = "add",
    tags: frozenset[str] = frozenset(),
) -> Outcome:
    """Process one uevent through ``files`` in lexical order, as systemd-udevd does."""
    out = Outcome(env=dict(dev.env), tags=set(tags))
    for name in sorted(files):
        rules = files[name]
        index = 0
        while index < len(rules):
            rule = rules[index]
            index += 1
            if not _matches(rule, dev, action, out):
                continue
            for tok in rule.tokens:
                if tok.key == "GOTO":
                    index = _goto_target(rules, tok.value)
                    break
                if tok.op in ASSIGN and tok.key != "LABEL":
                    _assign(tok, out)
    return out


def _goto_target(rules: list[Rule], label: str) -> int:
    return next(
        i
        for i, r in enumerate(rules)
        if any(t.key == "LABEL" and t.value == label for t in r.tokens)
    )


# -- the files ---------------------------------------------------------------------------


def _load(serial: str | None = None) -> dict[str, list[Rule]]:
    """Every rules file in udev/, with the pad's serial filled in as a technician would."""
    files: dict[str, list[Rule]] = {}
    for path in sorted(UDEV.glob("*.rules")):
        text = path.read_text(encoding="utf-8")
        if serial is not None:
            text = text.replace(PLACEHOLDER, serial)
        files[path.name] = parse_rules(text, path.name)
    return files


# -- sample devices (as `udevadm info -a` shows them: device, then its parents) ------------

PCI = Device("pci", "0000:00:14.0", driver="xhci_hcd")
ROOT_HUB = Device(
    "usb", "usb1", {"idVendor": "1d6b", "idProduct": "0002", "serial": "0000:00:14.0"}, parent=PCI
)
CHIPS = {  # vendor, product, kernel driver, tty name
    "ftdi-ft232r": ("0403", "6001", "ftdi_sio", "ttyUSB0"),
    "ftdi-ft-x": ("0403", "6015", "ftdi_sio", "ttyUSB0"),
    "prolific-pl2303": ("067b", "2303", "pl2303", "ttyUSB1"),
    "wch-ch340": ("1a86", "7523", "ch341", "ttyUSB2"),
    "silabs-cp210x": ("10c4", "ea60", "cp210x", "ttyUSB3"),
}


def usb_tty(vendor: str, product: str, driver: str, tty: str, serial: str | None) -> Device:
    """tty <- usb-serial port <- USB interface <- USB device <- root hub <- PCI."""
    attrs = {"idVendor": vendor, "idProduct": product, "manufacturer": "ACME"}
    if serial is not None:  # a CH340 has no serial number at all
        attrs["serial"] = serial
    usb_dev = Device("usb", "1-1.2", attrs, {"DEVTYPE": "usb_device"}, "usb", ROOT_HUB)
    iface = Device(
        "usb", "1-1.2:1.0", {"bInterfaceClass": "ff"}, {"DEVTYPE": "usb_interface"}, driver, usb_dev
    )
    port = Device("usb-serial", tty, driver=driver, parent=iface)
    return Device("tty", tty, {"dev": "188:0"}, {"DEVNAME": f"/dev/{tty}"}, parent=port)


def usb_device(
    vendor: str, product: str, interfaces: str, *, devtype: str = "usb_device"
) -> Device:
    env = {"DEVTYPE": devtype, "ID_USB_INTERFACES": interfaces, "DEVNAME": "/dev/bus/usb/001/007"}
    attrs = {"idVendor": vendor, "idProduct": product, "bDeviceClass": "00"}
    return Device("usb", "1-1.3", attrs, env, "usb", ROOT_HUB)


# -- parsing ------------------------------------------------------------------------------


def test_every_file_parses_and_uses_only_known_keys() -> None:
    files = _load()
    assert set(files) == {"70-pos-pinpad.rules", "72-pos-ccid.rules"}
    total = sum(len(rules) for rules in files.values())
    lines = sum(
        1
        for path in UDEV.glob("*.rules")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    assert total == lines  # no line was silently dropped


def test_no_rule_grants_world_access_or_names_an_unknown_group() -> None:
    for name, rules in _load(PAD_SERIAL).items():
        for rule in rules:
            for tok in rule.tokens:
                if tok.key == "MODE":
                    assert int(tok.value, 8) & 0o007 == 0, f"{name}:{rule.line}"
                if tok.key == "GROUP":
                    assert tok.value in {"pos"}, f"{name}:{rule.line}"
                if tok.key == "TAG" and tok.op != "-=":
                    assert tok.value != "uaccess", f"{name}:{rule.line}"


def test_the_serial_is_configured_in_exactly_one_place() -> None:
    text = (UDEV / "70-pos-pinpad.rules").read_text(encoding="utf-8")
    rule_lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert sum(PLACEHOLDER in ln for ln in rule_lines) == 1
    assert 'ATTRS{serial}=="' + PLACEHOLDER + '"' in text


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('FOO=="x", GOTO="end"\nLABEL="end"', "unknown key FOO"),
        ('KERNEL~="ttyUSB*"', "cannot parse"),
        ('KERNEL="ttyUSB*"', "operator = not allowed for KERNEL"),
        ('MODE+="0660"', "operator += not allowed for MODE"),
        ('ATTRS=="x"', "ATTRS needs {attribute}"),
        ('KERNEL{x}=="y"', "KERNEL takes no {attribute}"),
        ('MODE="rw-rw----"', "MODE must be octal"),
        ('KERNEL=="a" SUBSYSTEM=="b"', "missing comma"),
        ('GOTO="nowhere"', "no later LABEL"),
        ('KERNEL=="tty*", \\', "continuation at end of file"),
        ('KERNEL=="unterminated', "cannot parse"),
    ],
)
def test_parser_refuses(line: str, why: str) -> None:
    with pytest.raises(RuleSyntaxError, match=re.escape(why)):
        parse_rules(line + "\n", "bad.rules")


def test_parser_reads_continuations_and_all_operators() -> None:
    rules = parse_rules(
        'ENV{A}:="1", \\\n  TAG-="x", SYMLINK+="a b", ENV{B}!="?*", ATTRS{serial}=="s|t"\n',
        "ok.rules",
    )
    assert [(t.key, t.attr, t.op) for t in rules[0].tokens] == [
        ("ENV", "A", ":="),
        ("TAG", None, "-="),
        ("SYMLINK", None, "+="),
        ("ENV", "B", "!="),
        ("ATTRS", "serial", "=="),
    ]
    assert rules[0].line == 1


# -- the PIN pad --------------------------------------------------------------------------


@pytest.mark.parametrize("chip", sorted(CHIPS))
def test_each_chip_with_the_configured_serial_becomes_the_pinpad(chip: str) -> None:
    vendor, product, driver, tty = CHIPS[chip]
    out = run_event(_load(PAD_SERIAL), usb_tty(vendor, product, driver, tty, PAD_SERIAL))
    assert out.symlinks == ["pos-pinpad"]
    assert (out.owner, out.group, out.mode) == ("root", "pos", "0660")
    assert "systemd" in out.tags
    assert out.env["POS_PINPAD_CHIP"] == chip


@pytest.mark.parametrize("chip", sorted(CHIPS))
def test_each_chip_with_another_serial_is_left_alone(chip: str) -> None:
    vendor, product, driver, tty = CHIPS[chip]
    for serial in ("FT4OTHER", None, PAD_SERIAL + "X"):
        out = run_event(_load(PAD_SERIAL), usb_tty(vendor, product, driver, tty, serial))
        assert out.symlinks == [] and out.group is None and out.mode is None
        assert out.env["POS_PINPAD_CHIP"] == chip  # recognised, but not the pad


def test_unedited_rules_give_no_device_the_pinpad_name() -> None:
    vendor, product, driver, tty = CHIPS["ftdi-ft232r"]
    out = run_event(_load(), usb_tty(vendor, product, driver, tty, PAD_SERIAL))
    assert out.symlinks == []


def test_an_unrelated_usb_serial_device_with_the_same_serial_is_left_alone() -> None:
    arduino = usb_tty("2341", "0043", "cdc_acm", "ttyACM0", PAD_SERIAL)
    out = run_event(_load(PAD_SERIAL), arduino)
    assert out.symlinks == [] and "POS_PINPAD_CHIP" not in out.env


def test_a_chip_vendor_with_another_product_is_left_alone() -> None:
    ft2232 = usb_tty("0403", "6010", "ftdi_sio", "ttyUSB4", PAD_SERIAL)
    assert run_event(_load(PAD_SERIAL), ft2232).symlinks == []


def test_the_serial_must_be_on_the_chip_not_on_the_hub() -> None:
    vendor, product, driver, tty = CHIPS["silabs-cp210x"]
    hub_serial = ROOT_HUB.attrs["serial"]
    out = run_event(_load(hub_serial), usb_tty(vendor, product, driver, tty, "CP-OTHER"))
    assert out.symlinks == []


def test_a_non_usb_tty_and_a_remove_event_are_left_alone() -> None:
    uart = Device(
        "tty",
        "ttyAMA0",
        {"dev": "204:64"},
        parent=Device("amba", "fe201000.serial", driver="uart-pl011"),
    )
    assert run_event(_load(PAD_SERIAL), uart) == Outcome(env={}, tags=set())
    vendor, product, driver, tty = CHIPS["ftdi-ft232r"]
    pad = usb_tty(vendor, product, driver, tty, PAD_SERIAL)
    assert run_event(_load(PAD_SERIAL), pad, action="remove").symlinks == []


# -- CCID readers -------------------------------------------------------------------------


@pytest.mark.parametrize("interfaces", [":0b0000:", ":030101:0b0000:", ":0b0000:ff0000:"])
def test_a_ccid_reader_is_kept_for_pcscd_only(interfaces: str) -> None:
    reader = usb_device("08e6", "3437", interfaces)
    # 70-uaccess.rules has already tagged it (ID_SMARTCARD_READER from 60-fido-id.rules).
    out = run_event(_load(PAD_SERIAL), reader, tags=frozenset({"uaccess", "seat"}))
    assert out.mode == "0660" and out.group is None and out.owner is None
    assert out.tags == {"seat"}
    assert out.env["POS_SMARTCARD_READER"] == "1"
    assert out.symlinks == []


def test_the_readers_interface_event_and_other_usb_devices_are_left_alone() -> None:
    files = _load(PAD_SERIAL)
    iface = usb_device("08e6", "3437", ":0b0000:", devtype="usb_interface")
    keyboard = usb_device("046d", "c31c", ":030101:030000:")
    for dev in (iface, keyboard):
        out = run_event(files, dev, tags=frozenset({"uaccess"}))
        assert out.mode is None and out.tags == {"uaccess"}
        assert "POS_SMARTCARD_READER" not in out.env
    reader = usb_device("08e6", "3437", ":0b0000:")
    assert run_event(files, reader, action="remove").mode is None


# -- udevadm ------------------------------------------------------------------------------


def test_udevadm_verify_when_the_installed_udev_has_it() -> None:
    """udevadm verify (systemd >= 253) on every file; on udev 252 assert it is absent."""
    udevadm = shutil.which("udevadm")
    assert udevadm is not None, "apt-get install -y udev (the project's Debian packages)"
    version = int(
        subprocess.run(
            [udevadm, "--version"], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    probe = subprocess.run(
        [udevadm, "verify", "--help"], capture_output=True, text=True, check=False
    )
    if version >= 253:
        assert probe.returncode == 0
        paths = [str(p) for p in sorted(UDEV.glob("*.rules"))]
        result = subprocess.run(
            [udevadm, "verify", *paths], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        print(f"udevadm {version} has no 'verify' (systemd 253 added it); the parser stands in")
        assert probe.returncode != 0
        assert "Unknown command verb verify" in probe.stderr
