"""What the ECR API does, apart from HTTP: payments on the one card reader (DESIGN 3 step 1).

:class:`EcrService` runs at most one payment at a time through
:meth:`terminal_agent.transaction.PaymentTerminal.pay`, in a background task, and answers
from the agent's journal, so a repeated idempotency key returns the same payment even
after a restart. Cancelling is allowed while the terminal waits for the card or the PIN
(journal states ``created``, ``card_read``, ``pin_captured``): the task is cancelled (the
reader powers the card off, the PIN pad driver sends CANCEL to the pad) and the journal
row is closed ``not_completed``. If the request reached ``sent`` in the meantime, the
reversal is queued instead: nothing the host may have approved is left standing.

Errors (each maps to one HTTP status in :mod:`terminal_agent.ecr.app`)::

    EcrError
    ├── PaymentNotFound        404  no payment with that id
    ├── TerminalBusy           409  another payment or void is running
    ├── IdempotencyConflict    409  key already used for a different payment
    ├── NotCancellable         409  finished, or already sent to the card issuer
    ├── NotVoidable            409  not the last approved purchase
    ├── NoReceipt              409  still running, or no merchant settings / printer
    ├── PrinterFailed          503  the printer did not print (absent, busy, misconfigured)
    └── ServiceUnavailable     503  the payment could not be started (journal)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
from typing import Final

from terminal_agent.display import Prompt
from terminal_agent.ecr.models import (
    BatchOut,
    Payment,
    PaymentCreate,
    Status,
    Totals,
    TotalsLine,
    batch_out,
)
from terminal_agent.journal import JournalError, State, TransactionRecord
from terminal_agent.receipts import (
    Copy,
    MerchantSettings,
    PrinterError,
    PrinterSettings,
    Receipt,
    print_receipt,
    receipt_for,
)
from terminal_agent.transaction import PaymentResult, PaymentTerminal

log = logging.getLogger(__name__)

#: Journal states in which the card (or the PIN) is still awaited: cancellable.
CANCELLABLE: Final[frozenset[State]] = frozenset({"created", "card_read", "pin_captured"})
CANCELLED_TEXT: Final = "Not completed: cancelled by the register"
_STATUS: Final[dict[State, Status]] = {
    "completed": "approved",
    "declined": "declined",
    "not_completed": "not_completed",
    "reversal_pending": "not_completed",
    "reversed": "not_completed",
}
_PENDING_TEXT: Final[dict[State, str]] = {
    "created": "In progress: waiting for the card",
    "card_read": "In progress: reading the card",
    "pin_captured": "In progress: PIN entered",
    "sent": "In progress: waiting for the card issuer",
    "responded": "In progress: completing with the card",
}
_FINAL_TEXT: Final[dict[Status, str]] = {
    "approved": "APPROVED",
    "declined": "DECLINED",
    "not_completed": "Not completed",
}
_REMEMBERED = 256


class EcrError(Exception):
    """Something the register asked that cannot be done; ``code`` names it for programs."""

    status = 400
    code = "bad_request"


class PaymentNotFound(EcrError):
    status, code = 404, "not_found"


class TerminalBusy(EcrError):
    status, code = 409, "busy"


class IdempotencyConflict(EcrError):
    status, code = 409, "idempotency_conflict"


class NotCancellable(EcrError):
    status, code = 409, "not_cancellable"


class NotVoidable(EcrError):
    status, code = 409, "not_voidable"


class ServiceUnavailable(EcrError):
    status, code = 503, "unavailable"


class NoReceipt(EcrError):
    status, code = 409, "no_receipt"


class PrinterFailed(EcrError):
    status, code = 503, "printer_unavailable"


class EcrService:
    """One payment at a time on ``terminal``; every answer comes from its journal."""

    def __init__(
        self, terminal: PaymentTerminal, *, scan_limit: int = 10_000, start_timeout_s: float = 5.0
    ) -> None:
        self.terminal = terminal
        self.scan_limit = scan_limit
        self.start_timeout_s = start_timeout_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._running_id: int | None = None
        self._voiding = False
        self._results: collections.OrderedDict[int, PaymentResult] = collections.OrderedDict()

    # -- create --------------------------------------------------------------------------

    async def create(self, request: PaymentCreate) -> tuple[Payment, bool]:
        """Start a payment; (payment, replayed). A known key returns its payment."""
        journal = self.terminal.journal
        async with self._lock:
            existing = await journal.by_idempotency_key(request.idempotency_key)
            if existing is not None:
                if (
                    existing.amount,
                    existing.currency,
                    existing.transaction_type,
                    existing.ecr_reference,
                ) != (request.amount, request.currency, request.type, request.reference):
                    raise IdempotencyConflict(
                        "idempotency_key was already used for a different payment "
                        f"(id {existing.local_id}); use a new key for a new payment"
                    )
                return self._payment(existing), True
            self._check_idle()
            task = asyncio.create_task(self._run(request), name="ecr-payment")
            self._task, self._running_id = task, None
            record = await self._journaled(request.idempotency_key, task)
            self._running_id = record.local_id
            return self._payment(record), False

    def _check_idle(self) -> None:
        if self._voiding:
            raise TerminalBusy("the terminal is busy with a void: try again when it is done")
        if self._task is not None and not self._task.done():
            which = f" {self._running_id}" if self._running_id is not None else ""
            raise TerminalBusy(
                f"the terminal is busy with payment{which}: it has one card reader, so one "
                "payment at a time; wait for it to finish or cancel it"
            )

    async def _journaled(self, key: str, task: asyncio.Task[None]) -> TransactionRecord:
        """The journal row ``pay`` creates first thing (it is written before the card wait)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout_s
        while True:
            record = await self.terminal.journal.by_idempotency_key(key)
            if record is not None:
                return record
            if task.done() or loop.time() > deadline:
                task.cancel()
                raise ServiceUnavailable("the payment could not be started: try again")
            await asyncio.sleep(0.005)

    async def _run(self, request: PaymentCreate) -> None:
        key = request.idempotency_key
        try:
            result = await self.terminal.pay(
                request.amount,
                request.currency,
                transaction_type=request.type,
                idempotency_key=key,
                reference=request.reference,
            )
        except asyncio.CancelledError:
            await self._settle_cancelled(key)
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # cancelled from outside (shutdown), not by the register
            return
        except Exception:
            # The agent's errors carry no card data (paycore/errors.py); keep the trace.
            log.exception("ECR payment %s failed", key)
            return
        self._remember(result)

    def _remember(self, result: PaymentResult) -> None:
        self._results[result.local_id] = result
        while len(self._results) > _REMEMBERED:
            self._results.popitem(last=False)

    async def _settle_cancelled(self, key: str) -> None:
        """Close the journal row of a cancelled payment (the terminal's own code did not)."""
        terminal = self.terminal
        try:
            record = await terminal.journal.by_idempotency_key(key)
            if record is None or record.final:
                return
            queued = False
            if record.state in CANCELLABLE:
                await terminal.journal.not_completed(record.local_id)
            elif record.state == "responded" and not record.approved:
                await terminal.journal.decline(record.local_id)
            else:  # sent, or approved by the host: reverse whatever may have been taken
                await terminal.journal.queue_reversal(record.local_id, "cancelled")
                queued = True
            text = CANCELLED_TEXT + (
                ": the amount will be reversed if it was taken" if queued else ""
            )
            self._remember(
                PaymentResult(record.local_id, key, "not_completed", text, reversal_queued=queued)
            )
            log.info("ECR payment %d cancelled by the register", record.local_id)
            await terminal.display.show(Prompt("not_completed", text))
            await terminal.display.show(Prompt("remove_card", "Remove card"))
        except JournalError:
            log.exception("could not journal the cancellation of ECR payment %s", key)

    # -- cancel and void -----------------------------------------------------------------

    async def cancel(self, local_id: int) -> Payment:
        """Cancel the running payment while the card or the PIN is awaited."""
        record = await self._get(local_id)
        payment = self._payment(record)
        if record.final:
            raise NotCancellable(f"payment {local_id} is already {payment.status}")
        task = self._task
        if self._running_id != local_id or task is None or task.done():
            raise NotCancellable(f"payment {local_id} is not running on this terminal")
        if record.state not in CANCELLABLE:
            raise NotCancellable(
                f"payment {local_id} was sent to the card issuer and can no longer be "
                "cancelled; void it once it is approved"
            )
        task.cancel()
        await asyncio.wait({task})
        return self._payment(await self._get(local_id))

    async def void(self, local_id: int) -> Payment:
        """Void ``local_id`` if it is the last approved purchase (no card needed)."""
        journal = self.terminal.journal
        async with self._lock:
            self._check_idle()
            record = await self._get(local_id)
            if record.transaction_type != "purchase" or record.state != "completed":
                raise NotVoidable(f"payment {local_id} is not an approved purchase")
            done = await journal.by_idempotency_key(f"void:{record.idempotency_key}"[:64])
            if done is None:
                last = next(
                    (r for r in await journal.recent(50, state="completed")
                     if r.transaction_type == "purchase"),
                    None,
                )  # fmt: skip
                if last is None or last.local_id != local_id:
                    raise NotVoidable(
                        f"only the last approved purchase can be voided; payment {local_id} "
                        "is not the last: refund it instead"
                    )
            self._voiding = True
            try:
                result = await self.terminal.void_last()
            finally:
                self._voiding = False
            if result.local_id == 0:
                raise NotVoidable(result.message)
            self._remember(result)
            return self._payment(await self._get(result.local_id))

    # -- queries -------------------------------------------------------------------------

    async def get(self, local_id: int) -> Payment:
        return self._payment(await self._get(local_id))

    async def by_reference(self, reference: str) -> list[Payment]:
        """Payments with the register's ``reference``, newest first."""
        records = await self.terminal.journal.recent(self.scan_limit)
        return [self._payment(r) for r in records if r.ecr_reference == reference]

    async def totals(self, day: dt.date) -> Totals:
        """Counts and amounts of ``day`` (UTC) by type, status and currency."""
        sums: dict[tuple[str, Status, str], list[int]] = {}
        for record in await self.terminal.journal.recent(self.scan_limit):
            if record.created_at.astimezone(dt.UTC).date() != day:
                continue
            key = (record.transaction_type, self._status(record), record.currency)
            line = sums.setdefault(key, [0, 0])
            line[0] += 1
            line[1] += record.amount
        lines = [
            TotalsLine(type=t, status=s, currency=c, count=n, amount=a)
            for (t, s, c), (n, a) in sorted(sums.items())
        ]
        return Totals(date=day, lines=lines)

    async def recent(self, limit: int) -> list[Payment]:
        """The newest ``limit`` payments first (masked PANs only)."""
        return [self._payment(r) for r in await self.terminal.journal.recent(limit)]

    async def receipt(
        self, local_id: int, copy: Copy, merchant: MerchantSettings | None
    ) -> Receipt:
        """The ``copy`` receipt of a finished payment, rebuilt from the journal."""
        if merchant is None:
            raise NoReceipt("no merchant settings configured: receipts cannot be made")
        record = await self._get(local_id)
        payment = self._payment(record)
        if payment.status == "pending":
            raise NoReceipt(f"payment {local_id} is still in progress")
        result = PaymentResult(
            local_id=record.local_id,
            idempotency_key=record.idempotency_key,
            status=payment.status,
            message=payment.message,
            response_code=payment.response_code,
            authorization_code=payment.authorization_code,
            masked_pan=payment.masked_pan,
            application_label=payment.application_label,
            aid=payment.aid,
            tvr=payment.tvr,
            tsi=payment.tsi,
            cryptogram=payment.cryptogram,
            signature_required=payment.signature_required,
            reversal_queued=payment.reversal_queued,
        )
        try:
            return receipt_for(record, result, merchant, copy)
        except ValueError:  # ReceiptDataError, or journal values it cannot read
            raise NoReceipt(
                f"payment {local_id}: its journal record cannot make a receipt"
            ) from None

    async def print_receipts(
        self, local_id: int, merchant: MerchantSettings | None, printer: PrinterSettings | None
    ) -> int:
        """Print the customer then the merchant copy; the number of bytes sent."""
        if printer is None:
            raise NoReceipt("no printer configured")
        copies = [await self.receipt(local_id, c, merchant) for c in ("customer", "merchant")]
        sent = 0
        try:
            for receipt in copies:
                sent += await asyncio.to_thread(print_receipt, receipt, printer)
        except PrinterError as exc:
            log.warning("receipt of payment %d not printed: %s", local_id, type(exc).__name__)
            raise PrinterFailed(f"the receipt was not printed: {exc}") from None
        return sent

    async def close_batch(self, idempotency_key: str | None) -> BatchOut:
        """Close the terminal batch (end of day) and settle it with the host; a repeated
        key returns the same batch (and retries the host part if it is not settled)."""
        return batch_out(await self.terminal.close_batch(idempotency_key))

    async def batches(self, limit: int) -> list[BatchOut]:
        return [batch_out(b) for b in await self.terminal.journal.batches(limit)]

    async def aclose(self) -> None:
        """Shutdown: cancel a running payment (it is journaled ``not_completed``)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- records to payments -------------------------------------------------------------

    async def _get(self, local_id: int) -> TransactionRecord:
        record = await self.terminal.journal.get(local_id)
        if record is None:
            raise PaymentNotFound(f"no payment with id {local_id}")
        return record

    def _status(self, record: TransactionRecord) -> Status:
        return _STATUS.get(record.state, "pending")

    def _payment(self, record: TransactionRecord) -> Payment:
        status = self._status(record)
        result = self._results.get(record.local_id)
        running = (
            self._running_id == record.local_id and self._task is not None and not self._task.done()
        )
        if status != "pending" and result is None and running:
            # The journal is final a moment before pay() returns with the words for the
            # cashier: report it final together with them, never with a generic text.
            status = "pending"
            message = "Finishing"
        elif result is not None and status != "pending":
            message = result.message
        elif status == "pending":
            message = _PENDING_TEXT.get(record.state, "In progress")
            if not running:
                message = "Interrupted: the agent settles it when it restarts"
        else:
            message = _FINAL_TEXT[status]
        return Payment(
            id=record.local_id,
            idempotency_key=record.idempotency_key,
            reference=record.ecr_reference,
            type=record.transaction_type,
            amount=record.amount,
            currency=record.currency,
            status=status,
            message=message,
            cancellable=running and record.state in CANCELLABLE,
            response_code=record.response_code,
            authorization_code=record.authorization_code,
            masked_pan=record.masked_pan or (result.masked_pan if result else None) or None,
            application_label=record.application_label
            or (result.application_label if result else None),
            aid=record.aid,
            tvr=record.tvr,
            tsi=record.tsi,
            cryptogram=record.tc or record.arqc or (result.cryptogram if result else None),
            signature_required=bool(result and result.signature_required),
            reversal_queued=record.state in ("reversal_pending", "reversed")
            or bool(result and result.reversal_queued),
            created_at=record.created_at,
        )
