"""``terminal-agent doctor`` against real and broken parts: pcscd + vpcd, the emulated PIN
pad on a pty, Mosquitto and the real bridge, a real journal; each broken component must
give its failure and the technician's action."""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from hardware.cards import EmvCard, load_profile
from hardware.mosquitto import MosquittoService
from hardware.pcsc.pcscd import PcscdService
from hardware.pcsc.slot import CardSlot
from hardware.pinpad import AesDukptKey, EmulatedPinpad
from paycore import tr31
from paycore.dukpt import AES_MAX_ONE_BITS
from terminal_agent.config import load_settings
from terminal_agent.doctor import (
    CheckResult,
    DoctorSettings,
    dukpt_keys_left,
    exit_code,
    main,
    render_text,
    run_checks,
)
from terminal_agent.doctor.checks import (
    START_PCSCD,
    _usable_up_to,
    check_broker,
    check_certificate,
    check_clock,
    check_config,
    check_data_key,
    check_journal,
)
from terminal_agent.journal import TransactionJournal
from tests.gateway_bridge.rig import PIN_IKID, TERMINAL_ID, make_rig, running_bridge
from tests.production_fleet import production_fleet

FAST = DoctorSettings(
    pcsc_timeout_s=3,
    pinpad_timeout_s=1,
    broker_timeout_s=1,
    bridge_timeout_s=2,
    disk_warn_bytes=1,
)


def _private(path: Path, text: str | bytes) -> Path:
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def write_config(
    folder: Path,
    *,
    broker_port: int | None = None,
    reader: str = "No Such Reader",
    pinpad: str | None = None,
    tls: str = "",
) -> Path:
    """An agent configuration with a fresh KBPK, data key block and (real) journal."""
    kbpk = secrets.token_bytes(32)
    _private(folder / "kbpk.hex", kbpk.hex())
    header = tr31.KeyBlockHeader(
        version_id="D",
        key_usage="B1",
        algorithm="A",
        mode_of_use="X",
        optional_blocks=(("IK", "D47A000100000001"),),
    )
    block = tr31.wrap(kbpk, header, secrets.token_bytes(16), random=secrets.token_bytes)
    (folder / "data.tr31").write_text(block)
    journal_key = secrets.token_bytes(32)
    _private(folder / "journal.key", journal_key.hex())

    async def make_journal() -> None:
        journal = await TransactionJournal.open(folder / "journal.db", journal_key)
        await journal.close()

    asyncio.run(make_journal())
    port = broker_port if broker_port is not None else _closed_port()
    config = folder / "agent.toml"
    config.write_text(
        f'terminal_id = "{TERMINAL_ID}"\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {port}\nprotocol = "5"\n{tls}'
        f'[keys]\ndata_key_block_file = "data.tr31"\nkbpk_file = "kbpk.hex"\n'
        f'[reader]\nreader = "{reader}"\n'
        f'[pinpad]\nport = "{pinpad or folder / "no-pinpad"}"\n'
        f'[journal]\npath = "journal.db"\nkey_file = "journal.key"\n'
    )
    return config


