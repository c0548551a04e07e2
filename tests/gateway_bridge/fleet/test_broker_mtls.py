"""The generated Mosquitto configuration against a real Mosquitto 2 (DESIGN 4 and 9).

One broker per module, started with ``mosquitto -c`` on the file ``broker-config`` wrote,
in a fresh ``/tmp`` directory user ``mosquitto`` can read. Denied publishes and refused
certificates are invisible to the client (DESIGN 9): they are asserted by a short timeout,
each next to a positive control that proves the same path works when allowed.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import aiomqtt
import pytest

from paycore.wire import topics
from tests.production_fleet import ProductionFleet as Fleet
from tests.production_fleet import production_fleet

QUIET = 0.6  # how long "nothing arrives" is watched


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with production_fleet(terminals=("T-1", "T-2", "T-revoked")) as made:
        made.issue_terminal("T-expired", days_ago=10, days=1)
        made.issue_terminal("T-foreign", ca_dir=made.foreign_ca())
        yield made


@asynccontextmanager
async def connect(
    fleet: Fleet, name: str, *, timeout: float = 3.0, identifier: str | None = None
) -> AsyncIterator[aiomqtt.Client]:
    client = aiomqtt.Client(
        fleet.host,
        fleet.port,
        identifier=identifier or name,
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=fleet.tls_context(name),
        timeout=timeout,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    async with asyncio.timeout(timeout + 2):
        await client.__aenter__()
    try:
        yield client
    finally:
        await client.__aexit__(None, None, None)


async def collect(client: aiomqtt.Client, seconds: float) -> list[aiomqtt.Message]:
    seen: list[aiomqtt.Message] = []
    try:
        async with asyncio.timeout(seconds):
            async for message in client.messages:
                seen.append(message)
    except TimeoutError:
        pass
    return seen


async def first(client: aiomqtt.Client, seconds: float = 3.0) -> aiomqtt.Message:
    async with asyncio.timeout(seconds):
        async for message in client.messages:
            return message
    raise AssertionError("unreachable")


async def refused(fleet: Fleet, name: str) -> bool:
    try:
        async with connect(fleet, name, timeout=2.0):
            return False
    except (aiomqtt.MqttError, TimeoutError, ssl.SSLError, OSError):
        return True


def test_terminal_publishes_its_request_and_reads_its_response(fleet: Fleet) -> None:
    async def scenario() -> None:
        async with connect(fleet, "bridge-1") as bridge, connect(fleet, "T-1") as terminal:
            await bridge.subscribe(topics.SHARED_REQUEST_SUBSCRIPTION, qos=1)
            await terminal.subscribe(topics.response_topic("T-1"), qos=1)
            await terminal.publish(topics.request_topic("T-1"), b"ping", qos=1)
            request = await first(bridge)
            assert (str(request.topic), request.payload) == (topics.request_topic("T-1"), b"ping")
            await bridge.publish(topics.response_topic("T-1"), b"pong", qos=1)
            response = await first(terminal)
            assert (str(response.topic), response.payload) == (
                topics.response_topic("T-1"),
                b"pong",
            )

    asyncio.run(scenario())


def test_a_terminal_cannot_read_another_terminals_responses(fleet: Fleet) -> None:
    async def scenario() -> None:
        async with (
            connect(fleet, "bridge-1") as bridge,
            connect(fleet, "T-1") as owner,
            connect(fleet, "T-2") as snoop,
        ):
            await owner.subscribe(topics.response_topic("T-1"), qos=1)
            await snoop.subscribe(topics.response_topic("T-1"), qos=1)  # "succeeds"
            await bridge.publish(topics.response_topic("T-1"), b"secret", qos=1)
            assert (await first(owner)).payload == b"secret"  # the control
            assert await collect(snoop, QUIET) == []

    asyncio.run(scenario())


def test_a_terminal_cannot_publish_as_another(fleet: Fleet) -> None:
    async def scenario() -> None:
        async with connect(fleet, "bridge-1") as bridge, connect(fleet, "T-2") as forger:
            await bridge.subscribe(topics.SHARED_REQUEST_SUBSCRIPTION, qos=1)
            await forger.publish(topics.request_topic("T-1"), b"forged", qos=1)  # looks fine
            await forger.publish(topics.request_topic("T-2"), b"own", qos=1)
            seen = await collect(bridge, QUIET)
            assert [(str(m.topic), m.payload) for m in seen] == [
                (topics.request_topic("T-2"), b"own")
            ]

    asyncio.run(scenario())


def test_subscribing_to_everything_shows_only_the_terminals_own_topics(fleet: Fleet) -> None:
    async def scenario() -> None:
        async with (
            connect(fleet, "bridge-1") as bridge,
            connect(fleet, "T-1") as other,
            connect(fleet, "T-2") as greedy,
        ):
            await greedy.subscribe("#", qos=1)
            await other.publish(topics.request_topic("T-1"), b"req", qos=1)
            await other.publish(topics.status_topic("T-1"), b"online", qos=1)
            await bridge.publish(topics.response_topic("T-1"), b"resp", qos=1)
            await bridge.publish(topics.response_topic("T-2"), b"mine", qos=1)
            seen = await collect(greedy, QUIET)
            foreign = [str(m.topic) for m in seen if "/T-1/" in str(m.topic)]
            assert foreign == []
            allowed = {
                topics.response_topic("T-2"),
                topics.config_topic("T-2"),
                topics.BRIDGE_STATUS,
            }
            assert {str(m.topic) for m in seen} <= allowed

    asyncio.run(scenario())


def test_a_terminal_cannot_take_over_the_bridges_session(fleet: Fleet) -> None:
    async def scenario() -> None:
        async with connect(fleet, "bridge-1") as bridge:
            await bridge.subscribe(topics.SHARED_REQUEST_SUBSCRIPTION, qos=1)
            async with connect(fleet, "T-2", identifier="bridge-1") as intruder:
                await intruder.publish(topics.request_topic("T-2"), b"still there?", qos=1)
                request = await first(bridge)  # the bridge was not disconnected
                assert request.payload == b"still there?"

    asyncio.run(scenario())


def test_expired_and_foreign_certificates_are_refused(fleet: Fleet) -> None:
    failed = "certificate verify failed"
    before = fleet.log().count(failed)

    async def scenario() -> None:
        assert not await refused(fleet, "T-1")  # the control
        assert await refused(fleet, "T-expired")
        assert await refused(fleet, "T-foreign")

    asyncio.run(scenario())
    # the client saw only a timeout; the broker logged why (DESIGN 9)
    assert fleet.log().count(failed) == before + 2


def test_a_revoked_certificate_is_refused_after_crl_reload(fleet: Fleet) -> None:
    assert not asyncio.run(refused(fleet, "T-revoked"))
    assert "revoked terminal T-revoked" in fleet.ca_cli("revoke", "--name", "T-revoked")
    fleet.ca_cli("crl", "--copy-to", str(fleet.broker_dir / "crl.pem"))
    fleet.broker.reload()

    async def after() -> tuple[bool, bool]:
        return await refused(fleet, "T-revoked"), await refused(fleet, "T-1")

    before = fleet.log().count("certificate verify failed")
    assert asyncio.run(after()) == (True, False)
    assert fleet.log().count("certificate verify failed") == before + 1


def test_a_reload_does_not_cut_open_connections(fleet: Fleet) -> None:
    """Documented limit (docs/broker.md): revocation applies to the next connection."""

    async def scenario() -> None:
        async with connect(fleet, "bridge-1") as bridge, connect(fleet, "T-2") as terminal:
            await terminal.subscribe(topics.response_topic("T-2"), qos=1)
            await asyncio.to_thread(fleet.broker.reload)
            await bridge.publish(topics.response_topic("T-2"), b"after reload", qos=1)
            assert (await first(terminal)).payload == b"after reload"

    asyncio.run(scenario())
