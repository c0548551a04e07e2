"""APDU round trip through the real PC/SC stack versus a direct call (DESIGN 8).

pyscard -> libpcsclite -> private pcscd -> vpcd -> TCP -> VpcdCardLink -> card
application, next to the same card application called in-process. DESIGN 8 expects a
median of about 0.15 ms through pcscd + vpcd when the card re-arms TCP_QUICKACK; 44 ms
means delayed ACKs are back.

    python bench/bench_apdu.py [--count N] [--size BYTES]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from hardware.pcsc.echo import EchoCard
from hardware.pcsc.pcscd import PcscdService, wait_for_card
from hardware.pcsc.vpcd import VpcdCardLink


def _measure(call: Callable[[], object], count: int) -> list[float]:
    for _ in range(min(100, count)):  # warm-up
        call()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _report(label: str, times: list[float]) -> None:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"{label:<34} n={len(times):>5}  median {statistics.median(times) * 1e3:8.4f} ms"
        f"  p99 {p99 * 1e3:8.4f} ms  max {ordered[-1] * 1e3:8.3f} ms"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="APDUs per measurement")
    parser.add_argument("--size", type=int, default=16, help="command data bytes (1-255)")
    args = parser.parse_args(argv)
    if not 1 <= args.size <= 255:
        parser.error("--size must be 1 to 255")
    apdu = bytes([0x80, 0xCA, 0x00, 0x00, args.size, *range(args.size), 0x00])

    card = EchoCard()
    direct = _measure(lambda: card.process_apdu(apdu), args.count)

    from smartcard.System import readers  # type: ignore[import-untyped]

    with PcscdService() as service:
        os.environ.update(service.client_env)
        link = VpcdCardLink(card, service.vpcd_port)
        link.insert()
        try:
            wait_for_card(service.card_reader, present=True)
            (reader,) = [r for r in readers() if str(r) == service.card_reader]
            conn = reader.createConnection()
            conn.connect()
            try:
                command = list(apdu)
                expected = ([*range(args.size)], 0x90, 0x00)
                if conn.transmit(command) != expected:
                    print("the card answered wrongly", file=sys.stderr)
                    return 1
                stack = _measure(lambda: conn.transmit(command), args.count)
            finally:
                conn.disconnect()
                conn.release()
        finally:
            link.remove()

    print(f"APDU: case 4, {args.size} data bytes each way, {args.count} round trips")
    _report("direct in-process call", direct)
    _report("pyscard -> pcscd -> vpcd -> card", stack)
    overhead = statistics.median(stack) - statistics.median(direct)
    print(f"PC/SC stack overhead (median): {overhead * 1e3:.4f} ms (DESIGN 8: about 0.15 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
