"""The journal's guarantees (DESIGN section 6), run on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from gateway_bridge.journal import (
    AuthorizationEntry,
    AuthorizationOutcome,
    AuthorizationQuery,
    Conflict,
    Duplicate,
    InFlight,
    InvalidTransition,
    JournalClosed,
    New,
    PanDecryptError,
    ReversalEntry,
    SchemaTooNew,
    TerminalExists,
    TerminalRegistration,
    UnknownEntry,
    UnknownTerminal,
    request_digest,
)
from gateway_bridge.journal.schema import SCHEMA_VERSION
from gateway_bridge.journal.sql import SqlJournal
from paycore.pan import Pan
from paycore.wire import AuthorizationRequest, EncryptedPinBlock
from tests.gateway_bridge.journal.conftest import OTHER_KEYS, Backend, FakeClock
from tests.vectors import load

T = TypeVar("T")

PANS = [entry["pan"] for entry in load("luhn_test_pans")["test_pans"] if len(entry["pan"]) >= 13]
PAN = Pan(PANS[0])
OTHER_PAN = Pan(PANS[1])
TRACK2 = f"{PAN.digits}D28121010000000000F"
PIN_BLOCK = "0123456789ABCDEF0123456789ABCDEF"
PAYLOAD = bytes(range(256)) + b"\x00\r\n{}"


def run(body: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await body()

    return asyncio.run(main())


def entry(
    key: str = "k1", *, body: bytes = b"request", terminal: str = "T1", **kw: Any
) -> AuthorizationEntry:
    fields: dict[str, Any] = {
        "terminal_id": terminal,
        "merchant_id": "M1",
        "idempotency_key": key,
        "message_id": (key.encode().hex() + "0" * 32)[:32],
        "request_digest": request_digest(body),
        "transaction_type": "purchase",
        "amount": 1234,
        "currency": "EUR",
        "pan": PAN,
        "stan": 7,
    }
    fields.update(kw)
    return AuthorizationEntry(**fields)


def reversal(key: str = "r1", *, original: str = "k1", body: bytes = b"rev") -> ReversalEntry:
    return ReversalEntry(
        terminal_id="T1",
        merchant_id="M1",
        idempotency_key=key,
        message_id=(key.encode().hex() + "f" * 32)[:32],
        original_message_id=(original.encode().hex() + "0" * 32)[:32],
        reason="host_timeout",
        amount=1234,
        currency="EUR",
        request_digest=request_digest(body),
    )


REGISTRATION = TerminalRegistration(
    terminal_id="T1",
    merchant_id="M1",
    data_initial_key_id="ffff9876543210e0",
    data_bdk_id="bdk-data",
    pin_bdk_id="bdk-pin",
)


async def opened(backend: Backend, **kw: Any) -> SqlJournal:
    journal = await backend.open(**kw)
    await journal.register_terminal(REGISTRATION)
    return journal


APPROVED = AuthorizationOutcome(
    "approved", PAYLOAD, response_code="00", authorization_code="A1B2C3", host_reference="H42"
)

# -- terminal registry -------------------------------------------------------------------------


def test_registry_register_get_list_status(backend: Backend) -> None:
    clock = FakeClock()

    async def body() -> None:
        journal = await opened(backend, clock=clock)
        try:
            record = await journal.get_terminal("T1")
            assert record is not None
            assert record.data_initial_key_id == "FFFF9876543210E0"
            assert (record.status, record.last_counter, record.last_seen_at) == (
                "active",
                None,
                None,
            )
            assert record.created_at == clock.now
            with pytest.raises(TerminalExists):
                await journal.register_terminal(REGISTRATION)
            await journal.register_terminal(
                TerminalRegistration("T0", "M2", "0011223344556677", "d", "p", status="suspended")
            )
            assert [t.terminal_id for t in await journal.list_terminals()] == ["T0", "T1"]
            assert [t.terminal_id for t in await journal.list_terminals("suspended")] == ["T0"]
            clock.advance(seconds=5)
            await journal.set_terminal_status("T1", "revoked")
            after = await journal.get_terminal("T1")
            assert after is not None
            assert (after.status, after.updated_at) == ("revoked", clock.now)
            with pytest.raises(UnknownTerminal):
                await journal.set_terminal_status("nope", "active")
            assert await journal.get_terminal("nope") is None
        finally:
            await journal.close()

    run(body)


def test_advance_counter_only_grows(backend: Backend) -> None:
    clock = FakeClock()

    async def body() -> None:
        journal = await opened(backend, clock=clock)
        try:
            assert await journal.advance_counter("T1", 0) is True  # first one, even 0
            assert await journal.advance_counter("T1", 0) is False  # replay
            assert await journal.advance_counter("T1", 9) is True
            clock.advance(seconds=1)
            assert await journal.advance_counter("T1", 5) is False  # old counter
            record = await journal.get_terminal("T1")
            assert record is not None
            assert record.last_counter == 9
            assert record.last_seen_at == clock.now - timedelta(seconds=1)
            assert await journal.advance_counter("T1", 2**32 - 1) is True
            with pytest.raises(UnknownTerminal):
                await journal.advance_counter("T9", 1)
            with pytest.raises(ValueError, match="non-negative"):
                await journal.advance_counter("T1", -1)
        finally:
            await journal.close()

    run(body)


def test_concurrent_advance_of_one_counter_accepts_it_once(backend: Backend) -> None:
    async def body() -> None:
        journal = await opened(backend)
        try:
            results = await asyncio.gather(*[journal.advance_counter("T1", 77) for _ in range(50)])
            assert results.count(True) == 1
            counters = list(range(1, 101))
            random.Random(5).shuffle(counters)
            await asyncio.gather(*[journal.advance_counter("T1", 200 + c) for c in counters])
            record = await journal.get_terminal("T1")
            assert record is not None
            assert record.last_counter == 300
        finally:
            await journal.close()

    run(body)


# -- idempotency -------------------------------------------------------------------------------


def test_begin_new_inflight_duplicate_conflict(backend: Backend) -> None:
    async def body() -> None:
        journal = await opened(backend)
        try:
            first = await journal.begin_authorization(entry())
            assert isinstance(first, New)
            assert await journal.begin_authorization(entry()) == InFlight(first.entry_id)
            await journal.mark_sent("T1", "k1")
            assert await journal.begin_authorization(entry()) == InFlight(first.entry_id)
            await journal.complete_authorization("T1", "k1", APPROVED)
            again = await journal.begin_authorization(entry())
            assert isinstance(again, Duplicate)
            assert again.response_payload == PAYLOAD  # byte for byte
            assert again.entry_id == first.entry_id
            other = await journal.begin_authorization(entry(body=b"another request"))
            assert other == Conflict(first.entry_id)
            # The same key on another terminal is another entry.
            await journal.register_terminal(
                TerminalRegistration("T2", "M1", "0011223344556677", "d", "p")
            )
            assert isinstance(await journal.begin_authorization(entry(terminal="T2")), New)
        finally:
            await journal.close()

    run(body)


def test_many_concurrent_begins_of_one_key_give_exactly_one_new(backend: Backend) -> None:
    async def body() -> None:
        journal = await opened(backend)
        try:
            results = await asyncio.gather(
                *[journal.begin_authorization(entry()) for _ in range(200)]
            )
            assert sum(isinstance(r, New) for r in results) == 1
            assert all(isinstance(r, New | InFlight) for r in results)
            # Racing requests with different digests: one New, same-digest ones InFlight,
            # the others Conflict.
            mixed = [entry("k2", body=b"a" if i % 2 else b"b") for i in range(100)]
            results = await asyncio.gather(*[journal.begin_authorization(e) for e in mixed])
            winners = [i for i, r in enumerate(results) if isinstance(r, New)]
            assert len(winners) == 1
            parity = winners[0] % 2
            for i, r in enumerate(results):
                if i != winners[0]:
                    assert isinstance(r, InFlight if i % 2 == parity else Conflict)
        finally:
            await journal.close()

    run(body)


def test_two_journals_on_one_database_give_exactly_one_new(backend: Backend) -> None:
    async def body() -> None:
        one = await opened(backend)
        two = await backend.open()
        try:
            journals = [one, two] * 60
            results = await asyncio.gather(*[j.begin_authorization(entry()) for j in journals])
            assert sum(isinstance(r, New) for r in results) == 1
            counters = await asyncio.gather(*[j.advance_counter("T1", 5) for j in journals])
            assert counters.count(True) == 1
        finally:
            await one.close()
            await two.close()

    run(body)


# -- the authorisation state machine ---------------------------------------------------------


def test_state_machine_refuses_bad_transitions(backend: Backend) -> None:
    clock = FakeClock()

    async def body() -> None:
        journal = await opened(backend, clock=clock)
        try:
            await journal.begin_authorization(entry())
            clock.advance(milliseconds=3)
            await journal.mark_sent("T1", "k1")
            with pytest.raises(InvalidTransition, match="is sent, not received"):
                await journal.mark_sent("T1", "k1")
            clock.advance(milliseconds=40)
            await journal.complete_authorization("T1", "k1", APPROVED)
            with pytest.raises(InvalidTransition):
                await journal.complete_authorization("T1", "k1", APPROVED)
            with pytest.raises(UnknownEntry):
                await journal.mark_sent("T1", "missing")
            with pytest.raises(UnknownEntry):
                await journal.complete_authorization("T1", "missing", APPROVED)
            record = await journal.get_authorization("T1", "k1")
            assert record is not None
            assert record.state == "approved"
            assert (record.response_code, record.authorization_code, record.host_reference) == (
                "00",
                "A1B2C3",
                "H42",
            )
            assert record.sent_at is not None and record.completed_at is not None
            assert record.completed_at - record.received_at == timedelta(milliseconds=43)
            assert record.masked_pan == PAN.masked
            assert record.response_payload == PAYLOAD
            # received -> declined directly (the bridge may skip "sent").
            await journal.begin_authorization(entry("k2"))
            declined = AuthorizationOutcome("declined", b"no", response_code="05")
            await journal.complete_authorization("T1", "k2", declined)
            second = await journal.get_authorization("T1", "k2")
            assert second is not None
            assert (second.state, second.sent_at) == ("declined", None)
        finally:
            await journal.close()

    run(body)


def test_outcome_must_be_final() -> None:
    with pytest.raises(ValueError, match="final"):
        AuthorizationOutcome("sent", b"")  # type: ignore[arg-type]


def test_queries_filter_and_order(backend: Backend) -> None:
    clock = FakeClock()

    async def body() -> None:
        journal = await opened(backend, clock=clock)
        await journal.register_terminal(
            TerminalRegistration("T2", "M2", "0011223344556677", "d", "p")
        )
        try:
            start = clock.now
            for i in range(6):
                clock.advance(minutes=10)
                terminal = "T1" if i % 2 == 0 else "T2"
                merchant = "M1" if terminal == "T1" else "M2"
                await journal.begin_authorization(
                    entry(f"q{i}", terminal=terminal, merchant_id=merchant)
                )
                if i < 4:
                    state = "approved" if i % 3 else "declined"
                    outcome = AuthorizationOutcome(state, b"r")  # type: ignore[arg-type]
                    await journal.complete_authorization(terminal, f"q{i}", outcome)
            everything = await journal.query_authorizations(AuthorizationQuery())
            assert [r.idempotency_key for r in everything] == [f"q{i}" for i in range(5, -1, -1)]
            t1 = await journal.query_authorizations(AuthorizationQuery(terminal_id="T1"))
            assert [r.idempotency_key for r in t1] == ["q4", "q2", "q0"]
            m2 = await journal.query_authorizations(AuthorizationQuery(merchant_id="M2"))
            assert {r.terminal_id for r in m2} == {"T2"}
            window = await journal.query_authorizations(
                AuthorizationQuery(
                    since=start + timedelta(minutes=20), until=start + timedelta(minutes=40)
                )
            )
            assert [r.idempotency_key for r in window] == ["q2", "q1"]
            declined = await journal.query_authorizations(AuthorizationQuery(state="declined"))
            assert [r.idempotency_key for r in declined] == ["q3", "q0"]
            limited = await journal.query_authorizations(AuthorizationQuery(limit=2))
            assert [r.idempotency_key for r in limited] == ["q5", "q4"]
            combined = await journal.query_authorizations(
                AuthorizationQuery(terminal_id="T2", state="approved", limit=1)
            )
            assert [r.idempotency_key for r in combined] == ["q1"]
            assert all(r.masked_pan == PAN.masked for r in everything)
            assert not hasattr(everything[0], "pan")
            stale = await journal.in_flight_authorizations(start + timedelta(minutes=55))
            assert [r.idempotency_key for r in stale] == ["q4"]
            later = await journal.in_flight_authorizations(
                start + timedelta(hours=2), since=start + timedelta(minutes=55)
            )
            assert [r.idempotency_key for r in later] == ["q5"]
            found = await journal.find_authorization("T1", entry("q2").message_id)
            assert found is not None and found.idempotency_key == "q2"
            assert await journal.find_authorization("T1", "0" * 32) is None
        finally:
            await journal.close()

    run(body)


def test_query_validation() -> None:
    with pytest.raises(ValueError, match="limit"):
        AuthorizationQuery(limit=0)
    with pytest.raises(ValueError, match="state"):
        AuthorizationQuery(state="lost")  # type: ignore[arg-type]


def test_pan_lookup_and_decryption(backend: Backend) -> None:
    async def body() -> None:
        journal = await opened(backend)
        try:
            await journal.begin_authorization(entry("a"))
            await journal.begin_authorization(entry("b", pan=OTHER_PAN))
            await journal.begin_authorization(entry("c"))
            hits = await journal.find_by_pan(PAN)
            assert [r.idempotency_key for r in hits] == ["c", "a"]
            assert [r.idempotency_key for r in await journal.find_by_pan(OTHER_PAN)] == ["b"]
            assert await journal.decrypt_pan("T1", "b") == OTHER_PAN
            assert await journal.decrypt_pan("T1", "a") == PAN
            with pytest.raises(UnknownEntry):
                await journal.decrypt_pan("T1", "zz")
        finally:
            await journal.close()
        # Another key (same key id) cannot decrypt or find anything.
        stranger = await backend.open(keys=OTHER_KEYS)
        try:
            assert await stranger.find_by_pan(PAN) == []
            with pytest.raises(PanDecryptError):
                await stranger.decrypt_pan("T1", "a")
        finally:
            await stranger.close()

    run(body)


# -- reversals ---------------------------------------------------------------------------------


def test_reversal_lifecycle(backend: Backend) -> None:
    clock = FakeClock()

    async def body() -> None:
        journal = await opened(backend, clock=clock)
        try:
            await journal.begin_authorization(entry("k1"))
            await journal.complete_authorization("T1", "k1", APPROVED)
            started = await journal.begin_reversal(reversal())
            assert isinstance(started, New)
            assert await journal.begin_reversal(reversal()) == InFlight(started.entry_id)
            assert await journal.begin_reversal(reversal(body=b"x")) == Conflict(started.entry_id)
            due = await journal.pending_reversals()
            assert [(r.id, r.state, r.attempts) for r in due] == [(started.entry_id, "pending", 0)]
            retry_at = clock.now + timedelta(seconds=30)
            await journal.mark_reversal_attempt(
                started.entry_id, f"host down while sending {PAN.digits}", retry_at
            )
            assert await journal.pending_reversals() == []  # not due yet
            clock.advance(seconds=31)
            (again,) = await journal.pending_reversals()
            assert again.attempts == 1
            assert again.last_error is not None
            assert "host down" in again.last_error
            assert PAN.digits not in again.last_error  # redacted before it is stored
            assert again.next_attempt_at == retry_at
            await journal.complete_reversal(started.entry_id, "reversed", b"rev-ack")
            assert await journal.pending_reversals() == []
            done = await journal.get_reversal("T1", "r1")
            assert done is not None
            assert (done.state, done.outcome) == ("acknowledged", "reversed")
            original = await journal.get_authorization("T1", "k1")
            assert original is not None
            assert original.reversed_at == clock.now
            dup = await journal.begin_reversal(reversal())
            assert dup == Duplicate(b"rev-ack", started.entry_id)
            with pytest.raises(InvalidTransition):
                await journal.complete_reversal(started.entry_id, "reversed", b"")
            with pytest.raises(InvalidTransition):
                await journal.mark_reversal_attempt(started.entry_id, "x", clock.now)
            with pytest.raises(UnknownEntry):
                await journal.complete_reversal(99999, "reversed", b"")
        finally:
            await journal.close()

    run(body)


def test_reversal_of_unknown_original_leaves_authorizations_alone(backend: Backend) -> None:
    async def body() -> None:
        journal = await opened(backend)
        try:
            await journal.begin_authorization(entry("k1"))
            await journal.complete_authorization("T1", "k1", APPROVED)
            started = await journal.begin_reversal(reversal("r9", original="k1"))
            assert isinstance(started, New)
            await journal.complete_reversal(started.entry_id, "unknown_original", b"?")
            record = await journal.get_reversal("T1", "r9")
            assert record is not None
            assert (record.state, record.outcome) == ("unknown_original", "unknown_original")
            original = await journal.get_authorization("T1", "k1")
            assert original is not None and original.reversed_at is None
        finally:
            await journal.close()

    run(body)


def test_close_batch_takes_approved_unreversed_only(backend: Backend) -> None:
    async def body() -> None:
        journal = await opened(backend)
        try:
            for key, state in [("a", "approved"), ("b", "approved"), ("c", "declined")]:
                await journal.begin_authorization(entry(key))
                outcome = AuthorizationOutcome(state, b"r")  # type: ignore[arg-type]
                await journal.complete_authorization("T1", key, outcome)
            await journal.begin_authorization(entry("d"))  # still in flight
            rev = await journal.begin_reversal(reversal("rb", original="b"))
            assert isinstance(rev, New)
            await journal.complete_reversal(rev.entry_id, "already_reversed", b"")
            assert await journal.close_batch("T1", "B-001") == 1
            assert await journal.close_batch("T1", "B-002") == 0
            records = {
                r.idempotency_key: r.batch_id
                for r in await journal.query_authorizations(AuthorizationQuery())
            }
            assert records == {"a": "B-001", "b": None, "c": None, "d": None}
        finally:
            await journal.close()

    run(body)


# -- durability, schema, sensitive data --------------------------------------------------------


def test_survives_close_and_reopen(backend: Backend) -> None:
    async def body() -> None:
        journal = await opened(backend)
        await journal.begin_authorization(entry())
        await journal.complete_authorization("T1", "k1", APPROVED)
        await journal.advance_counter("T1", 41)
        await journal.close()
        with pytest.raises(JournalClosed):
            await journal.begin_authorization(entry("late"))
        reopened = await backend.open()
        try:
            result = await reopened.begin_authorization(entry())
            assert isinstance(result, Duplicate) and result.response_payload == PAYLOAD
            assert await reopened.advance_counter("T1", 41) is False
        finally:
            await reopened.close()

    run(body)


def test_newer_schema_is_refused(backend: Backend) -> None:
    async def body() -> None:
        journal = await backend.open()
        await journal.close()
        await backend.execute("UPDATE schema_version SET version = 99")
        with pytest.raises(SchemaTooNew, match="99 is newer") as info:
            await backend.open()
        assert (info.value.found, info.value.supported) == (99, SCHEMA_VERSION)

    run(body)


def _full_flow_request() -> tuple[AuthorizationRequest, bytes]:
    request = AuthorizationRequest(
        transaction_type="purchase",
        amount=1234,
        currency="EUR",
        idempotency_key="full-1",
        stan=12,
        terminal_time=datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        pan=PAN.digits,
        expiry="2812",
        track2_equivalent=TRACK2,
        emv_data="9F0206000000001234",
        cvm="online_pin",
        pin_block=EncryptedPinBlock(format=4, ksn="FFFF9876543210E00001", block=PIN_BLOCK),
    )
    body = request.model_dump_json(context={"reveal_card_data": True}).encode()
    return request, body


def test_no_card_data_stored_in_clear_after_a_full_flow(backend: Backend) -> None:
    async def body() -> bytes:
        journal = await opened(backend)
        try:
            request, plaintext = _full_flow_request()
            assert PAN.digits.encode() in plaintext and TRACK2.encode() in plaintext
            await journal.advance_counter("T1", 1)
            new = AuthorizationEntry.from_request(
                terminal_id="T1",
                merchant_id="M1",
                message_id="ab" * 16,
                request=request,
                body=plaintext,
            )
            assert isinstance(await journal.begin_authorization(new), New)
            await journal.mark_sent("T1", "full-1")
            await journal.complete_authorization("T1", "full-1", APPROVED)
            rev = await journal.begin_reversal(reversal("full-r", original="full-1"))
            assert isinstance(rev, New)
            await journal.mark_reversal_attempt(rev.entry_id, f"failed {TRACK2}", datetime.now(UTC))
            await journal.complete_reversal(rev.entry_id, "reversed", b"ok")
            await journal.close_batch("T1", "B1")
        finally:
            await journal.close()
        return await backend.stored_bytes()

    stored = run(body)
    assert b"424242******" in stored or PAN.masked.encode() in stored  # the mask is there
    for secret in (PAN.digits, TRACK2, TRACK2.split("D")[1], PIN_BLOCK):
        assert secret.encode() not in stored, "sensitive data found in clear"
    assert bytes.fromhex(PAN.digits) not in stored  # nor packed as BCD


def test_leak_check_sees_a_pan_where_the_caller_put_one(backend: Backend) -> None:
    """Control for the test above: a PAN written into a free-text field is found."""

    async def body() -> bytes:
        journal = await opened(backend)
        try:
            await journal.begin_authorization(entry(reference=f"oops {PAN.digits}"))
        finally:
            await journal.close()
        return await backend.stored_bytes()

    assert PAN.digits.encode() in run(body)
