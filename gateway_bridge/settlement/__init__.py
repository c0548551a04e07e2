"""Settlement: end-of-day batch close and reconciliation (DESIGN section 2; docs/settlement.md).

- :mod:`.model`: totals per currency, mismatch lines, the batch summary;
- :mod:`.settle`: close a terminal's batch in the journal, total it, reconcile, store;
- :mod:`.reconcile`: against the acquirer (ISO 8583 0500/0510) or the issuer
  simulator's ledger;
- :mod:`.store`: the batch summaries (SQLite);
- :mod:`.report`, :mod:`.cli`: ``gateway-bridge settle`` and ``gateway-bridge report``.
"""

from __future__ import annotations

from gateway_bridge.settlement.model import (
    BatchStatus,
    BatchSummary,
    Count,
    CurrencyTotals,
    MismatchLine,
    compute_totals,
)
from gateway_bridge.settlement.reconcile import (
    AcquirerReconciler,
    ClosedBatch,
    LedgerReconciler,
    Reconciler,
)
from gateway_bridge.settlement.settle import SettlementError, settle, settle_terminal
from gateway_bridge.settlement.store import SettlementStore

__all__ = [
    "AcquirerReconciler",
    "BatchStatus",
    "BatchSummary",
    "ClosedBatch",
    "Count",
    "CurrencyTotals",
    "LedgerReconciler",
    "MismatchLine",
    "Reconciler",
    "SettlementError",
    "SettlementStore",
    "compute_totals",
    "settle",
    "settle_terminal",
]
