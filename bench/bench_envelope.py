"""Envelope open on the bridge's hot path: DUKPT derivation + AES-GCM + model validation.

Prints operations per second (median of several rounds, one core). The aim for issue 2:
at least 10,000 envelope opens per second on one core of a 2-core machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime

from pydantic import SecretStr

from paycore.dukpt import AesHostKeys, AesOriginator, aes_initial_key
from paycore.pan import Pan
from paycore.wire import (
    AuthorizationRequest,
    EncryptedPinBlock,
    decode_envelope,
    open_envelope,
    seal,
    working_key,
)

NOW = 1_790_000_000_000


def _request(stan: int) -> AuthorizationRequest:
    return AuthorizationRequest(
        transaction_type="purchase",
        amount=1234,
        currency="EUR",
        idempotency_key=f"bench:{stan}",
        stan=stan,
        terminal_time=datetime(2026, 11, 28, tzinfo=UTC),
        pan=Pan("4761739001010010"),
        pan_sequence_number="01",
        expiry="2812",
        track2_equivalent=SecretStr("4761739001010010D28122011143804400000F"),
        emv_data="9F2608A1B2C3D4E5F607189F2701809F100706011203A000009F3704AABBCCDD"
        "9F3602000195050000000000" + "9A032611289C01009F02060000000012345F2A020978",
        cvm="online_pin",
        pin_block=EncryptedPinBlock(
            format=4, ksn="1234567890123456000000A1", block=SecretStr("A9" * 16)
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envelopes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    initial_key = aes_initial_key(bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1"), bytes(8))
    # Terminals in the field sit at all sorts of counters: start at a random one.
    rng = random.Random(7)
    originator = AesOriginator(initial_key, bytes(8), next_counter=rng.randrange(1, 1 << 20))
    payloads = []
    for i in range(args.envelopes):
        tx = originator.next_transaction()
        env = seal(
            _request(i % 999_999 + 1),
            key=tx.working_key("data_encrypt", "AES128"),
            terminal_id="T0001",
            ksn=tx.ksn,
            message_id=f"{i:032x}",
            sent_at=NOW,
            ttl_ms=15_000,
        )
        payloads.append(env.to_json())

    print(
        f"envelope open, {args.rounds} rounds of {len(payloads)}, payload {len(payloads[0])} bytes"
    )
    for name, cached in [
        ("uncached derivation (aes_working_key)", False),
        ("per-terminal AesHostKeys (bridge path)", True),
    ]:
        rates = []
        for _ in range(args.rounds):
            key_source: bytes | AesHostKeys = (
                AesHostKeys(initial_key, bytes(8)) if cached else initial_key
            )
            start = time.perf_counter()
            for payload in payloads:
                env = decode_envelope(payload)
                open_envelope(env, key=working_key(key_source, env), now=NOW)
            rates.append(len(payloads) / (time.perf_counter() - start))
        print(
            f"  {name:<40} {statistics.median(rates):>8,.0f} opens/s "
            f"(min {min(rates):,.0f}, max {max(rates):,.0f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
