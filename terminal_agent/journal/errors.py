"""The journal's errors (the tree is drawn in :mod:`terminal_agent.journal`).

Messages name the local transaction id, the state or the idempotency key: never a PAN,
track 2, PIN block, key or request body.
"""

from __future__ import annotations

from paycore.errors import KeyExhausted


class JournalError(Exception):
    """Base of every error the terminal journal raises."""


class JournalTransientError(JournalError):
    """The database could not be used just now (disk, lock); the same call may work later."""


class JournalUnavailable(JournalTransientError):
    """SQLite reported an operational error (I/O, busy, read-only file system)."""


class JournalPermanentError(JournalError):
    """The call cannot succeed as it is; retrying it unchanged does not help."""


class JournalClosed(JournalPermanentError):
    """The journal was closed."""


class SchemaTooNew(JournalPermanentError):
    """The database was written by a newer release of the agent."""

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(f"journal schema version {found} is newer than supported {supported}")
        self.found = found
        self.supported = supported


class UnknownTransaction(JournalPermanentError):
    """No transaction with that local id (or idempotency key)."""


class UnknownBatch(JournalPermanentError):
    """No closed batch with that id (or none closed for the host)."""


class DuplicateTransaction(JournalPermanentError):
    """A transaction with this idempotency key already exists; ``local_id`` is its id."""

    def __init__(self, idempotency_key: str, local_id: int) -> None:
        super().__init__(f"idempotency key {idempotency_key!r} is transaction {local_id}")
        self.idempotency_key = idempotency_key
        self.local_id = local_id


class IllegalTransition(JournalPermanentError):
    """The state machine does not allow this step from the transaction's current state."""

    def __init__(self, local_id: int, current: str, wanted: str) -> None:
        super().__init__(f"transaction {local_id}: {current} -> {wanted} is not allowed")
        self.local_id = local_id
        self.current = current
        self.wanted = wanted


class BodyUnavailable(JournalPermanentError):
    """The stored request body is gone (the host answered) or does not open under the
    journal key given (wrong key, or the row was tampered with)."""


class CounterExhausted(JournalPermanentError, KeyExhausted):
    """Every usable DUKPT transaction counter of that key was reserved: load a new key."""
