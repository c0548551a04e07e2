"""The purchase scenarios on the production path (issue 6; DESIGN 4, 6, 7).

Everything real and set up as in production: Mosquitto on the configuration
``gateway-bridge broker-config`` wrote (mTLS listener, identity = certificate CN,
per-terminal ACL, persistence; tests/production_fleet.py), the bridge connecting with its
client certificate, and the agent as its own process (``terminal-agent run --config``)
with the terminal certificate (CN = terminal id), driven the way a cash register drives
it: the ECR API over HTTP (docs/ecr-api.md). The card sits behind pcscd + vpcd, the PIN
is typed on the emulated pad on a pty.

Each scenario asserts what the cashier saw (the ECR status and the agent's screen
output), the agent's journal (its SQLite file, read after the process stopped), the
bridge's journal and the issuer's ledger, then :meth:`Production.finish` reconciles the
three (tests/e2e/conftest.py :func:`reconcile`) and looks for card data in both
journals' files, the agent's and the broker's logs, the retained messages each identity
can read and the broker's persistence file. Every process started is stopped, also when
a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway_bridge.config import load_settings
from gateway_bridge.connectors.base import Authorization, Reversal, ReversalOutcome
from gateway_bridge.connectors.issuer_sim import IssuerSimulator
from gateway_bridge.journal.base import AuthorizationQuery
from gateway_bridge.service import Bridge
from hardware.cards import EmvCard, load_profile
from hardware.pcsc.pcscd import PcscdService
from hardware.pcsc.slot import CardSlot
from hardware.pinpad import EmulatedPinpad, PinScript
from hardware.services import free_tcp_port
from paycore import tr31
from paycore.pan import Pan
from paycore.wire import AuthorizationResponse, topics
from terminal_agent.journal import TransactionJournal
from terminal_agent.journal.model import TransactionRecord
from tests.e2e.conftest import (
    Shown,
    assert_clean_text,
    assert_no_card_data_in,
    card_files,
    issuer_decisions,
    reconcile,
    retained_messages,
)
from tests.gateway_bridge.rig import DATA_IKID, TERMINAL_ID, Rig, make_rig, running_bridge
from tests.production_fleet import ProductionFleet, production_fleet

PAN = Pan("4761739001010010")  # visa_credit, PIN 1234
MASKED = "476173******0010"
BRIDGE = "bridge-1"
AUDITOR = "auditor"  # a second bridge identity: reads the terminals' retained status
AGENT = Path(sys.executable).parent / "terminal-agent"
HOST_TIMEOUT_S = 2.0
#: What the ECR API says for a settled payment whose result the agent has not handed over.
GENERIC = ("DECLINED", "Not completed")


def _private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


class RecordingIssuer:
    """The issuer simulator as the bridge's connector, remembering the reversals it took."""

    name = "issuer_sim"

    def __init__(self, issuer: IssuerSimulator) -> None:
        self.issuer = issuer
        self.reversals: list[tuple[str, ReversalOutcome]] = []

    async def start(self) -> None:
        await self.issuer.start()

    async def close(self) -> None:
        await self.issuer.close()

    async def authorize(self, auth: Authorization) -> AuthorizationResponse:
        return await self.issuer.authorize(auth)

    async def reverse(self, reversal: Reversal) -> ReversalOutcome:
        outcome = await self.issuer.reverse(reversal)
        self.reversals.append((reversal.request.idempotency_key, outcome))
        return outcome


@pytest.fixture
def fleet() -> Iterator[ProductionFleet]:
    with production_fleet(terminals=(TERMINAL_ID,), bridges=(BRIDGE, AUDITOR)) as made:
        yield made


@pytest.fixture
def rig(tmp_path: Path, fleet: ProductionFleet) -> Rig:
    """The bridge rig on the production broker: its config gains ``[broker.tls]`` with
    the bridge's client certificate."""
    folder = tmp_path / "bridge"
    folder.mkdir()
    made = make_rig(folder, fleet.broker)
    cert, key = fleet.creds(BRIDGE)
    with made.config.open("a") as handle:
        handle.write(
            f'[broker.tls]\nca_file = "{fleet.bundle}"\ncert_file = "{cert}"\nkey_file = "{key}"\n'
        )
    made.settings = load_settings(made.config)
    assert made.settings.broker.tls is not None
    return made


@dataclass
class Till:
    """One till on the production path before a scenario: a visa_credit card in the
    reader, PIN 1234 queued on the pad; ``before`` is the card account's balance."""

    fleet: ProductionFleet
    rig: Rig
    pcscd: PcscdService
    pad: EmulatedPinpad
    issuer: IssuerSimulator
    tmp_path: Path
    before: int

    def production(self) -> contextlib.AbstractAsyncContextManager[Production]:
        return production(self.fleet, self.rig, self.pcscd, self.pad, self.issuer, self.tmp_path)


