"""End-of-day batch close and reconciliation, per terminal (docs/settlement.md).

:func:`settle_terminal` closes a terminal's open batch in the journal
(:meth:`~gateway_bridge.journal.Journal.close_batch`), reads the batch's rows back and
the rows reversed since the terminal's last close, totals them per currency, reconciles
them with the acquirer or the issuer (:mod:`.reconcile`), and stores the summary.
A mismatch makes the batch ``out_of_balance`` with every differing line kept; nothing is
adjusted or hidden.

The journal has no query by batch: the terminal's approved rows are read with
:meth:`~gateway_bridge.journal.Journal.query_authorizations` (at most
:data:`SCAN_LIMIT`) and filtered here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from gateway_bridge.journal import (
    AuthorizationQuery,
    Journal,
    JournalError,
    TerminalRecord,
    UnknownTerminal,
)
from gateway_bridge.settlement.model import BatchStatus, BatchSummary, MismatchLine, compute_totals
from gateway_bridge.settlement.reconcile import ClosedBatch, Reconciler
from gateway_bridge.settlement.store import SettlementStore

SCAN_LIMIT = 1_000_000

Clock = Callable[[], datetime]
Random = Callable[[int], bytes]


class SettlementError(JournalError):
    """The batch could not be read back consistently (the count moved meanwhile)."""


def batch_id_for(terminal_id: str, closed_at: datetime, random: Random) -> str:
    """``T0001-20250301T230000Z-1a2b3c``: terminal, close time (UTC), 3 random bytes."""
    return f"{terminal_id}-{closed_at:%Y%m%dT%H%M%SZ}-{random(3).hex()}"


async def settle_terminal(
    journal: Journal,
    terminal: TerminalRecord,
    *,
    store: SettlementStore,
    reconciler: Reconciler | None,
    clock: Clock,
    random: Random,
) -> BatchSummary:
    """Close, total, reconcile and store one terminal's batch."""
    closed_at = clock()
    previous = store.last_close(terminal.terminal_id)
    batch_id = batch_id_for(terminal.terminal_id, closed_at, random)
    closed = await journal.close_batch(terminal.terminal_id, batch_id)
    rows = await journal.query_authorizations(
        AuthorizationQuery(terminal_id=terminal.terminal_id, state="approved", limit=SCAN_LIMIT)
    )
    records = sorted((r for r in rows if r.batch_id == batch_id), key=lambda r: r.id)
    if len(records) != closed:
        raise SettlementError(
            f"batch {batch_id}: close_batch moved {closed} rows, {len(records)} read back"
        )
    reversed_ = sorted(
        (
            r
            for r in rows
            if r.batch_id is None
            and r.reversed_at is not None
            and r.reversed_at <= closed_at
            and (previous is None or r.reversed_at > previous)
        ),
        key=lambda r: r.id,
    )
    totals = compute_totals(records, reversed_)
    batch = ClosedBatch(
        batch_id=batch_id,
        terminal_id=terminal.terminal_id,
        merchant_id=terminal.merchant_id,
        records=records,
        reversed=reversed_,
        totals=totals,
    )
    status: BatchStatus = "unreconciled"
    mismatches: list[MismatchLine] = []
    if reconciler is not None:
        mismatches = await reconciler.reconcile(batch, journal)
        status = "out_of_balance" if mismatches else "in_balance"
    summary = BatchSummary(
        batch_id=batch_id,
        terminal_id=terminal.terminal_id,
        merchant_id=terminal.merchant_id,
        closed_at=closed_at,
        status=status,
        reconciled_with="" if reconciler is None else reconciler.name,
        totals=totals,
        mismatches=mismatches,
        closed_count=closed,
    )
    store.add(summary)
    return summary


async def settle(
    journal: Journal,
    *,
    store: SettlementStore,
    reconciler: Reconciler | None,
    clock: Clock,
    random: Random,
    terminal_id: str | None = None,
) -> list[BatchSummary]:
    """Settle one terminal, or every registered terminal (in id order)."""
    if terminal_id is not None:
        record = await journal.get_terminal(terminal_id)
        if record is None:
            raise UnknownTerminal(f"no terminal {terminal_id!r}")
        terminals = [record]
    else:
        terminals = await journal.list_terminals()
    return [
        await settle_terminal(
            journal, t, store=store, reconciler=reconciler, clock=clock, random=random
        )
        for t in terminals
    ]
