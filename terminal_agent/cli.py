"""``terminal-agent``: the service on the Pi, and the technician's tools.

    terminal-agent run --config FILE          the service: devices, link, reversals, status
    terminal-agent pay AMOUNT --config FILE   one transaction now (purchase, --refund, --void-last)
    terminal-agent journal --config FILE      recent transactions, masked
    terminal-agent doctor --config FILE       the self-test a technician runs (--json)
    terminal-agent provision --url U --terminal-id T --ca-pin P --code C
                                              enrol with a code (docs/provisioning.md)

``pay`` exits 0 when approved, 1 when declined, 3 when not completed; 2 is a usage or
configuration error. Nothing printed or logged ever holds a PAN, track data, a PIN block
or a key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import NoReturn, TextIO

from paycore.compat import silence_legacy_tdes_warnings
from paycore.currency import by_alpha
from paycore.errors import CodecError
from paycore.redact import RedactingFilter
from paycore.systemd import notify_systemd
from paycore.wire import HealthCheck
from terminal_agent.app import open_agent
from terminal_agent.config import AgentSettings, ConfigError, load_settings, read_secret_hex
from terminal_agent.display import Display, FanOut, Prompt
from terminal_agent.journal import JournalError, TransactionJournal

log = logging.getLogger("terminal_agent")

EXIT = {"approved": 0, "declined": 1, "not_completed": 3}


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser() -> _Parser:
    parser = _Parser(prog="terminal-agent", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="the service")
    run.add_argument("--config", type=Path, required=True)
    run.add_argument("--log-level", default="INFO")
    pay = sub.add_parser("pay", help="one transaction now")
    pay.add_argument("amount", nargs="?", help="in major units, e.g. 12.50")
    pay.add_argument("--config", type=Path, required=True)
    pay.add_argument("--currency", help="ISO 4217 code (default: the configured one)")
    kind = pay.add_mutually_exclusive_group()
    kind.add_argument("--refund", action="store_true")
    kind.add_argument("--void-last", action="store_true", help="void the last approved purchase")
    pay.add_argument("--reference", default="")
    pay.add_argument("--idempotency-key")
    pay.add_argument("--log-level", default="WARNING")
    journal = sub.add_parser("journal", help="recent transactions")
    journal.add_argument("--config", type=Path, required=True)
    journal.add_argument("--limit", type=int, default=20)
    return parser


def minor_units(amount: str, currency: str) -> int:
    """``"12.50"`` in GBP -> 1250; refuses negatives, too many decimals, garbage."""
    exponent = by_alpha(currency).exponent
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise _UsageError(f"{amount!r} is not an amount") from None
    scaled = value.scaleb(exponent)
    if not value.is_finite() or value <= 0 or scaled != scaled.to_integral_value():
        raise _UsageError(f"{amount!r} is not a positive amount in {currency}")
    if scaled >= 10**12:
        raise _UsageError("amount too large")
    return int(scaled)


def _logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


class _Printer:
    """What the cashier screen would show, as lines on the terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    async def show(self, prompt: Prompt) -> None:
        extra = f"  ({', '.join(prompt.lines)})" if prompt.lines else ""
        self.out.write(f"[{prompt.kind}] {prompt.text}{extra}\n")
        self.out.flush()


async def _pay(args: argparse.Namespace, settings: AgentSettings, out: TextIO) -> int:
    currency = args.currency or settings.currency
    async with open_agent(settings, _Printer(out)) as agent:
        await agent.link.wait_connected(settings.timeouts.host_s)
        await agent.terminal.recover()
        if args.void_last:
            result = await agent.terminal.void_last()
        else:
            if args.amount is None:
                raise _UsageError("an amount is needed (or --void-last)")
            result = await agent.terminal.pay(
                minor_units(args.amount, currency),
                currency,
                transaction_type="refund" if args.refund else "purchase",
                idempotency_key=args.idempotency_key,
                reference=args.reference,
            )
        await agent.terminal.deliver_reversals()
    code = f" {result.response_code}" if result.response_code else ""
    auth = f" auth {result.authorization_code}" if result.authorization_code else ""
    out.write(f"result: {result.status}{code}{auth} - {result.message}\n")
    return EXIT[result.status]


