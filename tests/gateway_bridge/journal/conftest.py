"""Fixtures: a private PostgreSQL cluster, and one ``backend`` fixture run on both backends.

Every test that takes ``backend`` runs twice, on SQLite and on PostgreSQL: the same suite
proves the same guarantees. The PostgreSQL cluster is started once per session by
:func:`gateway_bridge.journal.pgcluster.start_private_cluster` (as user ``postgres``,
loopback only); each test gets a schema of its own. A missing server is a failure that
names the Debian package, never a skip.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway_bridge.journal.pan_crypto import JournalKeys
from gateway_bridge.journal.pgcluster import PrivateCluster
from gateway_bridge.journal.postgres import PostgresJournal
from gateway_bridge.journal.schema import TABLES
from gateway_bridge.journal.sql import SqlJournal
from gateway_bridge.journal.sqlite import SqliteJournal

KEYS = JournalKeys(pan_key=bytes(range(32)), pan_hash_key=bytes(range(100, 132)), key_id="k1")
OTHER_KEYS = JournalKeys(pan_key=bytes(range(1, 33)), pan_hash_key=bytes(range(50, 82)))


class FakeClock:
    """A settable clock (UTC), advanced by the tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


@dataclass
class Backend:
    """How a test opens journals on one backend and looks at everything stored."""

    name: str
    open: Callable[..., Awaitable[SqlJournal]]
    #: Every byte stored (SQLite: the database and WAL files; PostgreSQL: every value of
    #: every row, bytea as raw bytes).
    stored_bytes: Callable[[], Awaitable[bytes]]
    #: Run one SQL statement outside the journal (to age or corrupt a database).
    execute: Callable[[str], Awaitable[None]]


def _sqlite_backend(tmp_path: Path) -> Backend:
    path = tmp_path / "journal.db"

    async def open_journal(**kwargs: Any) -> SqlJournal:
        kwargs.setdefault("keys", KEYS)
        keys = kwargs.pop("keys")
        return await SqliteJournal.open(path, keys, **kwargs)

    async def stored_bytes() -> bytes:
        blob = b""
        for suffix in ("", "-wal", "-shm"):
            candidate = path.with_name(path.name + suffix)
            if candidate.exists():
                blob += candidate.read_bytes()
        return blob

    async def execute(sql: str) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute(sql)
        finally:
            conn.close()

    return Backend("sqlite", open_journal, stored_bytes, execute)


def _postgres_backend(cluster: PrivateCluster) -> Backend:
    schema = "t_" + uuid.uuid4().hex

    async def open_journal(**kwargs: Any) -> SqlJournal:
        kwargs.setdefault("keys", KEYS)
        keys = kwargs.pop("keys")
        return await PostgresJournal.open(cluster.dsn, keys, schema=schema, **kwargs)

    async def stored_bytes() -> bytes:
        conn = await asyncpg.connect(cluster.dsn)
        try:
            parts: list[bytes] = []
            for table in TABLES:
                for row in await conn.fetch(f'SELECT * FROM "{schema}"."{table}"'):
                    for value in row.values():
                        if isinstance(value, bytes):
                            parts.append(value)
                        else:
                            parts.append(str(value).encode())
            return b"\x00".join(parts)
        finally:
            await conn.close()

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(cluster.dsn, server_settings={"search_path": schema})
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    return Backend("postgres", open_journal, stored_bytes, execute)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return _sqlite_backend(tmp_path)
    cluster: PrivateCluster = request.getfixturevalue("pg_cluster")
    return _postgres_backend(cluster)


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Backend:
    return _sqlite_backend(tmp_path)


@pytest.fixture
def postgres_backend(pg_cluster: PrivateCluster) -> Backend:
    return _postgres_backend(pg_cluster)
