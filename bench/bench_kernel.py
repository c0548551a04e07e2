"""The EMV kernel's own cost: a full contact transaction against the in-process card.

Selection (PSE), GPO, READ RECORD, restrictions, CVM (online PIN, scripted), risk
management, action analysis, first GENERATE AC, a host answer with an ARPC computed by
pyemv from the card's test issuer master key, second GENERATE AC. Reports the median
and p99 of the whole transaction, the APDU count, and how the time splits between the
card emulator's ``process_apdu`` and everything else (the kernel and the seams).

    python bench/bench_kernel.py [--count N] [--card NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import time
from collections.abc import Sequence

import pyemv

from hardware.cards import EmvCard, InProcessTransport, load_profile
from paycore.compat import silence_legacy_tdes_warnings
from terminal_agent.kernel import (
    Candidate,
    CardChannel,
    Decision,
    EmvKernel,
    HostOutcome,
    OfflinePinOutcome,
    OfflinePinStatus,
    OnlinePinResult,
    OnlinePinStatus,
    TerminalConfig,
    Transaction,
)


class _TimedChannel:
    """The in-process card behind CardChannel, timing each process_apdu call."""

    def __init__(self, card: EmvCard) -> None:
        self.transport = InProcessTransport(card)
        self.card_seconds = 0.0
        self.apdus = 0

    async def transmit(self, apdu: bytes) -> tuple[bytes, int, int]:
        start = time.perf_counter()
        answer = self.transport.transmit(apdu)
        self.card_seconds += time.perf_counter() - start
        self.apdus += 1
        return answer


class _Cardholder:
    async def choose_application(self, candidates: Sequence[Candidate]) -> int | None:
        return 0

    async def confirm_application(self, candidate: Candidate) -> bool:
        return True

    async def online_pin(self, pan: str, amount: int, currency: str) -> OnlinePinResult:
        return OnlinePinResult(OnlinePinStatus.OK, object())

    async def offline_plaintext_pin(
        self, channel: CardChannel, tries_left: int | None
    ) -> OfflinePinOutcome:
        return OfflinePinOutcome(OfflinePinStatus.BYPASSED)

    async def signature_required(self) -> None:
        return None

    async def show(self, message: str) -> None:
        return None


async def _one(kernel: EmvKernel, name: str) -> tuple[float, float, int]:
    profile = load_profile(name)
    app = profile.applications[0]
    channel = _TimedChannel(EmvCard(profile))
    tx = Transaction(amount=1234, date=dt.date(2025, 6, 14))
    start = time.perf_counter()
    first = await kernel.start(channel, _Cardholder(), tx)
    ctx = first.context
    if ctx.first_ac is None or first.online_request is None:
        raise RuntimeError("the card did not ask to go online")
    host_start = time.perf_counter()
    cvn = pyemv.cvn.VisaCVN18(
        app.keys.ac.get_secret_value(),
        app.keys.smi.get_secret_value(),
        app.keys.smc.get_secret_value(),
        pan=app.pan.digits,
        psn=f"{app.psn:02d}",
    )
    csu = bytes.fromhex("00800000")
    arpc = cvn.generate_arpc(ctx.first_ac.cryptogram, ctx.first_ac.atc, csu)
    host_seconds = time.perf_counter() - host_start
    outcome = await kernel.complete(ctx, HostOutcome(approved=True, issuer_auth_data=arpc + csu))
    total = time.perf_counter() - start - host_seconds
    if outcome.decision is not Decision.APPROVED_ONLINE:
        raise RuntimeError(f"unexpected outcome {outcome.decision}")
    return total, channel.card_seconds, channel.apdus


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--card", default="visa_credit", help="a CVN 18 catalogue card")
    args = parser.parse_args(argv)
    silence_legacy_tdes_warnings()
    kernel = EmvKernel(TerminalConfig())

    async def run() -> list[tuple[float, float, int]]:
        for _ in range(10):  # warm-up
            await _one(kernel, args.card)
        return [await _one(kernel, args.card) for _ in range(args.count)]

    results = asyncio.run(run())
    totals = sorted(r[0] for r in results)
    card = [r[1] for r in results]
    kernel_only = sorted(r[0] - r[1] for r in results)
    p99 = totals[min(len(totals) - 1, round(0.99 * (len(totals) - 1)))]
    print(f"full transaction ({args.card}, selection to second GENERATE AC), {args.count} runs")
    print(f"  median {statistics.median(totals) * 1e3:.3f} ms   p99 {p99 * 1e3:.3f} ms")
    print(f"  APDUs per transaction: {results[0][2]}")
    print(
        f"  inside the card's process_apdu: median {statistics.median(card) * 1e3:.3f} ms; "
        f"kernel and seams: median {statistics.median(kernel_only) * 1e3:.3f} ms"
    )
    print("  (host ARPC computation excluded)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