@pytest.fixture
def till(
    fleet: ProductionFleet,
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
) -> Till:
    before = issuer.snapshot(PAN).balance
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(PinScript.entered("1234"))
    return Till(fleet, rig, pcscd_vpcd, pad, issuer, tmp_path, before)


def write_agent_config(
    fleet: ProductionFleet,
    rig: Rig,
    pcscd: PcscdService,
    pad: EmulatedPinpad,
    folder: Path,
) -> tuple[Path, str, int]:
    """What provisioning leaves on the terminal (TR-31 data key, KBPK, journal key, its
    certificate) and the ECR section; (config, ECR token, ECR port)."""
    folder.mkdir()
    kbpk = secrets.token_bytes(32)
    header = tr31.KeyBlockHeader(
        version_id="D", key_usage="B1", algorithm="A", mode_of_use="X",
        optional_blocks=(("IK", DATA_IKID.hex().upper()),),
    )  # fmt: skip
    (folder / "data-key.tr31").write_text(
        tr31.wrap(kbpk, header, rig.data_initial_key, random=secrets.token_bytes)
    )
    _private(folder / "kbpk.hex", kbpk.hex())
    _private(folder / "journal.key", secrets.token_hex(32))
    token = secrets.token_hex(32)
    _private(folder / "ecr.token", token)
    cert, key = fleet.creds(TERMINAL_ID)
    port = free_tcp_port()
    config = folder / "agent.toml"
    config.write_text(
        f'terminal_id = "{TERMINAL_ID}"\ncurrency = "GBP"\n'
        f'[broker]\nhost = "{fleet.host}"\nport = {fleet.port}\nprotocol = "5"\n'
        f'[broker.tls]\nca_file = "{fleet.bundle}"\ncert_file = "{cert}"\nkey_file = "{key}"\n'
        f'[keys]\ndata_key_block_file = "data-key.tr31"\nkbpk_file = "kbpk.hex"\n'
        f'[reader]\nreader = "{pcscd.card_reader}"\n'
        f'[pinpad]\nport = "{pad.link_path}"\n'
        f'[journal]\npath = "journal.db"\nkey_file = "journal.key"\n'
        f"[timeouts]\ncard_s = 10\npin_s = 5\nhost_s = {HOST_TIMEOUT_S}\nreversal_retry_s = 0.3\n"
        f'[ecr]\nhost = "127.0.0.1"\nport = {port}\ntoken_file = "ecr.token"\n'
    )
    return config, token, port


