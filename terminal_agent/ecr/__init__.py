"""The ECR integration API: JSON over HTTP for cash registers (issue 7, docs/ecr-api.md).

- :func:`create_app` builds the ASGI app from a ``PaymentTerminal`` and :class:`EcrSettings`;
- :class:`EcrService` is what it does without HTTP (one payment at a time, from the journal);
- :class:`EcrSettings` is the ``[ecr]`` section; :func:`read_token` reads its 0600 token.
"""

from __future__ import annotations

from terminal_agent.ecr.app import create_app
from terminal_agent.ecr.service import (
    EcrError,
    EcrService,
    IdempotencyConflict,
    NotCancellable,
    NotVoidable,
    PaymentNotFound,
    ServiceUnavailable,
    TerminalBusy,
)
from terminal_agent.ecr.settings import EcrSettings, read_token

__all__ = [
    "EcrError",
    "EcrService",
    "EcrSettings",
    "IdempotencyConflict",
    "NotCancellable",
    "NotVoidable",
    "PaymentNotFound",
    "ServiceUnavailable",
    "TerminalBusy",
    "create_app",
    "read_token",
]
