"""PIN pad command round trip over a pty, next to a bare pty echo (DESIGN 8).

Host (pyserial, tests/hardware/pinpad_client.py) -> pty -> EmulatedPinpad (asyncio thread)
-> pty -> host: one command is REQUEST, ACK, RESPONSE, ACK on the line. DESIGN 8 puts a
raw pty echo at a median of about 0.1 ms; the protocol's own overhead is the difference.

    python bench/bench_pinpad.py [--count N]
"""

from __future__ import annotations

import argparse
import os
import secrets
import select
import statistics
import sys
import time
import tty
from collections.abc import Callable, Sequence
from pathlib import Path

try:
    from tests.hardware.pinpad_client import PinpadClient
except ModuleNotFoundError:  # run as a script: the repo root is not on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.hardware.pinpad_client import PinpadClient

from hardware.pinpad import EmulatedPinpad
from paycore.pinpad import DisplayRequest, IdentifyRequest


def _measure(call: Callable[[], object], count: int) -> list[float]:
    for _ in range(min(100, count)):  # warm-up
        call()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def _report(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"{name:<28} n={len(samples):<6} median {statistics.median(samples) * 1e3:7.3f} ms"
        f"   p99 {p99 * 1e3:7.3f} ms"
    )


def _pty_echo(count: int) -> list[float]:
    """A byte pair written on one side of a raw pty, read back on the other, and back."""
    master, slave = os.openpty()
    tty.setraw(slave)
    message = bytes(16)
    try:

        def once() -> None:
            os.write(slave, message)
            select.select([master], [], [])
            os.read(master, 64)
            os.write(master, message)
            select.select([slave], [], [])
            os.read(slave, 64)

        return _measure(once, count)
    finally:
        os.close(master)
        os.close(slave)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="round trips per figure")
    args = parser.parse_args(argv)

    _report("pty echo (raw, same thread)", _pty_echo(args.count))
    with EmulatedPinpad(kbpk=secrets.token_bytes(32)) as pad:
        assert pad.port is not None
        client = PinpadClient(pad.port)
        try:
            _report(
                "IDENTIFY round trip", _measure(lambda: client.call(IdentifyRequest()), args.count)
            )
            display = DisplayRequest(("TOTAL", "EUR 12.34", "PIN, then OK"), 0)
            _report("DISPLAY round trip", _measure(lambda: client.call(display), args.count))
            print(
                f"link: pad retransmissions {pad.stats.retransmissions}, "
                f"host retransmissions {client.stats.retransmissions}"
            )
        finally:
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
