"""End of day asked for by the terminal: three-way reconciliation (docs/settlement.md).

When a terminal closes its batch it sends its completed transactions' counts and totals
by type and currency (:class:`~paycore.wire.BatchCloseRequest`). The bridge closes that
terminal's batch in its own journal at the same moment (:func:`.settle.settle_terminal`:
the acquirer's 0500/0510 or the issuer simulator's ledger reconciles it), then compares
its totals with the terminal's, line by line. The batch is in balance only if all three
agree; every difference is one line of plain words, never hidden:

    purchase GBP: terminal 3 for 37.50, bridge 4 for 49.50
    acquirer: DE74 debits count: bridge 4, acquirer 3

The terminal's counts are its ``completed`` transactions; the bridge's are its approved,
unreversed rows: a host approval the terminal reversed (card pulled, AAC) is in neither,
and one whose reversal has not reached the bridge yet shows as a difference.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from gateway_bridge.journal import Journal, TerminalRecord
from gateway_bridge.settlement.model import BatchSummary, Count, CurrencyTotals, MismatchLine
from gateway_bridge.settlement.reconcile import AcquirerReconciler, LedgerReconciler, Reconciler
from gateway_bridge.settlement.settle import settle_terminal
from gateway_bridge.settlement.store import SettlementStore
from paycore.wire import BatchCloseRequest, BatchCloseResponse, BatchTotal, batch_differences
from paycore.wire.messages import TransactionType

Clock = Callable[[], datetime]
Random = Callable[[int], bytes]


def reconciler_for(connector: object) -> Reconciler | None:
    """The reconciler a live connector offers: the acquirer (ISO 8583 0500) or the issuer
    simulator's ledger; None for a connector with neither."""
    from gateway_bridge.connectors.iso8583.connector import Iso8583Connector
    from gateway_bridge.connectors.issuer_sim import IssuerSimulator

    if isinstance(connector, Iso8583Connector):
        return AcquirerReconciler(connector)
    if isinstance(connector, IssuerSimulator):
        return LedgerReconciler(connector.ledger.entries)
    return None


def bridge_lines(totals: dict[str, CurrencyTotals]) -> tuple[BatchTotal, ...]:
    """The bridge's batch as wire lines (types with nothing are left out)."""
    lines: list[BatchTotal] = []
    for currency, t in sorted(totals.items()):
        kinds: tuple[tuple[TransactionType, Count], ...] = (
            ("purchase", t.purchases),
            ("refund", t.refunds),
            ("void", t.voids),
        )
        for kind, count in kinds:
            if count.count:
                lines.append(
                    BatchTotal(
                        transaction_type=kind,
                        currency=currency,
                        count=count.count,
                        amount=count.amount,
                    )
                )
    return tuple(lines)


def _mismatch_text(line: MismatchLine) -> str:
    if line.element:
        return (
            f"{line.source}: {line.element} {line.problem}: bridge {line.bridge}, "
            f"{line.source} {line.other}"
        )
    amounts = f" (bridge {line.bridge}, {line.source} {line.other})"
    what = " ".join(x for x in (line.transaction_type, line.masked_pan, line.message_id) if x)
    return f"{line.source}: {line.problem} {what}{amounts}"[:200]


async def settle_for_terminal(
    journal: Journal,
    terminal: TerminalRecord,
    request: BatchCloseRequest,
    *,
    store: SettlementStore,
    reconciler: Reconciler | None,
    clock: Clock,
    random: Random,
) -> tuple[BatchSummary, BatchCloseResponse]:
    """Close the bridge's batch for ``terminal`` now and answer its request."""
    summary = await settle_terminal(
        journal, terminal, store=store, reconciler=reconciler, clock=clock, random=random
    )
    lines = bridge_lines(summary.totals)
    differences = batch_differences(request.totals, lines, other_name="bridge")
    differences += [_mismatch_text(m) for m in summary.mismatches]
    status: Literal["in_balance", "out_of_balance", "unreconciled"]
    if differences:
        status = "out_of_balance"
    elif summary.status == "unreconciled":
        status = "unreconciled"
    else:
        status = "in_balance"
    response = BatchCloseResponse(
        host_batch_id=summary.batch_id,
        status=status,
        totals=lines,
        differences=tuple(d[:200] for d in differences[:64]),
    )
    return summary, response
