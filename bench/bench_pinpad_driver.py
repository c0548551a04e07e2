"""PIN pad command round trip through the terminal agent's driver (terminal_agent.pinpad).

PinpadDriver (asyncio, add_reader on the pyserial fd) -> pty -> EmulatedPinpad (its own
asyncio thread) -> pty -> driver: one command is REQUEST, ACK, RESPONSE, ACK on the line.
Compare with bench/bench_pinpad.py (the minimal blocking test client on the same pad) and
DESIGN 8 (raw pty echo, median about 0.1 ms): the difference is the driver's overhead.

    python bench/bench_pinpad_driver.py [--count N]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repo root is not on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hardware.pinpad import EmulatedPinpad
from terminal_agent.pinpad import PinpadDriver, PinpadSettings


async def _measure(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    for _ in range(min(100, count)):  # warm-up
        await call()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return samples


def _report(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"{name:<32} n={len(samples):<6} median {statistics.median(samples) * 1e3:7.3f} ms"
        f"   p99 {p99 * 1e3:7.3f} ms"
    )


async def _run(link: Path, count: int) -> None:
    async with PinpadDriver(PinpadSettings(port=str(link))) as driver:
        await driver.wait_connected(5)
        _report("driver IDENTIFY round trip", await _measure(driver.identify, count))

        async def display() -> None:
            await driver.display(["TOTAL", "EUR 12.34", "PIN, then OK"])

        _report("driver DISPLAY round trip", await _measure(display, count))
        stats = driver.stats
        print(
            f"link: driver retransmissions {stats.retransmissions}, NAKs sent "
            f"{stats.naks_sent}, duplicates {stats.duplicates}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="round trips per figure")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        link = Path(directory) / "pos-pinpad"
        with EmulatedPinpad(kbpk=secrets.token_bytes(32), link_path=link) as pad:
            asyncio.run(_run(link, args.count))
            print(f"pad retransmissions {pad.stats.retransmissions}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
