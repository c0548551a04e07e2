"""SQLite specifics: WAL + synchronous=FULL, group commit, one writer thread."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway_bridge.journal import JournalError, New, SqliteJournal
from gateway_bridge.journal.sqlite import format_ts, parse_ts
from tests.gateway_bridge.journal.conftest import KEYS
from tests.gateway_bridge.journal.test_journal import REGISTRATION, entry


def test_wal_and_synchronous_full(tmp_path: Path) -> None:
    async def body() -> tuple[Any, Any]:
        journal = await SqliteJournal.open(tmp_path / "j.db", KEYS)
        try:
            sync = await journal._writer.submit(
                lambda c: c.execute("PRAGMA synchronous").fetchone()[0]
            )
            mode = await journal._writer.submit(
                lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]
            )
            return sync, mode
        finally:
            await journal.close()

    assert asyncio.run(body()) == (2, "wal")  # 2 is FULL


def test_group_commit_batches_and_each_await_follows_its_commit(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def body() -> tuple[int, int]:
        journal = await SqliteJournal.open(path, KEYS)
        await journal.register_terminal(REGISTRATION)
        outside = sqlite3.connect(path)
        not_durable: list[str] = []

        async def one(i: int) -> None:
            key = f"g{i}"
            result = await journal.begin_authorization(entry(key))
            assert isinstance(result, New)
            # The await has returned: another connection must already see the commit.
            row = outside.execute(
                "SELECT 1 FROM authorizations WHERE idempotency_key = ?", (key,)
            ).fetchone()
            if row is None:
                not_durable.append(key)

        try:
            before = journal.commit_stats
            await asyncio.gather(*[one(i) for i in range(400)])
            groups, jobs = journal.commit_stats
            assert not_durable == []
            return groups - before[0], jobs - before[1]
        finally:
            outside.close()
            await journal.close()

    groups, jobs = asyncio.run(body())
    assert jobs == 400
    assert groups <= jobs / 4, f"{jobs} writes in {groups} commits: no group commit"


def test_a_failing_write_does_not_fail_its_group(tmp_path: Path) -> None:
    async def body() -> list[object]:
        journal = await SqliteJournal.open(tmp_path / "j.db", KEYS)
        await journal.register_terminal(REGISTRATION)
        try:
            bad = entry("bad", transaction_type="bogus")  # violates the CHECK constraint
            entries = [entry(f"ok{i}") for i in range(30)]
            entries.insert(15, bad)
            return await asyncio.gather(
                *[journal.begin_authorization(e) for e in entries], return_exceptions=True
            )
        finally:
            await journal.close()

    results = asyncio.run(body())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], JournalError)
    assert "CHECK constraint" in str(errors[0])
    assert sum(isinstance(r, New) for r in results) == 30


def test_refuses_a_database_that_cannot_do_wal(tmp_path: Path) -> None:
    async def body() -> None:
        await SqliteJournal.open(":memory:", KEYS)

    with pytest.raises(JournalError, match="WAL"):
        asyncio.run(body())


def test_open_error_names_the_problem(tmp_path: Path) -> None:
    async def body() -> None:
        await SqliteJournal.open(tmp_path / "missing-dir" / "j.db", KEYS)

    with pytest.raises(JournalError, match="unavailable"):
        asyncio.run(body())


def test_synchronous_setting_is_checked(tmp_path: Path) -> None:
    async def body() -> None:
        await SqliteJournal.open(tmp_path / "j.db", KEYS, synchronous="OFF")  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="synchronous"):
        asyncio.run(body())


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(9998, 12, 31),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    )
)
def test_timestamps_round_trip_and_sort(value: datetime) -> None:
    text = format_ts(value)
    assert parse_ts(text) == value
    later = value + timedelta(microseconds=1)
    assert format_ts(later) > text


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_ts(datetime(2025, 1, 1))
