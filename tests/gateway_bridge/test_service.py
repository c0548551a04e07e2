"""The bridge end to end: a real Mosquitto, key store, journal and issuer simulator, and a
test terminal that reads an emulated card and talks MQTT like the agent will."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from gateway_bridge.acquirer_sim import AcquirerSimSettings, AcquirerSimulator
from gateway_bridge.connectors.issuer_sim import IssuerSimulator
from gateway_bridge.connectors.issuer_sim.accounts import repo_catalogue_dir
from gateway_bridge.journal import AuthorizationQuery
from gateway_bridge.journal.pgcluster import PrivateCluster
from gateway_bridge.service import Bridge
from hardware.cards import load_profile
from hardware.mosquitto import MosquittoService
from hardware.services import free_tcp_port
from paycore.pan import Pan
from paycore.wire import AuthorizationResponse, ErrorResponse, ReversalResponse
from tests.gateway_bridge.conftest import SoftHsm
from tests.gateway_bridge.keystore.conftest import wipe_token
from tests.gateway_bridge.rig import TERMINAL_ID, Rig, make_rig, running_bridge, terminal_link

T = TypeVar("T")


def run(body: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await body()

    return asyncio.run(main())


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def issuer() -> IssuerSimulator:
    catalogue = repo_catalogue_dir()
    assert catalogue is not None
    return IssuerSimulator.from_paths([catalogue])


def refused(bridge: Bridge, reason: str) -> float:
    value = bridge.metrics.registry.get_sample_value("pos_bridge_refused_total", {"reason": reason})
    return value or 0.0


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@pytest.fixture
def rig(tmp_path: Path, mosquitto_broker: MosquittoService) -> Rig:
    return make_rig(tmp_path, mosquitto_broker)


def test_approved_purchase_end_to_end(rig: Rig) -> None:
    sim = issuer()
    pan = Pan("4761739001010010")
    before = sim.snapshot(pan).balance

    async def body() -> None:
        async with running_bridge(rig, sim) as bridge, terminal_link(rig) as link:
            request = rig.terminal.authorization("visa_credit", 1234, "GBP", pin="1234")
            envelope = rig.terminal.seal(request, now_ms=now_ms())
            answer = await link.exchange(envelope.to_json())
            reply_env, reply = rig.terminal.open(answer, now_ms=now_ms())
            assert reply_env.correlation_id == envelope.message_id
            assert isinstance(reply, AuthorizationResponse)
            assert reply.approved and reply.response_code == "00"
            assert reply.authorization_code and reply.issuer_authentication_data
            records = await bridge.journal.query_authorizations(AuthorizationQuery())
            assert [(r.state, r.masked_pan, r.amount) for r in records] == [
                ("approved", "476173******0010", 1234)
            ]

    run(body)
    assert sim.snapshot(pan).balance == before - 1234


def test_wrong_pin_is_declined_55(rig: Rig) -> None:
    async def body() -> None:
        async with running_bridge(rig, issuer()), terminal_link(rig) as link:
            request = rig.terminal.authorization("visa_credit", 500, "GBP", pin="9999")
            answer = await link.exchange(rig.terminal.seal(request, now_ms=now_ms()).to_json())
            _, reply = rig.terminal.open(answer, now_ms=now_ms())
            assert isinstance(reply, AuthorizationResponse)
            assert (reply.approved, reply.response_code) == (False, "55")

    run(body)


def test_repeated_request_gets_the_stored_response_and_one_authorization(rig: Rig) -> None:
    sim = issuer()
    pan = Pan("4761739001010010")
    before = sim.snapshot(pan).balance

    async def body() -> None:
        async with running_bridge(rig, sim) as bridge, terminal_link(rig) as link:
            request = rig.terminal.authorization("visa_credit", 700, "GBP")
            first = await link.exchange(rig.terminal.seal(request, now_ms=now_ms()).to_json())
            # The terminal lost the answer and sends the same request in a new envelope.
            again = await link.exchange(rig.terminal.seal(request, now_ms=now_ms()).to_json())
            assert again == first
            assert bridge.metrics.duplicates._value.get() == 1

            # The same key with another request is refused, not authorised.
            other = request.model_copy(update={"amount": 701})
            conflict = await link.exchange(rig.terminal.seal(other, now_ms=now_ms()).to_json())
            _, reply = rig.terminal.open(conflict, now_ms=now_ms())
            assert isinstance(reply, ErrorResponse) and reply.code == "duplicate_conflict"

    run(body)
    assert sim.snapshot(pan).balance == before - 700  # charged once


def test_requests_in_flight_together_keep_their_counter_order(rig: Rig) -> None:
    """A burst from one terminal (say a sale and a reversal) is not mistaken for replays."""

    async def body() -> None:
        async with running_bridge(rig, issuer()) as bridge, terminal_link(rig) as link:
            payloads = [
                rig.terminal.seal(
                    rig.terminal.authorization("visa_credit", 100 + i, "GBP"), now_ms=now_ms()
                ).to_json()
                for i in range(8)
            ]
            for payload in payloads:
                await link.publish(payload)
            answers = [await link.next() for _ in payloads]
            replies = [rig.terminal.open(a, now_ms=now_ms())[1] for a in answers]
            assert all(isinstance(r, AuthorizationResponse) and r.approved for r in replies)
            assert refused(bridge, "replay") == 0

    run(body)


def test_replayed_envelope_is_refused(rig: Rig) -> None:
    async def body() -> None:
        async with running_bridge(rig, issuer()) as bridge, terminal_link(rig) as link:
            request = rig.terminal.authorization("visa_debit", 300, "GBP", pin=None)
            payload = rig.terminal.seal(request, now_ms=now_ms()).to_json()
            await link.exchange(payload)
            await link.publish(payload)  # the very same bytes again (same KSN)
            await eventually(lambda: refused(bridge, "replay") == 1)
            assert link.received.empty()

    run(body)


@pytest.mark.parametrize("where", ["ciphertext", "header"])
def test_tampered_envelope_is_refused_and_nothing_happens(rig: Rig, where: str) -> None:
    sim = issuer()

    async def body() -> None:
        async with running_bridge(rig, sim) as bridge, terminal_link(rig) as link:
            request = rig.terminal.authorization("visa_credit", 900, "GBP")
            envelope = rig.terminal.seal(request, now_ms=now_ms())
            if where == "ciphertext":
                raw = bytearray(base64.b64decode(envelope.ciphertext))
                raw[10] ^= 0x01
                envelope = envelope.model_copy(
                    update={"ciphertext": base64.b64encode(bytes(raw)).decode()}
                )
            else:
                envelope = envelope.model_copy(update={"expires_at": envelope.expires_at + 1})
            await link.publish(envelope.to_json())
            await eventually(lambda: refused(bridge, "tampered") == 1)
            assert link.received.empty()
            assert await bridge.journal.query_authorizations(AuthorizationQuery()) == []

    run(body)
    assert sim.ledger.entries() == ()


def test_unknown_terminal_and_malformed_payloads_are_refused(rig: Rig) -> None:
    async def body() -> None:
        async with running_bridge(rig, issuer()) as bridge, terminal_link(rig, "T9999") as stranger:
            request = rig.terminal.authorization("visa_credit", 100, "GBP")
            envelope = rig.terminal.seal(request, now_ms=now_ms())
            forged = envelope.model_copy(update={"terminal_id": "T9999"})
            await stranger.client.publish("pos/v1/t/T9999/req", forged.to_json(), qos=1)
            await eventually(lambda: refused(bridge, "unknown_terminal") == 1)
            await stranger.client.publish("pos/v1/t/T9999/req", b"{not json", qos=1)
            await eventually(lambda: refused(bridge, "malformed") == 1)
            # Someone else's envelope published on T0001's topic under another name.
            await stranger.client.publish(f"pos/v1/t/{TERMINAL_ID}/req", forged.to_json(), qos=1)
            await eventually(lambda: refused(bridge, "topic_mismatch") == 1)
            assert stranger.received.empty()

    run(body)


def test_reversal_restores_the_balance_and_is_idempotent(rig: Rig) -> None:
    sim = issuer()
    pan = Pan("4761739001010010")
    before = sim.snapshot(pan).balance

    async def body() -> None:
        async with running_bridge(rig, sim), terminal_link(rig) as link:
            request = rig.terminal.authorization("visa_credit", 2500, "GBP")
            envelope = rig.terminal.seal(request, now_ms=now_ms())
            await link.exchange(envelope.to_json())
            assert sim.snapshot(pan).balance == before - 2500

            reversal = rig.terminal.reversal(envelope, request)
            first = await link.exchange(rig.terminal.seal(reversal, now_ms=now_ms()).to_json())
            _, reply = rig.terminal.open(first, now_ms=now_ms())
            assert isinstance(reply, ReversalResponse) and reply.outcome == "reversed"
            again = await link.exchange(rig.terminal.seal(reversal, now_ms=now_ms()).to_json())
            assert again == first

            unknown = reversal.model_copy(
                update={"original_message_id": uuid.uuid4().hex, "idempotency_key": "rev:x"}
            )
            answer = await link.exchange(rig.terminal.seal(unknown, now_ms=now_ms()).to_json())
            _, reply = rig.terminal.open(answer, now_ms=now_ms())
            assert isinstance(reply, ReversalResponse) and reply.outcome == "unknown_original"

    run(body)
    assert sim.snapshot(pan).balance == before


def test_a_reversal_naming_a_lost_first_envelope_finds_the_resend_by_its_key(rig: Rig) -> None:
    """The terminal's first envelope never reached a bridge, its resend was approved, and
    its answer was lost: the terminal knows only the first id it sent. The idempotency
    key it adds finds the approval, and the issuer gives the money back."""
    sim = issuer()
    pan = Pan("4761739001010010")
    before = sim.snapshot(pan).balance

    async def body() -> None:
        async with running_bridge(rig, sim), terminal_link(rig) as link:
            request = rig.terminal.authorization("visa_credit", 1800, "GBP")
            lost = rig.terminal.seal(request, now_ms=now_ms())  # never published
            resent = rig.terminal.seal(request, now_ms=now_ms())
            await link.exchange(resent.to_json())
            assert sim.snapshot(pan).balance == before - 1800

            # Without the key the first id is unknown: nothing would be given back.
            blind = rig.terminal.reversal(lost, request).model_copy(
                update={"idempotency_key": "rev:blind"}
            )
            answer = await link.exchange(rig.terminal.seal(blind, now_ms=now_ms()).to_json())
            _, reply = rig.terminal.open(answer, now_ms=now_ms())
            assert isinstance(reply, ReversalResponse) and reply.outcome == "unknown_original"
            assert sim.snapshot(pan).balance == before - 1800

            keyed = rig.terminal.reversal(lost, request).model_copy(
                update={"original_idempotency_key": request.idempotency_key}
            )
            answer = await link.exchange(rig.terminal.seal(keyed, now_ms=now_ms()).to_json())
            _, reply = rig.terminal.open(answer, now_ms=now_ms())
            assert isinstance(reply, ReversalResponse) and reply.outcome == "reversed"
            assert reply.original_message_id == lost.message_id  # echoes what it was sent
            journaled = await bridge_reversal_original(keyed.idempotency_key)
            assert journaled == resent.message_id

    async def bridge_reversal_original(key: str) -> str:
        from gateway_bridge.app import open_journal

        journal = await open_journal(rig.settings)
        try:
            record = await journal.get_reversal(TERMINAL_ID, key)
            assert record is not None
            return record.original_message_id
        finally:
            await journal.close()

    run(body)
    assert sim.snapshot(pan).balance == before


def test_host_timeout_answers_91_and_the_bridge_reverses_by_itself(rig: Rig) -> None:
    sim = issuer()
    pan = Pan("4761739001010010")
    before = sim.snapshot(pan).balance

    async def body() -> None:
        async with running_bridge(rig, sim) as bridge, terminal_link(rig) as link:
            # 999.68: the simulated issuer approves, then its answer is lost.
            request = rig.terminal.authorization("visa_credit", 99_968, "GBP")
            answer = await link.exchange(rig.terminal.seal(request, now_ms=now_ms()).to_json())
            _, reply = rig.terminal.open(answer, now_ms=now_ms())
            assert isinstance(reply, AuthorizationResponse)
            assert (reply.approved, reply.response_code) == (False, "91")
            assert sim.snapshot(pan).balance == before - 99_968  # the host did approve
            assert await bridge.retry_reversals() == 1
            (record,) = await bridge.journal.query_authorizations(AuthorizationQuery())
            assert record.state == "timed_out" and record.reversed_at is not None

    run(body)
    assert sim.snapshot(pan).balance == before


def test_broker_restart_mid_flight(rig: Rig) -> None:
    async def body() -> None:
        async with running_bridge(rig, issuer()) as bridge:
            rig.broker.restart()
            await asyncio.sleep(0.05)
            await asyncio.wait_for(bridge.connected.wait(), 10)
            async with terminal_link(rig) as link:
                pin = load_profile("mastercard_credit").applications[0].pin.get_secret_value()
                request = rig.terminal.authorization("mastercard_credit", 4321, "GBP", pin=pin)
                answer = await link.exchange(rig.terminal.seal(request, now_ms=now_ms()).to_json())
                _, reply = rig.terminal.open(answer, now_ms=now_ms())
                assert isinstance(reply, AuthorizationResponse) and reply.approved

    run(body)


def test_the_same_flow_on_a_postgresql_journal(
    tmp_path: Path, mosquitto_broker: MosquittoService, pg_cluster: PrivateCluster
) -> None:
    database = f"bridge_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn: Any = await asyncpg.connect(pg_cluster.dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()

    run(create)
    dsn = pg_cluster.dsn.rsplit("/", 1)[0] + f"/{database}"
    pg_rig = make_rig(
        tmp_path, mosquitto_broker, journal_toml=f'[journal]\nkind = "postgres"\ndsn = "{dsn}"\n'
    )

    async def body() -> None:
        async with running_bridge(pg_rig, issuer()) as bridge, terminal_link(pg_rig) as link:
            request = pg_rig.terminal.authorization("visa_credit", 1500, "GBP")
            first = await link.exchange(pg_rig.terminal.seal(request, now_ms=now_ms()).to_json())
            again = await link.exchange(pg_rig.terminal.seal(request, now_ms=now_ms()).to_json())
            assert first == again
            (record,) = await bridge.journal.query_authorizations(AuthorizationQuery())
            assert record.state == "approved"

    run(body)


def test_the_same_flow_with_keys_in_a_pkcs11_token(
    tmp_path: Path, mosquitto_broker: MosquittoService, softhsm: SoftHsm
) -> None:
    hsm_rig = make_rig(tmp_path, mosquitto_broker, softhsm=softhsm)
    try:

        async def body() -> None:
            async with running_bridge(hsm_rig, issuer()), terminal_link(hsm_rig) as link:
                good = hsm_rig.terminal.authorization("visa_credit", 800, "GBP", pin="1234")
                answer = await link.exchange(hsm_rig.terminal.seal(good, now_ms=now_ms()).to_json())
                _, reply = hsm_rig.terminal.open(answer, now_ms=now_ms())
                assert isinstance(reply, AuthorizationResponse) and reply.approved
                bad = hsm_rig.terminal.authorization("visa_credit", 800, "GBP", pin="4321")
                answer = await link.exchange(hsm_rig.terminal.seal(bad, now_ms=now_ms()).to_json())
                _, reply = hsm_rig.terminal.open(answer, now_ms=now_ms())
                assert isinstance(reply, AuthorizationResponse) and reply.response_code == "55"

        run(body)
    finally:
        wipe_token(softhsm)


def test_the_same_flow_through_iso8583_to_the_acquirer_simulator(
    tmp_path: Path, mosquitto_broker: MosquittoService
) -> None:
    """Bridge -> ISO 8583 (binary dialect, 2-byte header) -> acquirer simulator -> issuer:
    the PIN block crosses the zone translated under the zone PIN key (format 4)."""
    zone_key = secrets.token_bytes(16)
    sim = issuer()
    port = free_tcp_port()
    acquirer = AcquirerSimulator(
        AcquirerSimSettings(port=port, dialect="binary", header="2byte", pin_zone_format=4),
        sim,
        zone_key,
    )
    iso_rig = make_rig(
        tmp_path,
        mosquitto_broker,
        zone_pin_key=zone_key,
        connector_toml=(
            f'[connector]\nkind = "iso8583"\nport = {port}\n'
            'dialect = "binary"\nheader = "2byte"\npin_zone_key_id = "acquirer-zpk"\n'
            "pin_zone_format = 4\nrequest_timeout = 5.0\n"
            # The acquirer knows the merchant by its 15-character DE42 id.
            'merchant_ids = { "M000000000000001" = "000000000000001" }\n'
        ),
    )

    async def body() -> None:
        await acquirer.start()
        try:
            async with running_bridge(iso_rig), terminal_link(iso_rig) as link:
                terminal = iso_rig.terminal
                good = terminal.authorization("visa_credit", 2222, "GBP", pin="1234")
                envelope = terminal.seal(good, now_ms=now_ms())
                answer = await link.exchange(envelope.to_json())
                _, reply = terminal.open(answer, now_ms=now_ms())
                assert isinstance(reply, AuthorizationResponse) and reply.approved
                assert reply.issuer_authentication_data  # the ARPC came back through DE55
                bad = terminal.authorization("visa_credit", 2222, "GBP", pin="0000")
                answer = await link.exchange(terminal.seal(bad, now_ms=now_ms()).to_json())
                _, reply = terminal.open(answer, now_ms=now_ms())
                assert isinstance(reply, AuthorizationResponse) and reply.response_code == "55"
                reversal = terminal.reversal(envelope, good)
                answer = await link.exchange(terminal.seal(reversal, now_ms=now_ms()).to_json())
                _, reply = terminal.open(answer, now_ms=now_ms())
                assert isinstance(reply, ReversalResponse) and reply.outcome == "reversed"
        finally:
            await acquirer.close()

    pan = Pan("4761739001010010")
    before = sim.snapshot(pan).balance
    run(body)
    assert sim.snapshot(pan).balance == before
    assert [m for m in acquirer.received if m.get("t") == "0420"]