@dataclass
class Production:
    """One terminal agent process, one bridge and one issuer on the production broker."""

    fleet: ProductionFleet
    rig: Rig
    issuer: IssuerSimulator
    connector: RecordingIssuer
    folder: Path
    ecr: httpx.AsyncClient
    process: asyncio.subprocess.Process
    bridge: Bridge | None = None
    _bridge_cm: contextlib.AbstractAsyncContextManager[Bridge] | None = None
    shown: list[Shown] = field(default_factory=list)

    # -- the processes -------------------------------------------------------------------

    async def start_bridge(self) -> Bridge:
        assert self._bridge_cm is None, "the bridge is running"
        self._bridge_cm = running_bridge(self.rig, self.connector)
        self.bridge = await self._bridge_cm.__aenter__()
        return self.bridge

    async def stop_bridge(self) -> None:
        cm, self._bridge_cm, self.bridge = self._bridge_cm, None, None
        if cm is not None:
            await cm.__aexit__(None, None, None)

    async def stop_agent(self) -> int:
        """SIGTERM and reap (kill after 10 s); the exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        assert self.process.returncode is not None
        return self.process.returncode

    # -- the cash register ---------------------------------------------------------------

    async def _settled(self, payment: dict[str, Any]) -> dict[str, Any]:
        """Poll until the payment is settled and its message is the agent's own: the
        journal may reach its final state a moment before the payment task returns, and
        in that window the API answers the bare status word (a product bug, reported);
        a register polls on, so does this."""
        deadline = time.monotonic() + 20
        while payment["status"] == "pending" or payment["message"] in GENERIC:
            assert time.monotonic() < deadline, f"payment not settled: {payment['message']}"
            await asyncio.sleep(0.05)
            answer = await self.ecr.get(f"/v1/payments/{payment['id']}")
            assert answer.status_code == 200, answer.text
            payment = answer.json()
        self.shown.append(
            Shown(
                payment["idempotency_key"],
                payment["status"],
                payment["authorization_code"],
                payment["reversal_queued"],
            )
        )
        return payment

    async def pay(self, amount: int, key: str, kind: str = "purchase") -> dict[str, Any]:
        """What the register does: create the payment, poll it until it is settled."""
        body = {"amount": amount, "currency": "GBP", "idempotency_key": key, "type": kind}
        answer = await self.ecr.post("/v1/payments", json=body)
        assert answer.status_code == 202, answer.text
        return await self._settled(answer.json())

    async def void(self, payment_id: int) -> dict[str, Any]:
        answer = await self.ecr.post(f"/v1/payments/{payment_id}/void")
        assert answer.status_code == 200, answer.text
        return await self._settled(answer.json())

    def agent_log(self) -> str:
        """The agent's log (its stderr), for a failure's message."""
        return (self.folder / "agent.err").read_text(errors="replace")

    def screen(self) -> list[str]:
        """What the agent's screen showed, one ``[kind] text  (lines)`` per prompt."""
        text = (self.folder / "agent.out").read_text()
        return [line for line in text.splitlines() if line.startswith("[")]

    # -- the checks ----------------------------------------------------------------------

    async def agent_record(self, key: str) -> TransactionRecord:
        async with await self.agent_journal() as journal:
            record = await journal.by_idempotency_key(key)
        assert record is not None, f"the agent journaled nothing for {key}"
        return record

    async def agent_journal(self) -> TransactionJournal:
        key = bytes.fromhex((self.folder / "journal.key").read_text())
        return await TransactionJournal.open(self.folder / "journal.db", key)

    async def finish(self, *pans: Pan) -> None:
        """Stop the agent, reconcile agent journal, bridge journal and issuer ledger over
        everything the register was shown, and look for card data everywhere."""
        assert await self.stop_agent() == 0, (self.folder / "agent.err").read_text()
        assert self.bridge is not None, "the bridge must be running for the reconciliation"
        rows = await self.bridge.journal.query_authorizations(
            AuthorizationQuery(terminal_id=TERMINAL_ID, limit=500)
        )
        async with await self.agent_journal() as journal:
            await reconcile(self.shown, journal, rows, self.issuer.ledger)
        digits = [p.digits for p in pans]
        # the logs: the agent's screen output and log, the broker's log
        for name in ("agent.out", "agent.err"):
            assert_clean_text(name, (self.folder / name).read_text(), *digits)
        # the retained messages each identity can read
        auditor = await retained_messages(
            self.fleet.host, self.fleet.port, tls=self.fleet.tls_context(AUDITOR)
        )
        own = await retained_messages(
            self.fleet.host, self.fleet.port, tls=self.fleet.tls_context(TERMINAL_ID)
        )
        assert topics.status_topic(TERMINAL_ID) in auditor and topics.BRIDGE_STATUS in own
        for topic, payload in (auditor | own).items():
            assert_clean_text(f"retained {topic}", payload.decode(), *digits)
        assert json.loads(auditor[topics.status_topic(TERMINAL_ID)])["state"] == "offline"
        await self.stop_bridge()
        self.fleet.broker.stop()  # Mosquitto saves its persistence file on the way out
        assert_clean_text("mosquitto.log", self.fleet.log(), *digits)
        blobs = {
            "agent journal": card_files(self.folder / "journal.db"),
            "bridge journal": card_files(self.rig.config.parent / "journal.db"),
            "broker persistence": self.fleet.persisted(),
        }
        assert all(blobs.values()), [name for name, blob in blobs.items() if not blob]
        assert_no_card_data_in(blobs, *digits)


async def _wait_online(fleet: ProductionFleet, process: asyncio.subprocess.Process) -> None:
    """Until the agent's retained status says online with the reader ready: the agent
    reached the broker with its certificate and the ACL let it publish its status."""
    tls = fleet.tls_context(AUDITOR)
    deadline = time.monotonic() + 20
    while True:
        assert process.returncode is None, "the agent exited"
        found = await retained_messages(
            fleet.host, fleet.port, tls=tls, topic=topics.status_topic(TERMINAL_ID)
        )
        payload = found.get(topics.status_topic(TERMINAL_ID))
        if payload is not None:
            status = json.loads(payload)
            if status["state"] == "online" and status["reader"] in ("ready", "card_present"):
                return
        assert time.monotonic() < deadline, f"the agent never came online: {payload!r}"
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def production(
    fleet: ProductionFleet,
    rig: Rig,
    pcscd: PcscdService,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
) -> AsyncIterator[Production]:
    """The bridge running, and ``terminal-agent run`` started on its own config and
    serving the ECR API; everything stopped on exit."""
    folder = tmp_path / "agent"
    config, token, port = write_agent_config(fleet, rig, pcscd, pad, folder)
    connector = RecordingIssuer(issuer)
    with (folder / "agent.out").open("wb") as out, (folder / "agent.err").open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            str(AGENT), "run", "--config", str(config), stdout=out, stderr=err
        )
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ) as ecr:
        p = Production(fleet, rig, issuer, connector, folder, ecr, process)
        try:
            await p.start_bridge()
            await _wait_online(fleet, process)
            deadline = time.monotonic() + 20
            while True:  # the ECR API answers
                with contextlib.suppress(httpx.TransportError):
                    if (await ecr.get("/v1/payments/recent")).status_code == 200:
                        break
                assert process.returncode is None and time.monotonic() < deadline, (
                    folder / "agent.err"
                ).read_text()
                await asyncio.sleep(0.05)
            yield p
        finally:
            await p.stop_agent()
            await p.stop_bridge()


