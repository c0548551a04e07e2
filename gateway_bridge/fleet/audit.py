"""An append-only audit log of provisioning events, one JSON object per line.

Both sides keep one (docs/provisioning.md): the bridge for codes issued, enrolments,
certificates and revocations; the terminal for each provisioning step. A line
(:func:`paycore.enrolment.audit_line`) says who, when, what, the terminal, key ids and key
check values; never a key, a code or a PIN. Each line is one ``write`` to a file opened
``O_APPEND`` and synced, so lines from several processes do not interleave and survive a
crash.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from paycore.enrolment import audit_line


class AuditLog:
    """Appends events to ``path`` (created 0640, its folder 0750, when missing)."""

    def __init__(self, path: Path, *, clock: Callable[[], datetime] | None = None) -> None:
        self.path = path
        self._clock = clock or (lambda: datetime.now(UTC))

    def record(self, event: str, **fields: object) -> None:
        line = audit_line(event, self._clock(), fields)
        self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[dict[str, object]]:
        """Every event so far (for the CLI and tests)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]
