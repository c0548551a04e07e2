"""The generated Mosquitto configuration against a real Mosquitto 2 (DESIGN 4 and 9).

One broker per module, started with ``mosquitto -c`` on the file ``broker-config`` wrote,
in a fresh ``/tmp`` directory user ``mosquitto`` can read. Denied publishes and refused
certificates are invisible to the client (DESIGN 9): they are asserted by a short timeout,
each next to a positive control that proves the same path works when allowed.
"""

from __future__ import annotations

import asyncio
import io
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives import serialization

from gateway_bridge.fleet.ca import TerminalCA, build_csr, new_ec_key, now_utc
from gateway_bridge.fleet.cli import broker_config_main, ca_main
from hardware.services import (
    free_tcp_port,
    read_log,
    require_program,
    stop_process,
    tcp_accepts,
    wait_until,
)
from paycore.wire import topics

QUIET = 0.6  # how long "nothing arrives" is watched
PASS = "correct horse battery staple"


@dataclass
class Fleet:
    root: Path
    ca: TerminalCA
    broker_dir: Path
    port: int
    process: subprocess.Popen[bytes]

    def creds(self, name: str) -> tuple[Path, Path]:
        return self.root / f"{name}-cert.pem", self.root / f"{name}-key.pem"

    def log(self) -> str:
        return read_log(self.root / "mosquitto.log")


def _terminal(ca: TerminalCA, root: Path, tid: str, *, days_ago: int = 0, days: int = 90) -> None:
    key = new_ec_key()
    (root / f"{tid}-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    csr = build_csr(key, tid).public_bytes(serialization.Encoding.PEM)
    issued = ca.issue_terminal(
        csr, terminal_id=tid, now=now_utc() - timedelta(days=days_ago), days=days
    )
    (root / f"{tid}-cert.pem").write_bytes(issued.pem)


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    mosquitto = require_program("mosquitto", "mosquitto")
    root = Path(tempfile.mkdtemp(prefix="fleet-"))
    root.chmod(0o755)
    try:
        env = {"POS_BRIDGE_CA_PASSPHRASE": PASS}
        out = io.StringIO()
        ca_dir = root / "ca"
        assert ca_main(["init", "--dir", str(ca_dir)], environ=env, out=out) == 0
        for args in (
            ["issue-bridge", "--name", "bridge-1", "--out", str(root / "bridge-1-cert.pem")],
            ["issue-server", "--dns", "localhost", "--ip", "127.0.0.1"],
        ):
            if args[0] == "issue-bridge":
                args += ["--key-out", str(root / "bridge-1-key.pem")]
            else:
                args += ["--out", str(root / "server-cert.pem")]
                args += ["--key-out", str(root / "server-key.pem")]
            assert ca_main([*args, "--dir", str(ca_dir)], environ=env, out=out) == 0
        ca = TerminalCA(ca_dir, passphrase=PASS.encode())
        for tid in ("T-1", "T-2", "T-revoked"):
            _terminal(ca, root, tid)
        _terminal(ca, root, "T-expired", days_ago=10, days=1)
        foreign = TerminalCA.create(root / "foreign", passphrase=None, now=now_utc())
        _terminal(foreign, root, "T-foreign")

        persist = root / "persist"
        persist.mkdir()
        user = pwd.getpwnam("mosquitto")
        os.chown(persist, user.pw_uid, user.pw_gid)
        port = free_tcp_port()
        broker_dir = root / "broker"
        argv = [
            "--ca-dir", str(ca_dir),
            "--server-cert", str(root / "server-cert.pem"),
            "--server-key", str(root / "server-key.pem"),
            "--bridge", "bridge-1",
            "--out", str(broker_dir),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--persistence-dir", str(persist),
        ]  # fmt: skip
        assert broker_config_main(argv, environ={}, out=out) == 0, out.getvalue()
        with (root / "mosquitto.log").open("wb") as log:
            process = subprocess.Popen(
                [mosquitto, "-c", str(broker_dir / "mosquitto.conf")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        fleet = Fleet(root, ca, broker_dir, port, process)
        try:
            wait_until(
                lambda: tcp_accepts("127.0.0.1", port),
                timeout=10,
                process=process,
                what="mosquitto with the generated config",
                log=fleet.log,
            )
            # Only the TLS listener: a listener option before `listener` would make
            # Mosquitto open a default plain listener on 1883 as well.
            assert fleet.log().count("listen socket on port") == 1, fleet.log()
            yield fleet
        finally:
            stop_process(process, 5)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@asynccontextmanager
async def connect(
    fleet: Fleet, name: str, *, timeout: float = 3.0, identifier: str | None = None
) -> AsyncIterator[aiomqtt.Client]:
    context = ssl.create_default_context(cafile=str(fleet.ca.bundle_path))
    cert, key = fleet.creds(name)
    context.load_cert_chain(str(cert), str(key))
    client = aiomqtt.Client(
        "127.0.0.1",
        fleet.port,
        identifier=identifier or name,
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=context,
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
    env = {"POS_BRIDGE_CA_PASSPHRASE": PASS}
    out = io.StringIO()
    assert not asyncio.run(refused(fleet, "T-revoked"))
    ca_dir = str(fleet.ca.directory)
    assert ca_main(["revoke", "--dir", ca_dir, "--name", "T-revoked"], environ=env, out=out) == 0
    crl_copy = str(fleet.broker_dir / "crl.pem")
    assert ca_main(["crl", "--dir", ca_dir, "--copy-to", crl_copy], environ=env, out=out) == 0
    fleet.process.send_signal(signal.SIGHUP)
    wait_until(
        lambda: "Reloading config" in fleet.log(),
        timeout=5,
        process=fleet.process,
        what="mosquitto to reload",
        log=fleet.log,
    )

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
            reloads = fleet.log().count("Reloading config")
            fleet.process.send_signal(signal.SIGHUP)
            while fleet.log().count("Reloading config") == reloads:
                await asyncio.sleep(0.05)
            await bridge.publish(topics.response_topic("T-2"), b"after reload", qos=1)
            assert (await first(terminal)).payload == b"after reload"

    asyncio.run(scenario())
