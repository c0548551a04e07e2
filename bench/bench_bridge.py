"""The bridge under load: N terminals, real envelopes, real Mosquitto, one bridge process.

Everything is real but the card reads: each simulated terminal reads its emulated card
once (one genuine ARQC) and reuses that EMV data for its requests, each with its own
idempotency key, STAN, PIN block (from its own AES DUKPT PIN key) and envelope (from its
own AES DUKPT data key); the issuer simulator verifies cryptogram and PIN every time.
The bridge runs as its own process (``gateway-bridge run``: SQLite journal with
synchronous=FULL, software key store, issuer simulator), the terminals share a second.

Printed, in one run:
  1. the transport limit: the same terminals against a bare echo responder (another
     process that republishes each request to the terminal's response topic);
  2. the bridge's maximum authorisations per second, with latency percentiles;
  3. latency at a fixed 200 authorisations per second.

    python bench/bench_bridge.py [--terminals 50] [--requests 40] [--window 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiomqtt

from gateway_bridge.cli import main as bridge_cli
from gateway_bridge.journal import JournalKeys, SqliteJournal, TerminalRegistration
from gateway_bridge.keystore.software import SoftwareKeyStore, kcv_of
from hardware.mosquitto import MosquittoService
from paycore import tr31
from paycore.wire import AuthorizationResponse, BridgeStatus, topics

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.gateway_bridge.terminal_sim import TestTerminal

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
#: aiomqtt logs a warning per publish once more than ten are pending (DESIGN 9).
QUIET = logging.getLogger("bench.mqtt")
QUIET.setLevel(logging.ERROR)


def _private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Fleet:
    """N terminals with keys delivered by the bridge's key store, registered, ready."""

    def __init__(self, work: Path, broker: MosquittoService, terminals: int) -> None:
        self.work = work
        kek = secrets.token_bytes(32)
        _private(work / "kek.hex", kek.hex())
        store = SoftwareKeyStore(work / "keys.json", kek, create=True)
        a, b = secrets.token_bytes(32), secrets.token_bytes(32)
        kbpk = bytes(x ^ y for x, y in zip(a, b, strict=True))
        store.import_components(
            "kbpk", "AES256", "kbpk", [(a, kcv_of(a, "AES256")), (b, kcv_of(b, "AES256"))]
        )
        store.create_bdk("data-bdk", "AES128", "data")
        store.create_bdk("pin-bdk", "AES128", "pin")
        self.terminals: list[TestTerminal] = []
        registrations = []
        for i in range(terminals):
            data_ikid = bytes.fromhex(f"D0000000{i:08X}")
            pin_ikid = bytes.fromhex(f"E0000000{i:08X}")
            _, data_key = tr31.unwrap(
                kbpk, store.export_initial_key_tr31("data-bdk", data_ikid, "kbpk")
            )
            _, pin_key = tr31.unwrap(
                kbpk, store.export_initial_key_tr31("pin-bdk", pin_ikid, "kbpk")
            )
            tid = f"B{i:04d}"
            self.terminals.append(
                TestTerminal(tid, data_initial_key=data_key, data_ikid=data_ikid,
                             pin_initial_key=pin_key, pin_ikid=pin_ikid)
            )  # fmt: skip
            registrations.append(
                TerminalRegistration(tid, "M0001", data_ikid.hex(), "data-bdk", "pin-bdk")
            )
        assert bridge_cli(["journal-keys", str(work / "journal.keys")]) == 0
        raw = bytes.fromhex((work / "journal.keys").read_text().strip())

        async def register() -> None:
            journal = await SqliteJournal.open(work / "journal.db", JournalKeys(raw[:32], raw[32:]))
            try:
                for registration in registrations:
                    await journal.register_terminal(registration)
            finally:
                await journal.close()

        asyncio.run(register())
        self.config = work / "bridge.toml"
        self.config.write_text(
            f'bridge_id = "bench"\n[broker]\nhost = "{broker.host}"\nport = {broker.port}\n'
            f'[keystore]\npath = "keys.json"\nkek_file = "kek.hex"\n'
            f'[journal]\npath = "journal.db"\n[journal_keys]\nkey_file = "journal.keys"\n'
            f"[limits]\nmax_in_flight = 512\n"
        )

    def payloads(self, per_terminal: int) -> list[list[tuple[str, bytes]]]:
        """Sealed requests, per terminal, in counter order: (message id, payload)."""
        out = []
        for terminal in self.terminals:
            first = terminal.authorization("visa_credit", 1, "GBP")
            mine = []
            for n in range(per_terminal):
                pin_block = terminal.pin_block("1234", first.pan.digits)
                request = first.model_copy(
                    update={
                        "idempotency_key": f"{terminal.terminal_id}:{n}:{secrets.token_hex(4)}",
                        "stan": n + 1,
                        "pin_block": pin_block,
                    }
                )
                envelope = terminal.seal(request, now_ms=now_ms(), ttl_ms=600_000)
                mine.append((envelope.message_id, envelope.to_json()))
            out.append(mine)
        return out


