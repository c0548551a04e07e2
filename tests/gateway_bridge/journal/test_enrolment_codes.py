"""Enrolment codes in the bridge journal (issue 8), on SQLite and on PostgreSQL alike.

A code is stored only as a 32-byte digest; redeeming checks and spends it in one
transaction and re-keys the terminal's registry row in the same one. Schema version 2
adds the table; a version 1 database is upgraded when opened and keeps its rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import uuid
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway_bridge.journal import (
    SCHEMA_VERSION,
    Duplicate,
    SchemaTooNew,
    SqliteJournal,
    TerminalRegistration,
    UnknownTerminal,
)
from gateway_bridge.journal.base import (
    EnrolmentCodeRecord,
    EnrolmentRedemption,
    normalise_initial_key_id,
)
from gateway_bridge.journal.pgcluster import PrivateCluster
from gateway_bridge.journal.postgres import PostgresJournal
from gateway_bridge.journal.schema import POSTGRES_SCHEMA, SQLITE_SCHEMA
from gateway_bridge.journal.sql import SqlJournal
from tests.gateway_bridge.journal.conftest import KEYS, Backend, FakeClock
from tests.gateway_bridge.journal.test_journal import APPROVED, REGISTRATION, entry, opened, run

CODE = hashlib.sha256(b"enrolment code 4711-0815").digest()
WRONG = hashlib.sha256(b"enrolment code 4711-0816").digest()
NEW_KEY_ID = "a1b2c3d4e5f60718"
TTL = timedelta(minutes=15)


async def with_code(
    backend: Backend, clock: FakeClock, *, digest: bytes = CODE, ttl: timedelta = TTL
) -> SqlJournal:
    journal = await opened(backend, clock=clock)
    await journal.create_enrolment_code("T1", digest, clock.now + ttl, "operator@site")
    return journal


async def redeem(
    journal: SqlJournal, digest: bytes = CODE, *, max_attempts: int = 5, terminal: str = "T1"
) -> EnrolmentRedemption:
    return await journal.redeem_enrolment_code(
        terminal, digest, max_attempts=max_attempts, new_data_initial_key_id=NEW_KEY_ID
    )


# -- create, get, replace, delete ----------------------------------------------------------------


def test_create_get_replace_and_delete(backend: Backend) -> None:
    clock = FakeClock()

    async def body() -> None:
        journal = await opened(backend, clock=clock)
        try:
            with pytest.raises(UnknownTerminal):
                await journal.create_enrolment_code("T9", CODE, clock.now + TTL, "op")
            assert await journal.get_enrolment_code("T9") is None
            assert await journal.get_enrolment_code("T1") is None
            created = await journal.create_enrolment_code("T1", CODE, clock.now + TTL, "op-a")
            assert created == EnrolmentCodeRecord(
                terminal_id="T1",
                created_at=clock.now,
                expires_at=clock.now + TTL,
                used_at=None,
                failed_attempts=0,
                created_by="op-a",
            )
            assert await journal.get_enrolment_code("T1") == created
            # Spend it after one failure, then replace it: a fresh, unused code.
            assert (await redeem(journal, WRONG)).outcome == "wrong"
            assert (await redeem(journal)).outcome == "ok"
            used = await journal.get_enrolment_code("T1")
            assert used is not None and used.used_at == clock.now and used.failed_attempts == 1
            clock.advance(minutes=1)
            replaced = await journal.create_enrolment_code("T1", WRONG, clock.now + TTL, "op-b")
            assert (replaced.used_at, replaced.failed_attempts, replaced.created_by) == (
                None,
                0,
                "op-b",
            )
            assert replaced.created_at == clock.now
            assert await journal.get_enrolment_code("T1") == replaced
            assert (await redeem(journal, CODE)).outcome == "wrong"  # the old code is gone
            assert (await redeem(journal, WRONG)).outcome == "ok"
            assert await journal.delete_enrolment_code("T1") is True
            assert await journal.delete_enrolment_code("T1") is False
            assert await journal.get_enrolment_code("T1") is None
            assert await redeem(journal) == EnrolmentRedemption("unknown", None, 0)
        finally:
            await journal.close()

    run(body)


def test_create_validates_without_echoing_the_digest(backend: Backend) -> None:
    clock = FakeClock()

    async def body() -> None:
        journal = await opened(backend, clock=clock)
        try:
            for bad in (CODE[:31], CODE + b"\x00", b""):
                with pytest.raises(ValueError, match="32-byte") as info:
                    await journal.create_enrolment_code("T1", bad, clock.now + TTL, "op")
                assert CODE[:8].hex() not in str(info.value)
            as_text: Any = CODE.hex()
            with pytest.raises(ValueError, match="32-byte") as info:
                await journal.create_enrolment_code("T1", as_text, clock.now + TTL, "op")
            assert CODE.hex() not in str(info.value)
            with pytest.raises(ValueError, match="timezone"):
                await journal.create_enrolment_code(
                    "T1", CODE, clock.now.replace(tzinfo=None), "op"
                )
            with pytest.raises(ValueError, match="created_by"):
                await journal.create_enrolment_code("T1", CODE, clock.now + TTL, "")
            assert await journal.get_enrolment_code("T1") is None
        finally:
            await journal.close()

    run(body)


# -- redemption outcomes ---------------------------------------------------------------------------


def test_ok_rekeys_and_reactivates_the_terminal(backend: Backend) -> None:
    clock = FakeClock()

    async def body() -> None:
        journal = await with_code(backend, clock)
        try:
            await journal.advance_counter("T1", 41)
            await journal.set_terminal_status("T1", "suspended")
            before = await journal.get_terminal("T1")
            assert before is not None and before.last_counter == 41
            clock.advance(minutes=3)
            result = await redeem(journal)
            assert result.outcome == "ok" and result.failed_attempts == 0
            terminal = result.terminal
            assert terminal is not None
            assert terminal.data_initial_key_id == NEW_KEY_ID.upper()
            assert terminal.last_counter is None
            assert terminal.status == "active"
            assert terminal.updated_at == clock.now
            assert (terminal.merchant_id, terminal.data_bdk_id, terminal.pin_bdk_id) == (
                before.merchant_id,
                before.data_bdk_id,
                before.pin_bdk_id,
            )
            assert terminal.created_at == before.created_at
            assert await journal.get_terminal("T1") == terminal
            code = await journal.get_enrolment_code("T1")
            assert code is not None and code.used_at == clock.now
            # The counter starts again for the new initial key.
            assert await journal.advance_counter("T1", 1) is True
        finally:
            await journal.close()

    run(body)


def test_used_code_is_refused_and_changes_nothing(backend: Backend) -> None:
    clock = FakeClock()

    async def body() -> None:
        journal = await with_code(backend, clock)
        try:
            assert (await redeem(journal)).outcome == "ok"
            await journal.advance_counter("T1", 7)
            clock.advance(seconds=5)
            assert await redeem(journal) == EnrolmentRedemption("used", None, 0)
            assert await redeem(journal, WRONG) == EnrolmentRedemption("used", None, 0)
            terminal = await journal.get_terminal("T1")
            assert terminal is not None and terminal.last_counter == 7
            # Used beats expired and locked in the order of checks.
            clock.advance(hours=1)
            result = await redeem(journal, max_attempts=1)
            assert result.outcome == "used"
        finally:
            await journal.close()

    run(body)


def test_unknown_terminal_or_code(backend: Backend) -> None:
    clock = FakeClock()

    async def body() -> None:
        journal = await opened(backend, clock=clock)
        try:
            assert await redeem(journal) == EnrolmentRedemption("unknown", None, 0)
            assert await redeem(journal, terminal="T9") == EnrolmentRedemption("unknown", None, 0)
            terminal = await journal.get_terminal("T1")
            assert terminal is not None
            assert terminal.data_initial_key_id == REGISTRATION.data_initial_key_id
        finally:
            await journal.close()

    run(body)


def test_wrong_codes_count_and_lock_even_the_right_code(backend: Backend) -> None:
    clock = FakeClock()

    async def body() -> None:
        journal = await with_code(backend, clock)
        try:
            got = [await redeem(journal, WRONG, max_attempts=3) for _ in range(3)]
            assert got == [
                EnrolmentRedemption("wrong", None, 1),
                EnrolmentRedemption("wrong", None, 2),
                EnrolmentRedemption("locked", None, 3),
            ]
            assert await redeem(journal, CODE, max_attempts=3) == EnrolmentRedemption(
                "locked", None, 3
            )
            assert await redeem(journal, WRONG, max_attempts=3) == EnrolmentRedemption(
                "locked", None, 3
            )
            code = await journal.get_enrolment_code("T1")
            assert code is not None and (code.failed_attempts, code.used_at) == (3, None)
            terminal = await journal.get_terminal("T1")
            assert terminal is not None
            assert terminal.data_initial_key_id == REGISTRATION.data_initial_key_id
            # Locked beats expired.
            clock.advance(hours=1)
            assert (await redeem(journal, max_attempts=3)).outcome == "locked"
            # A caller allowing more attempts may go on (the limit is the caller's setting).
            clock.advance(hours=-1)
            assert (await redeem(journal, max_attempts=4)).outcome == "ok"
        finally:
            await journal.close()

    run(body)


def test_expiry_follows_the_journal_clock(backend: Backend) -> None:
    clock = FakeClock()

    async def body() -> None:
        journal = await with_code(backend, clock, ttl=timedelta(minutes=10))
        try:
            clock.advance(minutes=10)  # expires_at <= now: expired
            assert await redeem(journal) == EnrolmentRedemption("expired", None, 0)
            assert await redeem(journal, WRONG) == EnrolmentRedemption("expired", None, 0)
            code = await journal.get_enrolment_code("T1")
            assert code is not None and (code.failed_attempts, code.used_at) == (0, None)
            clock.advance(microseconds=-1)  # one microsecond before: still good
            assert (await redeem(journal, WRONG)).outcome == "wrong"
            result = await redeem(journal)
            assert result.outcome == "ok" and result.failed_attempts == 1
        finally:
            await journal.close()

    run(body)


def test_redeem_validates_its_arguments(backend: Backend) -> None:
    clock = FakeClock()

    async def body() -> None:
        journal = await with_code(backend, clock)
        try:
            with pytest.raises(ValueError, match="32-byte") as info:
                await redeem(journal, CODE[:16])
            assert CODE[:16].hex() not in str(info.value)
            for limit in (0, -1, True):
                with pytest.raises(ValueError, match="max_attempts"):
                    await redeem(journal, max_attempts=limit)
            for key_id in ("a1b2c3d4e5f6071", "a1b2c3d4e5f6071g", "", "a1b2c3d4e5f607180"):
                with pytest.raises(ValueError, match="16 hex"):
                    await journal.redeem_enrolment_code(
                        "T1", CODE, max_attempts=5, new_data_initial_key_id=key_id
                    )
            code = await journal.get_enrolment_code("T1")
            assert code is not None and (code.failed_attempts, code.used_at) == (0, None)
        finally:
            await journal.close()

    run(body)


def test_initial_key_id_validation_is_shared_with_registration() -> None:
    assert normalise_initial_key_id("ffff9876543210e0") == "FFFF9876543210E0"
    bad: Any = 0xFFFF9876543210E0
    for value in ("ffff9876543210e", "ffff9876543210eX", bad):
        with pytest.raises(ValueError, match="16 hex"):
            normalise_initial_key_id(value)
        with pytest.raises(ValueError, match="16 hex"):
            TerminalRegistration("T1", "M1", value, "d", "p")
    assert TerminalRegistration("T1", "M1", "abcdef0123456789", "d", "p").data_initial_key_id == (
        "ABCDEF0123456789"
    )


# -- concurrency -----------------------------------------------------------------------------------


def test_two_bridges_redeeming_one_code_exactly_one_ok(backend: Backend) -> None:
    """Two journals (two bridges) on one database, redeeming the right code at once."""
    clock = FakeClock()

    async def body() -> list[EnrolmentRedemption]:
        first = await with_code(backend, clock)
        second = await backend.open(clock=clock)
        try:
            return list(
                await asyncio.gather(
                    *[redeem(journal) for _ in range(6) for journal in (first, second)]
                )
            )
        finally:
            await first.close()
            await second.close()

    results = run(body)
    outcomes = sorted(r.outcome for r in results)
    assert outcomes == ["ok"] + ["used"] * 11
    (ok,) = [r for r in results if r.outcome == "ok"]
    assert ok.terminal is not None and ok.terminal.data_initial_key_id == NEW_KEY_ID.upper()


def test_two_redeems_at_once(backend: Backend) -> None:
    """The brief's case exactly: two redeems at the same moment, one "ok", one "used"."""
    clock = FakeClock()

    async def body() -> list[list[str]]:
        first = await opened(backend, clock=clock)
        second = await backend.open(clock=clock)
        rounds: list[list[str]] = []
        try:
            for _ in range(5):
                await first.create_enrolment_code("T1", CODE, clock.now + TTL, "op")
                pair = await asyncio.gather(redeem(first), redeem(second))
                rounds.append(sorted(r.outcome for r in pair))
        finally:
            await first.close()
            await second.close()
        return rounds

    assert run(body) == [["ok", "used"]] * 5


