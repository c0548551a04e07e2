"""The hardware-in-the-loop harness for the purchase scenarios (issue 6).

Everything is real except the card and the PIN pad, which are the emulated devices on
their real transports: the card behind pcscd + vpcd, the PIN pad on a pty. The agent
(reader, EMV kernel, PIN pad driver, journal, MQTT link) talks through a real Mosquitto
to the real bridge, whose connector is the issuer simulator. :func:`hil` gives a test
every side it asserts on: what the cashier saw, the agent's journal, the bridge's
journal and the issuer's ledger.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway_bridge.connectors.issuer_sim import IssuerSimulator
from gateway_bridge.connectors.issuer_sim.accounts import repo_catalogue_dir
from gateway_bridge.connectors.issuer_sim.ledger import LedgerEntry
from gateway_bridge.journal.base import AuthorizationQuery, AuthorizationRecord
from gateway_bridge.service import Bridge
from hardware.mosquitto import MosquittoService
from hardware.pcsc.pcscd import PcscdService
from hardware.pinpad import AesDukptKey, EmulatedPinpad
from terminal_agent.cardholder import PadCardholder
from terminal_agent.display import RecordingDisplay
from terminal_agent.journal import TransactionJournal
from terminal_agent.journal.model import TransactionRecord
from terminal_agent.kernel import EmvKernel, TerminalConfig
from terminal_agent.link import LinkSettings, MqttLink
from terminal_agent.pinpad import PinpadDriver, PinpadSettings
from terminal_agent.reader import ReaderService, ReaderSettings
from terminal_agent.transaction import PaymentResult, PaymentTerminal, TransactionSettings
from tests.gateway_bridge.rig import DATA_IKID, PIN_IKID, TERMINAL_ID, Rig, make_rig, running_bridge


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

    async def bridge_record(self, idempotency_key: str) -> AuthorizationRecord | None:
        """The bridge's journal entry for this terminal and idempotency key, if any."""
        rows = await self.bridge.journal.query_authorizations(
            AuthorizationQuery(terminal_id=TERMINAL_ID, limit=500)
        )
        found = [r for r in rows if r.idempotency_key == idempotency_key]
        assert len(found) <= 1, "the bridge journaled one key twice"
        return found[0] if found else None

    def ledger_for(self, record: TransactionRecord) -> list[LedgerEntry]:
        """The issuer's entries for the messages this record sent (authorisation side)."""
        ids = set(record.message_ids)
        return [
            e for e in self.issuer.ledger.entries()
            if e.message_id in ids and e.kind in ("authorisation", "refund")
        ]  # fmt: skip

    async def reconcile(self, results: list[PaymentResult]) -> None:
        """For every payment: the issuer holds exactly one net outcome per idempotency key
        and it matches what the cashier was told; the bridge agrees with both. A void
        shown as VOIDED undoes its purchase: the pair nets to nothing."""
        voided: set[str] = set()
        for result in results:
            record = await self.record(result)
            if record.transaction_type != "void":
                continue
            (entry,) = [e for e in self.issuer.ledger.entries()
                        if e.message_id in record.message_ids]  # fmt: skip
            assert entry.kind == "reversal"
            assert (result.status == "approved") == (entry.original_sequence is not None)
            if entry.original_sequence is not None:
                assert self.issuer.ledger.is_undone(entry.original_sequence)
                voided.add(record.idempotency_key.removeprefix("void:"))
        for result in results:
            record = await self.record(result)
            if record.transaction_type == "void":
                continue
            entries = self.ledger_for(record)
            bridge = await self.bridge_record(result.idempotency_key)
            if not entries:  # never reached the issuer: nothing may have moved
                assert result.status != "approved", result
                continue
            assert len(entries) == 1, f"{len(entries)} issuer decisions for one payment"
            entry = entries[0]
            live = entry.approved and not self.issuer.ledger.is_undone(entry.sequence)
            shown = result.status == "approved" and result.idempotency_key not in voided
            assert live == shown, (result.status, entry)
            assert bridge is not None and bridge.response_code == entry.response_code
            if shown:
                assert bridge.state == "approved" and bridge.reversed_at is None
                assert result.authorization_code == entry.authorization_code
            if result.reversal_queued:
                assert record.state == "reversed", record.state
                assert bridge.reversed_at is not None


def card_files(path: Path) -> bytes:
    """A SQLite database's bytes with its WAL and shared-memory files."""
    return b"".join(
        p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


def issuer_from_catalogue() -> IssuerSimulator:
    catalogue = repo_catalogue_dir()
    assert catalogue is not None
    return IssuerSimulator.from_paths([catalogue])


@pytest.fixture
def rig(tmp_path: Path, mosquitto_broker: MosquittoService) -> Rig:
    return make_rig(tmp_path, mosquitto_broker)


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
            running_bridge(rig, issuer) as bridge,
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
                terminal, display, journal, pad, bridge, issuer, agent_db, tmp_path / "journal.db"
            )
    finally:
        await journal.close()


def assert_no_card_data(h: Hil, *pans: str) -> None:
    """Neither journal's files hold a PAN (as text or BCD) or its track 2 equivalent."""
    for path in (h.agent_db, h.bridge_db):
        blob = card_files(path)
        assert blob, f"{path.name} is empty"
        for pan in pans:
            forms = [pan.encode(), f"{pan}D".encode(), f"{pan}=".encode()]
            if len(pan) % 2 == 0:
                forms.append(bytes.fromhex(pan))
            for form in forms:
                assert form not in blob, f"card data in {path.name}"