async def drive(
    broker: MosquittoService,
    fleet: Fleet,
    work: list[list[tuple[str, bytes]]],
    *,
    window: int,
    rate: float | None = None,
    check: bool = False,
) -> tuple[float, list[float], int]:
    """Send every terminal's requests (``window`` in flight each, or paced at ``rate``/s in
    all); returns (seconds, latencies in ms, approvals checked)."""
    latencies: list[float] = []
    approved = 0

    async def one_terminal(index: int, ready: asyncio.Barrier, start_at: list[float]) -> None:
        nonlocal approved
        terminal = fleet.terminals[index]
        sent: dict[str, float] = {}
        done = asyncio.Event()
        todo = list(work[index])
        remaining = len(todo)
        name = f"bench-{terminal.terminal_id}-{secrets.token_hex(2)}"
        async with aiomqtt.Client(
            broker.host, broker.port, identifier=name,
            protocol=aiomqtt.ProtocolVersion.V5, socket_options=NODELAY, max_inflight_messages=1000,
            logger=QUIET,
        ) as client:  # fmt: skip
            await client.subscribe(topics.response_topic(terminal.terminal_id), qos=1)
            slots = asyncio.Semaphore(window)

            async def receive() -> None:
                nonlocal remaining, approved
                async for message in client.messages:
                    payload = message.payload
                    assert isinstance(payload, bytes)
                    header = json.loads(payload)
                    key = header.get("correlation_id") or header["message_id"]
                    started = sent.pop(key, None)
                    if started is None:
                        continue
                    latencies.append((time.perf_counter() - started) * 1000)
                    if check:
                        _, body = terminal.open(payload, now_ms=now_ms())
                        approved += isinstance(body, AuthorizationResponse) and body.approved
                    slots.release()
                    remaining -= 1
                    if remaining == 0:
                        done.set()

            receiver = asyncio.create_task(receive())
            await ready.wait()
            gap = None if rate is None else len(fleet.terminals) / rate
            for i, (message_id, payload) in enumerate(todo):
                await slots.acquire()
                if gap is not None:
                    delay = (
                        start_at[0] + (i + index / len(fleet.terminals)) * gap - time.perf_counter()
                    )
                    if delay > 0:
                        await asyncio.sleep(delay)
                sent[message_id] = time.perf_counter()
                await client.publish(topics.request_topic(terminal.terminal_id), payload, qos=1)
            await asyncio.wait_for(done.wait(), 120)
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver

    ready = asyncio.Barrier(len(fleet.terminals) + 1)
    start_at = [0.0]
    tasks = [asyncio.create_task(one_terminal(i, ready, start_at)) for i in range(len(work))]
    start_at[0] = time.perf_counter() + 0.05
    await ready.wait()
    started = time.perf_counter()
    await asyncio.gather(*tasks)
    return time.perf_counter() - started, latencies, approved


