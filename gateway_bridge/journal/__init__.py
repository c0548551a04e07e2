"""The bridge's journal and terminal registry (DESIGN section 6).

Write-ahead journal of authorisations and reversals, idempotency by unique constraint,
and the terminal registry with its DUKPT counter guard, on SQLite
(:class:`~gateway_bridge.journal.sqlite.SqliteJournal`, WAL, ``synchronous=FULL``, group
commit) or PostgreSQL (:class:`~gateway_bridge.journal.postgres.PostgresJournal`,
asyncpg). See :mod:`gateway_bridge.journal.base` for the interface and the exception
tree. Track 2 data, PIN blocks and CVV are never stored: there is nowhere to put them.

``PostgresJournal`` is imported lazily (``from gateway_bridge.journal.postgres import
PostgresJournal``) so that a SQLite-only bridge does not need asyncpg.
"""

from __future__ import annotations

from gateway_bridge.journal.base import (
    AuthorizationEntry,
    AuthorizationOutcome,
    AuthorizationQuery,
    AuthorizationRecord,
    AuthorizationState,
    BatchInProgress,
    BeginResult,
    Conflict,
    Duplicate,
    InFlight,
    InvalidTransition,
    Journal,
    JournalClosed,
    JournalError,
    JournalUnavailable,
    New,
    ReversalEntry,
    ReversalOutcome,
    ReversalRecord,
    ReversalState,
    SchemaTooNew,
    TerminalExists,
    TerminalRecord,
    TerminalRegistration,
    TerminalRegistry,
    TerminalStatus,
    UnknownEntry,
    UnknownTerminal,
    request_digest,
)
from gateway_bridge.journal.pan_crypto import JournalKeys, PanDecryptError
from gateway_bridge.journal.schema import SCHEMA_VERSION
from gateway_bridge.journal.sqlite import SqliteJournal

__all__ = [
    "SCHEMA_VERSION",
    "AuthorizationEntry",
    "AuthorizationOutcome",
    "AuthorizationQuery",
    "AuthorizationRecord",
    "AuthorizationState",
    "BatchInProgress",
    "BeginResult",
    "Conflict",
    "Duplicate",
    "InFlight",
    "InvalidTransition",
    "Journal",
    "JournalClosed",
    "JournalError",
    "JournalKeys",
    "JournalUnavailable",
    "New",
    "PanDecryptError",
    "ReversalEntry",
    "ReversalOutcome",
    "ReversalRecord",
    "ReversalState",
    "SchemaTooNew",
    "SqliteJournal",
    "TerminalExists",
    "TerminalRecord",
    "TerminalRegistration",
    "TerminalRegistry",
    "TerminalStatus",
    "UnknownEntry",
    "UnknownTerminal",
    "request_digest",
]
