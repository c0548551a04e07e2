"""The journal on PostgreSQL through an asyncpg pool: for several bridges (DESIGN 6).

The same programs as SQLite (:mod:`gateway_bridge.journal.sql`) with the same semantics:
idempotency is the ``UNIQUE (terminal_id, idempotency_key)`` constraint, hit by
``INSERT ... ON CONFLICT DO NOTHING RETURNING id``; when it returns no row, a second
statement reads the existing row. Under READ COMMITTED the insert waits for a concurrent
uncommitted insert of the same key and then does nothing, and the following statement
(a new snapshot) sees the committed row, so exactly one caller gets ``New`` however
many bridges race. ``advance_counter`` is one conditional ``UPDATE``.

A program with one write runs as autocommit statements; one with several writes runs in a
transaction. Durability is PostgreSQL's (``synchronous_commit`` as the server is set; its
WAL writer groups concurrent commits on its own).

``schema`` puts the tables in a schema of their own (created if missing) through the
connections' ``search_path``. Schema creation takes an advisory lock, so bridges starting
together do not race.

Nothing of track 2, PIN blocks or CVV is stored; see :mod:`gateway_bridge.journal.base`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from gateway_bridge.journal.base import (
    JournalClosed,
    JournalError,
    JournalUnavailable,
    SchemaTooNew,
)
from gateway_bridge.journal.pan_crypto import JournalKeys
from gateway_bridge.journal.schema import POSTGRES_SCHEMA, SCHEMA_VERSION
from gateway_bridge.journal.sql import (
    Clock,
    Program,
    Random,
    Row,
    SqlJournal,
    default_random,
    utc_now,
)

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: Advisory lock key taken while the schema is created or checked ("pos-jrnl").
_MIGRATION_LOCK = 0x706F732D6A726E6C
_TRANSIENT_SQLSTATES = ("40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300")


def _wrap(exc: BaseException) -> JournalError:
    """A journal error for an asyncpg or socket failure; never echoes parameters."""
    if isinstance(exc, JournalError):
        return exc
    sqlstate = getattr(exc, "sqlstate", None)
    transient = (
        isinstance(
            exc,
            OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError,
        )
        or sqlstate in _TRANSIENT_SQLSTATES
    )
    name = type(exc).__name__
    if transient:
        return JournalUnavailable(f"journal database unavailable ({name})")
    return JournalError(f"journal database error ({name}, SQLSTATE {sqlstate})")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's default reset query (one round trip saved per use).

    The journal leaves nothing in a session to reset: no session advisory locks (only
    ``pg_advisory_xact_lock``), no LISTEN, no cursors, no SET; transactions are always
    closed by their context manager.
    """


def _is_write(sql: str) -> bool:
    return not sql.lstrip().upper().startswith("SELECT")


class PostgresJournal(SqlJournal):
    """The journal in a PostgreSQL database. Open with :meth:`open`."""

    def __init__(
        self, pool: asyncpg.Pool, keys: JournalKeys, *, clock: Clock, random: Random
    ) -> None:
        super().__init__(keys, clock=clock, random=random)
        self._pool = pool
        self._closed = False

    @classmethod
    async def open(
        cls,
        dsn: str,
        keys: JournalKeys,
        *,
        schema: str | None = None,
        min_size: int = 2,
        max_size: int = 10,
        command_timeout: float = 10.0,
        clock: Clock = utc_now,
        random: Random = default_random,
    ) -> PostgresJournal:
        """Connect a pool to ``dsn`` and create or check the schema.

        Raises :class:`SchemaTooNew` for a database from a newer release and
        :class:`JournalUnavailable` when the server cannot be reached.
        """
        settings: dict[str, str] = {}
        if schema is not None:
            if not _SCHEMA_NAME.fullmatch(schema):
                raise ValueError("schema must be a lower-case SQL identifier")
            settings["search_path"] = schema
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                command_timeout=command_timeout,
                server_settings=settings,
                reset=_keep_session,
            )
        except Exception as exc:
            raise _wrap(exc) from exc
        try:
            async with pool.acquire() as conn:
                await _migrate(conn, schema)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, Exception):
                raise _wrap(exc) from exc
            raise
        return cls(pool, keys, clock=clock, random=random)

    async def __aenter__(self) -> PostgresJournal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._pool.close()

    async def _transact(self, program: Program) -> list[list[Row]]:
        if self._closed:
            raise JournalClosed("the journal is closed")
        atomic = sum(1 for step in program if _is_write(step.sql)) > 1
        try:
            async with self._pool.acquire() as conn:
                if atomic:
                    async with conn.transaction():
                        return await _run(conn, program)
                return await _run(conn, program)
        except Exception as exc:
            raise _wrap(exc) from exc

    async def _query(self, sql: str, args: Sequence[object]) -> list[Row]:
        if self._closed:
            raise JournalClosed("the journal is closed")
        try:
            async with self._pool.acquire() as conn:
                return [dict(r) for r in await conn.fetch(sql, *args)]
        except Exception as exc:
            raise _wrap(exc) from exc

    def _ts(self, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("journal timestamps must be timezone-aware")
        return value

    def _dt(self, value: object) -> datetime:
        if not isinstance(value, datetime):
            raise JournalError("stored timestamp has an unexpected type")
        return value


async def _run(conn: asyncpg.pool.PoolConnectionProxy[Any], program: Program) -> list[list[Row]]:
    results: list[list[Row]] = []
    for step in program:
        if step.when is not None:
            index, must_have_rows = step.when
            if bool(results[index]) != must_have_rows:
                results.append([])
                continue
        results.append([dict(r) for r in await conn.fetch(step.sql, *step.args)])
    return results


async def _migrate(conn: asyncpg.pool.PoolConnectionProxy[Any], schema: str | None) -> None:
    """Create the schema if missing, upgrade an older one (every statement is ``IF NOT
    EXISTS``: existing rows stay), refuse a newer one; one transaction, under the lock."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        if schema is not None:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
        if exists:
            found = await conn.fetchval("SELECT MAX(version) FROM schema_version")
            found = int(found) if found is not None else 0
            if found > SCHEMA_VERSION:
                raise SchemaTooNew(found, SCHEMA_VERSION)
            if found == SCHEMA_VERSION:
                return
        for statement in POSTGRES_SCHEMA:
            await conn.execute(statement)
        await conn.execute("DELETE FROM schema_version")
        await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", SCHEMA_VERSION)
