"""DUKPT derivation speed, one core: operations per second, median over several rounds.

Measures the host-side calls a bridge makes per request:

* ``aes_working_key`` (data_encrypt, AES128) for KSNs with random counters of at most 16
  one-bits (a random usable 32-bit counter has about 14 one-bits: 14 AES steps plus the
  working key);
* ``aes_initial_key`` (AES-128 BDK);
* ``tdes_working_key`` (pin and data_request) for random usable 21-bit counters.

Run: ``.venv/bin/python bench/bench_dukpt.py [--rounds N] [--ops N] [--seed N]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from paycore.dukpt import AesHostKeys, aes_initial_key, aes_working_key, tdes_working_key


def _random_counter(rng: random.Random, bits: int, max_ones: int) -> int:
    while True:
        counter = rng.getrandbits(bits)
        if counter and counter.bit_count() <= max_ones:
            return counter


def _rate(run: Callable[[], int], rounds: int) -> tuple[float, float, float]:
    """Median, min and max operations per second over ``rounds`` runs of ``run``."""
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        ops = run()
        rates.append(ops / (time.perf_counter() - start))
    return statistics.median(rates), min(rates), max(rates)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per benchmark")
    parser.add_argument("--ops", type=int, default=1000, help="derivations per round")
    parser.add_argument("--seed", type=int, default=2017, help="seed for the counters")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.ops < 1:
        parser.error("--rounds and --ops must be positive")

    rng = random.Random(args.seed)
    ops: int = args.ops
    bdk = bytes(rng.getrandbits(8) for _ in range(16))
    initial_key_id = bytes(rng.getrandbits(8) for _ in range(8))
    initial_key = aes_initial_key(bdk, initial_key_id)
    aes_counters = [_random_counter(rng, 32, 16) for _ in range(ops)]
    aes_ksns = [initial_key_id + c.to_bytes(4, "big") for c in aes_counters]
    ids = [bytes(rng.getrandbits(8) for _ in range(8)) for _ in range(ops)]
    ipek = bytes(rng.getrandbits(8) for _ in range(16))
    tdes_counters = [_random_counter(rng, 21, 10) for _ in range(ops)]
    tdes_ksns = [bytes.fromhex("FFFF9876543210E00000") for _ in range(ops)]
    tdes_ksns = [
        (int.from_bytes(k, "big") | c).to_bytes(10, "big")
        for k, c in zip(tdes_ksns, tdes_counters, strict=True)
    ]

    def aes_working() -> int:
        for ksn in aes_ksns:
            aes_working_key(initial_key, ksn, "data_encrypt", "AES128")
        return ops

    # The bridge's case: many terminals, each sending its next counter in turn; the
    # per-terminal AesHostKeys reuses the previous KSN's derivation path.
    terminals = 200
    hosts = [AesHostKeys(initial_key, initial_key_id) for _ in range(terminals)]
    starts = [_random_counter(rng, 20, 16) for _ in range(terminals)]
    next_counter = list(starts)

    def aes_host_sequential() -> int:
        done = 0
        for i in range(ops):
            t = i % terminals
            counter = next_counter[t]
            while counter.bit_count() > 16:
                counter += 1
            next_counter[t] = counter + 1
            hosts[t].working_key(
                initial_key_id + counter.to_bytes(4, "big"), "data_encrypt", "AES128"
            )
            done += 1
        return done

    def aes_initial() -> int:
        for key_id in ids:
            aes_initial_key(bdk, key_id)
        return ops

    def tdes_pin() -> int:
        for ksn in tdes_ksns:
            tdes_working_key(ipek, ksn, "pin")
        return ops

    def tdes_data() -> int:
        for ksn in tdes_ksns:
            tdes_working_key(ipek, ksn, "data_request")
        return ops

    print(f"DUKPT benchmark: {args.rounds} rounds of {ops} derivations, one core")
    print(
        f"  AES counters: median {statistics.median(c.bit_count() for c in aes_counters)} "
        f"one-bits; TDES counters: median "
        f"{statistics.median(c.bit_count() for c in tdes_counters)} one-bits"
    )
    for name, run in [
        ("aes_working_key data_encrypt AES128", aes_working),
        ("AesHostKeys 200 terminals, next KSNs", aes_host_sequential),
        ("aes_initial_key AES-128 BDK", aes_initial),
        ("tdes_working_key pin", tdes_pin),
        ("tdes_working_key data_request", tdes_data),
    ]:
        median, low, high = _rate(run, args.rounds)
        print(f"  {name:<38} {median:>10,.0f} ops/s  (min {low:,.0f}, max {high:,.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
