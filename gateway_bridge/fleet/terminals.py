"""``gateway-bridge terminals enrol-code|show|revoke`` and ``gateway-bridge enrol-server``.

The operator's side of provisioning (docs/provisioning.md): issue a code for a registered
terminal and hand the technician the command line to type; see where a terminal stands
(registry, certificates, code); take a terminal out of service; serve the enrolment
service over HTTPS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import TextIO

from gateway_bridge.app import open_journal
from gateway_bridge.config import BridgeSettings, ConfigError
from gateway_bridge.fleet.audit import AuditLog
from gateway_bridge.fleet.ca import TerminalCA
from gateway_bridge.fleet.enrolment import (
    EnrolmentDenied,
    EnrolmentService,
    open_enrolment,
    read_passphrase,
    revoke_terminal,
)
from gateway_bridge.journal.base import UnknownTerminal

log = logging.getLogger(__name__)


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


async def terminals_admin(
    args: argparse.Namespace, settings: BridgeSettings, out: TextIO, environ: Mapping[str, str]
) -> int:
    if args.action == "enrol-code":
        async with open_enrolment(settings, environ) as service:
            by = args.by or environ.get("SUDO_USER") or environ.get("USER") or "unknown"
            try:
                issued = await service.issue_code(
                    args.terminal_id, by, recommission=args.recommission
                )
            except EnrolmentDenied as exc:
                raise ConfigError(str(exc)) from None
            policy = service.settings
            url = policy.public_url or f"https://{policy.broker_host}:{policy.port}"
            out.write(
                f"enrolment code for {args.terminal_id}: {issued.code}\n"
                f"single use, valid until {_when(issued.record.expires_at)}, "
                f"burned after {policy.max_attempts} wrong tries.\n"
                "Give the technician this command and, separately, the code; the command asks\n"
                "for it (or add --code CODE):\n"
                f"  sudo terminal-agent provision --url {url} --terminal-id {args.terminal_id}"
                f" --ca-pin {service.ca_pin()}\n"
            )
        return 0
    enrol = settings.enrolment
    ca = (
        None
        if enrol is None
        else TerminalCA(enrol.ca_dir, passphrase=read_passphrase(enrol, environ))
    )
    journal = await open_journal(settings)
    try:
        if args.action == "revoke":
            if ca is None:
                raise ConfigError("revoking needs the [enrolment] section (the CA directory)")
            lines = await revoke_terminal(
                journal,
                ca,
                args.terminal_id,
                reason=args.reason,
                by=environ.get("SUDO_USER") or environ.get("USER", "?"),
                audit=None if enrol is None else AuditLog(enrol.audit_log),
                crl_install_path=None if enrol is None else enrol.crl_install_file,
                reload_command=() if enrol is None else enrol.broker_reload_command,
                now=datetime.now(UTC),
            )
            out.write("".join(f"{line}\n" for line in lines))
            return 0
        terminal = await journal.get_terminal(args.terminal_id)
        if terminal is None:
            raise UnknownTerminal(f"no terminal {args.terminal_id!r}")
        code = await journal.get_enrolment_code(args.terminal_id)
        certificates = (
            []
            if ca is None
            else [r for r in ca.records() if r.kind == "terminal" and r.name == args.terminal_id]
        )
        now = datetime.now(UTC)
        if args.json:
            out.write(
                json.dumps(
                    {
                        "terminal_id": terminal.terminal_id,
                        "merchant_id": terminal.merchant_id,
                        "status": terminal.status,
                        "data_initial_key_id": terminal.data_initial_key_id,
                        "data_bdk_id": terminal.data_bdk_id,
                        "pin_bdk_id": terminal.pin_bdk_id,
                        "last_counter": terminal.last_counter,
                        "last_seen_at": _when(terminal.last_seen_at),
                        "certificates": [c.model_dump(mode="json") for c in certificates],
                        "enrolment_code": None
                        if code is None
                        else {
                            "created_at": _when(code.created_at),
                            "expires_at": _when(code.expires_at),
                            "used_at": _when(code.used_at),
                            "failed_attempts": code.failed_attempts,
                            "created_by": code.created_by,
                        },
                    },
                    indent=2,
                )
                + "\n"
            )
            return 0
        out.write(
            f"terminal     {terminal.terminal_id} (merchant {terminal.merchant_id})\n"
            f"status       {terminal.status}\n"
            f"data key     BDK {terminal.data_bdk_id}, initial key id "
            f"{terminal.data_initial_key_id}, last counter {terminal.last_counter or 0}\n"
            f"PIN BDK      {terminal.pin_bdk_id}\n"
            f"last seen    {_when(terminal.last_seen_at)}\n"
        )
        if not certificates:
            out.write("certificate  none issued\n")
        for c in certificates:
            state = (
                f"revoked {_when(c.revoked_at)} ({c.revocation_reason})"
                if c.revoked_at
                else ("expired" if c.expired(now) else f"valid until {_when(c.not_after)}")
            )
            out.write(f"certificate  {c.serial} {state}\n")
        if code is None:
            out.write("enrolment    no code\n")
        else:
            state = (
                f"used {_when(code.used_at)}"
                if code.used_at
                else (
                    "expired" if code.expires_at <= now else f"open until {_when(code.expires_at)}"
                )
            )
            out.write(
                f"enrolment    code by {code.created_by} at {_when(code.created_at)}: {state}, "
                f"{code.failed_attempts} wrong tries\n"
            )
        return 0
    finally:
        await journal.close()


@contextlib.asynccontextmanager
async def enrolment_server(
    settings: BridgeSettings, environ: Mapping[str, str]
) -> AsyncIterator[EnrolmentService]:
    """The enrolment service over HTTPS on ``[enrolment] host:port``, running until the
    block ends (what ``enrol-server`` runs; the demo and the tests use it too)."""
    import uvicorn

    from gateway_bridge.fleet.enrol_http import create_enrolment_app

    enrol = settings.enrolment
    if enrol is None:
        raise ConfigError("the configuration has no [enrolment] section")
    async with open_enrolment(settings, environ) as service:
        server = uvicorn.Server(
            uvicorn.Config(
                create_enrolment_app(service),
                host=enrol.host,
                port=enrol.port,
                ssl_certfile=str(enrol.tls_cert_file),
                ssl_keyfile=str(enrol.tls_key_file),
                access_log=False,
                log_level="warning",
                log_config=None,
            )
        )
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                if task.done():
                    task.result()  # the reason it could not start
                    raise ConfigError(f"the enrolment service did not start on {enrol.port}")
                await asyncio.sleep(0.02)
            log.info("enrolment service on https://%s:%d", enrol.host, enrol.port)
            yield service
        finally:
            server.should_exit = True
            await task


async def serve_enrolment(settings: BridgeSettings, environ: Mapping[str, str]) -> int:
    """Serve the enrolment service until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with enrolment_server(settings, environ):
        await stop.wait()
    return 0
