"""Records and entries: validation, and the begin classification every backend shares."""

from __future__ import annotations

import hashlib

import pytest

from gateway_bridge.journal import (
    AuthorizationEntry,
    Conflict,
    Duplicate,
    InFlight,
    Journal,
    ReversalEntry,
    SqliteJournal,
    TerminalRegistration,
    request_digest,
)
from gateway_bridge.journal.base import classify_existing
from gateway_bridge.journal.pgcluster import PostgresNotInstalled, find_bindir
from gateway_bridge.journal.postgres import PostgresJournal
from paycore.wire import ReversalRequest
from tests.gateway_bridge.journal.test_journal import PAN, _full_flow_request, entry

D1 = request_digest(b"one")
D2 = request_digest(b"two")


def test_classify_existing() -> None:
    assert classify_existing(3, D1, D2, b"resp") == Conflict(3)
    assert classify_existing(3, D1, D2, None) == Conflict(3)
    assert classify_existing(3, D1, D1, None) == InFlight(3)
    assert classify_existing(3, D1, D1, b"") == Duplicate(b"", 3)


def test_entry_from_request_keeps_no_sensitive_fields() -> None:
    request, body = _full_flow_request()
    made = AuthorizationEntry.from_request(
        terminal_id="T1", merchant_id="M1", message_id="ab" * 16, request=request, body=body
    )
    assert made.request_digest == hashlib.sha256(body).digest()
    assert (made.idempotency_key, made.amount, made.currency, made.stan) == (
        "full-1",
        1234,
        "EUR",
        12,
    )
    assert made.pan == PAN
    names = set(AuthorizationEntry.__dataclass_fields__)
    assert not names & {"track2_equivalent", "pin_block", "cvv", "emv_data"}
    assert PAN.digits not in repr(made)


def test_reversal_entry_from_request() -> None:
    request = ReversalRequest(
        original_message_id="cd" * 16,
        idempotency_key="rev-1",
        reason="card_removed",
        amount=5,
        currency="USD",
    )
    made = ReversalEntry.from_request(
        terminal_id="T1", merchant_id="M1", message_id="ef" * 16, request=request, body=b"{}"
    )
    assert (made.original_message_id, made.reason, made.origin) == (
        "cd" * 16,
        "card_removed",
        "terminal",
    )


def test_entry_validation() -> None:
    with pytest.raises(ValueError, match="32-byte"):
        entry(request_digest=b"short")
    with pytest.raises(TypeError, match="Pan"):
        entry(pan=PAN.digits)
    with pytest.raises(ValueError, match="negative"):
        entry(amount=-1)


@pytest.mark.parametrize("key_id", ["FFFF9876543210E", "GGFF9876543210E0", "FFFF9876543210E000"])
def test_registration_checks_the_initial_key_id(key_id: str) -> None:
    with pytest.raises(ValueError, match="16 hex"):
        TerminalRegistration("T1", "M1", key_id, "d", "p")


def test_registration_other_checks() -> None:
    with pytest.raises(ValueError, match="status"):
        TerminalRegistration("T1", "M1", "00" * 8, "d", "p", status="gone")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="merchant_id"):
        TerminalRegistration("T1", "", "00" * 8, "d", "p")


def test_missing_postgres_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("glob.glob", lambda pattern: [])
    with pytest.raises(PostgresNotInstalled, match="apt-get install -y postgresql"):
        find_bindir()


def test_found_postgres_has_initdb() -> None:
    bindir = find_bindir()
    assert (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file()


def as_journals(sqlite: SqliteJournal, postgres: PostgresJournal) -> tuple[Journal, Journal]:
    """Checked by mypy, not run: both backends implement the :class:`Journal` protocol."""
    return sqlite, postgres
