"""The doctor's checks, one small function per component (issue 8).

Each reads the agent's :class:`~terminal_agent.config.AgentSettings`, probes one thing
within a bounded time (:class:`~terminal_agent.doctor.model.DoctorSettings`) and returns
:class:`~terminal_agent.doctor.model.CheckResult` values. Nothing here changes state: the
journal is opened without creating it and only read; the PIN pad is asked IDENTIFY and
KEY STATUS (docs/pinpad-protocol.md section 5); the broker sees one short-lived client.
No result carries a key, a PIN block or card data.

Key-space arithmetic is AES DUKPT's (ANSI X9.24-3-2017 section 6.1: a 32-bit counter, of
which only values with at most 16 one-bits are used).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import sqlite3
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from paycore.dukpt import AES_MAX_COUNTER, AES_MAX_ONE_BITS
from paycore.pinpad import KeyType
from paycore.wire import BridgeStatus, topics
from terminal_agent.config import (
    AgentSettings,
    ConfigError,
    data_initial_key,
    load_settings,
)
from terminal_agent.doctor.model import CheckResult, DoctorSettings, fail, ok, warn
from terminal_agent.journal import DATA_KEY, SCHEMA_VERSION, next_usable_counter
from terminal_agent.pinpad import PinpadDriver, PinpadError, PinpadRefused
from terminal_agent.reader import NoService, ReaderError
from terminal_agent.reader.pcsc import PcscAdapter

START_PCSCD = "start pcscd: systemctl start pcscd.socket"


# -- arithmetic -------------------------------------------------------------------------------


def _usable_up_to(n: int) -> int:
    """How many counters in ``0..n`` have at most 16 one-bits (X9.24-3-2017 6.1)."""
    if n < 0:
        return 0
    total, ones = 0, 0
    for bit in range(n.bit_length() - 1, -1, -1):
        if n >> bit & 1:
            # Numbers with this bit clear and the higher bits as in n: choose the rest.
            budget = AES_MAX_ONE_BITS - ones
            total += sum(math.comb(bit, k) for k in range(0, min(budget, bit) + 1))
            ones += 1
            if ones > AES_MAX_ONE_BITS:
                return total
    return total + 1  # n itself


def dukpt_keys_left(next_counter: int) -> int:
    """AES DUKPT transaction keys still usable from ``next_counter`` on (counter 0 unused)."""
    start = next_usable_counter(next_counter)
    if start > AES_MAX_COUNTER:
        return 0
    return _usable_up_to(AES_MAX_COUNTER) - _usable_up_to(start - 1)


# -- configuration ----------------------------------------------------------------------------


def secret_files(settings: AgentSettings) -> list[Path]:
    """The 0600 files the configuration names."""
    files = [settings.keys.kbpk_file, settings.journal.key_file]
    if settings.ecr is not None:
        files.append(settings.ecr.token_file)
    tls = settings.broker.tls
    if tls is not None and tls.key_file is not None:
        files.append(tls.key_file)
    return files


def check_config(path: Path) -> tuple[CheckResult, AgentSettings | None]:
    """The file parses and validates, and every secrets file it names is mode 0600."""
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        return fail("config", str(exc), f"correct {path} (docs/terminal-agent.md)"), None
    problems: list[str] = []
    for file in secret_files(settings):
        try:
            mode = file.stat().st_mode & 0o777
        except OSError as exc:
            problems.append(f"{file} missing ({exc.strerror})")
            continue
        if mode & 0o077:
            problems.append(f"{file} is mode {mode:o}")
    if problems:
        action = "restore the missing files from provisioning; chmod 600 each secrets file"
        return fail("config", "; ".join(problems), action), settings
    found = f"{path} valid, terminal {settings.terminal_id}; secrets files 0600"
    return ok("config", found), settings


# -- card reader ------------------------------------------------------------------------------


async def check_pcsc(settings: AgentSettings, doctor: DoctorSettings) -> list[CheckResult]:
    """pcscd answers (an EstablishContext), the configured reader is there, a card or not."""
    wanted = settings.reader.reader
    adapter = PcscAdapter(settings.reader)
    try:
        try:
            async with asyncio.timeout(doctor.pcsc_timeout_s):
                readers = await adapter.list_readers()
        except NoService:
            return [fail("pcscd", "pcscd is not running", START_PCSCD)]
        except TimeoutError:
            action = "restart pcscd: systemctl restart pcscd.socket pcscd.service"
            return [fail("pcscd", f"no answer in {doctor.pcsc_timeout_s:g} s", action)]
        except ReaderError as exc:
            return [fail("pcscd", str(exc), "restart pcscd: systemctl restart pcscd.socket")]
        results = [ok("pcscd", "running")]
        present = ", ".join(repr(r) for r in readers) or "none"
        chosen = next((r for r in readers if wanted is None or r.startswith(wanted)), None)
        if chosen is None:
            wanted_text = "any reader" if wanted is None else f"reader {wanted!r}"
            action = (
                "plug the card reader in (try another USB port); if it is there, set "
                "[reader] reader in the configuration to one of the names listed"
            )
            results.append(fail("reader", f"{wanted_text} not found; present: {present}", action))
            return results
        results.append(ok("reader", f"using {chosen!r}; present: {present}"))
        try:
            async with asyncio.timeout(doctor.pcsc_timeout_s):
                slot = await adapter.status(chosen)
        except (ReaderError, TimeoutError) as exc:
            action = "unplug and replug the card reader"
            results.append(warn("card", f"slot status unavailable ({exc})", action))
            return results
        if slot.present:
            results.append(ok("card", f"card inserted (ATR {len(slot.atr)} bytes)"))
        else:
            results.append(ok("card", "no card inserted"))
        return results
    finally:
        await adapter.close()


# -- PIN pad ----------------------------------------------------------------------------------


async def check_pinpad(settings: AgentSettings, doctor: DoctorSettings) -> list[CheckResult]:
    """The pad answers IDENTIFY; the PIN key slot holds a key with enough keys left."""
    bound = doctor.pinpad_timeout_s
    pad_settings = settings.pinpad.model_copy(
        update={"response_timeout_s": min(settings.pinpad.response_timeout_s, bound)}
    )
    port = settings.pinpad.port
    driver = PinpadDriver(pad_settings)
    slot = settings.pin_key_slot
    try:
        await driver.start()
        try:
            async with asyncio.timeout(bound):
                await driver.wait_connected()
                ident = await driver.identify()
        except (PinpadError, TimeoutError) as exc:
            found = f"no PIN pad answering on {port} ({type(exc).__name__})"
            if not Path(port).exists():
                found = f"no PIN pad at {port}"
            action = (
                "check the PIN pad's USB cable and power; replug it; if it stays silent, "
                "replace the PIN pad"
            )
            return [fail("pinpad", found, action)]
        results = [
            ok(
                "pinpad",
                f"{ident.model} firmware {ident.firmware} serial {ident.serial} on {port}",
            )
        ]
        try:
            async with asyncio.timeout(bound):
                status = await driver.key_status(slot)
        except PinpadRefused as exc:
            action = f"load the PIN key into slot {slot} (key injection) or fix pin_key_slot"
            found = f"slot {slot}: no usable key ({exc.status.name})"
            results.append(fail("pin_key", found, action))
            return results
        except (PinpadError, TimeoutError) as exc:
            action = "replug the PIN pad and run the doctor again"
            results.append(
                fail("pin_key", f"slot {slot}: no answer ({type(exc).__name__})", action)
            )
            return results
        if status.key_type == KeyType.EMPTY:
            action = f"load the PIN key into slot {slot} (key injection) or fix pin_key_slot"
            results.append(fail("pin_key", f"slot {slot} is empty", action))
            return results
        found = f"slot {slot}: {status.key_type.name} key, {status.keys_left} keys left"
        if status.keys_left == 0:
            action = "the PIN key is used up: inject a new PIN key into the pad"
            results.append(fail("pin_key", found, action))
        elif status.keys_left < doctor.dukpt_warn_keys:
            action = "order a PIN key re-injection for this pad soon"
            results.append(warn("pin_key", found, action))
        else:
            results.append(ok("pin_key", found))
        return results
    finally:
        await driver.close()


# -- journal ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JournalFacts:
    """What the read-only look at the journal found (``None``: could not be read)."""

    integrity: list[str]
    schema_version: int | None
    next_data_counter: int
    last_timestamp: datetime | None
    pending_reversals: list[datetime]


def _parse_ts(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def read_journal(path: Path) -> JournalFacts:
    """Open the existing journal (never create it) and read what the checks need.

    Raises :class:`sqlite3.Error` (or :class:`FileNotFoundError`) when it cannot be read.
    """
    if not path.is_file():
        raise FileNotFoundError(str(path))
    conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=2.0)
    try:
        integrity = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        version = None if row is None or row[0] is None else int(row[0])
        row = conn.execute(
            "SELECT next_counter FROM dukpt_counters WHERE key_id = ?", (DATA_KEY,)
        ).fetchone()
        counter = 1 if row is None else int(row[0])
        row = conn.execute("SELECT MAX(updated_at) FROM transactions").fetchone()
        last = None if row is None or row[0] is None else _parse_ts(str(row[0]))
        pending = [
            _parse_ts(str(r[0]))
            for r in conn.execute(
                "SELECT updated_at FROM transactions WHERE state = 'reversal_pending'"
            )
        ]
    finally:
        conn.close()
    return JournalFacts(integrity, version, counter, last, pending)


def check_journal(
    settings: AgentSettings, doctor: DoctorSettings, now: datetime
) -> tuple[list[CheckResult], JournalFacts | None]:
    """Integrity and schema version, free disk space, and the pending reversals."""
    path = settings.journal.path
    results: list[CheckResult] = []
    facts: JournalFacts | None = None
    try:
        facts = read_journal(path)
    except FileNotFoundError:
        action = "none if this terminal has never run; otherwise restore the journal backup"
        results.append(warn("journal", f"{path} does not exist yet", action))
    except sqlite3.Error as exc:
        action = (
            f"stop the agent, keep a copy of {path} for support, and call support before "
            "taking payments (pending reversals may be in it)"
        )
        results.append(fail("journal", f"{path} cannot be read: {exc}", action))
    if facts is not None:
        if facts.integrity != ["ok"]:
            action = f"stop the agent, copy {path} aside for support and call support"
            found = f"{path} damaged: {'; '.join(facts.integrity[:3])}"
            results.append(fail("journal", found, action))
        elif facts.schema_version is None or facts.schema_version > SCHEMA_VERSION:
            action = "install the agent release that wrote this journal"
            found = f"schema version {facts.schema_version}, this agent reads {SCHEMA_VERSION}"
            results.append(fail("journal", found, action))
        elif facts.schema_version < SCHEMA_VERSION:
            found = (
                f"{path} intact, schema version {facts.schema_version}: the agent upgrades it "
                f"to {SCHEMA_VERSION} when it next starts"
            )
            results.append(ok("journal", found))
        else:
            results.append(ok("journal", f"{path} intact, schema version {SCHEMA_VERSION}"))
    results.append(_check_disk(path, doctor))
    if facts is not None:
        results.append(_check_reversals(facts, doctor, now))
    return results, facts


def _check_disk(path: Path, doctor: DoctorSettings) -> CheckResult:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    found = f"{free // (1024 * 1024)} MiB free on the filesystem of {folder}"
    if free < doctor.disk_warn_bytes:
        return warn("disk", found, "free space: remove old logs (journalctl --vacuum-size=50M)")
    return ok("disk", found)


def _check_reversals(facts: JournalFacts, doctor: DoctorSettings, now: datetime) -> CheckResult:
    if not facts.pending_reversals:
        return ok("reversals", "none pending")
    oldest = min(facts.pending_reversals)
    age = (now - oldest).total_seconds()
    found = f"{len(facts.pending_reversals)} pending, oldest {age / 60:.0f} min"
    if age > doctor.reversal_warn_age_s:
        action = (
            "the bridge has not taken them: check the broker and bridge checks above; "
            "they are sent automatically once it answers"
        )
        return warn("reversals", found, action)
    return ok("reversals", found + " (sent automatically)")


# -- data key ---------------------------------------------------------------------------------


def check_data_key(
    settings: AgentSettings, doctor: DoctorSettings, facts: JournalFacts | None
) -> CheckResult:
    """The TR-31 block is present and valid under the KBPK; keys left for its counter."""
    keys = settings.keys
    if not keys.data_key_block_file.is_file():
        action = "restore the data key block from provisioning (gateway-bridge terminals add)"
        return fail("data_key", f"{keys.data_key_block_file} missing", action)
    try:
        data_initial_key(keys)
    except ConfigError as exc:
        action = "re-provision the terminal's data key block and its KBPK together"
        return fail("data_key", str(exc), action)
    counter = 1 if facts is None else facts.next_data_counter
    left = dukpt_keys_left(counter)
    found = f"TR-31 block valid under the KBPK; {left} keys left (next counter {counter})"
    if left == 0:
        return fail("data_key", found, "the data key is used up: re-provision this terminal")
    if left < doctor.dukpt_warn_keys:
        return warn("data_key", found, "schedule re-provisioning of this terminal's data key")
    return ok("data_key", found)


# -- broker, certificate, clock ---------------------------------------------------------------


async def check_broker(settings: AgentSettings, doctor: DoctorSettings) -> CheckResult:
    """A TCP connection to the broker, then a TLS handshake (client certificate) if set."""
    broker = settings.broker
    where = f"{broker.host}:{broker.port}"
    bound = doctor.broker_timeout_s
    try:
        async with asyncio.timeout(bound):
            _, writer = await asyncio.open_connection(broker.host, broker.port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        action = (
            "check the network cable or Wi-Fi and that the broker address in the "
            "configuration is right; call the host team if the broker is down"
        )
        return fail("broker", f"cannot connect to {where}: {reason}", action)
    if broker.tls is None:
        return ok("broker", f"{where} reachable (no TLS configured)")
    # TLS 1.3 finishes the client's handshake before the server has judged the client
    # certificate: only an answer to an MQTT CONNECT shows whether the broker accepts
    # this identity (a refusal arrives as a TLS alert naming the reason).
    try:
        context = broker.tls.context()
        async with asyncio.timeout(bound):
            reader, writer = await asyncio.open_connection(
                broker.host, broker.port, ssl=context, server_hostname=broker.host
            )
            try:
                # A broker that refuses the certificate sends its alert right after the
                # handshake; read it before sending anything, so that closing on unread
                # data (a reset, which can overtake the alert) does not hide the reason.
                with contextlib.suppress(TimeoutError):
                    early = await asyncio.wait_for(reader.read(1), 0.3)
                    if not early:
                        raise ConnectionResetError("closed after the handshake")
                code = await mqtt_connect_probe(reader, writer, f"{settings.terminal_id}-doctor")
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except ssl.SSLCertVerificationError as exc:
        action = "the broker's certificate is not trusted by ca_file: install the current CA"
        return fail("broker", f"{where}: {exc.verify_message}", action)
    except (ssl.SSLError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        words = _TLS_ALERTS.get(str(reason), str(reason))
        action = (
            "the broker refused this terminal's certificate: run terminal-agent provision "
            "with a new enrolment code (docs/provisioning.md)"
        )
        return fail("broker", f"{where}: refused ({words})", action)
    if code != 0:
        action = "the broker refused the MQTT connection: call the host team with this code"
        return fail("broker", f"{where}: MQTT CONNACK return code {code}", action)
    return ok("broker", f"{where} reachable; MQTT connect over TLS as {settings.terminal_id}")


#: OpenSSL's names of the TLS alerts a broker sends when it refuses a client certificate.
_TLS_ALERTS = {
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "certificate revoked",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "certificate expired",
    "TLSV1_ALERT_UNKNOWN_CA": "certificate from an unknown CA",
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "no client certificate",
}


async def mqtt_connect_probe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_id: str
) -> int:
    """Send an MQTT 3.1.1 CONNECT (clean session) and return the CONNACK return code
    (MQTT 3.1.1 section 3.1 and 3.2); Mosquitto answers it on an MQTT 5 listener too."""
    ident = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x0a"
    payload = len(ident).to_bytes(2, "big") + ident
    remaining = len(variable) + len(payload)
    if remaining > 127:
        raise ValueError("client id too long for the probe")
    writer.write(bytes([0x10, remaining]) + variable + payload)
    await writer.drain()
    connack = await reader.readexactly(4)
    if connack[0] != 0x20 or connack[1] != 0x02:
        raise asyncio.IncompleteReadError(connack, 4)
    disconnect = b"\xe0\x00"
    writer.write(disconnect)
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.drain()
    return connack[3]


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def check_certificate(
    settings: AgentSettings, doctor: DoctorSettings, now: datetime
) -> CheckResult:
    """The client certificate: valid now, not near expiry, CN equal to the terminal id."""
    tls = settings.broker.tls
    if tls is None or tls.cert_file is None:
        return ok("certificate", "no client certificate configured")
    try:
        cert = load_certificate(tls.cert_file)
    except (OSError, ValueError) as exc:
        action = "restore the client certificate from provisioning"
        return fail("certificate", f"{tls.cert_file} unreadable ({type(exc).__name__})", action)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else ""
    after, before = cert.not_valid_after_utc, cert.not_valid_before_utc
    renew = "request a new client certificate for this terminal (deploy/ shows how)"
    if cn != settings.terminal_id:
        found = f"CN {cn!r} is not the terminal id {settings.terminal_id!r}"
        return fail("certificate", found, "install this terminal's own certificate")
    if now > after:
        return fail("certificate", f"expired {after:%Y-%m-%d %H:%M} UTC", renew)
    if now < before:
        found = f"not valid before {before:%Y-%m-%d %H:%M} UTC"
        return fail("certificate", found, "set the clock right (see the clock check), or " + renew)
    days = (after - now) / timedelta(days=1)
    found = f"CN {cn}, expires {after:%Y-%m-%d} ({days:.0f} days)"
    if days < doctor.cert_warn_days:
        return warn("certificate", found, renew)
    return ok("certificate", found)


def check_clock(
    settings: AgentSettings, doctor: DoctorSettings, now: datetime, facts: JournalFacts | None
) -> CheckResult:
    """The clock is not behind the certificate's start or the journal's last entry."""
    skew = timedelta(seconds=doctor.clock_skew_s)
    behind: list[str] = []
    tls = settings.broker.tls
    if tls is not None and tls.cert_file is not None:
        with contextlib.suppress(OSError, ValueError):
            start = load_certificate(tls.cert_file).not_valid_before_utc
            if start > now + skew:
                behind.append(f"certificate starts {start:%Y-%m-%d %H:%M} UTC")
    last = None if facts is None else facts.last_timestamp
    if last is not None and last > now + skew:
        behind.append(f"journal's last entry is {last:%Y-%m-%d %H:%M} UTC")
    note = "no NTP check without network: compare with a phone's time"
    found = f"{now:%Y-%m-%d %H:%M:%S} UTC; {note}"
    if behind:
        action = "the clock is behind: set it (timedatectl set-time) and check systemd-timesyncd"
        return fail("clock", f"{found}; " + "; ".join(behind), action)
    return ok("clock", found)


async def check_bridge(settings: AgentSettings, doctor: DoctorSettings) -> CheckResult:
    """The retained bridge status, read by a short MQTT subscribe."""
    broker = settings.broker
    version = (
        aiomqtt.ProtocolVersion.V311 if broker.protocol == "3.1.1" else aiomqtt.ProtocolVersion.V5
    )
    bound = doctor.bridge_timeout_s
    payload: bytes | None = None
    try:
        async with asyncio.timeout(bound):
            async with aiomqtt.Client(
                broker.host,
                broker.port,
                identifier=f"{settings.terminal_id}-doctor",
                protocol=version,
                timeout=bound,
                tls_context=None if broker.tls is None else broker.tls.context(),
            ) as client:
                await client.subscribe(topics.BRIDGE_STATUS, qos=1)
                async for message in client.messages:
                    if isinstance(message.payload, bytes):
                        payload = message.payload
                    break
    except TimeoutError:
        pass
    except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
        action = "fix the broker check first"
        return fail("bridge", f"cannot ask the broker ({type(exc).__name__})", action)
    call = "call the host team: the payment bridge is down"
    if payload is None:
        return fail("bridge", f"no bridge status on the broker within {bound:g} s", call)
    try:
        status = BridgeStatus.model_validate_json(payload)
    except ValidationError:
        return fail("bridge", "the bridge status is not readable", call)
    if status.state != "online":
        return fail("bridge", f"bridge {status.bridge_id} is {status.state}", call)
    return ok("bridge", f"bridge {status.bridge_id} online")


# -- all of them ------------------------------------------------------------------------------

#: The check names, in report order (``--check`` takes these).
CHECK_NAMES: tuple[str, ...] = (
    "config",
    "pcscd",
    "reader",
    "card",
    "pinpad",
    "pin_key",
    "data_key",
    "broker",
    "certificate",
    "clock",
    "bridge",
    "journal",
    "disk",
    "reversals",
)

#: The checks the running agent repeats for its status topic: they read files only, so
#: they never disturb the devices or the broker connection a payment is using.
PASSIVE_CHECKS: tuple[str, ...] = (
    "config",
    "data_key",
    "certificate",
    "clock",
    "journal",
    "disk",
    "reversals",
)

_GROUPS: dict[str, tuple[str, ...]] = {
    "pcsc": ("pcscd", "reader", "card"),
    "pinpad": ("pinpad", "pin_key"),
    "journal": ("journal", "disk", "reversals", "data_key", "clock"),
}


async def run_checks(
    config: Path,
    doctor: DoctorSettings,
    *,
    now: datetime | None = None,
    only: Sequence[str] = (),
) -> list[CheckResult]:
    """Every check (or those named in ``only``) in :data:`CHECK_NAMES` order."""
    wanted = set(only or CHECK_NAMES)
    moment = now or datetime.now(UTC)

    def any_of(*names: str) -> bool:
        return bool(wanted.intersection(names))

    config_result, settings = check_config(config)
    results = [config_result]
    if settings is None:
        return results
    if any_of(*_GROUPS["pcsc"]):
        results += await check_pcsc(settings, doctor)
    if any_of(*_GROUPS["pinpad"]):
        results += await check_pinpad(settings, doctor)
    facts: JournalFacts | None = None
    if any_of(*_GROUPS["journal"]):
        journal_results, facts = await asyncio.to_thread(check_journal, settings, doctor, moment)
        results += journal_results
        results.append(check_data_key(settings, doctor, facts))
        results.append(check_clock(settings, doctor, moment, facts))
    if "broker" in wanted:
        results.append(await check_broker(settings, doctor))
    results.append(check_certificate(settings, doctor, moment))
    if "bridge" in wanted:
        results.append(await check_bridge(settings, doctor))
    order = {name: i for i, name in enumerate(CHECK_NAMES)}
    chosen = [r for r in results if r.name in wanted]
    return sorted(chosen, key=lambda r: order[r.name])