def by_name(results: Sequence[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def run(config: Path, *only: str, settings: DoctorSettings = FAST) -> dict[str, CheckResult]:
    return by_name(asyncio.run(run_checks(config, settings, only=only)))


# -- all green -------------------------------------------------------------------------------


@pytest.fixture
def pad(tmp_path: Path) -> Iterator[EmulatedPinpad]:
    emulated = EmulatedPinpad(
        kbpk=secrets.token_bytes(32),
        slots={1: AesDukptKey(secrets.token_bytes(16), PIN_IKID)},
        link_path=tmp_path / "pos-pinpad",
        model="PAYCORE EMU-1",
        firmware="0.1.0",
    )
    emulated.start()
    yield emulated
    emulated.stop()


def test_all_green_with_the_real_devices(
    tmp_path: Path,
    mosquitto_broker: MosquittoService,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
) -> None:
    rig_dir = tmp_path / "bridge"
    rig_dir.mkdir()
    rig = make_rig(rig_dir, mosquitto_broker)
    config = write_config(
        tmp_path,
        broker_port=mosquitto_broker.port,
        reader=pcscd_vpcd.card_reader,
        pinpad=str(pad.link_path),
    )
    vpcd_card(EmvCard(load_profile("visa_credit")))
    out = io.StringIO()

    async def body() -> int:
        async with running_bridge(rig):
            return await asyncio.to_thread(
                main, ["--config", str(config), "--json"], out=out, settings=FAST
            )

    code = asyncio.run(body())
    parsed = json.loads(out.getvalue())
    assert [entry["name"] for entry in parsed] == [
        "config", "pcscd", "reader", "card", "pinpad", "pin_key", "data_key", "broker",
        "certificate", "clock", "bridge", "journal", "disk", "reversals",
    ]  # fmt: skip
    assert all(set(entry) == {"name", "status", "found", "action"} for entry in parsed)
    bad = [entry for entry in parsed if entry["status"] != "ok"]
    assert bad == [] and code == 0
    found = {entry["name"]: entry["found"] for entry in parsed}
    assert "card inserted" in found["card"]
    assert pcscd_vpcd.card_reader in found["reader"]
    assert "PAYCORE EMU-1" in found["pinpad"] and "0.1.0" in found["pinpad"]
    assert "slot 1" in found["pin_key"]
    assert "bridge-test online" in found["bridge"]
    assert "no NTP check" in found["clock"]

    # Now the bridge has gone offline (its retained status says so): a failure.
    out = io.StringIO()
    assert main(["--config", str(config), "--check", "bridge"], out=out, settings=FAST) == 2
    assert "bridge-test is offline" in out.getvalue()
    assert "-> call the host team" in out.getvalue()


# -- each broken part ------------------------------------------------------------------------


def test_reader_gone_lists_what_is_there(tmp_path: Path, pcscd_vpcd: PcscdService) -> None:
    results = run(write_config(tmp_path, reader="Acme Missing Reader"), "pcscd", "reader")
    assert results["pcscd"].status == "ok"
    reader = results["reader"]
    assert reader.status == "fail"
    assert "'Acme Missing Reader' not found" in reader.found
    assert pcscd_vpcd.card_reader in reader.found  # what is there is listed
    assert reader.action is not None and "plug the card reader in" in reader.action
    assert "card" not in results


def test_pcscd_not_running(tmp_path: Path) -> None:
    """libpcsclite reads PCSCLITE_CSOCK_NAME once per process: a child process."""
    config = write_config(tmp_path)
    env = dict(os.environ)
    env["PCSCLITE_CSOCK_NAME"] = str(tmp_path / "nobody-listens.comm")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "terminal_agent.doctor", "--config", str(config), "--json"),
            *("--check", "pcscd", "--check", "reader", "--timeout", "3"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    parsed = json.loads(done.stdout)
    assert parsed == [
        {
            "name": "pcscd",
            "status": "fail",
            "found": "pcscd is not running",
            "action": START_PCSCD,
        }
    ]
    assert START_PCSCD == "start pcscd: systemctl start pcscd.socket"


def test_pinpad_gone(tmp_path: Path) -> None:
    config = write_config(tmp_path, pinpad=str(tmp_path / "nothing-here"))
    results = run(config, "pinpad", "pin_key")
    assert results["pinpad"].status == "fail"
    assert f"no PIN pad at {tmp_path / 'nothing-here'}" == results["pinpad"].found
    assert results["pinpad"].action is not None and "USB cable" in results["pinpad"].action
    assert "pin_key" not in results


def test_pin_key_slot_without_a_key(tmp_path: Path, pad: EmulatedPinpad) -> None:
    config = write_config(tmp_path, pinpad=str(pad.link_path))
    config.write_text("pin_key_slot = 2\n" + config.read_text())
    results = run(config, "pinpad", "pin_key")
    assert results["pinpad"].status == "ok"
    assert results["pin_key"].status == "fail"
    assert results["pin_key"].found == "slot 2 is empty"
    assert results["pin_key"].action is not None and "slot 2" in results["pin_key"].action


def test_pin_key_running_low_warns(tmp_path: Path, pad: EmulatedPinpad) -> None:
    config = write_config(tmp_path, pinpad=str(pad.link_path))
    results = run(config, "pin_key", settings=FAST.model_copy(update={"dukpt_warn_keys": 2**40}))
    assert results["pin_key"].status == "warn"
    assert results["pin_key"].action is not None and "re-injection" in results["pin_key"].action


def test_broker_down(tmp_path: Path) -> None:
    config = write_config(tmp_path, broker_port=_closed_port())
    results = run(config, "broker", "bridge")
    assert results["broker"].status == "fail"
    assert "cannot connect to 127.0.0.1:" in results["broker"].found
    assert results["broker"].action is not None and "network cable" in results["broker"].action
    assert results["bridge"].status == "fail"
    out = io.StringIO()
    assert main(["--config", str(config), "--check", "broker"], out=out, settings=FAST) == 2
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("FAIL  broker  cannot connect")
    assert lines[1].strip().startswith("-> check the network cable")


def _certificate(folder: Path, *, cn: str, start: datetime, end: datetime) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    cert_file = folder / "client.crt"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_file, _private(folder / "client.key", key_pem)


NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("cn", "start", "end", "status", "words"),
    [
        (TERMINAL_ID, NOW - 400 * DAY, NOW - DAY, "fail", "expired"),
        (TERMINAL_ID, NOW + 2 * DAY, NOW + 400 * DAY, "fail", "not valid before"),
        (TERMINAL_ID, NOW - 300 * DAY, NOW + 5 * DAY, "warn", "(5 days)"),
        ("T9999", NOW - DAY, NOW + 400 * DAY, "fail", "is not the terminal id"),
        (TERMINAL_ID, NOW - DAY, NOW + 400 * DAY, "ok", "expires 2027-07-06"),
    ],
    ids=["expired", "not-yet-valid", "near-expiry", "wrong-cn", "good"],
)
def test_certificate(
    tmp_path: Path, cn: str, start: datetime, end: datetime, status: str, words: str
) -> None:
    cert, key = _certificate(tmp_path, cn=cn, start=start, end=end)
    tls = f'[broker.tls]\nca_file = "{cert}"\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    config = write_config(tmp_path, tls=tls)
    settings = load_settings(config)
    result = check_certificate(settings, FAST, NOW)
    assert (result.status, words in result.found) == (status, True), result
    assert (result.action is None) == (status == "ok")
    clock = check_clock(settings, FAST, NOW, None)
    assert clock.status == ("fail" if words == "not valid before" else "ok")


def test_clock_behind_the_journal(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    settings = load_settings(config)
    future = datetime.now(UTC) + timedelta(days=3)

    async def journal_from_the_future() -> None:
        journal = await TransactionJournal.open(
            settings.journal.path,
            bytes.fromhex((tmp_path / "journal.key").read_text()),
            clock=lambda: future,
        )
        await journal.create(idempotency_key="k1", transaction_type="purchase", amount=100,
                             currency="GBP")  # fmt: skip
        await journal.close()

    asyncio.run(journal_from_the_future())
    _, facts = check_journal(settings, FAST, datetime.now(UTC))
    result = check_clock(settings, FAST, datetime.now(UTC), facts)
    assert result.status == "fail" and "journal's last entry" in result.found
    assert result.action is not None and "timedatectl" in result.action


@pytest.mark.parametrize("where", ["header", "page"])
def test_journal_corrupted(tmp_path: Path, where: str) -> None:
    config = write_config(tmp_path)
    settings = load_settings(config)
    good = run(config, "journal")["journal"]
    assert good.status == "ok"
    db = settings.journal.path
    copy = tmp_path / "copy.db"
    shutil.copyfile(db, copy)
    data = bytearray(copy.read_bytes())
    offset = 0 if where == "header" else 4096 + 8
    data[offset : offset + 200] = b"\xa5" * 200
    db.write_bytes(bytes(data))
    results = run(config, "journal", "disk")
    assert results["journal"].status == "fail", results["journal"]
    assert results["journal"].action is not None and "support" in results["journal"].action
    assert results["disk"].status == "ok"


@pytest.mark.parametrize(("version", "status"), [(1, "ok"), (99, "fail")])
def test_journal_schema_older_is_upgraded_newer_is_refused(
    tmp_path: Path, version: int, status: str
) -> None:
    config = write_config(tmp_path)
    settings = load_settings(config)
    with sqlite3.connect(settings.journal.path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (version,))
    conn.close()
    result = run(config, "journal")["journal"]
    assert result.status == status, result
    assert ("upgrades it" in result.found) == (version == 1)


def test_pending_reversal_too_old_warns(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    settings = load_settings(config)

    async def queue() -> None:
        journal = await TransactionJournal.open(
            settings.journal.path, bytes.fromhex((tmp_path / "journal.key").read_text())
        )
        record = await journal.create(
            idempotency_key="v1", transaction_type="void", amount=100, currency="GBP"
        )
        await journal.mark_sent(record.local_id, b"body")
        await journal.queue_reversal(record.local_id, "host_timeout")
        await journal.close()

    asyncio.run(queue())
    fresh, _ = check_journal(settings, FAST, datetime.now(UTC))
    assert by_name(fresh)["reversals"].status == "ok"
    later, _ = check_journal(settings, FAST, datetime.now(UTC) + timedelta(hours=2))
    reversals = by_name(later)["reversals"]
    assert reversals.status == "warn" and reversals.found.startswith("1 pending, oldest 120 min")


def test_key_block_tampered(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    settings = load_settings(config)
    assert check_data_key(settings, FAST, None).status == "ok"
    block = (tmp_path / "data.tr31").read_text()
    i = len(block) - 20
    flipped = block[:i] + ("0" if block[i] != "0" else "1") + block[i + 1 :]
    (tmp_path / "data.tr31").write_text(flipped)
    result = check_data_key(settings, FAST, None)
    assert result.status == "fail" and "key block refused" in result.found
    assert result.action is not None and "re-provision" in result.action


def test_secrets_file_readable_by_others(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "kbpk.hex").chmod(0o644)
    result, settings = check_config(config)
    assert settings is not None and result.status == "fail"
    assert "kbpk.hex is mode 644" in result.found
    assert result.action is not None and "chmod 600" in result.action
    config.write_text("terminal_id = 5\n")
    broken, none = check_config(config)
    assert none is None and broken.status == "fail" and "terminal_id" in broken.found


def test_broker_tls_untrusted(tmp_path: Path, mosquitto_broker: MosquittoService) -> None:
    """A plain broker does not complete a TLS handshake: the check says so."""
    cert, key = _certificate(tmp_path, cn=TERMINAL_ID, start=NOW - DAY, end=NOW + DAY)
    tls = f'[broker.tls]\nca_file = "{cert}"\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    settings = load_settings(write_config(tmp_path, broker_port=mosquitto_broker.port, tls=tls))
    result = asyncio.run(check_broker(settings, FAST))
    assert result.status == "fail" and "refused" in result.found


@pytest.mark.parametrize("case", ["valid", "expired", "revoked", "foreign"])
def test_broker_check_on_the_production_broker(tmp_path: Path, case: str) -> None:
    """The broker's own verdict on this identity, with the reason its TLS alert names."""
    with production_fleet() as fleet:
        foreign = fleet.foreign_ca() if case == "foreign" else None
        cert, key = fleet.issue_terminal(
            TERMINAL_ID,
            days_ago=10 if case == "expired" else 0,
            days=1 if case == "expired" else None,
            ca_dir=foreign,
        )
        if case == "revoked":
            fleet.ca_cli("revoke", "--name", TERMINAL_ID)
            (fleet.broker_dir / "crl.pem").write_bytes(fleet.ca.crl_path.read_bytes())
            fleet.broker.reload()
        tls = (
            f'[broker.tls]\nca_file = "{fleet.bundle}"\ncert_file = "{cert}"\nkey_file = "{key}"\n'
        )
        config = write_config(tmp_path, broker_port=fleet.port, tls=tls)
        result = asyncio.run(check_broker(load_settings(config), FAST))
    words = {
        "valid": "MQTT connect over TLS",
        "expired": "certificate expired",
        "revoked": "certificate revoked",
        "foreign": "unknown CA",
    }[case]
    assert (result.status == "ok") == (case == "valid"), result
    assert words in result.found, result


# -- output and arithmetic ----------------------------------------------------------------


def test_exit_codes_and_text_alignment() -> None:
    results = [
        CheckResult("config", "ok", "fine"),
        CheckResult("reversals", "warn", "1 pending", "wait"),
    ]
    assert exit_code(results) == 1
    assert exit_code(results[:1]) == 0
    assert exit_code([*results, CheckResult("x", "fail", "gone", "fix")]) == 2
    lines = render_text(results).splitlines()
    assert lines == [
        "OK    config     fine",
        "WARN  reversals  1 pending",
        "                 -> wait",
    ]
    with pytest.raises(ValueError, match="action"):
        CheckResult("x", "fail", "gone")


def test_usage_error_exits_2() -> None:
    out = io.StringIO()
    assert main(["--check", "nonsense"], out=out) == 2
    assert "invalid choice" in out.getvalue()


def test_keys_left_of_a_fresh_key() -> None:
    import math

    assert dukpt_keys_left(1) == sum(math.comb(32, k) for k in range(1, AES_MAX_ONE_BITS + 1))
    assert dukpt_keys_left(2**32) == 0


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_usable_count_matches_brute_force(n: int) -> None:
    low = max(0, n - 300)
    brute = sum(1 for x in range(low, n + 1) if x.bit_count() <= AES_MAX_ONE_BITS)
    assert _usable_up_to(n) - _usable_up_to(low - 1) == brute
