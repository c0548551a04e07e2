"""PostgreSQL specifics: many bridges on one database, unreachable servers, schemas."""

from __future__ import annotations

import asyncio

import pytest

from gateway_bridge.journal import JournalUnavailable, New
from gateway_bridge.journal.pgcluster import PrivateCluster
from gateway_bridge.journal.postgres import PostgresJournal
from tests.gateway_bridge.journal.conftest import KEYS, Backend
from tests.gateway_bridge.journal.test_journal import REGISTRATION, entry


def test_three_bridges_racing_on_many_keys(postgres_backend: Backend) -> None:
    """Three pools, 20 keys, 10 racers per key per bridge: one New per key, no more."""

    async def body() -> None:
        journals = [await postgres_backend.open(max_size=8) for _ in range(3)]
        await journals[0].register_terminal(REGISTRATION)
        try:
            calls = [
                j.begin_authorization(entry(f"key{k}"))
                for _ in range(10)
                for k in range(20)
                for j in journals
            ]
            results = await asyncio.gather(*calls)
            news = [r.entry_id for r in results if isinstance(r, New)]
            assert len(news) == 20
            assert len(set(news)) == 20
        finally:
            for journal in journals:
                await journal.close()

    asyncio.run(body())


def test_unreachable_server_is_transient() -> None:
    async def body() -> None:
        await PostgresJournal.open("postgresql://postgres@127.0.0.1:1/postgres", KEYS)

    with pytest.raises(JournalUnavailable, match="unavailable"):
        asyncio.run(body())


def test_schema_name_is_checked(pg_cluster: PrivateCluster) -> None:
    async def body() -> None:
        await PostgresJournal.open(pg_cluster.dsn, KEYS, schema='x"; DROP TABLE t; --')

    with pytest.raises(ValueError, match="identifier"):
        asyncio.run(body())


def test_bridges_starting_together_create_the_schema_once(pg_cluster: PrivateCluster) -> None:
    async def body() -> None:
        opened = await asyncio.gather(
            *[PostgresJournal.open(pg_cluster.dsn, KEYS, schema="racing_start") for _ in range(4)]
        )
        for journal in opened:
            await journal.close()

    asyncio.run(body())
