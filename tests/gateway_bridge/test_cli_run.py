"""gateway-bridge as an operator runs it: its own process, config file, metrics, journal."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_bridge.app import open_bridge
from gateway_bridge.cli import main as bridge_cli
from gateway_bridge.connectors.issuer_sim import IssuerSimulator
from gateway_bridge.connectors.issuer_sim.accounts import repo_catalogue_dir
from hardware.mosquitto import MosquittoService
from hardware.services import free_tcp_port
from paycore.wire import AuthorizationResponse, BridgeStatus, decode_json, topics
from tests.gateway_bridge.rig import Rig, make_rig, terminal_link


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def bridge_state(rig: Rig, want: str, timeout: float = 20.0) -> None:
    async with terminal_link(rig) as link:
        await link.client.subscribe(topics.BRIDGE_STATUS, qos=1)
        deadline = time.monotonic() + timeout
        while True:
            payload = await link.next(max(0.1, deadline - time.monotonic()))
            try:
                status = decode_json(payload, BridgeStatus)
            except ValueError:
                continue
            if status.state == want:
                return


def test_run_serves_metrics_answers_and_goes_offline_on_sigterm(
    tmp_path: Path, mosquitto_broker: MosquittoService
) -> None:
    metrics_port = free_tcp_port()
    rig = make_rig(tmp_path, mosquitto_broker, limits_toml=f"[metrics]\nport = {metrics_port}\n")
    # systemd's notify socket, played by the test (Type=notify, WatchdogSec=).
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(15)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway_bridge.cli", "run", "--config", str(rig.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        asyncio.run(bridge_state(rig, "online"))
        assert [notify.recv(64) for _ in range(3)] == [b"READY=1", b"WATCHDOG=1", b"WATCHDOG=1"]

        async def purchase() -> AuthorizationResponse:
            async with terminal_link(rig) as link:
                request = rig.terminal.authorization("visa_credit", 1999, "GBP")
                answer = await link.exchange(rig.terminal.seal(request, now_ms=now_ms()).to_json())
                _, reply = rig.terminal.open(answer, now_ms=now_ms())
                assert isinstance(reply, AuthorizationResponse)
                return reply

        assert asyncio.run(purchase()).approved
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as page:
            text = page.read().decode()
        assert 'pos_bridge_authorizations_total{response_code="00"} 1.0' in text
        assert "pos_bridge_request_seconds_bucket" in text

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        asyncio.run(bridge_state(rig, "offline"))
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _, err = proc.communicate()
    assert "4761739001010010" not in err  # the bridge's own log
    assert "476173******0010" not in err  # nothing card-related is logged at INFO

    out = io.StringIO()
    assert bridge_cli(["journal", "--config", str(rig.config)], out=out) == 0
    line = out.getvalue()
    assert "476173******0010" in line and "4761739001010010" not in line
    assert "approved" in line and "1999 GBP" in line
    out = io.StringIO()
    assert bridge_cli(["journal", "--config", str(rig.config), "--json"], out=out) == 0
    assert json.loads(out.getvalue().splitlines()[0])["pan"] == "476173******0010"


def test_bad_config_is_one_clear_line(tmp_path: Path, capsys: object) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text('[broker]\nport = "eighty"\n')
    assert bridge_cli(["journal", "--config", str(config)]) == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "broker.port" in err and "keystore" in err and err.count("\n") == 1


def test_arbitrary_payloads_are_refused_never_raised(
    tmp_path: Path, mosquitto_broker: MosquittoService
) -> None:
    """Bridge.handle is the decoder in front of everything: any bytes, any topic."""
    rig = make_rig(tmp_path, mosquitto_broker)
    catalogue = repo_catalogue_dir()
    assert catalogue is not None
    loop = asyncio.new_event_loop()
    opened = open_bridge(
        rig.settings, environ={}, connector=IssuerSimulator.from_paths([catalogue])
    )
    bridge = loop.run_until_complete(opened.__aenter__())
    try:

        @settings(max_examples=300, deadline=None)
        @given(
            topic=st.sampled_from(
                ["pos/v1/t/T0001/req", "pos/v1/t/x/req", "pos/v1/t/T0001/resp", "junk"]
            ),
            payload=st.one_of(
                st.binary(max_size=600),
                st.builds(lambda b: b"{" + b, st.binary(max_size=300)),
            ),
        )
        def one(topic: str, payload: bytes) -> None:
            assert loop.run_until_complete(bridge.handle(topic, payload)) is None

        one()
    finally:
        loop.run_until_complete(opened.__aexit__(None, None, None))
        loop.close()
