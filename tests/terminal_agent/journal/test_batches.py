"""Terminal batches in the journal (end of day, issue 7): totals per close, idempotency,
persistence across reopen, and an older database gaining the table when opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from terminal_agent.journal import TransactionJournal
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
