"""Where settlement keeps the summaries of closed batches: a small SQLite file.

The journal records which authorisations are in which batch (``batch_id``); this store
keeps each batch's summary (totals per currency, status, mismatch lines with masked PANs
only) for ``gateway-bridge report DATE``, and each terminal's last close time, which
bounds the window in which reversals are counted. Closing days are UTC dates.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path

from gateway_bridge.settlement.model import BatchSummary, CurrencyTotals, MismatchLine

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settlement_batches (
    batch_id        TEXT PRIMARY KEY,
    terminal_id     TEXT NOT NULL,
    merchant_id     TEXT NOT NULL,
    closed_at       TEXT NOT NULL,
    closed_on       TEXT NOT NULL,
    status          TEXT NOT NULL,
    reconciled_with TEXT NOT NULL,
    closed_count    INTEGER NOT NULL,
    totals          TEXT NOT NULL,
    mismatches      TEXT NOT NULL
)"""
_INDEX = "CREATE INDEX IF NOT EXISTS settlement_by_day ON settlement_batches (closed_on)"
_COLUMNS = (
    "batch_id, terminal_id, merchant_id, closed_at, status, reconciled_with, closed_count, "
    "totals, mismatches"
)


class SettlementStore:
    """Batch summaries in SQLite at ``path`` (``":memory:"`` for tests)."""

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute(_SCHEMA)
        self._db.execute(_INDEX)

    def close(self) -> None:
        self._db.close()

    def add(self, summary: BatchSummary) -> None:
        closed = summary.closed_at.astimezone(UTC)
        self._db.execute(
            f"INSERT INTO settlement_batches ({_COLUMNS}, closed_on) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                summary.batch_id,
                summary.terminal_id,
                summary.merchant_id,
                closed.isoformat(),
                summary.status,
                summary.reconciled_with,
                summary.closed_count,
                json.dumps([t.to_json() for t in summary.totals.values()]),
                json.dumps([m.to_json() for m in summary.mismatches]),
                closed.date().isoformat(),
            ),
        )

    def last_close(self, terminal_id: str) -> datetime | None:
        row = self._db.execute(
            "SELECT MAX(closed_at) FROM settlement_batches WHERE terminal_id = ?", (terminal_id,)
        ).fetchone()
        return None if row is None or row[0] is None else datetime.fromisoformat(row[0])

    def closed_on(self, day: date) -> list[BatchSummary]:
        """The batches closed on ``day`` (UTC), in closing order."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM settlement_batches "  # noqa: S608
            "WHERE closed_on = ? ORDER BY closed_at, batch_id",
            (day.isoformat(),),
        ).fetchall()
        out: list[BatchSummary] = []
        for row in rows:
            totals = [CurrencyTotals.from_json(t) for t in json.loads(row[7])]
            out.append(
                BatchSummary(
                    batch_id=row[0],
                    terminal_id=row[1],
                    merchant_id=row[2],
                    closed_at=datetime.fromisoformat(row[3]),
                    status=row[4],
                    reconciled_with=row[5],
                    closed_count=row[6],
                    totals={t.currency: t for t in totals},
                    mismatches=[MismatchLine.from_json(m) for m in json.loads(row[8])],
                )
            )
        return out
