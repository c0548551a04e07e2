"""The transaction state machine and the records the journal returns (DESIGN 3 and 6).

One row per sale, refund or void::

    created -> card_read -> pin_captured -> sent -> responded -> completed
       |           |  \\          |           |          |  \\-> declined
       |           |   \\-> sent  |           |          \\----> reversal_pending -> reversed
       |           \\-> declined (card, offline)          |
       \\-----------+--------------+-> not_completed       sent -> reversal_pending

``sent`` means "may have reached the host": it is journaled, with the encrypted request
body, *before* the first publish. A ``sent`` transaction without a response, and a host
approval the card did not complete, are reversed (``reversal_pending`` until the bridge
acknowledges, then ``reversed``). ``completed``, ``declined``, ``not_completed`` and
``reversed`` are final.

End of day: a closed :class:`Batch` and, once it is sent to the host, its
:class:`HostSettlement` (``pending`` until the bridge answers, then ``settled`` with the
host's verdict; the batch itself never reopens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal, get_args

State = Literal[
    "created",
    "card_read",
    "pin_captured",
    "sent",
    "responded",
    "completed",
    "declined",
    "not_completed",
    "reversal_pending",
    "reversed",
]
STATES: Final[tuple[State, ...]] = get_args(State)
TransactionType = Literal["purchase", "refund", "void"]
ReversalReason = Literal[
    "host_timeout", "card_declined", "card_removed", "cancelled", "terminal_error"
]
MessageRole = Literal["request", "reversal"]

#: Every step the state machine allows; anything else is :class:`IllegalTransition`.
TRANSITIONS: Final[dict[State, frozenset[State]]] = {
    # created -> sent: a void needs no card (it reverses the purchase it names).
    "created": frozenset({"card_read", "sent", "not_completed"}),
    "card_read": frozenset({"pin_captured", "sent", "declined", "not_completed"}),
    "pin_captured": frozenset({"sent", "not_completed"}),
    "sent": frozenset({"responded", "reversal_pending"}),
    "responded": frozenset({"completed", "declined", "reversal_pending"}),
    "reversal_pending": frozenset({"reversed"}),
    "completed": frozenset(),
    "declined": frozenset(),
    "not_completed": frozenset(),
    "reversed": frozenset(),
}
FINAL_STATES: Final = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
#: States in which the encrypted request body may still exist (retries are possible).
BODY_STATES: Final = frozenset({"created", "card_read", "pin_captured", "sent"})


@dataclass(frozen=True, slots=True)
class CardData:
    """What the card gave the terminal (journaled at ``card_read``); no SAD, PAN masked."""

    masked_pan: str
    aid: str
    application_label: str = ""
    tvr: str = ""
    tsi: str = ""
    arqc: str = ""
    cvm: str = ""


@dataclass(frozen=True, slots=True)
class HostAnswer:
    """The host's answer (journaled at ``responded``)."""

    approved: bool
    response_code: str
    authorization_code: str | None = None
    host_reference: str | None = None
    correlation_id: str | None = None
    """The message id the response was correlated to (the reversal names it)."""


@dataclass(frozen=True, slots=True)
class CardOutcome:
    """What the card said at the second GENERATE AC (journaled at ``completed``)."""

    tc: str = ""
    tvr: str | None = None
    tsi: str | None = None


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """One journaled transaction as the journal shows it: masked, no card data."""

    local_id: int
    idempotency_key: str
    ecr_reference: str
    transaction_type: TransactionType
    amount: int
    currency: str
    state: State
    message_ids: tuple[str, ...]
    reversal_message_ids: tuple[str, ...]
    masked_pan: str | None
    aid: str | None
    application_label: str | None
    tvr: str | None
    tsi: str | None
    arqc: str | None
    tc: str | None
    cvm: str | None
    approved: bool | None
    response_code: str | None
    authorization_code: str | None
    host_reference: str | None
    correlation_id: str | None
    reversal_reason: ReversalReason | None
    has_body: bool
    created_at: datetime
    updated_at: datetime
    history: tuple[tuple[State, datetime], ...] = field(default=())

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def reversal_target(self) -> str | None:
        """The message id a reversal names: the one the host answered, else the first sent."""
        if self.correlation_id is not None:
            return self.correlation_id
        return self.message_ids[0] if self.message_ids else None


@dataclass(frozen=True, slots=True)
class Recovery:
    """What :meth:`TransactionJournal.recover` did at start-up (local ids)."""

    reversals_queued: tuple[int, ...]
    declined: tuple[int, ...]
    abandoned: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One line of a closed batch: the count and sum of one type, final state and currency."""

    transaction_type: TransactionType
    state: Literal["completed", "declined"]
    currency: str
    count: int
    amount: int


HostStatus = Literal["in_balance", "out_of_balance", "unreconciled"]
SettlementState = Literal["pending", "settled"]


@dataclass(frozen=True, slots=True)
class HostTotal:
    """One line of the host's totals for a batch: completed transactions of a type."""

    transaction_type: TransactionType
    currency: str
    count: int
    amount: int


@dataclass(frozen=True, slots=True)
class HostSettlement:
    """A batch as settled with the host (the bridge), journaled in ``batch_settlements``.

    ``idempotency_key`` is the key every BatchCloseRequest for this batch carries (chosen
    once, when the batch is closed for the host, so a retry re-sends the same one).
    ``pending``: not settled yet, ``reason`` says why (``None`` before the first try);
    ``settled``: the host's ``status``, batch id, totals and differences, as it sent them.
    """

    idempotency_key: str
    state: SettlementState
    attempts: int
    updated_at: datetime
    reason: str | None = None
    status: HostStatus | None = None
    host_batch_id: str | None = None
    totals: tuple[HostTotal, ...] = ()
    differences: tuple[str, ...] = ()

    @property
    def settled(self) -> bool:
        return self.state == "settled"


@dataclass(frozen=True, slots=True)
class Batch:
    """A terminal batch (end of day): the completed and declined transactions that became
    final after the previous close (``since``; ``None`` for the first) up to ``closed_at``."""

    batch_id: int
    closed_at: datetime
    since: datetime | None
    lines: tuple[BatchLine, ...]
    idempotency_key: str | None = None
    host: HostSettlement | None = None
    """The settlement with the host; ``None`` for a batch never sent to the host."""

    @property
    def completed_lines(self) -> tuple[BatchLine, ...]:
        """The lines the host settles (declined transactions move no money)."""
        return tuple(line for line in self.lines if line.state == "completed")
