"""Terminal batches in the journal (end of day, issues 6 and 7): totals per close,
idempotency, persistence across reopen, an older database gaining the table when opened,
the settlement with the host, and the in-place upgrade of a version 1 journal."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from terminal_agent.journal import (
    SCHEMA_VERSION,
    Batch,
    HostTotal,
    TransactionJournal,
    UnknownBatch,
)
from terminal_agent.journal.model import BatchLine
from tests.terminal_agent.journal.test_journal import KEY, drive, run


def test_two_closes_count_each_final_transaction_once_and_survive_reopen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"

    async def first() -> None:
        async with await TransactionJournal.open(path, KEY) as journal:
            await drive(journal, "completed")
            await drive(journal, "completed")
            await drive(journal, "declined", approved=False)
            await drive(journal, "not_completed")  # not counted
            pending = await drive(journal, "card_read")  # not final yet
            one = await journal.close_batch()
            assert one.since is None
            assert one.lines == (
                BatchLine("purchase", "completed", "GBP", 2, 2468),
                BatchLine("purchase", "declined", "GBP", 1, 1234),
            )
            await journal.decline(pending)  # final after the first close: in the second
            await drive(journal, "completed")
            two = await journal.close_batch()
            assert two.batch_id == one.batch_id + 1
            assert two.since == one.closed_at and two.closed_at >= one.closed_at
            assert two.lines == (
                BatchLine("purchase", "completed", "GBP", 1, 1234),
                BatchLine("purchase", "declined", "GBP", 1, 1234),
            )
            empty = await journal.close_batch()
            assert empty.lines == ()

    async def second() -> None:
        async with await TransactionJournal.open(path, KEY) as journal:
            listed = await journal.batches()
            assert [b.batch_id for b in listed] == [3, 2, 1]
            assert sum(line.count for b in listed for line in b.lines) == 5
            assert len(await journal.batches(1)) == 1
            with pytest.raises(ValueError, match="limit"):
                await journal.batches(0)

    run(first)
    run(second)


def test_a_repeated_idempotency_key_returns_the_same_batch(tmp_path: Path) -> None:
    async def body() -> None:
        async with await TransactionJournal.open(tmp_path / "j.db", KEY) as journal:
            await drive(journal, "completed")
            one = await journal.close_batch(idempotency_key="eod-1")
            await drive(journal, "completed")
            again = await journal.close_batch(idempotency_key="eod-1")
            assert again == one and again.idempotency_key == "eod-1"
            other = await journal.close_batch(idempotency_key="eod-2")
            assert other.batch_id != one.batch_id
            assert other.lines == (BatchLine("purchase", "completed", "GBP", 1, 1234),)

    run(body)


def test_an_existing_database_without_the_table_gains_it(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def make() -> None:
        async with await TransactionJournal.open(path, KEY) as journal:
            await drive(journal, "completed")

    run(make)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE batches")  # as a database from before batches existed

    async def reopen() -> None:
        async with await TransactionJournal.open(path, KEY) as journal:
            assert await journal.batches() == []
            batch = await journal.close_batch()
            assert batch.lines == (BatchLine("purchase", "completed", "GBP", 1, 1234),)

    run(reopen)


def _as_version_1(path: Path, *, with_batches: bool) -> None:
    """Turn a journal file into what release 1 left: no settlements table, version 1
    (and, for the oldest files, no batches table either)."""
    with sqlite3.connect(path) as conn:
        conn.execute("DROP INDEX batch_settlements_state")
        conn.execute("DROP TABLE batch_settlements")
        if not with_batches:
            conn.execute("DROP TABLE batches")
        conn.execute("UPDATE schema_version SET version = 1")
    conn.close()


@pytest.mark.parametrize("with_batches", [True, False], ids=["v1", "v1-before-batches"])
def test_a_version_1_journal_is_upgraded_in_place_and_keeps_its_data(
    tmp_path: Path, with_batches: bool
) -> None:
    path = tmp_path / "j.db"

    async def make() -> tuple[int, list[Batch], int]:
        async with await TransactionJournal.open(path, KEY) as journal:
            local_id = await drive(journal, "completed")
            await drive(journal, "reversal_pending")
            old = [await journal.close_batch(idempotency_key="eod-old")] if with_batches else []
            await drive(journal, "completed")
            await journal.reserve_counter()
            return local_id, old, await journal.next_counter()

    local_id, old, counter = run(make)
    _as_version_1(path, with_batches=with_batches)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    conn.close()

    async def reopen() -> None:
        async with await TransactionJournal.open(path, KEY) as journal:
            record = await journal.get(local_id)
            assert record is not None and record.state == "completed"
            assert len(await journal.pending_reversals()) == 1
            assert await journal.next_counter() == counter
            assert await journal.batches() == old  # no settlement for the old batch
            if old:  # a batch closed before the upgrade can still go to the host
                again = await journal.close_batch(idempotency_key="eod-old", for_host=True)
                assert again.batch_id == old[0].batch_id and again.lines == old[0].lines
                assert again.host is not None and again.host.state == "pending"
            new = await journal.close_batch(for_host=True)
            count = 1 if old else 2  # what the old batch took is not counted again
            assert new.lines == (BatchLine("purchase", "completed", "GBP", count, 1234 * count),)
            assert new.host is not None and new.host.attempts == 0

    run(reopen)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("SELECT COUNT(*) FROM transactions").fetchone() == (3,)
    conn.close()
    assert SCHEMA_VERSION == 2


def test_a_settlement_is_pending_until_answered_then_kept_as_answered(tmp_path: Path) -> None:
    times = iter(datetime(2026, 5, 1, 18, m, tzinfo=UTC) for m in range(60))
    path = tmp_path / "j.db"

    async def body() -> None:
        async with await TransactionJournal.open(
            path, KEY, clock=lambda: next(times), random=lambda n: bytes(range(n))
        ) as journal:
            await drive(journal, "completed")
            plain = await journal.close_batch()
            assert plain.host is None  # not for the host: no settlement
            with pytest.raises(UnknownBatch):
                await journal.settlement_failed(plain.batch_id, "x")
            assert await journal.batch(999) is None
            batch = await journal.close_batch(idempotency_key="k", for_host=True)
            host = batch.host
            assert host is not None
            assert host.idempotency_key == f"batch-{batch.batch_id}-0001020304050607"
            assert (host.state, host.attempts, host.reason, host.status) == (
                "pending", 0, None, None
            )  # fmt: skip
            assert [b.batch_id for b in await journal.pending_settlements()] == [batch.batch_id]
            failed = await journal.settlement_failed(batch.batch_id, "no answer")
            assert failed.host is not None and (failed.host.attempts, failed.host.reason) == (
                1, "no answer"
            )  # fmt: skip
            with pytest.raises(ValueError, match="reason"):
                await journal.settlement_failed(batch.batch_id, "")
            lines = [HostTotal("purchase", "GBP", 1, 1234)]
            done = await journal.record_settlement(
                batch.batch_id, status="out_of_balance", host_batch_id="HB-1", totals=lines,
                differences=["one", "two"],
            )  # fmt: skip
            assert done.host is not None and done.host.settled
            assert (done.host.status, done.host.host_batch_id, done.host.reason) == (
                "out_of_balance", "HB-1", None
            )  # fmt: skip
            assert done.host.totals == tuple(lines) and done.host.differences == ("one", "two")
            assert done.host.attempts == 2
            # Later answers and failures do not overwrite the first answer.
            late = await journal.record_settlement(
                batch.batch_id, status="in_balance", host_batch_id="HB-2", totals=[],
                differences=[],
            )  # fmt: skip
            assert late.host == done.host
            assert (await journal.settlement_failed(batch.batch_id, "late")).host == done.host
            assert await journal.pending_settlements() == []
            same = await journal.close_batch(idempotency_key="k", for_host=True)
            assert same == done

    run(body)

    async def reopened() -> None:
        async with await TransactionJournal.open(path, KEY) as journal:
            listed = await journal.batches()
            assert [b.host.status if b.host else None for b in listed] == [
                "out_of_balance", None
            ]  # fmt: skip

    run(reopened)
