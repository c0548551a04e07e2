"""The MQTT link (terminal_agent.link) against a real Mosquitto and a test responder.

The responder (tests/terminal_agent/link/responder.py) plays the bridge with the data
BDK; the link seals with the terminal's initial key derived from it, counters from a
real journal. One test runs the real bridge end to end (test_real_bridge.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiomqtt
import pytest
from pydantic import SecretStr, ValidationError

from hardware.mosquitto import MosquittoService
from hardware.services import free_tcp_port
from paycore.pan import Pan
from paycore.wire import (
    AuthorizationRequest,
    AuthorizationResponse,
    BridgeStatus,
    EncryptedPinBlock,
    Envelope,
    ReversalResponse,
    TerminalStatus,
    decode_json,
    topics,
)
from paycore.wire.messages import Body
from terminal_agent.journal import TransactionJournal
from terminal_agent.link import (
    BadResponse,
    HostTimeout,
    LinkDown,
    LinkSettings,
    LinkTransientError,
    MqttLink,
    ResponseRefused,
)
from tests.terminal_agent.link.responder import (
    IKID,
    INITIAL_KEY,
    Responder,
    answer,
    now_ms,
    running,
    tampered,
)
from tests.vectors import load

T = TypeVar("T")
TID = "T0001"
PAN = load("luhn_test_pans")["test_pans"][0]["pan"]
REPO = Path(__file__).resolve().parents[3]


def run(body: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(body(), 25)

    return asyncio.run(main())


def sale(key: str = "T0001:sale-1") -> AuthorizationRequest:
    return AuthorizationRequest(
        transaction_type="purchase",
        amount=1234,
        currency="GBP",
        idempotency_key=key,
        stan=1,
        terminal_time=dt.datetime.now(dt.UTC),
        pan=Pan(PAN),
        expiry="2812",
        track2_equivalent=SecretStr(f"{PAN}D28122011234567890"),
        emv_data="9F2608A1B2C3D4E5F60718",
        cvm="online_pin",
        pin_block=EncryptedPinBlock(
            format=4, ksn="9A1100020000000100000001", block=SecretStr("0" * 32)
        ),
    )


def settings(host: str, port: int, **extra: Any) -> LinkSettings:
    return LinkSettings(
        terminal_id=TID,
        host=host,
        port=port,
        request_timeout_s=3.0,
        reconnect_initial_s=0.05,
        reconnect_max_s=0.3,
        connect_timeout_s=2.0,
        **extra,
    )


@contextlib.asynccontextmanager
async def link_and_journal(
    host: str, port: int, tmp_path: Path, *, connect: bool = True, **extra: Any
) -> AsyncIterator[tuple[MqttLink, TransactionJournal]]:
    async with await TransactionJournal.open(tmp_path / "journal.db", bytes(32)) as journal:
        link = MqttLink(
            settings(host, port, **extra),
            initial_key=INITIAL_KEY,
            initial_key_id=IKID,
            counters=journal,
        )
        async with link:
            if connect:
                await link.wait_connected(5)
            yield link, journal


def test_round_trip(mosquitto_broker: MosquittoService, tmp_path: Path) -> None:
    broker = mosquitto_broker

    async def body() -> None:
        async with (
            running(Responder(broker.host, broker.port)) as responder,
            link_and_journal(broker.host, broker.port, tmp_path) as (link, journal),
        ):
            sealed: list[str] = []

            async def on_sealed(message_id: str) -> None:
                sealed.append(message_id)

            reply = await link.exchange(sale(), timeout=2.5, on_sealed=on_sealed)
            assert isinstance(reply.body, AuthorizationResponse) and reply.body.approved
            request, opened = responder.received[0]
            assert isinstance(opened, AuthorizationRequest)
            assert opened == sale().model_copy(update={"terminal_time": opened.terminal_time})
            assert sealed == list(reply.sent_message_ids) == [request.message_id]
            assert reply.envelope.correlation_id == request.message_id
            assert request.expires_at - request.sent_at == 2500  # expiry = the timeout
            assert int(request.ksn[16:], 16) == 1
            assert await journal.next_counter(IKID.hex().upper()) == 2  # reserved first
            second = await link.request(sale("T0001:sale-2"))
            assert isinstance(second, AuthorizationResponse)
            assert int(responder.received[1][0].ksn[16:], 16) == 2
            assert link.stats.accepted == 2 and link.stats.published == 2
            conn = link._conn
            assert conn is not None
            sock = conn.client._client.socket()
            assert isinstance(sock, socket.socket)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

    run(body)


def test_response_to_an_earlier_message_id_is_accepted(
    mosquitto_broker: MosquittoService, tmp_path: Path
) -> None:
    broker = mosquitto_broker
    first: list[Envelope] = []

    def replay_first(request: Envelope, body: Body) -> list[bytes]:
        # The stored answer of the first envelope, sealed under the first's KSN.
        if not first:
            first.append(request)
            return []
        return [answer(first[0])]

    async def body() -> None:
        async with (
            running(Responder(broker.host, broker.port, replay_first)),
            link_and_journal(broker.host, broker.port, tmp_path) as (link, _),
        ):
            with pytest.raises(HostTimeout) as caught:
                await link.request(sale(), timeout=0.5)
            earlier = caught.value.message_ids
            assert earlier == (first[0].message_id,)
            # Without the earlier ids the replayed answer is not ours.
            with pytest.raises(HostTimeout):
                await link.request(sale(), timeout=0.5)
            assert link.stats.late >= 1
            reply = await link.exchange(sale(), timeout=2, earlier_message_ids=earlier)
            assert isinstance(reply.body, AuthorizationResponse)
            assert reply.envelope.correlation_id == earlier[0]
            assert reply.envelope.ksn == first[0].ksn != reply.sent_message_ids[0]

    run(body)


def test_an_old_stored_answer_to_an_earlier_envelope_is_the_outcome(
    mosquitto_broker: MosquittoService, tmp_path: Path
) -> None:
    """A retry long after the first envelope (the agent restarted): the bridge's stored
    answer carries the first envelope's expiry, long past, and is still the outcome. The
    same old answer to a request that is not a retry is refused as expired."""
    broker = mosquitto_broker
    first: list[Envelope] = []

    def stale(request: Envelope, body: Body) -> list[bytes]:
        if not first:
            first.append(request)
            return []
        return [answer(first[0], sent_at=now_ms() - 60_000, ttl_ms=15_000)]

    async def body() -> None:
        async with (
            running(Responder(broker.host, broker.port, stale)),
            link_and_journal(broker.host, broker.port, tmp_path) as (link, _),
        ):
            with pytest.raises(HostTimeout) as caught:
                await link.request(sale(), timeout=0.5)
            earlier = caught.value.message_ids
            reply = await link.exchange(sale(), timeout=2, earlier_message_ids=earlier)
            assert isinstance(reply.body, AuthorizationResponse) and reply.body.approved
            assert reply.envelope.expires_at < now_ms() and link.stats.expired == 0

    run(body)


def test_late_duplicate_foreign_and_unauthentic_responses_are_ignored(
    mosquitto_broker: MosquittoService, tmp_path: Path
) -> None:
    broker = mosquitto_broker
    held: list[Envelope] = []

    def noisy(request: Envelope, body: Body) -> list[bytes]:
        if body.idempotency_key == "T0001:silent":  # type: ignore[union-attr]
            held.append(request)
            return []
        other = request.model_copy(update={"message_id": "f" * 32})
        return [
            answer(other),  # correlated to nothing we sent
            tampered(answer(request)),  # not authentic: ignored, keep waiting
            answer(request, AuthorizationResponse(response_code="05", approved=False)),
            answer(request),  # a duplicate: the first authentic answer won
        ]

    async def body() -> None:
        async with (
            running(Responder(broker.host, broker.port, noisy)) as responder,
            link_and_journal(broker.host, broker.port, tmp_path) as (link, _),
        ):
            with pytest.raises(HostTimeout):
                await link.request(sale("T0001:silent"), timeout=0.4)
            await responder.publish(TID, answer(held[0]))  # late
            reply = await link.request(sale())
            assert isinstance(reply, AuthorizationResponse) and reply.response_code == "05"
            async with asyncio.timeout(3):
                while link.stats.duplicate + link.stats.late < 2:
                    await asyncio.sleep(0.02)
            assert link.stats.foreign == 1 and link.stats.unauthentic == 1
            assert link.stats.accepted == 1
            again = await link.request(sale("T0001:next"))  # nothing left confused
            assert isinstance(again, AuthorizationResponse) and again.response_code == "05"

    run(body)


def test_expired_and_wrong_kind_responses_are_refused(
    mosquitto_broker: MosquittoService, tmp_path: Path
) -> None:
    broker = mosquitto_broker

    def bad(request: Envelope, body: Body) -> list[bytes]:
        if body.idempotency_key == "T0001:expired":  # type: ignore[union-attr]
            return [answer(request, sent_at=now_ms() - 20_000, ttl_ms=10_000)]
        wrong = ReversalResponse(original_message_id=request.message_id, outcome="reversed")
        return [answer(request, wrong)]

    async def body() -> None:
        async with (
            running(Responder(broker.host, broker.port, bad)),
            link_and_journal(broker.host, broker.port, tmp_path) as (link, _),
        ):
            with pytest.raises(ResponseRefused):
                await link.request(sale("T0001:expired"), timeout=2)
            with pytest.raises(BadResponse):
                await link.request(sale("T0001:wrong"), timeout=2)
            assert link.stats.expired == 1 and link.stats.wrong_kind == 1

    run(body)


def test_no_answer_is_a_host_timeout(mosquitto_broker: MosquittoService, tmp_path: Path) -> None:
    broker = mosquitto_broker

    async def body() -> None:
        async with (
            running(Responder(broker.host, broker.port, lambda r, b: [])) as responder,
            link_and_journal(broker.host, broker.port, tmp_path) as (link, _),
        ):
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(HostTimeout) as caught:
                await link.request(sale(), timeout=0.6)
            assert 0.55 <= loop.time() - started < 2
            assert isinstance(caught.value, LinkTransientError)
            assert caught.value.message_ids == (responder.received[0][0].message_id,)

    run(body)


def test_no_broker_is_link_down_and_nothing_is_sealed(tmp_path: Path) -> None:
    port = free_tcp_port("127.0.0.1")

    async def body() -> None:
        async with link_and_journal("127.0.0.1", port, tmp_path, connect=False) as (link, journal):
            sealed: list[str] = []

            async def on_sealed(message_id: str) -> None:
                sealed.append(message_id)

            with pytest.raises(LinkDown):
                await link.request(sale(), timeout=0.4, on_sealed=on_sealed)
            assert sealed == [] and not link.connected
            assert await journal.next_counter(IKID.hex().upper()) == 1  # nothing reserved

    run(body)


def test_a_request_waits_for_the_connection(tmp_path: Path) -> None:
    port = free_tcp_port("127.0.0.1")
    broker = MosquittoService(port=port)

    async def body() -> None:
        async with link_and_journal("127.0.0.1", port, tmp_path, connect=False) as (link, _):
            pending = asyncio.create_task(link.request(sale(), timeout=8))
            await asyncio.sleep(0.3)
            assert not pending.done()
            await asyncio.to_thread(broker.start)
            async with running(Responder(broker.host, broker.port)):
                reply = await pending
            assert isinstance(reply, AuthorizationResponse) and reply.approved

    try:
        run(body)
    finally:
        broker.stop()


def test_broker_restart_mid_request_resends_in_a_new_envelope(
    mosquitto_broker: MosquittoService, tmp_path: Path
) -> None:
    broker = mosquitto_broker

    def second_only(request: Envelope, body: Body) -> list[bytes]:
        return [] if responder.received[0][0] is request else [answer(request)]

    responder = Responder(broker.host, broker.port, second_only)

    async def body() -> None:
        async with (
            running(responder),
            link_and_journal(broker.host, broker.port, tmp_path) as (link, _),
        ):
            pending = asyncio.create_task(link.exchange(sale(), timeout=10))
            first, _ = await responder.next_request(1)
            await asyncio.to_thread(broker.restart)
            reply = await pending
            second, _ = responder.received[1]
            assert reply.sent_message_ids == (first.message_id, second.message_id)
            assert reply.envelope.correlation_id == second.message_id
            assert int(second.ksn[16:], 16) > int(first.ksn[16:], 16)  # a new counter
            assert link.stats.connects == 2 and link.stats.resent == 1

    run(body)


async def _statuses(host: str, port: int, topic: str) -> AsyncIterator[bytes]:
    async with aiomqtt.Client(host, port, identifier="observer") as client:
        await client.subscribe(topic, qos=1)
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            yield message.payload


async def _retained(host: str, port: int, topic: str) -> TerminalStatus:
    async with asyncio.timeout(5):
        async for payload in _statuses(host, port, topic):
            return decode_json(payload, TerminalStatus)
    raise AssertionError("no retained status")


def test_status_online_retained_and_offline_by_will_or_clean_close(
    mosquitto_broker: MosquittoService, tmp_path: Path
) -> None:
    broker = mosquitto_broker
    topic = topics.status_topic(TID)
    script = (
        "import asyncio\n"
        "from terminal_agent.link import LinkSettings, MqttLink\n"
        "class Counters:\n"
        "    async def reserve_counter(self, key_id: str) -> int:\n"
        "        return 1\n"
        "async def main() -> None:\n"
        f"    s = LinkSettings(terminal_id={TID!r}, host={broker.host!r}, port={broker.port})\n"
        "    async with MqttLink(s, initial_key=bytes(16), initial_key_id=bytes(8),\n"
        "                        counters=Counters()) as link:\n"
        "        await link.wait_connected(10)\n"
        "        print('up', flush=True)\n"
        "        await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )

    async def body() -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, cwd=REPO, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert process.stdout is not None
            assert await asyncio.wait_for(process.stdout.readline(), 15) == b"up\n"
            status = await _retained(broker.host, broker.port, topic)
            assert (status.terminal_id, status.state) == (TID, "online")
            os.kill(process.pid, signal.SIGKILL)  # dies without DISCONNECT: the will fires
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        async with asyncio.timeout(5):
            while (await _retained(broker.host, broker.port, topic)).state != "offline":
                await asyncio.sleep(0.05)

        async with link_and_journal(broker.host, broker.port, tmp_path) as (link, _):
            await link.update_status(reader="ready", pinpad="ready")
            status = await _retained(broker.host, broker.port, topic)
            assert (status.state, status.reader, status.pinpad) == ("online", "ready", "ready")
        status = await _retained(broker.host, broker.port, topic)  # closed cleanly
        assert (status.state, status.reader) == ("offline", "ready")

    run(body)


def test_bridge_status_is_watched(mosquitto_broker: MosquittoService, tmp_path: Path) -> None:
    broker = mosquitto_broker

    def status(state: Literal["online", "offline"]) -> bytes:
        return BridgeStatus(bridge_id="bridge-x", state=state).model_dump_json().encode()

    async def publish(payload: bytes) -> None:
        async with aiomqtt.Client(broker.host, broker.port, identifier="bridge-x") as client:
            await client.publish(topics.BRIDGE_STATUS, payload, qos=1, retain=True)

    async def body() -> None:
        await publish(status("online"))  # retained before the terminal connects
        async with link_and_journal(broker.host, broker.port, tmp_path) as (link, _):
            await link.wait_bridge(online=True, timeout=3)
            assert link.bridge_status is not None
            assert link.bridge_status.bridge_id == "bridge-x"
            await publish(status("offline"))
            await link.wait_bridge(online=False, timeout=3)
            await publish(status("online"))
            await link.wait_bridge(online=True, timeout=3)
            await publish(b"not json")
            async with asyncio.timeout(3):
                while link.stats.malformed == 0:
                    await asyncio.sleep(0.02)
            assert link.bridge_online  # a malformed status changes nothing

    run(body)


def test_settings_are_validated() -> None:
    with pytest.raises(ValidationError):
        LinkSettings(terminal_id="T/0001")
    with pytest.raises(ValidationError):
        LinkSettings(terminal_id="T1", reconnect_initial_s=5, reconnect_max_s=1)
    assert LinkSettings(terminal_id="T1").identifier == "T1"
    with pytest.raises(ValueError, match="initial key"):
        MqttLink(
            LinkSettings(terminal_id="T1"),
            initial_key=bytes(8),
            initial_key_id=IKID,
            counters=None,  # type: ignore[arg-type]
        )