def test_concurrent_wrong_codes_are_all_counted_and_lock_at_the_limit(backend: Backend) -> None:
    clock = FakeClock()

    async def body() -> tuple[list[EnrolmentRedemption], EnrolmentCodeRecord | None]:
        first = await with_code(backend, clock)
        second = await backend.open(clock=clock)
        try:
            results = await asyncio.gather(
                *[
                    redeem(journal, WRONG, max_attempts=5)
                    for _ in range(6)
                    for journal in (first, second)
                ]
            )
            return list(results), await first.get_enrolment_code("T1")
        finally:
            await first.close()
            await second.close()

    results, code = run(body)
    counted = sorted(r.failed_attempts for r in results if r.outcome == "wrong")
    assert counted == [1, 2, 3, 4]  # no lost update: each failure saw its own count
    reached = [r for r in results if r.outcome == "locked" and r.failed_attempts == 5]
    assert len(results) == 12 and len(reached) == 12 - 4
    assert code is not None and code.failed_attempts == 5


# -- what is never shown ---------------------------------------------------------------------------


def test_the_digest_never_appears_in_records_or_reprs(backend: Backend) -> None:
    clock = FakeClock()

    async def body() -> list[object]:
        journal = await with_code(backend, clock)
        try:
            shown: list[object] = [await journal.get_enrolment_code("T1")]
            shown.append(await redeem(journal, WRONG))
            shown.append(await redeem(journal))
            shown.append(await journal.get_enrolment_code("T1"))
            shown.append(
                await journal.create_enrolment_code("T1", CODE, clock.now + TTL, "operator")
            )
            shown.append(journal)
            return shown
        finally:
            await journal.close()

    shown = run(body)
    assert {f.name for f in fields(EnrolmentCodeRecord)}.isdisjoint({"code", "code_digest"})
    assert {f.name for f in fields(EnrolmentRedemption)}.isdisjoint({"code", "code_digest"})
    assert any(isinstance(item, EnrolmentRedemption) and item.outcome == "ok" for item in shown)
    for item in shown:
        for text in (repr(item), str(item)):
            for secret in (CODE, WRONG):
                assert secret.hex() not in text.lower()
                assert repr(secret) not in text
                assert secret.hex()[:16] not in text.lower()


