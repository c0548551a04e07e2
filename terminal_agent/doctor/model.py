"""The doctor's result type and its settings (issue 8; DESIGN section 3, operations).

A :class:`CheckResult` is one line of the report: a stable ``name`` fleet tooling keys on,
a :data:`Status`, what was ``found``, and for every non-ok result the ``action`` a field
technician takes. :class:`DoctorSettings` holds every timeout and threshold (STYLE 9).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["ok", "warn", "fail"]

#: Worst first; the exit code is the index from the end (ok 0, warn 1, fail 2).
SEVERITY: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome. ``action`` is ``None`` exactly when ``status`` is ``"ok"``."""

    name: str
    status: Status
    found: str
    action: str | None = None

    def __post_init__(self) -> None:
        if (self.status == "ok") != (self.action is None):
            raise ValueError("an action is given for every non-ok result, and only for those")

    def as_dict(self) -> dict[str, str | None]:
        """The stable JSON shape: ``name``, ``status``, ``found``, ``action``."""
        return {
            "name": self.name,
            "status": self.status,
            "found": self.found,
            "action": self.action,
        }


def ok(name: str, found: str) -> CheckResult:
    return CheckResult(name, "ok", found)


def warn(name: str, found: str, action: str) -> CheckResult:
    return CheckResult(name, "warn", found, action)


def fail(name: str, found: str, action: str) -> CheckResult:
    return CheckResult(name, "fail", found, action)


class DoctorSettings(BaseModel):
    """How long each probe may take and where warnings start."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pcsc_timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    pinpad_timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    broker_timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    bridge_timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    #: Warn when the client certificate expires within this many days.
    cert_warn_days: Annotated[int, Field(ge=0)] = 14
    #: Warn when a DUKPT key (PIN pad slot or the terminal's data key) has fewer left.
    dukpt_warn_keys: Annotated[int, Field(ge=0)] = 10_000
    #: Warn when the journal's filesystem has less free space than this.
    disk_warn_bytes: Annotated[int, Field(ge=0)] = 100 * 1024 * 1024
    #: Warn when a queued reversal has waited longer than this.
    reversal_warn_age_s: Annotated[float, Field(gt=0)] = 3600.0
    #: A journal timestamp or certificate start this far in the future means the clock is
    #: behind.
    clock_skew_s: Annotated[float, Field(gt=0)] = 300.0
