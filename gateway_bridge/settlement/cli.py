"""``gateway-bridge settle`` and ``gateway-bridge report DATE`` (docs/settlement.md).

    settle --config FILE [--terminal ID] [--store PATH]
        close the open batch of every terminal (or one), reconcile, print, store;
        exit 0 in balance, 1 out of balance, 3 closed but not reconciled, 2 error
    report DATE --config FILE [--store PATH] [--csv]
        the batches closed on DATE (UTC, YYYY-MM-DD); text, or CSV with a header

The store defaults to ``<journal file>.settlement`` next to a SQLite journal; with
PostgreSQL, ``--store`` is required. Reconciliation: with the ``iso8583`` connector an
0500 goes to the acquirer; with the built-in issuer simulator, its ledger lives in the
bridge process, so only a caller in that process can pass it (``issuer_ledger``); from
a separate process the batches close ``NOT RECONCILED`` (exit 3), which the report says.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NoReturn, TextIO

from gateway_bridge.app import open_journal
from gateway_bridge.config import BridgeSettings, ConfigError, Iso8583Settings, load_settings
from gateway_bridge.connectors.base import ConnectorError
from gateway_bridge.connectors.issuer_sim import LedgerEntry
from gateway_bridge.journal import JournalError
from gateway_bridge.settlement.reconcile import (
    AcquirerReconciler,
    LedgerReconciler,
    Reconciler,
)
from gateway_bridge.settlement.report import write_csv, write_text
from gateway_bridge.settlement.settle import settle
from gateway_bridge.settlement.store import SettlementStore

EXIT_IN_BALANCE = 0
EXIT_OUT_OF_BALANCE = 1
EXIT_ERROR = 2
EXIT_UNRECONCILED = 3

LedgerSource = Callable[[], Sequence[LedgerEntry]]


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _settle_parser() -> _Parser:
    parser = _Parser(prog="gateway-bridge settle", description="close and reconcile batches")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--terminal")
    parser.add_argument("--store", type=Path)
    return parser


def _report_parser() -> _Parser:
    parser = _Parser(prog="gateway-bridge report", description="batches closed on a day")
    parser.add_argument("date", type=date.fromisoformat, help="YYYY-MM-DD (UTC)")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--store", type=Path)
    parser.add_argument("--csv", action="store_true")
    return parser


def store_path(settings: BridgeSettings, override: Path | None) -> Path:
    if override is not None:
        return override
    path = settings.settlement_store_path()
    if path is None:
        raise _UsageError("--store (or settlement_store) is needed with a PostgreSQL journal")
    return path


async def _settle(
    args: argparse.Namespace,
    settings: BridgeSettings,
    out: TextIO,
    issuer_ledger: LedgerSource | None,
) -> int:
    store = SettlementStore(store_path(settings, args.store))
    journal = await open_journal(settings)
    connector = None
    try:
        reconciler: Reconciler | None = None
        if isinstance(settings.connector, Iso8583Settings):
            from gateway_bridge.connectors.iso8583.connector import Iso8583Connector

            connector = Iso8583Connector(settings.connector)
            await connector.start()
            if not connector.ready:
                raise _UsageError("the acquirer did not sign on; nothing was closed")
            reconciler = AcquirerReconciler(connector)
        elif issuer_ledger is not None:
            reconciler = LedgerReconciler(issuer_ledger)
        batches = await settle(
            journal,
            store=store,
            reconciler=reconciler,
            clock=lambda: datetime.now(UTC),
            random=os.urandom,
            terminal_id=args.terminal,
        )
    finally:
        if connector is not None:
            await connector.close()
        await journal.close()
        store.close()
    write_text(batches, out)
    if any(b.status == "out_of_balance" for b in batches):
        return EXIT_OUT_OF_BALANCE
    if any(b.status == "unreconciled" for b in batches):
        return EXIT_UNRECONCILED
    return EXIT_IN_BALANCE


def settle_main(
    argv: Sequence[str],
    *,
    environ: Mapping[str, str],
    out: TextIO,
    issuer_ledger: LedgerSource | None = None,
) -> int:
    """``gateway-bridge settle``; ``issuer_ledger`` reconciles with an in-process issuer
    simulator (``lambda: simulator.ledger.entries()``)."""
    del environ  # nothing secret is read from the environment here
    try:
        args = _settle_parser().parse_args(list(argv))
        settings = load_settings(args.config)
        return asyncio.run(_settle(args, settings, out, issuer_ledger))
    except _UsageError as exc:
        print(f"gateway-bridge settle: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (ConfigError, JournalError, ConnectorError, ValueError, OSError) as exc:
        print(f"gateway-bridge settle: {exc}", file=sys.stderr)
        return EXIT_ERROR


def report_main(argv: Sequence[str], *, environ: Mapping[str, str], out: TextIO) -> int:
    """``gateway-bridge report DATE``: exit 0 (also for a day with no batches), 2 on error."""
    del environ
    try:
        args = _report_parser().parse_args(list(argv))
        settings = load_settings(args.config)
        store = SettlementStore(store_path(settings, args.store))
        try:
            batches = store.closed_on(args.date)
        finally:
            store.close()
    except _UsageError as exc:
        print(f"gateway-bridge report: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (ConfigError, ValueError, OSError) as exc:
        print(f"gateway-bridge report: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.csv:
        write_csv(batches, out)
    elif batches:
        write_text(batches, out)
    else:
        out.write(f"no batches closed on {args.date.isoformat()}\n")
    return 0
