"""terminal_agent.doctor: ``terminal-agent doctor``, the terminal's self-test (issue 8).

* :mod:`.model`: :class:`CheckResult` (name, ``ok|warn|fail``, what was found, the action
  for a technician) and :class:`DoctorSettings` (every timeout and threshold);
* :mod:`.checks`: one function per component: configuration and 0600 secrets, pcscd and
  the reader and card, the PIN pad and its PIN key, the data key block and its DUKPT
  keys left, the broker (TCP, TLS), the client certificate, the clock, the bridge's
  retained status, the journal, disk space and pending reversals;
* :mod:`.cli`: :func:`main`, the human and ``--json`` reports and the exit code
  (0 ok, 1 warnings, 2 failures).

Checks never raise for a broken component: a broken component is a ``fail`` result.
"""

from __future__ import annotations

from terminal_agent.doctor.checks import (
    CHECK_NAMES,
    PASSIVE_CHECKS,
    dukpt_keys_left,
    run_checks,
)
from terminal_agent.doctor.cli import exit_code, main, render_json, render_text
from terminal_agent.doctor.model import CheckResult, DoctorSettings, Status

__all__ = [
    "CHECK_NAMES",
    "PASSIVE_CHECKS",
    "CheckResult",
    "DoctorSettings",
    "Status",
    "dukpt_keys_left",
    "exit_code",
    "main",
    "render_json",
    "render_text",
    "run_checks",
]