# -- schema version 2 and the upgrade of a version 1 database --------------------------------------


def test_a_version_1_database_upgrades_and_keeps_its_rows(backend: Backend) -> None:
    """Rows written by the journal, then the database taken back to version 1 exactly (the
    version 1 schema is today's minus the tables added since: ``enrolment_codes`` in 2,
    ``terminal_batches`` in 3), then reopened."""
    clock = FakeClock()

    async def body() -> None:
        journal = await opened(backend, clock=clock)
        await journal.begin_authorization(entry())
        await journal.complete_authorization("T1", "k1", APPROVED)
        await journal.advance_counter("T1", 41)
        before = await journal.get_terminal("T1")
        await journal.close()
        for table in _SINCE_V1:
            await backend.execute(f"DROP TABLE {table}")
        await backend.execute("UPDATE schema_version SET version = 1")

        upgraded = await backend.open(clock=clock)
        try:
            assert await upgraded.get_terminal("T1") == before
            again = await upgraded.begin_authorization(entry())
            assert (
                isinstance(again, Duplicate) and again.response_payload == APPROVED.response_payload
            )
            assert await upgraded.advance_counter("T1", 41) is False
            await upgraded.create_enrolment_code("T1", CODE, clock.now + TTL, "op")
            assert (await redeem(upgraded)).outcome == "ok"
        finally:
            await upgraded.close()
        # The stored version is now the current one; 99 is refused.
        await backend.execute("UPDATE schema_version SET version = 99")
        with pytest.raises(SchemaTooNew) as info:
            await backend.open()
        assert (info.value.found, info.value.supported) == (99, SCHEMA_VERSION)

    run(body)


