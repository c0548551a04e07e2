"""``gateway-bridge``: run the bridge and administer it.

    gateway-bridge run --config FILE              serve terminals until stopped
    gateway-bridge keys ...                       BDKs and initial keys (docs/key-store.md)
    gateway-bridge terminals add|list|show|revoke|enrol-code --config F
                                                  the registry, revocation and enrolment codes
    gateway-bridge enrol-server --config FILE     the enrolment service (docs/provisioning.md)
    gateway-bridge journal --config FILE          recent authorisations (masked PANs)
    gateway-bridge journal-keys FILE              make the journal's PAN keys (mode 0600)
    gateway-bridge ca init|issue-terminal|revoke|crl|...   the terminal CA (docs/broker.md)
    gateway-bridge broker-config --out DIR ...    Mosquitto with mTLS and per-terminal ACL
    gateway-bridge settle --config FILE           close and reconcile batches (docs/settlement.md)
    gateway-bridge report DATE --config FILE      the batches closed that day (--csv)
    gateway-bridge acquirer-sim ...               the ISO 8583 acquirer host simulator

Every subcommand exits 0 on success and 2 on a user or configuration error, with a
one-line message; none prints a key, a PAN or a PIN block.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import NoReturn, TextIO

from gateway_bridge.app import open_bridge, open_journal
from gateway_bridge.config import BridgeSettings, ConfigError, load_settings
from gateway_bridge.fleet.ca import CaError
from gateway_bridge.journal import (
    AuthorizationQuery,
    JournalError,
    TerminalExists,
    TerminalRegistration,
)
from gateway_bridge.keystore import KeyStoreError
from gateway_bridge.metrics import BridgeMetrics
from paycore.compat import silence_legacy_tdes_warnings
from paycore.redact import RedactingFilter
from paycore.systemd import notify_systemd

log = logging.getLogger("gateway_bridge")


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser() -> _Parser:
    parser = _Parser(prog="gateway-bridge", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="serve terminals until stopped")
    run.add_argument("--config", type=Path, required=True)
    run.add_argument("--log-level", default="INFO")

    terminals = sub.add_parser("terminals", help="the terminal registry")
    tsub = terminals.add_subparsers(dest="action", required=True, parser_class=_Parser)
    add = tsub.add_parser("add", help="register a terminal")
    add.add_argument("--config", type=Path, required=True)
    add.add_argument("--id", required=True, dest="terminal_id")
    add.add_argument("--merchant", required=True)
    add.add_argument(
        "--data-initial-key-id",
        help="16 hex digits (KSN bytes 1-8); by default a random one (enrolment sets a new one)",
    )
    add.add_argument("--data-bdk", required=True, help="key id of the data BDK")
    add.add_argument("--pin-bdk", required=True, help="key id of the PIN BDK")
    ls = tsub.add_parser("list", help="registered terminals")
    ls.add_argument("--config", type=Path, required=True)
    show = tsub.add_parser("show", help="one terminal: registry, certificates, enrolment code")
    show.add_argument("--config", type=Path, required=True)
    show.add_argument("--id", required=True, dest="terminal_id")
    show.add_argument("--json", action="store_true")
    revoke = tsub.add_parser("revoke", help="take a terminal out of service")
    revoke.add_argument("--config", type=Path, required=True)
    revoke.add_argument("--id", required=True, dest="terminal_id")
    revoke.add_argument(
        "--reason",
        default="cessation_of_operation",
        choices=["unspecified", "key_compromise", "superseded", "cessation_of_operation",
                 "affiliation_changed"],
    )  # fmt: skip
    code = tsub.add_parser("enrol-code", help="a one-time enrolment code for a terminal")
    code.add_argument("--config", type=Path, required=True)
    code.add_argument("--id", required=True, dest="terminal_id")
    code.add_argument("--by", help="who issues it (default: the login name)")
    code.add_argument(
        "--recommission", action="store_true", help="for a revoked terminal: return it to service"
    )

    enrol = sub.add_parser("enrol-server", help="serve the enrolment service over HTTPS")
    enrol.add_argument("--config", type=Path, required=True)
    enrol.add_argument("--log-level", default="INFO")

    journal = sub.add_parser("journal", help="recent authorisations, masked")
    journal.add_argument("--config", type=Path, required=True)
    journal.add_argument("--terminal")
    journal.add_argument("--since", type=datetime.fromisoformat)
    journal.add_argument("--until", type=datetime.fromisoformat)
    journal.add_argument(
        "--state", choices=["received", "sent", "approved", "declined", "failed", "timed_out"]
    )
    journal.add_argument("--limit", type=int, default=50)
    journal.add_argument("--json", action="store_true")

    keys = sub.add_parser("journal-keys", help="create the journal's PAN key file")
    keys.add_argument("file", type=Path)
    return parser


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


async def _run(settings: BridgeSettings, environ: Mapping[str, str]) -> int:
    metrics = BridgeMetrics()
    server = None
    if settings.metrics is not None:
        server = metrics.serve(settings.metrics.host, settings.metrics.port)
        log.info("metrics on http://%s:%d/metrics", settings.metrics.host, server.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with open_bridge(settings, environ=environ, metrics=metrics) as bridge:
            # READY once the bridge serves the broker; then the watchdog pings.
            systemd = asyncio.create_task(notify_systemd(bridge.connected, environ))
            try:
                await bridge.run(stop)
            finally:
                systemd.cancel()
    finally:
        if server is not None:
            server.close()
    return 0


async def _terminals(
    args: argparse.Namespace, settings: BridgeSettings, out: TextIO, environ: Mapping[str, str]
) -> int:
    if args.action in ("enrol-code", "show", "revoke"):
        from gateway_bridge.fleet.terminals import terminals_admin

        return await terminals_admin(args, settings, out, environ)
    journal = await open_journal(settings)
    try:
        if args.action == "add":
            record = await journal.register_terminal(
                TerminalRegistration(
                    terminal_id=args.terminal_id,
                    merchant_id=args.merchant,
                    data_initial_key_id=args.data_initial_key_id or secrets.token_hex(8),
                    data_bdk_id=args.data_bdk,
                    pin_bdk_id=args.pin_bdk,
                )
            )
            out.write(f"registered {record.terminal_id} (merchant {record.merchant_id})\n")
            return 0
        for t in await journal.list_terminals():
            seen = t.last_seen_at.isoformat(timespec="seconds") if t.last_seen_at else "never"
            out.write(
                f"{t.terminal_id:<16} {t.merchant_id:<16} {t.status:<9} "
                f"ikid {t.data_initial_key_id} counter {t.last_counter or 0:<8} seen {seen}\n"
            )
        return 0
    finally:
        await journal.close()


async def _journal(args: argparse.Namespace, settings: BridgeSettings, out: TextIO) -> int:
    journal = await open_journal(settings)
    try:
        records = await journal.query_authorizations(
            AuthorizationQuery(
                terminal_id=args.terminal,
                since=args.since,
                until=args.until,
                state=args.state,
                limit=args.limit,
            )
        )
    finally:
        await journal.close()
    for r in records:
        if args.json:
            out.write(
                json.dumps(
                    {
                        "received_at": r.received_at.isoformat(),
                        "terminal_id": r.terminal_id,
                        "type": r.transaction_type,
                        "amount": r.amount,
                        "currency": r.currency,
                        "pan": r.masked_pan,
                        "state": r.state,
                        "response_code": r.response_code,
                        "authorization_code": r.authorization_code,
                        "idempotency_key": r.idempotency_key,
                    }
                )
                + "\n"
            )
        else:
            out.write(
                f"{r.received_at:%Y-%m-%d %H:%M:%S} {r.terminal_id:<12} {r.transaction_type:<8} "
                f"{r.amount:>10} {r.currency} {r.masked_pan:<19} {r.state:<9} "
                f"{r.response_code or '--'} {r.authorization_code or ''}\n"
            )
    return 0


def _journal_keys(path: Path, out: TextIO) -> int:
    if path.exists():
        raise _UsageError(f"{path} exists; it holds the keys of an existing journal")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_bytes(64).hex() + "\n")
    out.write(f"wrote new journal keys to {path} (mode 0600); back it up with the journal\n")
    return 0


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    silence_legacy_tdes_warnings()
    environ = os.environ if environ is None else environ  # noqa: TID251 - the CLI is the edge
    out = sys.stdout if out is None else out
    if argv and argv[0] == "keys":
        from gateway_bridge.keystore.cli import main as keys_main

        return keys_main(argv[1:], environ=environ)
    if argv and argv[0] in ("ca", "broker-config"):
        from gateway_bridge.fleet.cli import broker_config_main, ca_main

        fleet = ca_main if argv[0] == "ca" else broker_config_main
        return fleet(argv[1:], environ=environ, out=out)
    if argv and argv[0] in ("settle", "report"):
        from gateway_bridge.settlement.cli import report_main, settle_main

        command = settle_main if argv[0] == "settle" else report_main
        return command(argv[1:], environ=environ, out=out)
    if argv and argv[0] == "acquirer-sim":
        from gateway_bridge.acquirer_sim import main as acquirer_main

        return acquirer_main(argv[1:])
    try:
        args = _parser().parse_args(argv)
        if args.command == "journal-keys":
            return _journal_keys(args.file, out)
        settings = load_settings(args.config)
        if args.command == "run":
            _configure_logging(args.log_level)
            with contextlib.suppress(KeyboardInterrupt):
                return asyncio.run(_run(settings, environ))
            return 0
        if args.command == "terminals":
            return asyncio.run(_terminals(args, settings, out, environ))
        if args.command == "enrol-server":
            from gateway_bridge.fleet.terminals import serve_enrolment

            _configure_logging(args.log_level)
            with contextlib.suppress(KeyboardInterrupt):
                return asyncio.run(serve_enrolment(settings, environ))
            return 0
        return asyncio.run(_journal(args, settings, out))
    except _UsageError as exc:
        print(f"gateway-bridge: {exc}", file=sys.stderr)
        return 2
    except TerminalExists:
        print("gateway-bridge: that terminal is already registered", file=sys.stderr)
        return 2
    except (ConfigError, KeyStoreError, JournalError, CaError, ValueError, OSError) as exc:
        print(f"gateway-bridge: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
