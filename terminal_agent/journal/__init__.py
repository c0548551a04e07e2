"""The terminal agent's transaction journal (DESIGN sections 3 and 6).

:class:`TransactionJournal` keeps one row per sale, refund or void in SQLite (WAL,
``synchronous=FULL``), written before the agent acts: the state machine of
:mod:`terminal_agent.journal.model`, every envelope message id sent for a transaction,
the masked card and host data a receipt needs, and the request body, AES-GCM encrypted
under the caller's journal key, only until the host answers. It also reserves the DUKPT
counters of the terminal's data key (durable before use, never reused) and settles what a
crash left open (:meth:`TransactionJournal.recover`). At end of day it closes the
terminal batch and keeps the host's settlement of it (:class:`HostSettlement`).

Errors::

    JournalError
    ├── JournalTransientError        the database could not be used now; try again
    │   └── JournalUnavailable           SQLite operational error (I/O, busy)
    └── JournalPermanentError        the call cannot succeed as it is
        ├── JournalClosed                the journal was closed
        ├── SchemaTooNew                 written by a newer release
        ├── UnknownTransaction           no such local id
        ├── UnknownBatch                 no such batch (or not closed for the host)
        ├── DuplicateTransaction         idempotency key already journaled (.local_id)
        ├── IllegalTransition            the state machine forbids the step
        ├── BodyUnavailable              request body wiped, or wrong journal key
        └── CounterExhausted             no DUKPT counter left (also paycore KeyExhausted)

Bad arguments from the caller (a non-positive amount, a short journal key) are
``ValueError``. No message carries card data, keys or the request body.
"""

from __future__ import annotations

from terminal_agent.journal.errors import (
    BodyUnavailable,
    CounterExhausted,
    DuplicateTransaction,
    IllegalTransition,
    JournalClosed,
    JournalError,
    JournalPermanentError,
    JournalTransientError,
    JournalUnavailable,
    SchemaTooNew,
    UnknownBatch,
    UnknownTransaction,
)
from terminal_agent.journal.model import (
    FINAL_STATES,
    STATES,
    TRANSITIONS,
    Batch,
    BatchLine,
    CardData,
    CardOutcome,
    HostAnswer,
    HostSettlement,
    HostStatus,
    HostTotal,
    Recovery,
    ReversalReason,
    State,
    TransactionRecord,
)
from terminal_agent.journal.store import (
    DATA_KEY,
    SCHEMA_VERSION,
    TransactionJournal,
    next_usable_counter,
)

__all__ = [
    "DATA_KEY",
    "FINAL_STATES",
    "SCHEMA_VERSION",
    "STATES",
    "TRANSITIONS",
    "Batch",
    "BatchLine",
    "BodyUnavailable",
    "CardData",
    "CardOutcome",
    "CounterExhausted",
    "DuplicateTransaction",
    "HostAnswer",
    "HostSettlement",
    "HostStatus",
    "HostTotal",
    "IllegalTransition",
    "JournalClosed",
    "JournalError",
    "JournalPermanentError",
    "JournalTransientError",
    "JournalUnavailable",
    "Recovery",
    "ReversalReason",
    "SchemaTooNew",
    "State",
    "TransactionJournal",
    "TransactionRecord",
    "UnknownBatch",
    "UnknownTransaction",
    "next_usable_counter",
]
