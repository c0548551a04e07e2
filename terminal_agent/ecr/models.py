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
from terminal_agent.journal.model import Batch, HostSettlement

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


class HostTotalsLine(BaseModel):
    """One line of the host's totals: its completed transactions of a type."""

    model_config = _RESPONSE

    type: Literal["purchase", "refund", "void"]
    currency: str
    count: int
    amount: int


SettlementStatus = Literal["in_balance", "out_of_balance", "unreconciled", "not_settled"]


class Settlement(BaseModel):
    """The host's verdict on a batch (issue 6). ``not_settled``: the host has not answered
    yet, ``reason`` says why; the terminal retries with the same idempotency key."""

    model_config = _RESPONSE

    status: SettlementStatus
    message: str = Field(description="What the cashier reads")
    host_batch_id: str | None = None
    totals: list[HostTotalsLine] = Field(default_factory=list)
    differences: list[str] = Field(
        default_factory=list, description="Every difference the host found, one per line"
    )
    reason: str | None = Field(default=None, description="Why it is not settled (yet)")
    attempts: int = Field(description="Exchanges with the host so far")
    updated_at: dt.datetime


class BatchOut(BaseModel):
    """``POST /v1/batches/close``, ``GET /v1/batches``: one closed terminal batch: the
    approved and declined payments that ended between ``since`` and ``closed_at``, and
    the host's verdict on it (``settlement``; ``null`` for a batch never sent to it)."""

    model_config = _RESPONSE

    id: int
    closed_at: dt.datetime
    since: dt.datetime | None
    lines: list[TotalsLine]
    settlement: Settlement | None = None


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
    return BatchOut(
        id=batch.batch_id,
        closed_at=batch.closed_at,
        since=batch.since,
        lines=lines,
        settlement=settlement_out(batch.host) if batch.host is not None else None,
    )


def settlement_message(host: HostSettlement) -> str:
    """The words for the cashier: the verdict and the host's batch id, or why not."""
    if not host.settled or host.status is None:
        return f"Not settled with the host: {host.reason or 'not sent yet'}"
    if host.status == "in_balance":
        return f"IN BALANCE: host batch {host.host_batch_id}"
    if host.status == "out_of_balance":
        count = len(host.differences)
        return (
            f"OUT OF BALANCE: host batch {host.host_batch_id}, "
            f"{count} difference{'s' if count != 1 else ''}"
        )
    return f"NOT RECONCILED by the host: host batch {host.host_batch_id}"


def settlement_out(host: HostSettlement) -> Settlement:
    """The API's view of the journal's settlement of a batch."""
    return Settlement(
        status=host.status if host.settled and host.status is not None else "not_settled",
        message=settlement_message(host),
        host_batch_id=host.host_batch_id,
        totals=[
            HostTotalsLine(
                type=t.transaction_type, currency=t.currency, count=t.count, amount=t.amount
            )
            for t in host.totals
        ],
        differences=list(host.differences),
        reason=None if host.settled else host.reason,
        attempts=host.attempts,
        updated_at=host.updated_at,
    )


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
