"""Journal throughput: authorisations per second, each a begin + complete pair (DESIGN 6).

The bridge must sustain 1,000 authorisations/s on a 2-core machine, and each needs two
durable journal writes: ``begin_authorization`` (write-ahead, before the acquirer) and
``complete_authorization`` (with the response payload). ``--tasks`` asyncio tasks (200)
each run pairs back to back for ``--seconds``; the figure is completed pairs per second.

- SQLite: WAL, ``synchronous=FULL``, one writer thread with group commit; also prints the
  mean writes per commit.
- PostgreSQL: a private cluster started with the same helper the tests use
  (:mod:`gateway_bridge.journal.pgcluster`, fsync on), or ``--dsn`` for a running server;
  ``--no-postgres`` skips it.

    python bench/bench_journal.py [--seconds S] [--tasks N] [--dsn DSN] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

try:
    from gateway_bridge.journal import (
        AuthorizationEntry,
        AuthorizationOutcome,
        JournalKeys,
        New,
        SqliteJournal,
        TerminalRegistration,
        request_digest,
    )
except ModuleNotFoundError:  # run as a script: the repo root is not on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from gateway_bridge.journal import (
        AuthorizationEntry,
        AuthorizationOutcome,
        JournalKeys,
        New,
        SqliteJournal,
        TerminalRegistration,
        request_digest,
    )
from gateway_bridge.journal.sql import SqlJournal
from paycore.pan import Pan

TARGET = 1_000
KEYS = JournalKeys(pan_key=os.urandom(32), pan_hash_key=os.urandom(32))
PAN = Pan("4000056655665556")
RESPONSE = b'{"response_code":"00","approved":true,"authorization_code":"123456"}' * 3
APPROVED = AuthorizationOutcome("approved", RESPONSE, "00", "123456", "H1")
TERMINALS = 50


async def _pairs(journal: SqlJournal, tasks: int, seconds: float) -> tuple[int, list[float]]:
    for t in range(TERMINALS):
        await journal.register_terminal(
            TerminalRegistration(f"T{t}", "M1", f"{t:016X}", "bdk-data", "bdk-pin")
        )
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    run_id = uuid.uuid4().hex[:8]

    async def worker(w: int) -> int:
        done = 0
        terminal = f"T{w % TERMINALS}"
        while time.perf_counter() < deadline:
            key = f"{run_id}-{w}-{done}"
            start = time.perf_counter()
            entry = AuthorizationEntry(
                terminal_id=terminal,
                merchant_id="M1",
                idempotency_key=key,
                message_id=uuid.uuid4().hex,
                request_digest=request_digest(key.encode()),
                transaction_type="purchase",
                amount=1000 + done,
                currency="EUR",
                pan=PAN,
                stan=done % 999_999 + 1,
            )
            result = await journal.begin_authorization(entry)
            if not isinstance(result, New):
                raise RuntimeError("benchmark key was not new")
            await journal.complete_authorization(terminal, key, APPROVED)
            latencies.append(time.perf_counter() - start)
            done += 1
        return done

    counts = await asyncio.gather(*[worker(w) for w in range(tasks)])
    return sum(counts), latencies


def _report(
    name: str, pairs: int, seconds: float, latencies: list[float], extra: str = ""
) -> float:
    rate = pairs / seconds
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0
    median = statistics.median(latencies) if latencies else 0.0
    verdict = "ok" if rate >= TARGET else f"BELOW the {TARGET}/s target"
    print(
        f"{name:<34} {rate:8.0f} pairs/s ({2 * rate:6.0f} writes/s)  "
        f"pair median {median * 1e3:6.2f} ms  p99 {p99 * 1e3:6.2f} ms  {verdict}{extra}"
    )
    return rate


async def _sqlite(tasks: int, seconds: float) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as directory:
        journal = await SqliteJournal.open(Path(directory) / "journal.db", KEYS)
        try:
            before = journal.commit_stats
            start = time.perf_counter()
            pairs, latencies = await _pairs(journal, tasks, seconds)
            elapsed = time.perf_counter() - start
            groups, jobs = (a - b for a, b in zip(journal.commit_stats, before, strict=True))
        finally:
            await journal.close()
    extra = f"  ({jobs / max(groups, 1):.1f} writes per commit)"
    return _report("SQLite WAL synchronous=FULL", pairs, elapsed, latencies, extra)


async def _postgres(dsn: str, tasks: int, seconds: float, pool: int) -> float:
    from gateway_bridge.journal.postgres import PostgresJournal

    schema = "bench_" + uuid.uuid4().hex[:12]
    journal = await PostgresJournal.open(dsn, KEYS, schema=schema, min_size=pool, max_size=pool)
    try:
        start = time.perf_counter()
        pairs, latencies = await _pairs(journal, tasks, seconds)
        elapsed = time.perf_counter() - start
    finally:
        await journal.close()
    return _report(f"PostgreSQL (asyncpg pool {pool})", pairs, elapsed, latencies)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--pool", type=int, default=20, help="PostgreSQL pool size")
    parser.add_argument("--dsn", help="a running PostgreSQL server (default: start one)")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)

    print(f"journal: begin+complete pairs, {args.tasks} concurrent tasks, {args.seconds:g} s")
    asyncio.run(_sqlite(args.tasks, args.seconds))
    if args.no_postgres:
        return 0
    if args.dsn:
        asyncio.run(_postgres(args.dsn, args.tasks, args.seconds, args.pool))
        return 0
    from gateway_bridge.journal.pgcluster import PostgresNotInstalled, start_private_cluster

    try:
        cluster = start_private_cluster()
    except PostgresNotInstalled as exc:
        print(f"PostgreSQL: not measured ({exc})")
        return 0
    with cluster:
        asyncio.run(_postgres(cluster.dsn, args.tasks, args.seconds, args.pool))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
