"""The terminal journal (terminal_agent.journal): state machine, counters, recovery,
card data wiped from the files, concurrent use. Real SQLite files in tmp_path."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from pydantic import SecretStr

from paycore.dukpt import AesOriginator
from paycore.errors import KeyExhausted
from paycore.pan import Pan
from paycore.wire import REVEAL, AuthorizationRequest, EncryptedPinBlock
from terminal_agent.journal import (
    FINAL_STATES,
    SCHEMA_VERSION,
    STATES,
    TRANSITIONS,
    BodyUnavailable,
    CardData,
    CardOutcome,
    CounterExhausted,
    DuplicateTransaction,
    HostAnswer,
    IllegalTransition,
    JournalClosed,
    SchemaTooNew,
    State,
    TransactionJournal,
    TransactionRecord,
    UnknownTransaction,
    next_usable_counter,
)
from tests.vectors import load

T = TypeVar("T")
KEY = bytes(range(32))
PAN = load("luhn_test_pans")["test_pans"][0]["pan"]
TRACK2 = f"{PAN}D28122011234567890"
PIN_BLOCK = "8F3A2C19D04E7B6615A0C3E9F2D1B4A7"
REPO = Path(__file__).resolve().parents[3]


def run(body: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await body()

    return asyncio.run(main())


def request_body(key: str = "k-1") -> bytes:
    request = AuthorizationRequest(
        transaction_type="purchase",
        amount=1234,
        currency="GBP",
        idempotency_key=key,
        stan=17,
        terminal_time=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        pan=Pan(PAN),
        expiry="2812",
        track2_equivalent=SecretStr(TRACK2),
        emv_data="9F2608A1B2C3D4E5F60718",
        cvm="online_pin",
        pin_block=EncryptedPinBlock(
            format=4, ksn="9A1100020000000100000001", block=SecretStr(PIN_BLOCK)
        ),
    )
    return request.model_dump_json(context=REVEAL).encode()


CARD = CardData(
    masked_pan=Pan(PAN).masked,
    aid="A0000000031010",
    application_label="VISA CREDIT",
    tvr="0000008000",
    tsi="E800",
    arqc="A1B2C3D4E5F60718",
    cvm="online_pin",
)


async def new(journal: TransactionJournal, key: str | None = None) -> int:
    record = await journal.create(
        idempotency_key=key or f"k-{secrets.token_hex(6)}",
        transaction_type="purchase",
        amount=1234,
        currency="GBP",
        ecr_reference="till-1/42",
    )
    return record.local_id


async def drive(journal: TransactionJournal, target: State, *, approved: bool = True) -> int:
    """A new transaction brought to ``target`` along the normal path."""
    local_id = await new(journal)
    if target == "created":
        return local_id
    if target == "not_completed":
        await journal.not_completed(local_id)
        return local_id
    await journal.card_read(local_id, CARD)
    if target == "card_read":
        return local_id
    if target == "declined" and not approved:
        await journal.decline(local_id)
        return local_id
    await journal.pin_captured(local_id)
    if target == "pin_captured":
        return local_id
    await journal.mark_sent(local_id, request_body(f"b-{local_id}"))
    await journal.add_message_id(local_id, secrets.token_hex(16))
    if target == "sent":
        return local_id
    if target in ("reversal_pending", "reversed"):
        await journal.queue_reversal(local_id, "host_timeout")
        if target == "reversed":
            await journal.mark_reversed(local_id)
        return local_id
    await journal.responded(
        local_id,
        HostAnswer(
            approved=target != "declined",
            response_code="00" if target != "declined" else "51",
            authorization_code="AB12CD",
            host_reference="R1",
        ),
    )
    if target == "responded":
        return local_id
    if target == "declined":
        await journal.decline(local_id)
    else:
        await journal.complete(local_id, CardOutcome(tc="0102030405060708"))
    return local_id


def step(journal: TransactionJournal, local_id: int, target: State) -> Awaitable[object]:
    calls: dict[State, Callable[[], Awaitable[object]]] = {
        "created": lambda: journal.create(
            idempotency_key=f"x-{local_id}", transaction_type="refund", amount=1, currency="EUR"
        ),
        "card_read": lambda: journal.card_read(local_id, CARD),
        "pin_captured": lambda: journal.pin_captured(local_id),
        "sent": lambda: journal.mark_sent(local_id, b"{}"),
        "responded": lambda: journal.responded(local_id, HostAnswer(True, "00")),
        "completed": lambda: journal.complete(local_id, CardOutcome(tc="00")),
        "declined": lambda: journal.decline(local_id),
        "not_completed": lambda: journal.not_completed(local_id),
        "reversal_pending": lambda: journal.queue_reversal(local_id, "cancelled"),
        "reversed": lambda: journal.mark_reversed(local_id),
    }
    return calls[target]()


def test_a_sale_goes_through_every_state_with_its_data(tmp_path: Path) -> None:
    async def body() -> TransactionRecord | None:
        async with await TransactionJournal.open(tmp_path / "j.db", KEY) as journal:
            local_id = await new(journal, "sale-1")
            await journal.card_read(local_id, CARD)
            await journal.pin_captured(local_id)
            await journal.mark_sent(local_id, request_body("sale-1"))
            first, second = secrets.token_hex(16), secrets.token_hex(16)
            await journal.add_message_id(local_id, first)
            await journal.add_message_id(local_id, second)
            assert await journal.request_body(local_id) == request_body("sale-1")
            await journal.responded(
                local_id,
                HostAnswer(True, "00", "AB12CD", "HR000001", correlation_id=first),
            )
            await journal.complete(local_id, CardOutcome(tc="1122334455667788", tsi="F800"))
            found = await journal.by_message_id(second)
            assert found is not None and found.local_id == local_id
            assert await journal.by_idempotency_key("sale-1") == found
            return await journal.get(local_id, history=True)

    record = run(body)
    assert record is not None
    assert record.state == "completed" and record.final
    assert [s for s, _ in record.history] == [
        "created", "card_read", "pin_captured", "sent", "responded", "completed",
    ]  # fmt: skip
    assert len(record.message_ids) == 2 and record.reversal_target == record.message_ids[0]
    assert record.masked_pan == Pan(PAN).masked and PAN not in repr(record)
    assert (record.aid, record.application_label, record.tvr) == (
        "A0000000031010", "VISA CREDIT", "0000008000",
    )  # fmt: skip
    assert (record.tsi, record.arqc, record.tc, record.cvm) == (
        "F800", "A1B2C3D4E5F60718", "1122334455667788", "online_pin",
    )  # fmt: skip
    assert (record.approved, record.response_code, record.authorization_code) == (
        True, "00", "AB12CD",
    )  # fmt: skip
    assert record.host_reference == "HR000001" and record.ecr_reference == "till-1/42"
    assert not record.has_body
    assert record.created_at <= record.updated_at


def test_every_transition_outside_the_table_is_refused(tmp_path: Path) -> None:
    async def body() -> int:
        refused = 0
        async with await TransactionJournal.open(tmp_path / "j.db", KEY) as journal:
            for state in STATES:
                local_id = await drive(journal, state, approved=state != "declined")
                assert (await journal.get(local_id)) is not None
                for target in STATES:
                    if target == "created" or target in TRANSITIONS[state]:
                        continue
                    with pytest.raises(IllegalTransition) as caught:
                        await step(journal, local_id, target)
                    assert (caught.value.current, caught.value.wanted) == (state, target)
                    record = await journal.get(local_id)
                    assert record is not None and record.state == state
                    refused += 1
            # A host approval is reversed, never declined; a host decline never completes.
            approved = await drive(journal, "responded")
            with pytest.raises(IllegalTransition):
                await journal.decline(approved)
            declined_id = await new(journal)
            await journal.card_read(declined_id, CARD)
            await journal.mark_sent(declined_id, b"{}")
            await journal.responded(declined_id, HostAnswer(False, "05"))
            with pytest.raises(IllegalTransition):
                await journal.complete(declined_id, CardOutcome(tc="00"))
            # Message ids only while sent (requests) or reversal_pending (reversals).
            with pytest.raises(IllegalTransition):
                await journal.add_message_id(approved, secrets.token_hex(16))
            with pytest.raises(UnknownTransaction):
                await journal.pin_captured(99_999)
        return refused

    expected = sum(len(STATES) - 1 - len(TRANSITIONS[s]) for s in STATES)
    assert run(body) == expected
    assert {"completed", "declined", "not_completed", "reversed"} == FINAL_STATES


def test_idempotency_key_is_unique(tmp_path: Path) -> None:
    async def body() -> None:
        async with await TransactionJournal.open(tmp_path / "j.db", KEY) as journal:
            first = await new(journal, "same")
            with pytest.raises(DuplicateTransaction) as caught:
                await new(journal, "same")
            assert caught.value.local_id == first
            with pytest.raises(ValueError, match="amount"):
                await journal.create(
                    idempotency_key="z", transaction_type="purchase", amount=0, currency="GBP"
                )

    run(body)


def test_counters_are_durable_across_reopen_and_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def reserve(n: int, key_id: str = "data") -> list[int]:
        async with await TransactionJournal.open(path, KEY) as journal:
            return [await journal.reserve_counter(key_id) for _ in range(n)]

    first = run(lambda: reserve(3))
    second = run(lambda: reserve(3))
    assert first == [1, 2, 3] and second == [4, 5, 6]
    assert run(lambda: reserve(1, "D47A000100000001")) == [1]  # another key, its own counter

    # The originator agrees on which counters are usable (X9.24-3: at most 16 one-bits).
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE dukpt_counters SET next_counter = ? WHERE key_id = 'data'", (0x7FFF8001,)
        )
    (skipped,) = run(lambda: reserve(1))
    originator = AesOriginator(bytes(16), bytes(8), next_counter=0x7FFF8001)
    assert skipped == originator.next_transaction().counter == 0x80000000
    assert next_usable_counter(0x7FFF8001) == 0x80000000

    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE dukpt_counters SET next_counter = ? WHERE key_id = 'data'", (0xFFFF0001,)
        )
    with pytest.raises(CounterExhausted) as caught:
        run(lambda: reserve(1))
    assert isinstance(caught.value, KeyExhausted)


def test_a_reserved_counter_survives_a_crash(tmp_path: Path) -> None:
    """The process dies right after the reservation returns (no close): never reused."""
    path = tmp_path / "j.db"
    script = (
        "import asyncio, os, sys\n"
        "from terminal_agent.journal import TransactionJournal\n"
        "async def main():\n"
        f"    j = await TransactionJournal.open({str(path)!r}, bytes(range(32)))\n"
        "    c = [await j.reserve_counter() for _ in range(4)]\n"
        "    print(c[-1], flush=True)\n"
        "    os._exit(0)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    last = int(done.stdout.strip())

    async def body() -> int:
        async with await TransactionJournal.open(path, KEY) as journal:
            return await journal.reserve_counter()

    assert last == 4 and run(body) == last + 1


def test_recovery_reverses_what_the_host_may_have_approved(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def before() -> dict[str, int]:
        async with await TransactionJournal.open(path, KEY) as journal:
            ids = {
                state: await drive(journal, state)
                for state in ("created", "card_read", "pin_captured", "sent", "responded",
                              "completed", "reversal_pending")
            }  # fmt: skip
            ids["host_declined"] = await new(journal)
            await journal.card_read(ids["host_declined"], CARD)
            await journal.mark_sent(ids["host_declined"], b"{}")
            await journal.responded(ids["host_declined"], HostAnswer(False, "51"))
            return ids

    ids = run(before)

    async def after() -> None:
        async with await TransactionJournal.open(path, KEY) as journal:
            recovery = await journal.recover()
            assert set(recovery.reversals_queued) == {ids["sent"], ids["responded"]}
            assert recovery.declined == (ids["host_declined"],)
            assert set(recovery.abandoned) == {
                ids["created"],
                ids["card_read"],
                ids["pin_captured"],
            }
            pending = await journal.pending_reversals()
            assert [r.local_id for r in pending] == sorted(
                [ids["sent"], ids["responded"], ids["reversal_pending"]]
            )
            for record in pending:
                assert not record.has_body
                assert record.reversal_target is not None
                assert record.reversal_target == record.message_ids[0]
            assert {r.reversal_reason for r in pending} == {"terminal_error", "host_timeout"}
            completed = await journal.get(ids["completed"])
            assert completed is not None and completed.state == "completed"
            # A second recovery finds nothing more to do.
            again = await journal.recover()
            assert again.reversals_queued == again.declined == again.abandoned == ()
            # The reversal envelope ids are journaled; the bridge's answer closes it.
            reversal_id = secrets.token_hex(16)
            await journal.add_message_id(ids["sent"], reversal_id, role="reversal")
            record = await journal.mark_reversed(ids["sent"])
            assert record.state == "reversed" and record.reversal_message_ids == (reversal_id,)
            assert ids["sent"] not in [r.local_id for r in await journal.pending_reversals()]

    run(after)


def _files(path: Path) -> bytes:
    return b"".join(
        p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


@pytest.mark.parametrize("ending", ["completed", "reversal_pending", "declined"])
def test_no_card_data_is_left_in_the_files(tmp_path: Path, ending: str) -> None:
    path = tmp_path / "j.db"
    secrets_found: list[bytes] = [PAN.encode(), TRACK2.encode(), PIN_BLOCK.encode()]

    async def body() -> None:
        async with await TransactionJournal.open(path, KEY) as journal:
            local_id = await new(journal, "wipe-me")
            await journal.card_read(local_id, CARD)
            await journal.pin_captured(local_id)
            await journal.mark_sent(local_id, request_body("wipe-me"))
            await journal.add_message_id(local_id, secrets.token_hex(16))
            with sqlite3.connect(path) as peek:
                (blob,) = peek.execute(
                    "SELECT request_body FROM transactions WHERE id = ?", (local_id,)
                ).fetchone()
            stored = _files(path)
            assert bytes(blob)[20:60] in stored  # the grep below can see the encrypted body
            for needle in secrets_found:
                assert needle not in stored  # never stored in the clear
            secrets_found.append(bytes(blob)[20:60])
            if ending == "reversal_pending":
                await journal.queue_reversal(local_id, "host_timeout")
            else:
                await journal.responded(
                    local_id,
                    HostAnswer(ending == "completed", "00" if ending == "completed" else "05"),
                )
                if ending == "completed":
                    await journal.complete(local_id, CardOutcome(tc="0102030405060708"))
                else:
                    await journal.decline(local_id)
            with pytest.raises(BodyUnavailable):
                await journal.request_body(local_id)

    run(body)
    leftover = _files(path)
    for needle in secrets_found:
        assert needle not in leftover
    assert Pan(PAN).masked.encode() in leftover  # the masked PAN is what remains


def test_the_body_opens_only_under_its_key_and_row(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def body() -> None:
        async with await TransactionJournal.open(path, KEY) as journal:
            a, b = await new(journal, "a"), await new(journal, "b")
            for local_id in (a, b):
                await journal.card_read(local_id, CARD)
                await journal.mark_sent(local_id, request_body(str(local_id)))
        with sqlite3.connect(path) as conn:  # move a's ciphertext under b's row
            conn.execute(
                "UPDATE transactions SET request_body ="
                " (SELECT request_body FROM transactions WHERE id = ?) WHERE id = ?",
                (a, b),
            )
        async with await TransactionJournal.open(path, KEY) as journal:
            assert await journal.request_body(a) == request_body(str(a))
            with pytest.raises(BodyUnavailable):
                await journal.request_body(b)
        async with await TransactionJournal.open(path, bytes(32)) as journal:
            with pytest.raises(BodyUnavailable):
                await journal.request_body(a)

    run(body)


def test_concurrent_use(tmp_path: Path) -> None:
    async def body() -> tuple[list[int], list[TransactionRecord]]:
        async with await TransactionJournal.open(tmp_path / "j.db", KEY) as journal:

            async def sale(n: int) -> int:
                local_id = await new(journal, f"c-{n}")
                await journal.card_read(local_id, CARD)
                await journal.mark_sent(local_id, request_body(f"c-{n}"))
                counters = [await journal.reserve_counter() for _ in range(3)]
                for _ in counters:
                    await journal.add_message_id(local_id, secrets.token_hex(16))
                await journal.responded(
                    local_id, HostAnswer(n % 2 == 0, "00" if n % 2 == 0 else "05")
                )
                if n % 2 == 0:
                    await journal.complete(local_id, CardOutcome(tc="00"))
                else:
                    await journal.decline(local_id)
                return counters[0]

            results = await asyncio.gather(*(sale(n) for n in range(20)))
            extra = await asyncio.gather(*(journal.reserve_counter() for _ in range(40)))
            return [*results, *extra], await journal.recent(100)

    counters, records = run(body)
    assert len(records) == 20
    assert [r.local_id for r in records] == sorted((r.local_id for r in records), reverse=True)
    assert all(len(r.message_ids) == 3 for r in records)
    assert {r.state for r in records} == {"completed", "declined"}
    assert len(set(counters)) == len(counters)


def test_recent_filters_by_state(tmp_path: Path) -> None:
    async def body() -> None:
        async with await TransactionJournal.open(tmp_path / "j.db", KEY) as journal:
            done = await drive(journal, "completed")
            await drive(journal, "not_completed")
            listed = await journal.recent(10, state="completed")
            assert [r.local_id for r in listed] == [done]
            assert len(await journal.recent(1)) == 1
            with pytest.raises(ValueError, match="limit"):
                await journal.recent(0)

    run(body)


def test_schema_version_and_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def open_close() -> None:
        journal = await TransactionJournal.open(path, KEY)
        await journal.close()
        with pytest.raises(JournalClosed):
            await journal.reserve_counter()

    run(open_close)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaTooNew):
        run(lambda: TransactionJournal.open(path, KEY))
    with pytest.raises(ValueError, match="journal key"):
        run(lambda: TransactionJournal.open(tmp_path / "k.db", b"short"))
