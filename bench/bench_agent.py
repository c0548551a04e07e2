"""The agent's own cost per payment, on real devices (issue 4's aims: under 20 ms of the
agent's own processing per transaction, under 80 MB resident).

One terminal, everything real: the emulated card behind pcscd + vpcd, the emulated PIN
pad on a pty with no typing delay, Mosquitto, and the bridge with the issuer simulator
(in this process). For each purchase the wall time is split into the card (inside the
reader's transmit), the PIN pad (inside get_pin), the host (inside the link's exchange:
network, bridge and issuer) and the rest: the agent's own processing (kernel, journal,
sealing, state machine). Memory: ``terminal-agent pay`` run as its own process, its
peak resident set read back.

    python bench/bench_agent.py [--purchases 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway_bridge.connectors.issuer_sim import IssuerSimulator
from gateway_bridge.connectors.issuer_sim.accounts import repo_catalogue_dir
from hardware.cards import EmvCard, load_profile
from hardware.mosquitto import MosquittoService
from hardware.pcsc.pcscd import PcscdService
from hardware.pcsc.slot import CardSlot
from hardware.pinpad import AesDukptKey, EmulatedPinpad, PinScript
from paycore.compat import silence_legacy_tdes_warnings
from terminal_agent.app import open_agent
from terminal_agent.config import load_settings
from terminal_agent.display import RecordingDisplay
from tests.gateway_bridge.rig import PIN_IKID, make_rig, running_bridge
from tests.terminal_agent.test_cli import agent_config

T = TypeVar("T")


class Stopwatch:
    def __init__(self) -> None:
        self.spent = 0.0

    def wrap(self, fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        async def timed(*args: Any, **kwargs: Any) -> T:
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.spent += time.perf_counter() - start

        return timed


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--purchases", type=int, default=200)
    args = parser.parse_args(argv)
    silence_legacy_tdes_warnings()

    with (
        tempfile.TemporaryDirectory() as tmp,
        MosquittoService() as broker,
        PcscdService() as pcscd,
    ):
        work = Path(tmp)
        os.environ.update(pcscd.client_env)  # this process's PC/SC client
        (work / "bridge").mkdir()
        rig = make_rig(work / "bridge", broker)
        pad = EmulatedPinpad(
            kbpk=secrets.token_bytes(32),
            slots={1: AesDukptKey(rig.pin_initial_key, PIN_IKID)},
            link_path=work / "pos-pinpad",
        )
        pad.start()
        slot = CardSlot(pcscd)
        slot(EmvCard(load_profile("visa_credit")))
        config = agent_config(rig, pcscd, pad, work)
        catalogue = repo_catalogue_dir()
        assert catalogue is not None
        sim = IssuerSimulator.from_paths([catalogue])
        rows: list[tuple[float, float, float, float]] = []
        apdus = 0

        async def run() -> None:
            nonlocal apdus
            settings = load_settings(config)
            async with running_bridge(rig, sim), open_agent(settings, RecordingDisplay()) as agent:
                await agent.link.wait_connected(10)
                terminal = agent.terminal
                card, pin, host = Stopwatch(), Stopwatch(), Stopwatch()
                # Timing wrappers around the three places the agent waits on others.
                setattr(terminal.link, "exchange", host.wrap(terminal.link.exchange))  # noqa: B010
                setattr(agent.pinpad, "get_pin", pin.wrap(agent.pinpad.get_pin))  # noqa: B010
                session = agent.reader.card_session

                def timed_session(*a: Any, **k: Any) -> Any:
                    manager = session(*a, **k)

                    class Wrapped:
                        async def __aenter__(self) -> Any:
                            channel = await manager.__aenter__()
                            original = channel.transmit

                            async def transmit(apdu: bytes) -> tuple[bytes, int, int]:
                                nonlocal apdus
                                apdus += 1
                                return await card.wrap(original)(apdu)

                            setattr(channel, "transmit", transmit)  # noqa: B010
                            return channel

                        async def __aexit__(self, *exc: Any) -> Any:
                            return await manager.__aexit__(*exc)

                    return Wrapped()

                setattr(agent.reader, "card_session", timed_session)  # noqa: B010
                for n in range(args.purchases + 5):
                    pad.queue_pin(PinScript.entered("1234"))
                    card.spent = pin.spent = host.spent = 0.0
                    start = time.perf_counter()
                    result = await terminal.pay(100, "GBP", idempotency_key=f"bench-{n}")
                    total = time.perf_counter() - start
                    if result.status != "approved":
                        raise SystemExit(f"purchase {n}: {result.status} {result.message}")
                    if n >= 5:  # warm-up
                        rows.append((total, card.spent, pin.spent, host.spent))

        asyncio.run(run())
        pad.stop()
        slot.remove()

        ms = [[r[i] * 1000 for r in rows] for i in range(4)]
        own = [t - c - p - h for t, c, p, h in zip(*ms, strict=True)]
        print(f"agent, one terminal, {len(rows)} purchases with online PIN (real devices):")
        for name, values in (
            ("card inserted -> result", ms[0]),
            ("  card (APDUs via pcscd+vpcd)", ms[1]),
            ("  PIN pad (GET PIN, no typing)", ms[2]),
            ("  host (MQTT, bridge, issuer)", ms[3]),
            ("  agent's own processing", own),
        ):
            print(
                f"  {name:<32} median {statistics.median(values):7.2f} ms"
                f"   p99 {_pct(values, 0.99):7.2f} ms"
            )
        print(f"  APDUs per purchase: {apdus / (args.purchases + 5):.0f}")

        # Memory: the agent as its own process, one purchase.
        pad2 = EmulatedPinpad(
            kbpk=secrets.token_bytes(32),
            slots={1: AesDukptKey(rig.pin_initial_key, PIN_IKID)},
            link_path=work / "pos-pinpad",
        )
        pad2.start()
        pad2.queue_pin(PinScript.entered("1234"))
        slot(EmvCard(load_profile("visa_credit")))

        async def one_process() -> int:
            async with running_bridge(rig, sim):
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "terminal_agent.cli", "pay", "1.00",
                    "--config", str(config), stdout=subprocess.DEVNULL,
                )  # fmt: skip
                return await proc.wait()

        code = asyncio.run(one_process())
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(f"  terminal-agent pay as a process: exit {code}, peak RSS {peak_kb / 1024:.1f} MB")
        pad2.stop()
        slot.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
