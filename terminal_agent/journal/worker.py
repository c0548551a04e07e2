"""One thread owning the journal's SQLite connection; an async front for the event loop.

The terminal writes a few rows per sale, so one connection in one thread does reads and
writes alike: each job runs inside its own ``BEGIN IMMEDIATE`` ... ``COMMIT`` (WAL with
``synchronous=FULL`` makes the log durable at every commit) and the caller's future is
resolved only after the COMMIT returned. A job that wiped sensitive data asks for a
``wal_checkpoint(TRUNCATE)`` after its commit, so that the old page images holding the
encrypted body leave the WAL file too (``secure_delete`` zeroes them in the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from terminal_agent.journal.errors import (
    JournalClosed,
    JournalError,
    JournalUnavailable,
)

T = TypeVar("T")
log = logging.getLogger(__name__)
_BUSY_TIMEOUT_MS = 5_000


class Tx:
    """What a job sees: the connection, and a flag to ask for a WAL truncation."""

    __slots__ = ("conn", "wiped")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.wiped = False


@dataclass(slots=True)
class _Job(Generic[T]):
    fn: Callable[[Tx], T]
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop


def wrap_error(exc: BaseException) -> JournalError:
    """A journal error for whatever a job raised (journal errors pass unchanged)."""
    if isinstance(exc, JournalError):
        return exc
    if isinstance(exc, sqlite3.OperationalError):
        error: JournalError = JournalUnavailable(f"journal database unavailable: {exc}")
    else:
        error = JournalError(f"journal database error: {type(exc).__name__}")
    error.__cause__ = exc
    return error


def connect(path: Path) -> sqlite3.Connection:
    """Open ``path`` in WAL mode, ``synchronous=FULL``, ``secure_delete=ON``."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"journal database refused WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


class Worker:
    """Runs jobs one at a time, each in its own transaction, in a dedicated thread."""

    def __init__(self, path: Path, *, name: str = "terminal-journal") -> None:
        self._path = path
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[Tx], T]) -> asyncio.Future[T]:
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
            conn = connect(self._path)
        except Exception as exc:  # noqa: BLE001 - every error goes to the waiting callers
            error = wrap_error(exc)
            while (job := self._queue.get()) is not None:
                _deliver(job, False, error)
            return
        try:
            while (job := self._queue.get()) is not None:
                ok, value = self._run(conn, job)
                _deliver(job, ok, value)
        finally:
            conn.close()

    @staticmethod
    def _run(conn: sqlite3.Connection, job: _Job[Any]) -> tuple[bool, Any]:
        tx = Tx(conn)
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = job.fn(tx)
            conn.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - every error goes to the waiting caller
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            return False, wrap_error(exc)
        if tx.wiped:
            try:
                busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error as exc:
                busy, reason = 1, type(exc).__name__
            else:
                reason = "busy"
            if busy:  # the commit stands; the next wipe truncates the WAL again
                log.warning("journal WAL truncation after a wipe did not complete (%s)", reason)
        return True, result


def _deliver(job: _Job[Any], ok: bool, value: object) -> None:
    def resolve() -> None:
        if job.future.done():
            return
        if ok:
            job.future.set_result(value)
        elif isinstance(value, BaseException):
            job.future.set_exception(value)

    # A closed loop raises RuntimeError: nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        job.loop.call_soon_threadsafe(resolve)
