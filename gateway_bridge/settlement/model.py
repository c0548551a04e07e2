"""Settlement's records: a closed batch's totals per currency, mismatch lines, the summary.

What a batch counts (docs/settlement.md): the journal's ``close_batch`` puts every
approved, unreversed, unbatched authorisation of a terminal into the batch. Those rows
give ``purchases``, ``refunds`` and ``voids``. Authorisations reversed since the
terminal's previous close (approved, then reversed, so never batched) give
``reversed_purchases`` and ``reversed_refunds``. Amounts are minor units.

Net = purchases - refunds - voids (a voided purchase stays in ``purchases``: its void
gives it back). Reversed transactions are outside the net; they are counted so that the
acquirer's totals, which saw them approved and then reversed, can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from gateway_bridge.connectors.iso8583.reconciliation import ReconciliationTotals
from gateway_bridge.journal import AuthorizationRecord

BatchStatus = Literal["in_balance", "out_of_balance", "unreconciled"]
Source = Literal["acquirer", "issuer"]


@dataclass(frozen=True, slots=True)
class Count:
    """How many, and how much (minor units)."""

    count: int = 0
    amount: int = 0

    def plus(self, amount: int) -> Count:
        return Count(self.count + 1, self.amount + amount)


@dataclass(frozen=True, slots=True)
class CurrencyTotals:
    """A batch's counts and totals in one currency."""

    currency: str
    purchases: Count = Count()
    refunds: Count = Count()
    voids: Count = Count()
    reversed_purchases: Count = Count()
    reversed_refunds: Count = Count()

    @property
    def net(self) -> int:
        """What the merchant is owed for the batch (negative: what it owes)."""
        return self.purchases.amount - self.refunds.amount - self.voids.amount

    @property
    def reversals(self) -> Count:
        return Count(
            self.reversed_purchases.count + self.reversed_refunds.count,
            self.reversed_purchases.amount + self.reversed_refunds.amount,
        )

    def iso8583(self) -> ReconciliationTotals:
        """The 0500 totals (mapping in :mod:`gateway_bridge.connectors.iso8583.reconciliation`):
        reversed transactions count in both the plain and the reversal totals."""
        rp, rr = self.reversed_purchases, self.reversed_refunds
        return ReconciliationTotals(
            debits_count=self.purchases.count + rp.count,
            debits_amount=self.purchases.amount + rp.amount,
            debits_reversal_count=self.voids.count + rp.count,
            debits_reversal_amount=self.voids.amount + rp.amount,
            credits_count=self.refunds.count + rr.count,
            credits_amount=self.refunds.amount + rr.amount,
            credits_reversal_count=rr.count,
            credits_reversal_amount=rr.amount,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"currency": self.currency}
        for name in ("purchases", "refunds", "voids", "reversed_purchases", "reversed_refunds"):
            c: Count = getattr(self, name)
            out[name] = [c.count, c.amount]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CurrencyTotals:
        counts = {
            name: Count(int(data[name][0]), int(data[name][1]))
            for name in ("purchases", "refunds", "voids", "reversed_purchases", "reversed_refunds")
        }
        return cls(currency=str(data["currency"]), **counts)


def compute_totals(
    batch: list[AuthorizationRecord], reversed_: list[AuthorizationRecord]
) -> dict[str, CurrencyTotals]:
    """Totals per currency (sorted by code) from journal rows: ``batch`` (the batch's rows)
    and ``reversed_`` (approved, reversed since the previous close; voids there are
    not counted: a reversed void only restores its purchase)."""
    acc: dict[str, dict[str, Count]] = {}

    def add(record: AuthorizationRecord, bucket: str) -> None:
        row = acc.setdefault(record.currency, {})
        row[bucket] = row.get(bucket, Count()).plus(record.amount)

    for record in batch:
        add(
            record,
            {"purchase": "purchases", "refund": "refunds", "void": "voids"}[
                record.transaction_type
            ],
        )
    for record in reversed_:
        if record.transaction_type == "purchase":
            add(record, "reversed_purchases")
        elif record.transaction_type == "refund":
            add(record, "reversed_refunds")
    return {c: CurrencyTotals(currency=c, **acc[c]) for c in sorted(acc)}


@dataclass(frozen=True, slots=True)
class MismatchLine:
    """One difference between the bridge's journal and the other side.

    For the issuer: one transaction (its message id, type, masked PAN, both amounts).
    For the acquirer: one 0500/0510 total (``element`` the data element, both values).
    ``bridge`` / ``other`` are None where a side has nothing.
    """

    source: Source
    problem: str
    currency: str = ""
    bridge: int | None = None
    other: int | None = None
    message_id: str = ""
    transaction_type: str = ""
    masked_pan: str = ""
    element: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "problem": self.problem,
            "currency": self.currency,
            "bridge": self.bridge,
            "other": self.other,
            "message_id": self.message_id,
            "transaction_type": self.transaction_type,
            "masked_pan": self.masked_pan,
            "element": self.element,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MismatchLine:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """A closed batch as settlement stores and reports it (masked PANs only)."""

    batch_id: str
    terminal_id: str
    merchant_id: str
    closed_at: datetime
    status: BatchStatus
    #: What it was reconciled against: ``"acquirer"``, ``"issuer"`` or ``""`` (nothing).
    reconciled_with: str
    totals: dict[str, CurrencyTotals] = field(default_factory=dict)
    mismatches: list[MismatchLine] = field(default_factory=list)
    #: How many rows ``close_batch`` moved into the batch.
    closed_count: int = 0
