"""The hardware-in-the-loop harness for the purchase scenarios (issue 6).

Everything is real except the card and the PIN pad, which are the emulated devices on
their real transports: the card behind pcscd + vpcd, the PIN pad on a pty. The agent
(reader, EMV kernel, PIN pad driver, journal, MQTT link) talks through a real Mosquitto
to the real bridge, whose connector is the issuer simulator. :func:`hil` gives a test
every side it asserts on: what the cashier saw, the agent's journal, the bridge's
journal and the issuer's ledger.

The bridge's connector is a fixture parameter: ``issuer_sim`` (the built-in issuer
simulator) or ``iso8583`` (the ISO 8583 connector, binary dialect, talking over TCP to the
acquirer simulator, which fronts the same issuer simulator and verifies the PIN block
translated under the zone PIN key); every scenario runs through both.

:func:`reconcile` is the end-of-session proof of DESIGN 6 shared with the production
suite (tests/e2e/test_production.py): for every idempotency key the issuer holds exactly
one net outcome, it is what the cashier was told, the bridge's journal agrees, and the
issuer holds no decision nobody asked for. :func:`assert_no_card_data_in` and
:func:`retained_messages` look for card data in files, logs and the broker's retained
messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from gateway_bridge.acquirer_sim import AcquirerSimSettings, AcquirerSimulator
from gateway_bridge.config import Iso8583Settings
from gateway_bridge.connectors.issuer_sim import IssuerSimulator
from gateway_bridge.connectors.issuer_sim.accounts import repo_catalogue_dir
from gateway_bridge.connectors.issuer_sim.ledger import Ledger, LedgerEntry
from gateway_bridge.journal.base import AuthorizationQuery, AuthorizationRecord
from gateway_bridge.service import Bridge
from hardware.mosquitto import MosquittoService
from hardware.pcsc.pcscd import PcscdService
from hardware.pinpad import AesDukptKey, EmulatedPinpad
from hardware.services import free_tcp_port
from terminal_agent.cardholder import PadCardholder
from terminal_agent.display import RecordingDisplay
from terminal_agent.journal import TransactionJournal
from terminal_agent.journal.model import TransactionRecord
from terminal_agent.kernel import EmvKernel, TerminalConfig
from terminal_agent.link import LinkSettings, MqttLink
from terminal_agent.pinpad import PinpadDriver, PinpadSettings
from terminal_agent.reader import ReaderService, ReaderSettings
from terminal_agent.transaction import PaymentResult, PaymentTerminal, TransactionSettings
from tests.conftest import card_data_in
from tests.gateway_bridge.rig import DATA_IKID, PIN_IKID, TERMINAL_ID, Rig, make_rig, running_bridge

CONNECTORS = ("issuer_sim", "iso8583")
#: The acquirer's copy of the zone PIN key, next to the bridge's config (0600).
ACQUIRER_ZPK = "acquirer-zpk.hex"


@dataclass(frozen=True)
class Shown:
    """What the cashier was told about one payment (the ECR API or the screen)."""

    idempotency_key: str
    status: str
    authorization_code: str | None = None
    reversal_queued: bool = False

    @classmethod
    def of(cls, result: PaymentResult) -> Shown:
        return cls(
            result.idempotency_key,
            result.status,
            result.authorization_code,
            result.reversal_queued,
        )


def _decisions(ledger: Ledger) -> list[LedgerEntry]:
    return [e for e in ledger.entries() if e.kind in ("authorisation", "refund")]


def issuer_decisions(
    ledger: Ledger, record: TransactionRecord, bridge: AuthorizationRecord | None
) -> list[LedgerEntry]:
    """The issuer's authorisation-side entries for one payment: by the message ids the
    agent sent (the built-in connector hands them through) or, through an acquirer that
    numbers its own messages, by the RRN the bridge journaled from the answer."""
    ids = set(record.message_ids)
    found = [e for e in _decisions(ledger) if e.message_id in ids]
    if not found and bridge is not None and bridge.host_reference is not None:
        found = [e for e in _decisions(ledger) if e.host_reference == bridge.host_reference]
    return found


async def reconcile(
    shown: Sequence[Shown],
    journal: TransactionJournal,
    bridge_rows: Sequence[AuthorizationRecord],
    ledger: Ledger,
) -> None:
    """For every payment the issuer holds exactly one net outcome per idempotency key,
    and it is what the cashier was told; the bridge's journal agrees with both; a void
    shown as VOIDED undoes its purchase (the pair nets to nothing); every decision and
    every undo the issuer holds belongs to a payment of the session (``ledger`` must be
    this session's issuer alone)."""
    bridge: dict[str, AuthorizationRecord] = {}
    for journaled in bridge_rows:
        assert journaled.idempotency_key not in bridge, "the bridge journaled one key twice"
        bridge[journaled.idempotency_key] = journaled
    records: dict[str, TransactionRecord] = {}
    for item in shown:
        record = await journal.by_idempotency_key(item.idempotency_key)
        assert record is not None, f"the agent journaled nothing for {item.idempotency_key}"
        records[item.idempotency_key] = record

    voided: set[str] = set()
    for item in shown:
        if records[item.idempotency_key].transaction_type != "void":
            continue
        key = item.idempotency_key.removeprefix("void:")
        purchase = records.get(key) or await journal.by_idempotency_key(key)
        assert purchase is not None and purchase.transaction_type == "purchase"
        (target,) = issuer_decisions(ledger, purchase, bridge.get(key))
        undo = [e for e in ledger.entries() if e.original_sequence == target.sequence
                and e.kind in ("reversal", "void")]  # fmt: skip
        if item.status == "approved" or records[item.idempotency_key].state == "reversed":
            assert len(undo) == 1, f"{len(undo)} undos of one purchase"
            assert ledger.is_undone(target.sequence)
            voided.add(key)
        else:
            assert not ledger.is_undone(target.sequence)

    claimed: dict[int, str] = {}
    for item in shown:
        record = records[item.idempotency_key]
        if record.transaction_type == "void":
            continue
        row = bridge.get(item.idempotency_key)
        entries = issuer_decisions(ledger, record, row)
        if item.reversal_queued:
            assert record.state == "reversed", record.state
            if row is not None and row.state == "approved":
                assert row.reversed_at is not None
        if not entries:  # never reached the issuer: nothing may have moved
            assert item.status != "approved", item
            continue
        assert len(entries) == 1, f"{len(entries)} issuer decisions for one payment"
        entry = entries[0]
        assert entry.sequence not in claimed, "two payments claim one issuer decision"
        claimed[entry.sequence] = item.idempotency_key
        live = entry.approved and not ledger.is_undone(entry.sequence)
        seen = item.status == "approved" and item.idempotency_key not in voided
        assert live == seen, (item, entry)
        assert row is not None and row.response_code == entry.response_code
        if seen:
            assert row.state == "approved" and row.reversed_at is None
            assert item.authorization_code == entry.authorization_code
    unclaimed = [e for e in _decisions(ledger) if e.sequence not in claimed]
    assert unclaimed == [], "the issuer decided on a payment the cashier never saw"
    for later in ledger.entries():
        if later.kind in ("reversal", "void") and later.original_sequence is not None:
            assert later.original_sequence in claimed, "an undo of a decision nobody asked for"


def card_forms(*pans: str) -> list[bytes]:
    """A PAN as text and BCD, and the starts of its track 2 equivalent (D or = separator)."""
    forms: list[bytes] = []
    for pan in pans:
        forms += [pan.encode(), f"{pan}D".encode(), f"{pan}=".encode()]
        if len(pan) % 2 == 0:
            forms.append(bytes.fromhex(pan))
    return forms


def assert_no_card_data_in(blobs: Mapping[str, bytes], *pans: str) -> None:
    """None of ``blobs`` (name -> content) holds one of ``pans`` in any form."""
    for name, blob in blobs.items():
        for form in card_forms(*pans):
            assert form not in blob, f"card data in {name}"


def assert_clean_text(name: str, text: str, *pans: str) -> None:
    """A log or message text holds none of ``pans`` and nothing the suite's log guard
    takes for card data (a Luhn-valid digit run, a track 2 shape)."""
    assert_no_card_data_in({name: text.encode()}, *pans)
    assert card_data_in(text) == [], f"card data in {name}"


async def retained_messages(
    host: str, port: int, *, tls: ssl.SSLContext | None = None, topic: str = "#"
) -> dict[str, bytes]:
    """The retained messages a client may read under ``topic`` (topic -> payload)."""
    found: dict[str, bytes] = {}
    async with aiomqtt.Client(
        host,
        port,
        identifier=f"audit-{secrets.token_hex(4)}",
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=tls,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        timeout=5,
    ) as client:
        await client.subscribe(topic, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.3):  # retained messages come at once
                async for message in client.messages:
                    if message.retain and isinstance(message.payload, bytes | bytearray):
                        found[str(message.topic)] = bytes(message.payload)
    return found


@dataclass
class Hil:
    """One terminal wired to one bridge and issuer, and what each side recorded."""

    terminal: PaymentTerminal
    display: RecordingDisplay
    journal: TransactionJournal
    pad: EmulatedPinpad
    bridge: Bridge
    issuer: IssuerSimulator
    agent_db: Path
    bridge_db: Path
    broker: MosquittoService
    #: The acquirer simulator between the bridge and the issuer (ISO 8583 runs only).
    acquirer: AcquirerSimulator | None = None

    def texts(self) -> list[str]:
        """Every prompt's text, in order (what the cashier read)."""
        return [p.text for p in self.display.prompts]

    def saw(self, words: str) -> bool:
        """Whether the cashier read ``words`` in any prompt."""
        return any(words in p.text or any(words in line for line in p.lines)
                   for p in self.display.prompts)  # fmt: skip

    async def record(self, result: PaymentResult) -> TransactionRecord:
        """The agent's journal record of ``result`` (it must exist)."""
        record = await self.journal.by_idempotency_key(result.idempotency_key)
        assert record is not None, "the agent journaled nothing for this payment"
        return record

    async def bridge_rows(self) -> list[AuthorizationRecord]:
        return await self.bridge.journal.query_authorizations(
            AuthorizationQuery(terminal_id=TERMINAL_ID, limit=500)
        )

    async def bridge_record(self, idempotency_key: str) -> AuthorizationRecord | None:
        """The bridge's journal entry for this terminal and idempotency key, if any."""
        found = [r for r in await self.bridge_rows() if r.idempotency_key == idempotency_key]
        assert len(found) <= 1, "the bridge journaled one key twice"
        return found[0] if found else None

    async def ledger_for(self, record: TransactionRecord) -> list[LedgerEntry]:
        """The issuer's authorisation-side entries for this payment."""
        bridge = await self.bridge_record(record.idempotency_key)
        return issuer_decisions(self.issuer.ledger, record, bridge)

    async def reconcile(self, results: list[PaymentResult]) -> None:
        """:func:`reconcile` over ``results`` (what the cashier was told)."""
        await reconcile(
            [Shown.of(r) for r in results],
            self.journal,
            await self.bridge_rows(),
            self.issuer.ledger,
        )

    async def retained(self) -> dict[str, bytes]:
        """Every retained message on the (plain, anonymous) broker."""
        return await retained_messages(self.broker.host, self.broker.port)


def card_files(path: Path) -> bytes:
    """A SQLite database's bytes with its WAL and shared-memory files."""
    return b"".join(
        p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


def issuer_from_catalogue() -> IssuerSimulator:
    catalogue = repo_catalogue_dir()
    assert catalogue is not None
    return IssuerSimulator.from_paths([catalogue])


def _private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


@pytest.fixture(params=CONNECTORS)
def connector(request: pytest.FixtureRequest) -> str:
    """Which connector the bridge runs: every scenario runs through both."""
    kind: str = request.param
    return kind


def make_e2e_rig(tmp_path: Path, broker: MosquittoService, connector: str) -> Rig:
    """The bridge rig for ``connector``; for ``iso8583`` the acquirer's port and zone PIN
    key are chosen now (the key reaches the bridge's key store as a TR-31 block and the
    acquirer's side as :data:`ACQUIRER_ZPK`)."""
    if connector == "issuer_sim":
        return make_rig(tmp_path, broker)
    zone_key = secrets.token_bytes(16)
    _private(tmp_path / ACQUIRER_ZPK, zone_key.hex())
    return make_rig(
        tmp_path,
        broker,
        zone_pin_key=zone_key,
        connector_toml=(
            f'[connector]\nkind = "iso8583"\nport = {free_tcp_port()}\n'
            'dialect = "binary"\nheader = "2byte"\npin_zone_key_id = "acquirer-zpk"\n'
            "pin_zone_format = 4\nrequest_timeout = 5.0\n"
            "reconnect_initial = 0.05\nreconnect_max = 0.5\n"
            # The acquirer knows the merchant by its 15-character DE42 id.
            'merchant_ids = { "M000000000000001" = "000000000000001" }\n'
        ),
    )


@pytest.fixture
def rig(tmp_path: Path, mosquitto_broker: MosquittoService, connector: str) -> Rig:
    return make_e2e_rig(tmp_path, mosquitto_broker, connector)


@contextlib.asynccontextmanager
async def serving_bridge(
    rig: Rig, issuer: IssuerSimulator
) -> AsyncIterator[tuple[Bridge, AcquirerSimulator | None]]:
    """The bridge with ``issuer`` behind its connector: directly, or behind the acquirer
    simulator on the port the rig's ISO 8583 settings name."""
    settings = rig.settings.connector
    if not isinstance(settings, Iso8583Settings):
        async with running_bridge(rig, issuer) as bridge:
            yield bridge, None
        return
    zone_key = bytes.fromhex((rig.config.parent / ACQUIRER_ZPK).read_text())
    acquirer = AcquirerSimulator(
        AcquirerSimSettings(
            port=settings.port,
            dialect=settings.dialect,
            header=settings.header,
            pin_zone_format=settings.pin_zone_format,
        ),
        issuer,
        zone_key,
    )
    await acquirer.start()
    try:
        async with running_bridge(rig) as bridge:
            yield bridge, acquirer
    finally:
        await acquirer.close()


@pytest.fixture
def issuer() -> IssuerSimulator:
    return issuer_from_catalogue()


@pytest.fixture
def pad(rig: Rig, tmp_path: Path) -> Iterator[EmulatedPinpad]:
    emulated = EmulatedPinpad(
        kbpk=secrets.token_bytes(32),
        slots={1: AesDukptKey(rig.pin_initial_key, PIN_IKID)},
        link_path=tmp_path / "pos-pinpad",
    )
    emulated.start()
    yield emulated
    emulated.stop()


@contextlib.asynccontextmanager
async def hil(
    rig: Rig,
    pcscd: PcscdService,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
    *,
    host_timeout: float = 5.0,
    pin_timeout: float = 5.0,
    choice_timeout: float = 5.0,
) -> AsyncIterator[Hil]:
    """The bridge running with ``issuer``, and an agent connected to it."""
    display = RecordingDisplay()
    agent_db = tmp_path / "agent.db"
    journal = await TransactionJournal.open(agent_db, secrets.token_bytes(32))
    link_settings = LinkSettings(
        terminal_id=TERMINAL_ID, host=rig.broker.host, port=rig.broker.port, protocol="5"
    )
    assert pad.link_path is not None
    try:
        async with (
            serving_bridge(rig, issuer) as (bridge, acquirer),
            ReaderService(ReaderSettings(reader=pcscd.card_reader)) as reader,
            PinpadDriver(PinpadSettings(port=str(pad.link_path))) as pinpad,
            MqttLink(
                link_settings,
                initial_key=rig.data_initial_key,
                initial_key_id=DATA_IKID,
                counters=journal,
            ) as link,
        ):
            await link.wait_connected(10)
            await pinpad.wait_connected(10)
            cardholder = PadCardholder(
                pinpad,
                display,
                pin_key_slot=1,
                pin_timeout_s=pin_timeout,
                choice_timeout_s=choice_timeout,
            )
            terminal = PaymentTerminal(
                kernel=EmvKernel(TerminalConfig()),
                reader=reader,
                cardholder=cardholder,
                link=link,
                journal=journal,
                display=display,
                settings=TransactionSettings(card_timeout_s=10, host_timeout_s=host_timeout),
            )
            yield Hil(
                terminal,
                display,
                journal,
                pad,
                bridge,
                issuer,
                agent_db,
                tmp_path / "journal.db",
                rig.broker,
                acquirer,
            )
    finally:
        await journal.close()


def assert_no_card_data(h: Hil, *pans: str) -> None:
    """Neither journal's files hold a PAN (as text or BCD) or its track 2 equivalent."""
    blobs = {path.name: card_files(path) for path in (h.agent_db, h.bridge_db)}
    for name, blob in blobs.items():
        assert blob, f"{name} is empty"
    assert_no_card_data_in(blobs, *pans)