#: The tables added after schema version 1.
_SINCE_V1 = ("enrolment_codes", "terminal_batches")


def _v1(statements: list[str]) -> list[str]:
    old = [s for s in statements if not any(table in s for table in _SINCE_V1)]
    assert len(old) == len(statements) - len(_SINCE_V1)
    return old


_V1_TERMINAL = (
    "INSERT INTO terminals (terminal_id, merchant_id, status, data_initial_key_id, "
    "data_bdk_id, pin_bdk_id, last_counter, last_seen_at, created_at, updated_at) VALUES "
    "('T1', 'M1', 'active', 'FFFF9876543210E0', 'bdk-data', 'bdk-pin', 17, "
    "'2025-02-01T08:00:00.000000Z', '2025-01-01T08:00:00.000000Z', "
    "'2025-02-01T08:00:00.000000Z')"
)


def test_sqlite_database_made_by_the_version_1_statements_upgrades(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN")
        for statement in _v1(SQLITE_SCHEMA):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        conn.execute(_V1_TERMINAL)
        conn.execute("COMMIT")
    finally:
        conn.close()
    clock = FakeClock()

    async def body() -> None:
        journal = await SqliteJournal.open(path, KEYS, clock=clock)
        try:
            await _check_upgraded(journal, clock)
        finally:
            await journal.close()

    run(body)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        # The foreign key holds on SQLite too.
        conn.execute("PRAGMA foreign_keys = ON")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO enrolment_codes (terminal_id, code_digest, created_at, expires_at,"
                " created_by) VALUES ('T9', x'00', 'a', 'b', 'c')"
            )
    finally:
        conn.close()


def test_postgres_database_made_by_the_version_1_statements_upgrades(
    pg_cluster: PrivateCluster,
) -> None:
    schema = "v1_" + uuid.uuid4().hex
    clock = FakeClock()

    async def body() -> None:
        conn = await asyncpg.connect(pg_cluster.dsn)
        try:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
            await conn.execute(f'SET search_path = "{schema}"')
            async with conn.transaction():
                for statement in _v1(POSTGRES_SCHEMA):
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version (version) VALUES (1)")
                await conn.execute(_V1_TERMINAL)
            journal = await PostgresJournal.open(pg_cluster.dsn, KEYS, schema=schema, clock=clock)
            try:
                await _check_upgraded(journal, clock)
            finally:
                await journal.close()
            assert await conn.fetchval("SELECT version FROM schema_version") == SCHEMA_VERSION
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await conn.execute(
                    "INSERT INTO enrolment_codes (terminal_id, code_digest, created_at,"
                    " expires_at, created_by) VALUES ('T9', '\\x00', now(), now(), 'c')"
                )
        finally:
            await conn.close()

    run(body)


async def _check_upgraded(journal: SqlJournal, clock: FakeClock) -> None:
    terminal = await journal.get_terminal("T1")
    assert terminal is not None
    assert (terminal.last_counter, terminal.data_initial_key_id) == (17, "FFFF9876543210E0")
    assert terminal.created_at.isoformat() == "2025-01-01T08:00:00+00:00"
    assert await journal.advance_counter("T1", 17) is False
    assert await journal.get_enrolment_code("T1") is None
    await journal.create_enrolment_code("T1", CODE, clock.now + TTL, "op")
    result = await redeem(journal)
    assert result.outcome == "ok" and result.terminal is not None
    assert result.terminal.last_counter is None


def test_a_version_2_database_opens_unchanged(backend: Backend) -> None:
    """Reopening at the current version runs no statement again: codes stay as they were."""
    clock = FakeClock()

    async def body() -> None:
        journal = await with_code(backend, clock)
        await redeem(journal, WRONG)
        await journal.close()
        reopened = await backend.open(clock=clock)
        try:
            code = await reopened.get_enrolment_code("T1")
            assert code is not None and code.failed_attempts == 1
        finally:
            await reopened.close()

    run(body)