def _echo_responder(host: str, port: int) -> None:
    """Republish each request to its terminal's response topic: the transport's limit."""

    async def serve() -> None:
        async with aiomqtt.Client(
            host, port, identifier="bench-echo", protocol=aiomqtt.ProtocolVersion.V5,
            socket_options=NODELAY, max_inflight_messages=1000, logger=QUIET,
        ) as client:  # fmt: skip
            await client.subscribe(topics.SHARED_REQUEST_SUBSCRIPTION, qos=1)
            print("ready", flush=True)
            pending: set[asyncio.Task[None]] = set()
            async for message in client.messages:
                tid, _ = topics.parse_terminal_topic(message.topic.value)
                assert isinstance(message.payload, bytes)
                # Concurrent publishes, as the bridge does: one PUBACK wait per message in
                # a row would make the echo slower than the broker.
                task = asyncio.create_task(
                    client.publish(topics.response_topic(tid), message.payload, qos=1)
                )
                pending.add(task)
                task.add_done_callback(pending.discard)

    asyncio.run(serve())


async def _wait_online(broker: MosquittoService, proc: subprocess.Popen[str]) -> None:
    """Until the bridge's retained status says online; its stderr if it dies first."""
    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-watch") as client:
        await client.subscribe(topics.BRIDGE_STATUS, qos=1)
        async with asyncio.timeout(30):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                if BridgeStatus.model_validate_json(message.payload).state == "online":
                    return
                if proc.poll() is not None:
                    break
    raise SystemExit(f"the bridge did not come up:\n{proc.communicate()[1]}")


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else values[0]


def _report(name: str, seconds: float, latencies: list[float]) -> float:
    rate = len(latencies) / seconds
    print(
        f"  {name:<34} {rate:>8,.0f}/s   latency ms: median {statistics.median(latencies):.2f}"
        f"  p90 {_percentile(latencies, 0.9):.2f}  p99 {_percentile(latencies, 0.99):.2f}"
        f"  ({len(latencies)} requests)"
    )
    return rate


def _wait_ready(proc: subprocess.Popen[str], what: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line:
        raise SystemExit(f"{what} did not start: {line}{proc.stderr.read() if proc.stderr else ''}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--terminals", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="per terminal, per phase")
    parser.add_argument("--window", type=int, default=4, help="requests in flight per terminal")
    parser.add_argument(
        "--echo-responder", nargs=2, metavar=("HOST", "PORT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.echo_responder:
        _echo_responder(args.echo_responder[0], int(args.echo_responder[1]))
        return 0

    with tempfile.TemporaryDirectory() as tmp, MosquittoService() as broker:
        work = Path(tmp)
        fleet = Fleet(work, broker, args.terminals)
        t0 = time.perf_counter()
        phases = [fleet.payloads(args.requests) for _ in range(3)]
        print(
            f"bridge benchmark: {args.terminals} terminals x {args.requests} requests per phase, "
            f"window {args.window} (sealing took {time.perf_counter() - t0:.1f} s)"
        )
        echo = subprocess.Popen(
            [sys.executable, __file__, "--echo-responder", broker.host, str(broker.port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            _wait_ready(echo, "echo responder")
            seconds, latencies, _ = asyncio.run(drive(broker, fleet, phases[0], window=args.window))
            baseline = _report("echo responder (transport limit)", seconds, latencies)
        finally:
            echo.terminate()
            echo.wait()

        bridge = subprocess.Popen(
            [sys.executable, "-m", "gateway_bridge.cli", "run", "--config", str(fleet.config),
             "--log-level", "WARNING"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            asyncio.run(_wait_online(broker, bridge))
            seconds, latencies, approved = asyncio.run(
                drive(broker, fleet, phases[1], window=args.window, check=True)
            )
            peak = _report("bridge, as fast as it goes", seconds, latencies)
            seconds, latencies, _ = asyncio.run(
                drive(broker, fleet, phases[2], window=args.window, rate=200.0)
            )
            _report("bridge, paced at 200/s", seconds, latencies)
        finally:
            bridge.terminate()
            _, err = bridge.communicate(timeout=30)
        print(f"  approved: {approved} of {args.terminals * args.requests} checked")
        print(f"  bridge / echo baseline: {peak / baseline:.0%}")
        if err.strip():
            print("  bridge stderr (last lines):", *err.strip().splitlines()[-5:], sep="\n    ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
