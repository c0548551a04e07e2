"""The journal on SQLite: WAL, ``synchronous=FULL``, one writer thread, group commit.

DESIGN section 6. One dedicated thread owns the only writing connection. Callers on the
event loop hand it a program (:class:`~gateway_bridge.journal.sql.Step` list) and await a
future. The thread takes every program waiting in its queue (up to ``max_batch``), runs
them all inside one ``BEGIN IMMEDIATE`` ... ``COMMIT`` and only then resolves their
futures: *group commit*. Programs that arrive while a commit is being made durable are
the next group, so under load one fsync covers many writes, and each caller's await still
returns only after the COMMIT that holds its write is on disk (WAL with
``synchronous=FULL`` syncs the log at every commit).

If a program fails inside a group, the group is rolled back and its programs are run
again one per transaction, so one bad write cannot take its neighbours with it. Programs
are pure functions of the database state (times, nonces and ciphertexts are computed on
the caller's side before submission), which makes the retry safe.

Reads go to a second thread with its own connection (WAL readers never block the
writer). A cancelled await does not un-write: the program was already queued.

Nothing of track 2, PIN blocks or CVV is stored; see :mod:`gateway_bridge.journal.base`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import re
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from gateway_bridge.journal.base import (
    JournalClosed,
    JournalError,
    JournalUnavailable,
    SchemaTooNew,
)
from gateway_bridge.journal.pan_crypto import JournalKeys
from gateway_bridge.journal.schema import SCHEMA_VERSION, SQLITE_SCHEMA
from gateway_bridge.journal.sql import (
    Clock,
    Program,
    Random,
    Row,
    SqlJournal,
    default_random,
    utc_now,
)

T = TypeVar("T")
Synchronous = Literal["FULL", "NORMAL", "EXTRA"]

_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_PLACEHOLDER = re.compile(r"\$(\d+)")
_BUSY_TIMEOUT_MS = 10_000


@functools.lru_cache(maxsize=512)
def _to_sqlite(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


def format_ts(value: datetime) -> str:
    """Fixed-width UTC text that sorts in time order (refuses naive datetimes)."""
    if value.tzinfo is None:
        raise ValueError("journal timestamps must be timezone-aware")
    # The same text as strftime(_TS_FORMAT), at half the cost (this runs per write).
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_ts(value: str) -> datetime:
    # fromisoformat reads the trailing Z since Python 3.11; strptime is ten times slower.
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(slots=True)
class _Job(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop


def _wrap(exc: Exception) -> JournalError:
    if isinstance(exc, JournalError):
        return exc
    if isinstance(exc, sqlite3.OperationalError):
        error: JournalError = JournalUnavailable(f"journal database unavailable: {exc}")
    else:
        error = JournalError(f"journal database error: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


class _Worker:
    """A thread owning one connection; runs jobs in groups, one transaction per group."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        *,
        begin: str,
        max_batch: int,
    ) -> None:
        self._connect = connect
        self._begin = begin
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        #: How many groups were committed and how many jobs they held (for tests/bench).
        self.groups = 0
        self.jobs = 0
        self._thread.start()

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        if self._closed:
            raise JournalClosed("the journal is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, future, loop))
        return future

    async def stop(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

    # -- the thread ---------------------------------------------------------------------

    def _main(self) -> None:
        try:
            conn = self._connect()
        except Exception as exc:  # noqa: BLE001 - every error goes to the waiting callers
            self._fail_all(_wrap(exc))
            return
        try:
            self._serve(conn)
        finally:
            conn.close()

    def _fail_all(self, error: JournalError) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._deliver([(job, False, error)])

    def _serve(self, conn: sqlite3.Connection) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            group: list[_Job[Any]] = [first]
            while len(group) < self._max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                group.append(job)
            self._deliver(self._run_group(conn, group))

    def _run_group(
        self, conn: sqlite3.Connection, group: list[_Job[Any]]
    ) -> list[tuple[_Job[Any], bool, Any]]:
        try:
            conn.execute(self._begin)
            results = [job.fn(conn) for job in group]
            conn.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - every error goes to the waiting callers
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if len(group) == 1:
                return [(group[0], False, _wrap(exc))]
            # One failure must not fail its neighbours: run each on its own.
            return [item for job in group for item in self._run_group(conn, [job])]
        self.groups += 1
        self.jobs += len(group)
        return [(job, True, result) for job, result in zip(group, results, strict=True)]

    @staticmethod
    def _deliver(items: list[tuple[_Job[Any], bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job[Any], bool, Any]]] = {}
        for item in items:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, batch in by_loop.items():
            # A closed loop raises RuntimeError: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, batch)


def _resolve(items: list[tuple[_Job[Any], bool, Any]]) -> None:
    for job, ok, value in items:
        if job.future.done():
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


def _run_program(program: Program) -> Callable[[sqlite3.Connection], list[list[Row]]]:
    def run(conn: sqlite3.Connection) -> list[list[Row]]:
        results: list[list[Row]] = []
        for step in program:
            if step.when is not None:
                index, must_have_rows = step.when
                if bool(results[index]) != must_have_rows:
                    results.append([])
                    continue
            results.append(_fetch(conn, step.sql, step.args))
        return results

    return run


def _fetch(conn: sqlite3.Connection, sql: str, args: Sequence[object]) -> list[Row]:
    cursor = conn.execute(_to_sqlite(sql), tuple(args))
    rows = cursor.fetchall()
    if not rows:
        return []
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in rows]


def _connect(path: Path, synchronous: Synchronous) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise JournalError(f"journal database refused WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        # As PostgreSQL does: enrolment_codes.terminal_id references terminals.
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    return connect


def _migrate(conn: sqlite3.Connection) -> int:
    """Create the schema if missing, upgrade an older one (the statements are all
    ``IF NOT EXISTS``: existing rows stay), refuse a newer one. Runs in the writer's
    transaction, so an upgrade is all or nothing."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists:
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        found = int(row[0]) if row and row[0] is not None else 0
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(found, SCHEMA_VERSION)
        if found == SCHEMA_VERSION:
            return found
    for statement in SQLITE_SCHEMA:
        conn.execute(statement)
    conn.execute("DELETE FROM schema_version")
    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    return SCHEMA_VERSION


class SqliteJournal(SqlJournal):
    """The journal in one SQLite file. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(
        self,
        path: Path,
        keys: JournalKeys,
        *,
        writer: _Worker,
        reader: _Worker,
        clock: Clock,
        random: Random,
    ) -> None:
        super().__init__(keys, clock=clock, random=random)
        self.path = path
        self._writer = writer
        self._reader = reader

    @classmethod
    async def open(
        cls,
        path: str | Path,
        keys: JournalKeys,
        *,
        synchronous: Synchronous = "FULL",
        max_batch: int = 512,
        clock: Clock = utc_now,
        random: Random = default_random,
    ) -> SqliteJournal:
        """Open (creating if needed) the journal at ``path``.

        Raises :class:`SchemaTooNew` for a database from a newer release.
        """
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, EXTRA or NORMAL")
        path = Path(path)
        connect = _connect(path, synchronous)
        writer = _Worker("journal-writer", connect, begin="BEGIN IMMEDIATE", max_batch=max_batch)
        try:
            await writer.submit(_migrate)
        except BaseException:
            await writer.stop()
            raise
        reader = _Worker("journal-reader", connect, begin="BEGIN", max_batch=64)
        return cls(path, keys, writer=writer, reader=reader, clock=clock, random=random)

    async def __aenter__(self) -> SqliteJournal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def commit_stats(self) -> tuple[int, int]:
        """(groups committed, writes in them): writes per group shows group commit working."""
        return self._writer.groups, self._writer.jobs

    async def close(self) -> None:
        await self._writer.stop()
        await self._reader.stop()

    async def _transact(self, program: Program) -> list[list[Row]]:
        return await self._writer.submit(_run_program(program))

    async def _query(self, sql: str, args: Sequence[object]) -> list[Row]:
        return await self._reader.submit(lambda conn: _fetch(conn, sql, args))

    def _ts(self, value: datetime) -> str:
        return format_ts(value)

    def _dt(self, value: object) -> datetime:
        return parse_ts(str(value))
