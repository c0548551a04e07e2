"""The ECR API's request and response bodies (docs/ecr-api.md).

Requests are strict (no coercion, no extra fields); amounts are minor units in the ISO 8583
DE4 range, currencies ISO 4217 alphabetic codes the terminal knows. Responses carry a PAN
only masked: the API never sees more.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from paycore.wire.messages import Amount, CurrencyCode, IdempotencyKey
from terminal_agent.journal.model import Batch

Status = Literal["pending", "approved", "declined", "not_completed"]
PaymentType = Literal["purchase", "refund"]

_REQUEST = ConfigDict(extra="forbid", frozen=True, strict=True, hide_input_in_errors=True)
_RESPONSE = ConfigDict(extra="forbid", frozen=True)


class PaymentCreate(BaseModel):
    """``POST /v1/payments``: what the register asks for."""

    model_config = _REQUEST

    amount: Amount = Field(description="Minor units (pence, cents), 1 to 999999999999")
    currency: CurrencyCode = Field(description="ISO 4217 alphabetic code, e.g. GBP")
    reference: Annotated[str, Field(pattern=r"^[\x20-\x7E]{0,64}$")] = Field(
        default="", description="The register's own reference (printable ASCII, up to 64)"
    )
    idempotency_key: IdempotencyKey = Field(
        description="Unique per payment; a repeat returns the same payment"
    )
    type: PaymentType = "purchase"


class Payment(BaseModel):
    """One payment as the register sees it."""

    model_config = _RESPONSE

    id: int
    idempotency_key: str
    reference: str
    type: Literal["purchase", "refund", "void"]
    amount: int
    currency: str
    status: Status
    message: str
    cancellable: bool = False
    response_code: str | None = None
    authorization_code: str | None = None
    masked_pan: str | None = None
    application_label: str | None = None
    aid: str | None = None
    tvr: str | None = None
    tsi: str | None = None
    cryptogram: str | None = None
    signature_required: bool = False
    reversal_queued: bool = False
    created_at: dt.datetime


class PaymentList(BaseModel):
    model_config = _RESPONSE

    payments: list[Payment]


class TotalsLine(BaseModel):
    model_config = _RESPONSE

    type: Literal["purchase", "refund", "void"]
    status: Status
    currency: str
    count: int
    amount: int


class Totals(BaseModel):
    """``GET /v1/totals``: one day's journal, by type, status and currency."""

    model_config = _RESPONSE

    date: dt.date
    lines: list[TotalsLine]


class BatchOut(BaseModel):
    """``POST /v1/batches/close``, ``GET /v1/batches``: one closed terminal batch: the
    approved and declined payments that ended between ``since`` and ``closed_at``."""

    model_config = _RESPONSE

    id: int
    closed_at: dt.datetime
    since: dt.datetime | None
    lines: list[TotalsLine]


class BatchList(BaseModel):
    model_config = _RESPONSE

    batches: list[BatchOut]


def batch_out(batch: Batch) -> BatchOut:
    """The API's view of a journal batch (journal states as API statuses)."""
    lines = [
        TotalsLine(
            type=line.transaction_type,
            status="approved" if line.state == "completed" else "declined",
            currency=line.currency,
            count=line.count,
            amount=line.amount,
        )
        for line in batch.lines
    ]
    return BatchOut(id=batch.batch_id, closed_at=batch.closed_at, since=batch.since, lines=lines)


class Printed(BaseModel):
    """``POST /v1/payments/{id}/receipt/print``: what was sent to the printer."""

    model_config = _RESPONSE

    copies: list[Literal["customer", "merchant"]]
    bytes: int


class Problem(BaseModel):
    """Every error body: a code a program can test and words a person can read."""

    model_config = _RESPONSE

    error: str
    message: str
    fields: list[str] = Field(default_factory=list)