def test_approved_online_pin_purchase(
    till: Till,
) -> None:
    issuer, before = till.issuer, till.before

    async def body() -> None:
        async with till.production() as p:
            paid = await p.pay(1250, "prod-approved")
            # The register: approved, with the card's and the issuer's data, masked PAN.
            assert (paid["status"], paid["message"]) == ("approved", "APPROVED")
            assert paid["response_code"] == "00" and paid["authorization_code"]
            assert paid["masked_pan"] == MASKED and paid["aid"] == "A0000000031010"
            assert paid["cryptogram"] and len(paid["cryptogram"]) == 16
            # The screen: insert card, PIN, processing, approved, remove card.
            screen = p.screen()
            assert [line.split("]")[0][1:] for line in screen] == [
                "present_card", "enter_pin", "processing", "approved", "remove_card"
            ]  # fmt: skip
            assert screen[0] == "[present_card] Insert card  (12.50 GBP)"
            assert screen[3] == f"[approved] APPROVED  ({MASKED}, Visa Credit)"
            # The bridge: approved with the issuer's codes; the issuer: one authorisation.
            assert p.bridge is not None
            (row,) = await p.bridge.journal.query_authorizations(
                AuthorizationQuery(terminal_id=TERMINAL_ID)
            )
            assert (row.idempotency_key, row.state, row.amount) == (
                "prod-approved",
                "approved",
                1250,
            )
            assert row.authorization_code == paid["authorization_code"]
            assert row.masked_pan == MASKED
            record = await p.agent_record("prod-approved")
            assert record.state == "completed" and not record.has_body
            assert row.message_id in record.message_ids and record.tc == paid["cryptogram"]
            (entry,) = issuer_decisions(issuer.ledger, record, row)
            assert entry.approved and entry.balance_delta == -1250
            await p.finish(PAN)

    asyncio.run(body())
    assert issuer.snapshot(PAN).balance == before - 1250


def test_decline_51_is_shown_to_the_register(
    till: Till,
) -> None:
    issuer, before = till.issuer, till.before

    async def body() -> None:
        async with till.production() as p:
            paid = await p.pay(99_951, "prod-51")
            assert (paid["status"], paid["response_code"]) == ("declined", "51")
            assert paid["message"] == "DECLINED: Insufficient funds"
            assert paid["authorization_code"] is None and paid["cryptogram"]  # the AAC
            screen = p.screen()
            assert any(
                line.startswith("[declined] DECLINED: Insufficient funds") for line in screen
            )
            assert not any(line.startswith("[approved]") for line in screen)
            assert p.bridge is not None
            (row,) = await p.bridge.journal.query_authorizations(
                AuthorizationQuery(terminal_id=TERMINAL_ID)
            )
            assert (row.state, row.response_code) == ("declined", "51")
            record = await p.agent_record("prod-51")
            assert (record.state, record.response_code) == ("declined", "51")
            (entry,) = issuer_decisions(issuer.ledger, record, row)
            assert not entry.approved and entry.balance_delta == 0
            await p.finish(PAN)

    asyncio.run(body())
    assert issuer.snapshot(PAN).balance == before


