"""Settlement reports: text for people, CSV (with a header) for spreadsheets.

Text: one block per batch (status, totals per currency, then every mismatch line).
CSV: one row per batch and currency (a batch with no transactions has one row with an
empty currency); amounts in minor units; ``mismatches`` is the batch's line count.
PANs appear masked only (they come from the journal's ``masked_pan``).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import TextIO

from gateway_bridge.settlement.model import BatchSummary, Count, CurrencyTotals, MismatchLine
from paycore.currency import by_alpha
from paycore.errors import CodecError

CSV_HEADER = (
    "batch_id",
    "terminal_id",
    "merchant_id",
    "closed_at",
    "status",
    "reconciled_with",
    "currency",
    "purchases_count",
    "purchases_amount",
    "refunds_count",
    "refunds_amount",
    "voids_count",
    "voids_amount",
    "reversals_count",
    "reversals_amount",
    "net_amount",
    "mismatches",
)
_STATUS_TEXT = {
    "in_balance": "IN BALANCE",
    "out_of_balance": "OUT OF BALANCE",
    "unreconciled": "NOT RECONCILED",
}


def _money(amount: int | None, currency: str) -> str:
    if amount is None:
        return "-"
    try:
        return by_alpha(currency).format(amount)
    except CodecError:
        return f"{amount} {currency}".strip()


def _count(c: Count, currency: str) -> str:
    return f"{c.count:>4} {_money(c.amount, currency):>16}"


def _mismatch(m: MismatchLine) -> str:
    if m.source == "acquirer":
        return (
            f"    acquirer DE{m.element} {m.problem}: bridge {m.bridge}, "
            f"acquirer {m.other} ({m.currency})"
        )
    what = " ".join(p for p in (m.transaction_type, m.masked_pan, f"msg {m.message_id}") if p)
    return (
        f"    issuer {what}: {m.problem}; bridge {_money(m.bridge, m.currency)}, "
        f"issuer {_money(m.other, m.currency)}"
    )


def write_text(batches: Sequence[BatchSummary], out: TextIO) -> None:
    for b in batches:
        against = f" against the {b.reconciled_with}" if b.reconciled_with else ""
        out.write(
            f"batch {b.batch_id}  terminal {b.terminal_id}  merchant {b.merchant_id}  "
            f"closed {b.closed_at.isoformat(timespec='seconds')}  "
            f"{_STATUS_TEXT[b.status]}{against}  ({b.closed_count} transactions)\n"
        )
        if not b.totals:
            out.write("  no transactions\n")
        for t in b.totals.values():
            c = t.currency
            out.write(
                f"  {c}  purchases {_count(t.purchases, c)}  refunds {_count(t.refunds, c)}  "
                f"voids {_count(t.voids, c)}  reversals {_count(t.reversals, c)}  "
                f"net {_money(t.net, c)}\n"
            )
        if b.mismatches:
            out.write(f"  {len(b.mismatches)} mismatch(es):\n")
            for m in b.mismatches:
                out.write(_mismatch(m) + "\n")


def write_csv(batches: Sequence[BatchSummary], out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for b in batches:
        rows = list(b.totals.values()) or [CurrencyTotals(currency="")]
        for t in rows:
            r = t.reversals
            writer.writerow(
                (
                    b.batch_id,
                    b.terminal_id,
                    b.merchant_id,
                    b.closed_at.isoformat(),
                    b.status,
                    b.reconciled_with,
                    t.currency,
                    t.purchases.count,
                    t.purchases.amount,
                    t.refunds.count,
                    t.refunds.amount,
                    t.voids.count,
                    t.voids.amount,
                    r.count,
                    r.amount,
                    t.net,
                    len(b.mismatches),
                )
            )