async def _run(settings: AgentSettings, config: Path) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    feed = None
    display: Display = _Printer(sys.stdout)
    if settings.ecr is not None:
        from terminal_agent.cashier import CashierFeed

        feed = CashierFeed()  # the cashier page's live prompts
        display = FanOut([display, feed])
    async with open_agent(settings, display) as agent:
        await agent.terminal.recover()
        ecr_task: asyncio.Task[None] | None = None
        if settings.ecr is not None and feed is not None:
            import uvicorn

            from terminal_agent.cashier import create_cashier_app
            from terminal_agent.ecr.settings import read_token

            server = uvicorn.Server(
                uvicorn.Config(
                    create_cashier_app(
                        agent.terminal,
                        settings.ecr,
                        feed,
                        token=read_token(settings.ecr.token_file),
                        pinpad=agent.pinpad,
                        merchant=settings.receipts,
                        printer=settings.printer,
                    ),
                    host=settings.ecr.host,
                    port=settings.ecr.port,
                    access_log=False,  # paths carry payment ids; nothing to gain in logs
                    log_level="warning",
                )
            )
            ecr_task = asyncio.create_task(server.serve())
            log.info(
                "ECR API and cashier page on http://%s:%d/cashier",
                settings.ecr.host,
                settings.ecr.port,
            )

        async def status() -> None:
            async for update in agent.reader.updates():
                state = update.state.value
                shown = state if state in ("ready", "card_present", "no_service") else "missing"
                await agent.link.update_status(reader=shown)  # type: ignore[arg-type]

        async def health() -> None:
            # What the doctor would say, on the status topic for fleet tooling; only the
            # checks that do not touch the devices or the broker the service is using.
            from terminal_agent.doctor import PASSIVE_CHECKS, DoctorSettings, run_checks

            while True:
                try:
                    results = await run_checks(config, DoctorSettings(), only=PASSIVE_CHECKS)
                    await agent.link.update_status(
                        health=[
                            HealthCheck(name=r.name, status=r.status, found=r.found[:300])
                            for r in results
                        ],
                        health_at=datetime.now(UTC),
                    )
                except Exception:
                    log.exception("the periodic self-test failed; trying again later")
                await asyncio.sleep(settings.timeouts.health_s)

        watcher = asyncio.create_task(status())
        checker = asyncio.create_task(health())
        started = asyncio.Event()
        started.set()  # devices opened, journal recovered: ready for payments
        environ = os.environ  # noqa: TID251 - the CLI is the edge (systemd's variables)
        systemd = asyncio.create_task(notify_systemd(started, environ))
        try:
            while not stop.is_set():
                try:
                    await agent.terminal.deliver_reversals()
                    await agent.terminal.settle_pending()  # batches the host has not settled
                except Exception:
                    log.exception("reversal or batch delivery failed; trying again later")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.timeouts.reversal_retry_s)
        finally:
            watcher.cancel()
            checker.cancel()
            systemd.cancel()
            if ecr_task is not None:
                if feed is not None:
                    feed.close()  # ends the pages' event streams so the server can stop
                server.should_exit = True
                await ecr_task
    return 0


async def _journal(settings: AgentSettings, limit: int, out: TextIO) -> int:
    key = read_secret_hex(settings.journal.key_file, 32)
    journal = await TransactionJournal.open(settings.journal.path, key)
    try:
        for r in await journal.recent(limit):
            out.write(
                f"{r.created_at:%Y-%m-%d %H:%M:%S} #{r.local_id:<5} {r.transaction_type:<8} "
                f"{by_alpha(r.currency).format(r.amount):>14} {r.masked_pan or '-':<19} "
                f"{r.state:<16} {r.response_code or '--'} {r.authorization_code or ''}\n"
            )
    finally:
        await journal.close()
    return 0


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    silence_legacy_tdes_warnings()
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["doctor"]:
        from terminal_agent.doctor import main as doctor_main

        return doctor_main(words[1:], out=out)
    if words[:1] == ["provision"]:
        from terminal_agent.provision import main as provision_main

        return provision_main(words[1:], out=out)
    try:
        args = _parser().parse_args(words)
        settings = load_settings(args.config)
        if args.command == "journal":
            return asyncio.run(_journal(settings, args.limit, out))
        _logging(args.log_level)
        if args.command == "pay":
            return asyncio.run(_pay(args, settings, out))
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(_run(settings, args.config))
        return 0
    except _UsageError as exc:
        print(f"terminal-agent: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, JournalError, CodecError) as exc:
        print(f"terminal-agent: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
