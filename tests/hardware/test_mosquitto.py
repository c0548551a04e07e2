"""The private Mosquitto broker: config, a real publish/subscribe round trip, restarts."""

from __future__ import annotations

import asyncio
import socket
import statistics
import subprocess
import time

import aiomqtt
import pytest

from hardware.mosquitto import BrokerConfig, MosquittoService, render_config
from hardware.services import MissingPackageError, require_program, tcp_accepts


def test_config_has_the_settings_that_avoid_the_known_traps() -> None:
    text = render_config(BrokerConfig(), 18830)
    lines = text.splitlines()
    assert "listener 18830 127.0.0.1" in lines
    assert "set_tcp_nodelay true" in lines
    assert "max_queued_messages 100000" in lines
    assert "persistence false" in lines
    assert "log_dest stderr" in lines
    assert "allow_anonymous true" in lines
    closed = render_config(BrokerConfig(allow_anonymous=False, extra_lines=("acl_file /x",)), 1)
    assert "allow_anonymous false" in closed.splitlines()
    assert closed.splitlines()[-1] == "acl_file /x"
    with pytest.raises(ValueError, match="port"):
        render_config(BrokerConfig(), 0)


def test_cli_publish_reaches_cli_subscriber(mosquitto_broker: MosquittoService) -> None:
    where = ["-h", mosquitto_broker.host, "-p", str(mosquitto_broker.port)]
    topic = "pos/v1/t/T0001/status"
    subscriber = subprocess.Popen(
        ["mosquitto_sub", *where, "-t", topic, "-C", "1", "-W", "10", "-q", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # Retained, so it does not matter whether the subscriber is already subscribed.
        subprocess.run(
            ["mosquitto_pub", *where, "-t", topic, "-m", "online", "-r", "-q", "1"],
            check=True,
            timeout=10,
        )
        out, _ = subscriber.communicate(timeout=15)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait()
    assert subscriber.returncode == 0, mosquitto_broker.log_text()
    assert out.strip() == "online"


async def _qos1_round_trips(host: str, port: int, count: int) -> list[float]:
    nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    times: list[float] = []
    async with aiomqtt.Client(host, port, socket_options=nodelay) as client:
        await client.subscribe("pos/v1/t/T0001/resp", qos=1)
        for i in range(count):
            start = time.perf_counter()
            await client.publish("pos/v1/t/T0001/resp", str(i).encode(), qos=1)
            message = await asyncio.wait_for(anext(client.messages), 5)
            times.append(time.perf_counter() - start)
            if message.payload != str(i).encode():
                raise AssertionError(f"round trip {i} returned another message")
    return times


def test_qos1_round_trip_is_fast_with_nodelay(mosquitto_broker: MosquittoService) -> None:
    """Nagle on either side turns each round trip into ~40-88 ms (DESIGN 9)."""
    times = asyncio.run(_qos1_round_trips(mosquitto_broker.host, mosquitto_broker.port, 40))
    assert len(times) == 40
    assert statistics.median(times) < 0.020, mosquitto_broker.log_text()


def test_restart_keeps_the_port_and_the_log() -> None:
    with MosquittoService() as broker:
        port = broker.port
        broker.restart()
        assert broker.running
        assert broker.port == port
        assert tcp_accepts(broker.host, port)
        assert broker.log_text().count("starting") == 2
        times = asyncio.run(_qos1_round_trips(broker.host, port, 3))
        assert len(times) == 3
    assert not broker.running
    assert not tcp_accepts("127.0.0.1", port)


def test_missing_program_names_the_debian_package() -> None:
    with pytest.raises(MissingPackageError, match="install the Debian package 'no-such-pkg'"):
        require_program("no-such-program-here", "no-such-pkg")
