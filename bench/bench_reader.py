"""APDU round trip through the agent's reader adapter versus raw pyscard (DESIGN 8).

Same card, same pcscd + vpcd, same APDU (case 4), measured three ways:

* raw ``smartcard.scard.SCardTransmit`` on a handle, in the calling thread;
* pyscard's ``CardConnection.transmit`` (what most programs use);
* ``await PcscCard.transmit`` of :mod:`terminal_agent.reader` from an asyncio loop: one
  hop to the reader thread and back, status-word handling, error translation.

The difference of the medians is what the adapter costs per APDU.

    python bench/bench_reader.py [--count N] [--size BYTES]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

from hardware.pcsc.echo import EchoCard
from hardware.pcsc.pcscd import PcscdService, wait_for_card
from hardware.pcsc.vpcd import VpcdCardLink


def _measure(call: Callable[[], object], count: int) -> list[float]:
    for _ in range(min(100, count)):
        call()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


async def _measure_async(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    for _ in range(min(100, count)):
        await call()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return times


def _report(label: str, times: list[float]) -> None:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"{label:<36} n={len(times):>5}  median {statistics.median(times) * 1e3:8.4f} ms"
        f"  p99 {p99 * 1e3:8.4f} ms"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="APDUs per measurement")
    parser.add_argument("--size", type=int, default=16, help="command data bytes (1-255)")
    args = parser.parse_args(argv)
    if not 1 <= args.size <= 255:
        parser.error("--size must be 1 to 255")
    apdu = bytes([0x80, 0xCA, 0x00, 0x00, args.size, *range(args.size), 0x00])
    expected = (bytes(range(args.size)), 0x90, 0x00)

    with PcscdService() as service:
        os.environ.update(service.client_env)
        from smartcard import scard  # type: ignore[import-untyped]
        from smartcard.System import readers  # type: ignore[import-untyped]

        from terminal_agent.reader import PcscAdapter

        link = VpcdCardLink(EchoCard(), service.vpcd_port)
        link.insert()
        try:
            wait_for_card(service.card_reader, present=True)
            command = list(apdu)
            _, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            _, handle, protocol = scard.SCardConnect(
                context,
                service.card_reader,
                scard.SCARD_SHARE_SHARED,
                scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
            )
            raw = _measure(lambda: scard.SCardTransmit(handle, protocol, command), args.count)
            scard.SCardDisconnect(handle, scard.SCARD_LEAVE_CARD)
            scard.SCardReleaseContext(context)
            (reader,) = [r for r in readers() if str(r) == service.card_reader]
            conn = reader.createConnection()
            conn.connect()
            try:
                high = _measure(lambda: conn.transmit(command), args.count)
            finally:
                conn.disconnect()
                conn.release()

            async def through_adapter() -> list[float]:
                async with PcscAdapter() as adapter:
                    card = await adapter.connect(service.card_reader)
                    async with card:
                        if await card.transmit(apdu) != expected:
                            raise SystemExit("the card answered wrongly")
                        return await _measure_async(lambda: card.transmit(apdu), args.count)

            adapted = asyncio.run(through_adapter())
        finally:
            link.remove()

    print(f"APDU: case 4, {args.size} data bytes each way, {args.count} round trips")
    _report("raw scard.SCardTransmit", raw)
    _report("pyscard CardConnection.transmit", high)
    _report("terminal_agent.reader PcscCard", adapted)
    overhead = statistics.median(adapted) - statistics.median(raw)
    print(f"adapter overhead over raw pyscard (median): {overhead * 1e3:.4f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
