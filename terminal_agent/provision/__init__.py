"""``terminal-agent provision``: enrol this terminal with an enrolment code.

    terminal-agent provision --url https://HOST:PORT --terminal-id ID --ca-pin sha256:HEX
        [--code XXXXX-XXXXX-XXXXX-XXXXX | --code -] [--pinpad PORT] [--pin-key-slot N]
        [--reader NAME]
        [--currency GBP] [--config-dir /etc/pos-agent] [--state-dir /var/lib/pos-agent]
        [--udev-dir DIR | --no-udev] [--systemd-dir DIR | --no-systemd]
        [--pinpad-usb-serial S] [--technician NAME] [--no-self-test] [--timeout S]

Without ``--code`` (or with ``--code -``) the code is asked for without echo, or read
from standard input when that is not a terminal, so it stays out of the process list
and the shell history. The steps, their output and the files written are in
:mod:`terminal_agent.provision.steps` and docs/provisioning.md. Exit 0 ready, 1 ready with
warnings from the self-test, 2 a step failed (the message says what to do).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from terminal_agent.provision.steps import ProvisionError, ProvisionOptions, provision

__all__ = ["ProvisionError", "ProvisionOptions", "main", "provision"]


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser() -> _Parser:
    p = _Parser(prog="terminal-agent provision", description="enrol this terminal")
    p.add_argument("--url", required=True, help="the enrolment service, https://...")
    p.add_argument("--terminal-id", required=True)
    p.add_argument("--ca-pin", required=True, help="sha256:... as the operator gave it")
    p.add_argument("--code", default="-", help="the one-time enrolment code (default: ask for it)")
    p.add_argument("--pinpad", default="/dev/pos-pinpad")
    p.add_argument("--pin-key-slot", type=int, default=1)
    p.add_argument("--reader", help="PC/SC reader name (default: the first one)")
    p.add_argument("--currency", default="GBP")
    p.add_argument("--config-dir", type=Path, default=Path("/etc/pos-agent"))
    p.add_argument("--state-dir", type=Path, default=Path("/var/lib/pos-agent"))
    udev = p.add_mutually_exclusive_group()
    udev.add_argument("--udev-dir", type=Path, default=Path("/etc/udev/rules.d"))
    udev.add_argument("--no-udev", action="store_true")
    systemd = p.add_mutually_exclusive_group()
    systemd.add_argument("--systemd-dir", type=Path, default=Path("/etc/systemd/system"))
    systemd.add_argument("--no-systemd", action="store_true")
    p.add_argument("--pinpad-usb-serial", help="fill the pad's udev rule with this serial")
    p.add_argument(
        "--technician",
        default=os.environ.get("SUDO_USER") or os.environ.get("USER") or "unknown",  # noqa: TID251
        help="who is provisioning (for both audit logs)",
    )
    p.add_argument("--no-self-test", action="store_true")
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--extra-config", type=Path, help="TOML appended to agent.toml ([ecr] ...)")
    return p


def _read_code() -> str:
    """The code from the technician, without echo (or one line of standard input)."""
    if sys.stdin.isatty():
        return getpass.getpass("enrolment code: ")
    line = sys.stdin.readline().strip()
    if not line:
        raise _UsageError("no enrolment code given (--code, or type it when asked)")
    return line


def main(argv: Sequence[str], *, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    try:
        args = _parser().parse_args(list(argv))
        code = _read_code() if args.code == "-" else args.code
        extra = "" if args.extra_config is None else "\n" + args.extra_config.read_text("utf-8")
        options = ProvisionOptions(
            url=args.url,
            terminal_id=args.terminal_id,
            code=code,
            ca_pin=args.ca_pin,
            technician=args.technician,
            config_dir=args.config_dir,
            state_dir=args.state_dir,
            pinpad_port=args.pinpad,
            pin_key_slot=args.pin_key_slot,
            reader=args.reader,
            currency=args.currency,
            udev_dir=None if args.no_udev else args.udev_dir,
            systemd_dir=None if args.no_systemd else args.systemd_dir,
            pinpad_usb_serial=args.pinpad_usb_serial,
            self_test=not args.no_self_test,
            timeout_s=args.timeout,
            extra_config=extra,
        )
    except (_UsageError, OSError) as exc:
        print(f"terminal-agent provision: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(provision(options, out))