def test_refund_credits_the_account(
    till: Till,
) -> None:
    issuer, before = till.issuer, till.before

    async def body() -> None:
        async with till.production() as p:
            paid = await p.pay(700, "prod-refund", kind="refund")
            assert (paid["status"], paid["type"]) == ("approved", "refund"), paid["message"]
            assert paid["authorization_code"] and paid["masked_pan"] == MASKED
            assert any(line.startswith("[approved] APPROVED") for line in p.screen())
            assert p.bridge is not None
            (row,) = await p.bridge.journal.query_authorizations(
                AuthorizationQuery(terminal_id=TERMINAL_ID)
            )
            assert (row.transaction_type, row.state, row.amount) == ("refund", "approved", 700)
            record = await p.agent_record("prod-refund")
            assert record.state == "completed" and record.transaction_type == "refund"
            (entry,) = issuer_decisions(issuer.ledger, record, row)
            assert entry.kind == "refund" and entry.balance_delta == 700
            await p.finish(PAN)

    asyncio.run(body())
    assert issuer.snapshot(PAN).balance == before + 700


def test_void_of_the_last_purchase(
    till: Till,
) -> None:
    issuer, before = till.issuer, till.before

    async def body() -> None:
        async with till.production() as p:
            sale = await p.pay(5600, "prod-void-me")
            assert sale["status"] == "approved"
            assert issuer.snapshot(PAN).balance == before - 5600
            shown = len(p.screen())
            void = await p.void(sale["id"])
            assert (void["type"], void["status"], void["message"]) == ("void", "approved", "VOIDED")
            assert void["idempotency_key"] == "void:prod-void-me" and void["amount"] == 5600
            assert void["masked_pan"] == MASKED
            assert p.screen()[shown:] == [f"[approved] VOIDED  ({MASKED})"]  # no card asked for
            again = await p.void(sale["id"])  # the same void, not a second one
            assert again["id"] == void["id"] and again["status"] == "approved"
            assert p.bridge is not None
            (row,) = await p.bridge.journal.query_authorizations(
                AuthorizationQuery(terminal_id=TERMINAL_ID)
            )
            assert row.idempotency_key == "prod-void-me" and row.reversed_at is not None
            assert [e.kind for e in issuer.ledger.entries()] == ["authorisation", "reversal"]
            assert len(p.connector.reversals) == 1
            assert (await p.agent_record("void:prod-void-me")).state == "completed"
            assert (await p.agent_record("prod-void-me")).state == "completed"
            await p.finish(PAN)

    asyncio.run(body())
    assert issuer.snapshot(PAN).balance == before


def test_host_timeout_is_not_completed_and_the_reversal_reaches_the_issuer(
    caplog: pytest.LogCaptureFixture,
    till: Till,
) -> None:
    """The bridge is stopped (its persistent session stays in the broker): the request
    waits in the broker past its expiry, the register is told "not completed" with the
    reversal queued, and the agent keeps sending the reversal. Once the bridge is back,
    the expired request is refused without reaching the issuer and the reversal reaches
    the issuer exactly once; nothing was taken."""
    issuer, before = till.issuer, till.before

    async def body() -> None:
        async with till.production() as p:
            await p.stop_bridge()
            started = time.monotonic()
            paid = await p.pay(3000, "prod-timeout")
            assert time.monotonic() - started >= HOST_TIMEOUT_S
            assert (paid["status"], paid["reversal_queued"]) == ("not_completed", True)
            assert paid["message"].startswith("Not completed: no answer from the card issuer")
            screen = p.screen()
            assert "[not_completed] " + paid["message"] in screen
            assert not any(line.startswith("[approved]") for line in screen)
            await asyncio.sleep(HOST_TIMEOUT_S)  # the agent retries into the void
            assert p.connector.reversals == []
            bridge = await p.start_bridge()
            deadline = time.monotonic() + 45
            while (await p.agent_record("prod-timeout")).state != "reversed":
                assert time.monotonic() < deadline, (
                    "the reversal was never confirmed; agent log:\n" + p.agent_log()[-4000:]
                )
                await asyncio.sleep(0.1)
            # The issuer never saw the authorisation, so it knows no original: nothing moved.
            assert p.connector.reversals == [("rev:prod-timeout", "unknown_original")]
            reversal = await bridge.journal.get_reversal(TERMINAL_ID, "rev:prod-timeout")
            assert reversal is not None and reversal.outcome == "unknown_original"
            assert reversal.reason == "host_timeout" and reversal.amount == 3000
            rows = await bridge.journal.query_authorizations(
                AuthorizationQuery(terminal_id=TERMINAL_ID)
            )
            assert rows == []  # the late request was refused as expired, never authorised
            # What waited in the broker past its expiry (the request, and reversal retries
            # sent while the bridge was away) was refused unopened to the issuer.
            refused = {r.getMessage() for r in caplog.records if "refused a" in r.getMessage()}
            assert refused == {f"refused a message on {topics.request_topic(TERMINAL_ID)}: expired"}
            assert issuer.ledger.entries() == ()
            await p.finish(PAN)

    asyncio.run(body())
    assert issuer.snapshot(PAN).balance == before
