"""The issuer simulator's ledger: every decision on a known account, in order, in memory.

An entry is immutable and says what happened and how it moved the balance
(``balance_delta``: a purchase debits, a refund credits, a void or reversal gives back
what the entry it undoes took). Declined authorisations are entries too (``approved``
False, delta 0), so tests and settlement see the whole history; settlement takes the
approved authorisations and refunds that are not :meth:`Ledger.is_undone`.

Kinds: ``authorisation`` (a purchase), ``refund``, ``void`` (undoes an approved
purchase) and ``reversal`` (undoes any entry, once). The ledger holds no PAN: entries
name the account by its id. Safe to share between threads (one lock).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["EntryKind", "Ledger", "LedgerEntry"]

EntryKind = Literal["authorisation", "refund", "void", "reversal"]


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One decision of the simulator on an account."""

    sequence: int
    kind: EntryKind
    account_id: str
    terminal_id: str
    merchant_id: str
    message_id: str
    amount: int
    currency: str
    response_code: str
    approved: bool
    #: The signed change to the account balance this entry made (0 when declined).
    balance_delta: int
    #: The part of the amount that counted against the daily limit on ``day``.
    daily_delta: int
    day: str
    at: datetime
    authorization_code: str | None = None
    host_reference: str | None = None
    #: For a void or reversal: the entry it undoes. For a refund: the purchase, if named.
    original_sequence: int | None = None


class Ledger:
    """Append-only list of :class:`LedgerEntry` with the indexes the simulator needs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LedgerEntry] = []
        self._by_message: dict[tuple[str, str], int] = {}
        self._by_reference: dict[str, int] = {}
        self._undone: set[int] = set()
        self._refunded: dict[int, int] = {}

    def append(self, draft: LedgerEntry) -> LedgerEntry:
        """Record ``draft`` under the next sequence number (its own ``sequence`` is ignored)."""
        with self._lock:
            entry = dataclasses.replace(draft, sequence=len(self._entries))
            self._entries.append(entry)
            if entry.kind != "reversal":
                self._by_message.setdefault((entry.terminal_id, entry.message_id), entry.sequence)
            if entry.host_reference is not None:
                self._by_reference.setdefault(entry.host_reference, entry.sequence)
            if entry.kind == "refund" and entry.approved and entry.original_sequence is not None:
                original = entry.original_sequence
                self._refunded[original] = self._refunded.get(original, 0) + entry.amount
            return entry

    def entries(self) -> tuple[LedgerEntry, ...]:
        """Every entry so far, oldest first (a snapshot)."""
        with self._lock:
            return tuple(self._entries)

    def get(self, sequence: int) -> LedgerEntry:
        with self._lock:
            return self._entries[sequence]

    def find_message(self, terminal_id: str, message_id: str) -> LedgerEntry | None:
        """The non-reversal entry for a terminal's message id."""
        with self._lock:
            sequence = self._by_message.get((terminal_id, message_id))
            return None if sequence is None else self._entries[sequence]

    def find_reference(self, host_reference: str) -> LedgerEntry | None:
        """The entry that answered with ``host_reference`` (the RRN)."""
        with self._lock:
            sequence = self._by_reference.get(host_reference)
            return None if sequence is None else self._entries[sequence]

    def mark_undone(self, sequence: int) -> bool:
        """Mark an entry reversed or voided; False if it already was (atomic)."""
        with self._lock:
            if sequence in self._undone:
                return False
            self._undone.add(sequence)
            return True

    def unmark_undone(self, sequence: int) -> None:
        """Undo :meth:`mark_undone` (a void that is itself reversed restores its purchase)."""
        with self._lock:
            self._undone.discard(sequence)

    def is_undone(self, sequence: int) -> bool:
        with self._lock:
            return sequence in self._undone

    def refunded(self, sequence: int) -> int:
        """How much of a purchase approved refunds have given back so far (net of reversals)."""
        with self._lock:
            return self._refunded.get(sequence, 0)

    def unrefund(self, sequence: int, amount: int) -> None:
        """A refund against ``sequence`` was reversed: it no longer counts."""
        with self._lock:
            self._refunded[sequence] = self._refunded.get(sequence, 0) - amount
