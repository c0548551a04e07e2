"""A terminal from nothing to taking payments, as docs/provisioning.md tells it (issue 8).

Everything is its own process or real device except the card and the PIN pad, which are
the emulated ones on their real transports: Mosquitto runs the configuration
``gateway-bridge broker-config`` wrote (mTLS, per-terminal ACL); the operator issues a
code with ``gateway-bridge terminals enrol-code``; ``gateway-bridge enrol-server`` serves
HTTPS; the technician runs ``terminal-agent provision`` with the command line the
operator got, which ends with the self-test; then ``terminal-agent pay`` takes a payment
with the credentials enrolment delivered. Revoking the terminal shuts it out of the
broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import aiomqtt

from gateway_bridge.app import open_bridge
from gateway_bridge.connectors.issuer_sim import IssuerSimulator
from gateway_bridge.connectors.issuer_sim.accounts import repo_catalogue_dir
from hardware.cards import EmvCard, load_profile
from hardware.pcsc.pcscd import PcscdService
from hardware.pcsc.slot import CardSlot
from hardware.pinpad import EmulatedPinpad, PinScript
from hardware.services import stop_process, tcp_accepts, wait_until
from paycore.pan import Pan
from paycore.wire import topics
from terminal_agent.doctor import PASSIVE_CHECKS
from tests.gateway_bridge.fleet.enrol_rig import TERMINAL_ID, make_enrol_rig
from tests.production_fleet import production_fleet

PAN = Pan("4761739001010010")


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


async def _run(argv: list[str], timeout: float = 90, stdin: bytes = b"") -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def test_a_terminal_goes_from_nothing_to_taking_payments(
    pcscd_vpcd: PcscdService, vpcd_card: CardSlot, tmp_path: Path
) -> None:
    catalogue = repo_catalogue_dir()
    assert catalogue is not None
    sim = IssuerSimulator.from_paths([catalogue])
    before = sim.snapshot(PAN).balance
    with production_fleet(bridges=("bridge-1", "auditor")) as fleet:
        cert, key = fleet.creds("bridge-1")
        rig = make_enrol_rig(
            tmp_path / "bridge",
            ca_dir=fleet.ca_dir,
            ca_passphrase_file=fleet.root / "ca-passphrase",
            extra_toml=(
                f'[broker]\nhost = "{fleet.host}"\nport = {fleet.port}\nprotocol = "5"\n'
                "reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n"
                f'[broker.tls]\nca_file = "{fleet.bundle}"\ncert_file = "{cert}"\n'
                f'key_file = "{key}"\n'
            ),
        )
        # The enrolment service tells terminals where the broker is; a revocation
        # installs the CRL where the broker reads it and reloads the broker.
        config = rig.config.read_text().replace(
            "broker_port = 8883",
            f"broker_port = {fleet.port}\n"
            f'crl_install_file = "{fleet.broker_dir / "crl.pem"}"\n'
            f'broker_reload_command = ["kill", "-HUP", "{fleet.broker.pid}"]',
        )
        rig.config.write_text(config)
        code, pin = rig.issue_code()
        terminal = tmp_path / "terminal"
        (terminal / "extra.toml").parent.mkdir()
        (terminal / "extra.toml").write_text("[timeouts]\ncard_s = 10\npin_s = 10\nhost_s = 5\n")
        server = subprocess.Popen(
            _python("gateway_bridge.cli", "enrol-server", "--config", str(rig.config)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        with EmulatedPinpad(kbpk=rig.pad_kbpk, link_path=tmp_path / "pos-pinpad") as pad:
            try:
                wait_until(
                    lambda: tcp_accepts("127.0.0.1", rig.port),
                    timeout=20,
                    process=server,
                    what="gateway-bridge enrol-server",
                )

                async def body() -> None:
                    async with open_bridge(rig.settings, environ={}, connector=sim) as bridge:
                        stop = asyncio.Event()
                        task = asyncio.create_task(bridge.run(stop))
                        try:
                            await asyncio.wait_for(bridge.connected.wait(), 10)
                            await shop(terminal, pad)
                        finally:
                            stop.set()
                            await asyncio.wait_for(task, 10)

                async def shop(terminal: Path, pad: EmulatedPinpad) -> None:
                    status, out = await _run(
                        _python(
                            "terminal_agent.cli",
                            "provision",
                            "--url",
                            rig.url,
                            "--terminal-id",
                            TERMINAL_ID,
                            "--ca-pin",
                            pin,
                            "--pinpad",
                            str(pad.link_path),
                            "--reader",
                            pcscd_vpcd.card_reader,
                            "--config-dir",
                            str(terminal / "etc"),
                            "--state-dir",
                            str(terminal / "var"),
                            "--udev-dir",
                            str(terminal / "udev"),
                            "--systemd-dir",
                            str(terminal / "systemd"),
                            "--extra-config",
                            str(terminal / "extra.toml"),
                            "--technician",
                            "tech-bob",
                        ),
                        stdin=code.encode() + b"\n",
                    )
                    assert status in (0, 1), out
                    assert "[10/10] doctor" in out and "ready" in out, out
                    for check in ("broker", "bridge", "pinpad", "pin_key", "certificate"):
                        line = next(x for x in out.splitlines() if f"  {check} " in f"  {x} ")
                        assert line.startswith("OK"), out
                    agent_toml = str(terminal / "etc" / "agent.toml")
                    vpcd_card(EmvCard(load_profile("visa_credit")))
                    pad.queue_pin(PinScript.entered("1234"))
                    status, out = await _run(
                        _python("terminal_agent.cli", "pay", "12.50", "--config", agent_toml)
                    )
                    assert status == 0 and "APPROVED" in out, out
                    assert PAN.digits not in out

                    # The running service puts the self-test results on its status topic.
                    health = await service_health(agent_toml)
                    names = [check["name"] for check in health]
                    assert names == list(PASSIVE_CHECKS), health
                    assert {c["name"]: c["status"] for c in health}["certificate"] == "ok"

                    # Revoked: registry, certificate, CRL installed, broker reloaded.
                    status, out = await asyncio.to_thread(
                        rig.cli, "terminals", "revoke", "--config", str(rig.config),
                        "--id", TERMINAL_ID,
                    )  # fmt: skip
                    assert status == 0 and "broker reloaded" in out, out
                    wait_until(
                        lambda: "Reloading config" in fleet.log(),
                        timeout=5,
                        what="the broker reloading the CRL",
                    )
                    status, out = await _run(
                        _python(
                            "terminal_agent.cli",
                            "doctor",
                            "--config",
                            agent_toml,
                            "--check",
                            "broker",
                            "--timeout",
                            "3",
                        )
                    )
                    assert status == 2 and out.startswith("FAIL"), out

                async def service_health(agent_toml: str) -> list[dict[str, object]]:
                    # systemd's notify socket, played by the test (Type=notify, WatchdogSec=)
                    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    notify.bind(str(tmp_path / "notify"))
                    notify.settimeout(15)
                    run = await asyncio.create_subprocess_exec(
                        *_python("terminal_agent.cli", "run", "--config", agent_toml),
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.STDOUT,
                        env={
                            **os.environ,
                            "NOTIFY_SOCKET": str(tmp_path / "notify"),
                            "WATCHDOG_USEC": "400000",
                        },
                    )
                    try:
                        pings = await asyncio.to_thread(lambda: [notify.recv(64) for _ in range(3)])
                        assert pings == [b"READY=1", b"WATCHDOG=1", b"WATCHDOG=1"]
                        async with aiomqtt.Client(
                            fleet.host,
                            fleet.port,
                            identifier="auditor",
                            protocol=aiomqtt.ProtocolVersion.V5,
                            tls_context=fleet.tls_context("auditor"),
                        ) as client:
                            await client.subscribe(topics.status_topic(TERMINAL_ID), qos=1)
                            async with asyncio.timeout(30):
                                async for message in client.messages:
                                    assert isinstance(message.payload, bytes)
                                    status = json.loads(message.payload)
                                    if status["state"] == "online" and status["health"]:
                                        health: list[dict[str, object]] = status["health"]
                                        return health
                    finally:
                        notify.close()
                        run.terminate()
                        output, _ = await asyncio.wait_for(run.communicate(), 15)
                        assert b"Traceback" not in output, output.decode()
                        assert PAN.digits.encode() not in output
                    raise AssertionError("no status with health")

                asyncio.run(body())
            finally:
                stop_process(server, 5)
                assert server.stdout is not None
                with server.stdout:
                    log = server.stdout.read().decode()
        assert PAN.digits not in log
    assert sim.snapshot(PAN).balance == before - 1250
