"""``terminal-agent doctor``: the self-test a field technician runs (issue 8).

    terminal-agent doctor --config FILE [--json] [--check NAME ...] [--timeout S]

Prints one aligned line per check (status, name, what was found) with the action to take
under every warning or failure, or with ``--json`` a list of objects
``{"name", "status", "found", "action"}`` in a fixed order for fleet tooling. Exit 0 when
every check is ok, 1 with warnings only, 2 with any failure (or a usage error).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from terminal_agent.doctor.checks import CHECK_NAMES, run_checks
from terminal_agent.doctor.model import SEVERITY, CheckResult, DoctorSettings

DEFAULT_CONFIG = Path("/etc/pos-agent/agent.toml")


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser() -> _Parser:
    parser = _Parser(prog="terminal-agent doctor", description="check this terminal's parts")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--check", action="append", choices=CHECK_NAMES, default=[], help="only these (repeat)"
    )
    parser.add_argument(
        "--timeout", type=float, help="seconds each device or network probe may take"
    )
    return parser


def exit_code(results: Sequence[CheckResult]) -> int:
    """0 all ok, 1 warnings only, 2 any failure."""
    return max((SEVERITY[r.status] for r in results), default=0)


def render_text(results: Sequence[CheckResult]) -> str:
    """One line per check, aligned; ``-> action`` under every non-ok one."""
    width = max((len(r.name) for r in results), default=0)
    indent = " " * (4 + 2 + width + 2)
    lines: list[str] = []
    for r in results:
        lines.append(f"{r.status.upper():<4}  {r.name:<{width}}  {r.found}")
        if r.action is not None:
            lines.append(f"{indent}-> {r.action}")
    return "\n".join(lines) + "\n"


def render_json(results: Sequence[CheckResult]) -> str:
    return json.dumps([r.as_dict() for r in results], indent=2) + "\n"


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    settings: DoctorSettings | None = None,
) -> int:
    """Run the doctor; ``argv`` is what follows ``terminal-agent doctor``."""
    stream = out if out is not None else sys.stdout
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except _UsageError as exc:
        stream.write(f"terminal-agent doctor: {exc}\n")
        return 2
    doctor = settings or DoctorSettings()
    if args.timeout is not None:
        if not 0 < args.timeout <= 60:
            stream.write("terminal-agent doctor: --timeout must be in (0, 60]\n")
            return 2
        t = args.timeout
        doctor = doctor.model_copy(
            update={
                "pcsc_timeout_s": t,
                "pinpad_timeout_s": t,
                "broker_timeout_s": t,
                "bridge_timeout_s": t,
            }
        )
    results = asyncio.run(run_checks(args.config, doctor, only=args.check))
    stream.write(render_json(results) if args.json else render_text(results))
    stream.flush()
    return exit_code(results)
