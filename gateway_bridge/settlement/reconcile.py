"""Reconciling a closed batch against the other side (docs/settlement.md).

- :class:`AcquirerReconciler`: through the ISO 8583 connector, one 0500 per currency
  with the batch's totals (:meth:`CurrencyTotals.iso8583`); an 0510 out of balance
  (DE66 ``2``) gives one line per total that differs, the acquirer's value beside ours.
- :class:`LedgerReconciler`: against the issuer simulator's ledger (the built-in
  connector), transaction by transaction, matched on (terminal id, message id):
  every batched row must be an approved, unreversed ledger entry with the same amount
  and currency; every row the journal reversed must be reversed in the ledger; every
  approved, unreversed ledger entry of the terminal must be in this batch, an earlier
  one, or still open in the journal (approved after the close: the next batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway_bridge.connectors.iso8583.reconciliation import (
    ReconciliationResult,
    ReconciliationTotals,
)
from gateway_bridge.connectors.issuer_sim import LedgerEntry
from gateway_bridge.journal import AuthorizationRecord, Journal
from gateway_bridge.settlement.model import CurrencyTotals, MismatchLine

_LEDGER_TYPES = {"authorisation": "purchase", "refund": "refund", "void": "void"}


@dataclass(frozen=True, slots=True)
class ClosedBatch:
    """A batch just closed, with the journal rows its totals came from."""

    batch_id: str
    terminal_id: str
    merchant_id: str
    records: list[AuthorizationRecord]
    reversed: list[AuthorizationRecord]
    totals: dict[str, CurrencyTotals]


class Reconciler(Protocol):
    """Something that compares a closed batch with what another party saw."""

    #: ``"acquirer"`` or ``"issuer"``: stored with the batch.
    name: str

    async def reconcile(self, batch: ClosedBatch, journal: Journal) -> list[MismatchLine]: ...


class ReconcilingConnector(Protocol):
    async def reconcile(
        self, terminal_id: str, merchant_id: str, currency: str, totals: ReconciliationTotals
    ) -> ReconciliationResult: ...


class AcquirerReconciler:
    """0500/0510 through the ISO 8583 connector (one exchange per currency)."""

    name = "acquirer"

    def __init__(self, connector: ReconcilingConnector) -> None:
        self._connector = connector

    async def reconcile(self, batch: ClosedBatch, journal: Journal) -> list[MismatchLine]:
        lines: list[MismatchLine] = []
        for currency, totals in batch.totals.items():
            ours = totals.iso8583()
            result = await self._connector.reconcile(
                batch.terminal_id, batch.merchant_id, currency, ours
            )
            if result.in_balance:
                continue
            differences = ours.differences(result.acquirer_totals)
            if not differences:
                lines.append(
                    MismatchLine(
                        "acquirer",
                        f"acquirer settlement code {result.settlement_code} with equal totals",
                        currency=currency,
                        element="66",
                    )
                )
            for name, element, mine, theirs in differences:
                lines.append(
                    MismatchLine(
                        "acquirer",
                        name.replace("_", " "),
                        currency=currency,
                        bridge=mine,
                        other=theirs,
                        element=element,
                    )
                )
        return lines


class LedgerReconciler:
    """Transaction by transaction against the issuer simulator's ledger."""

    name = "issuer"

    def __init__(self, entries: Callable[[], Sequence[LedgerEntry]]) -> None:
        self._entries = entries

    async def reconcile(self, batch: ClosedBatch, journal: Journal) -> list[MismatchLine]:
        entries = [e for e in self._entries() if e.terminal_id == batch.terminal_id]
        by_message = {e.message_id: e for e in entries if e.kind != "reversal"}
        reversed_seq = {
            e.original_sequence
            for e in entries
            if e.kind == "reversal" and e.original_sequence is not None
        }
        lines: list[MismatchLine] = []

        def line(problem: str, r: AuthorizationRecord, other: int | None) -> None:
            lines.append(
                MismatchLine(
                    "issuer",
                    problem,
                    currency=r.currency,
                    bridge=r.amount,
                    other=other,
                    message_id=r.message_id,
                    transaction_type=r.transaction_type,
                    masked_pan=r.masked_pan,
                )
            )

        for r in batch.records:
            e = by_message.get(r.message_id)
            if e is None:
                line("not in the issuer's ledger", r, None)
            elif not e.approved:
                line(f"declined by the issuer ({e.response_code})", r, None)
            elif e.currency != r.currency:
                line(f"currency differs (issuer {e.currency})", r, e.amount)
            elif e.amount != r.amount:
                line("amount differs", r, e.amount)
            elif e.sequence in reversed_seq:
                line("reversed at the issuer, settled by the bridge", r, e.amount)
        for r in batch.reversed:
            e = by_message.get(r.message_id)
            if e is not None and e.approved and e.sequence not in reversed_seq:
                line("reversed by the bridge, still approved at the issuer", r, e.amount)
        seen = {r.message_id for r in batch.records} | {r.message_id for r in batch.reversed}
        for e in entries:
            if (
                e.kind == "reversal"
                or not e.approved
                or e.sequence in reversed_seq
                or e.message_id in seen
            ):
                continue
            record = await journal.find_authorization(batch.terminal_id, e.message_id)
            if record is not None and (
                record.batch_id is not None
                or (record.state == "approved" and record.reversed_at is None)
            ):
                continue  # an earlier batch, or approved after this close (the next batch)
            problem = (
                "approved by the issuer, unknown to the journal"
                if record is None
                else f"approved by the issuer, {record.state} in the journal"
            )
            lines.append(
                MismatchLine(
                    "issuer",
                    problem,
                    currency=e.currency,
                    bridge=None if record is None else record.amount,
                    other=e.amount,
                    message_id=e.message_id,
                    transaction_type=_LEDGER_TYPES.get(e.kind, e.kind),
                    masked_pan="" if record is None else record.masked_pan,
                )
            )
        return lines
