"""One payment from request to result: the agent's transaction state machine (DESIGN 3).

:class:`PaymentTerminal` joins the pieces, each behind its seam:

1. the ECR or cashier asks for a sale, refund or void; the journal records it first
   (a repeated idempotency key returns the first payment's result, never a second one);
2. the reader waits for a card and powers it; the EMV kernel runs selection to the first
   GENERATE AC, asking the cardholder (PIN pad, screen) what it needs;
3. online: the request (PAN, track 2 equivalent, DE55, the pad's encrypted PIN block) is
   journaled encrypted, then sealed and published by the link; the answer is journaled;
4. the kernel completes with the issuer's data (second GENERATE AC);
5. the result is shown in plain words. Whatever the cardholder did not see completed
   after a host approval is reversed: no answer in time, card pulled, card AAC.

Reversals are journaled first and delivered by :meth:`PaymentTerminal.deliver_reversals`
until the bridge acknowledges them; :meth:`PaymentTerminal.recover` runs the journal's
start-up rules. Nothing here logs card data: PANs appear only masked.

End of day (issue 6, settlement): :meth:`PaymentTerminal.close_batch` closes the batch in
the journal, then settles it with the host (a BatchCloseRequest with the batch's
completed totals); the host's verdict is journaled. If the host cannot be reached the
batch stays closed and "not settled"; closing again with the same key, or
:meth:`PaymentTerminal.settle_pending`, retries only the host part, with the same key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

from paycore.currency import by_alpha
from paycore.wire import (
    REVEAL,
    AuthorizationRequest,
    AuthorizationResponse,
    BatchCloseRequest,
    BatchCloseResponse,
    BatchTotal,
    EncryptedPinBlock,
    ErrorResponse,
    ReversalRequest,
    ReversalResponse,
    batch_differences,
)
from terminal_agent.display import Display, Prompt
from terminal_agent.journal import (
    Batch,
    CardData,
    CardOutcome,
    HostAnswer,
    HostTotal,
    TransactionJournal,
)
from terminal_agent.journal.model import TransactionRecord
from terminal_agent.kernel import (
    CardChannel,
    CardChannelError,
    Cardholder,
    CardholderAbort,
    Decision,
    EmvKernel,
    HostOutcome,
    KernelError,
    OnlineRequest,
    Outcome,
    Transaction,
)
from terminal_agent.link import HostTimeout, LinkDown, LinkError, MqttLink
from terminal_agent.reader import ReaderError, ReaderService

log = logging.getLogger(__name__)

TransactionType = Literal["purchase", "refund", "void"]

#: What a cashier reads for a response code (ISO 8583 field 39 meanings, in plain words).
RESPONSE_TEXT = {
    "00": "Approved",
    "05": "Declined by the card issuer",
    "13": "Invalid amount",
    "14": "Card number not recognised",
    "41": "Card reported lost: keep the card if it is safe to do so",
    "43": "Card reported stolen: keep the card if it is safe to do so",
    "51": "Insufficient funds",
    "54": "Card expired",
    "55": "Incorrect PIN",
    "57": "Transaction not allowed for this card",
    "61": "Withdrawal limit exceeded",
    "62": "Card restricted",
    "75": "PIN tries exceeded",
    "91": "Card issuer not reachable: try again",
    "96": "System error: try again",
}


@dataclass(frozen=True, slots=True)
class TransactionSettings:
    card_timeout_s: float = 60.0
    host_timeout_s: float = 15.0


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """What the cashier (and the ECR) learns. ``status`` is never ambiguous."""

    local_id: int
    idempotency_key: str
    status: Literal["approved", "declined", "not_completed"]
    message: str
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


def _cvm(
    request: OnlineRequest,
) -> Literal["online_pin", "offline_pin", "signature", "offline_pin_and_signature", "no_cvm"]:
    if request.pin_block is not None:
        return "online_pin"
    code = request.cvm_results[0] & 0x3F if request.cvm_results else 0x3F
    return {0x01: "offline_pin", 0x03: "offline_pin_and_signature", 0x1E: "signature"}.get(
        code, "no_cvm"
    )  # type: ignore[return-value]


def _track2(request: OnlineRequest) -> SecretStr | None:
    if request.track2 is None:
        return None
    text = request.track2.get_secret_value().hex().upper().rstrip("F")
    return SecretStr(text)


def authorization_request(
    request: OnlineRequest,
    *,
    transaction_type: TransactionType,
    amount: int,
    currency: str,
    idempotency_key: str,
    reference: str,
    stan: int,
    now: dt.datetime,
    original_message_id: str | None = None,
) -> AuthorizationRequest:
    """The wire request for the kernel's online request (PAN etc. only inside the body)."""
    pin_block = request.pin_block
    if pin_block is not None and not isinstance(pin_block, EncryptedPinBlock):
        raise TypeError("the PIN pad's block is an EncryptedPinBlock")
    return AuthorizationRequest(
        transaction_type=transaction_type,
        amount=amount,
        currency=currency,
        idempotency_key=idempotency_key,
        reference=reference,
        stan=stan,
        terminal_time=now,
        pan=request.pan,
        pan_sequence_number=request.psn,
        expiry=request.expiry,
        track2_equivalent=_track2(request),
        emv_data=request.de55.hex().upper(),
        cvm=_cvm(request),
        pin_block=pin_block,
        original_message_id=original_message_id,
    )


class KernelChannel:
    """The reader's channel as the kernel's seam: reader failures become CardChannelError.

    The kernel promises its callers one error for a card that went away mid-exchange;
    the reader layer has its own tree (CardRemovedError, ReaderLostError ...). Without
    this translation a card pulled after the host approved escaped the completion step
    and left the approval unreversed.
    """

    def __init__(self, card: CardChannel) -> None:
        self._card = card

    async def transmit(self, apdu: bytes) -> tuple[bytes, int, int]:
        try:
            return await self._card.transmit(apdu)
        except ReaderError as exc:
            raise CardChannelError(f"card channel failed: {exc}") from exc


class PaymentTerminal:
    """Runs payments on one reader, PIN pad and link, journaling every step first."""

    def __init__(
        self,
        *,
        kernel: EmvKernel,
        reader: ReaderService,
        cardholder: Cardholder,
        link: MqttLink,
        journal: TransactionJournal,
        display: Display,
        settings: TransactionSettings | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        on_result: Callable[[PaymentResult], Awaitable[None]] | None = None,
    ) -> None:
        self.kernel = kernel
        self.reader = reader
        self.cardholder = cardholder
        self.link = link
        self.journal = journal
        self.display = display
        self.settings = settings or TransactionSettings()
        self._clock = clock
        self._stan = 0
        #: Called with every final result (the receipt printer); its failure is logged,
        #: never turned into a failed payment.
        self._on_result = on_result
        #: One settlement exchange at a time (a retry loop and the cashier may race).
        self._settling = asyncio.Lock()

    async def pay(
        self,
        amount: int,
        currency: str,
        *,
        transaction_type: TransactionType = "purchase",
        idempotency_key: str | None = None,
        reference: str = "",
        original_message_id: str | None = None,
    ) -> PaymentResult:
        key = idempotency_key or uuid.uuid4().hex
        existing = await self.journal.by_idempotency_key(key)
        if existing is not None:
            return self._result_of(existing, "this payment was already processed")
        record = await self.journal.create(
            idempotency_key=key,
            transaction_type=transaction_type,
            amount=amount,
            currency=currency,
            ecr_reference=reference,
        )
        money = by_alpha(currency).format(amount)
        await self.display.show(Prompt("present_card", "Insert card", (money,)))
        try:
            async with self.reader.card_session(timeout=self.settings.card_timeout_s) as card:
                return await self._with_card(
                    record.local_id, card, amount, currency, transaction_type, key, reference,
                    original_message_id,
                )  # fmt: skip
        except TimeoutError:
            return await self._not_completed(record.local_id, key, "No card presented")
        except ReaderError as exc:
            return await self._not_completed(record.local_id, key, f"Card reader: {exc}")

    async def _with_card(
        self,
        local_id: int,
        card: object,
        amount: int,
        currency: str,
        transaction_type: TransactionType,
        key: str,
        reference: str,
        original_message_id: str | None,
    ) -> PaymentResult:
        now = self._clock()
        emv_type = {"purchase": 0x00, "refund": 0x20, "void": 0x02}[transaction_type]
        try:
            first = await self.kernel.start(
                KernelChannel(card),  # type: ignore[arg-type]  # PcscCard is a CardChannel
                self.cardholder,
                Transaction(
                    amount=amount,
                    date=now.date(),
                    time=now.time().replace(microsecond=0),
                    transaction_type=emv_type,
                    currency_code=int(by_alpha(currency).numeric),
                ),
            )
        except CardholderAbort as abort:
            why = "Cancelled"
            if abort.reason == "timeout":
                why = (
                    "PIN entry timed out"
                    if "PIN" in abort.step
                    else "No answer from the cardholder"
                )
            return await self._not_completed(local_id, key, why)
        except KernelError as exc:
            return await self._not_completed(local_id, key, f"Card error: {exc}")

        ctx = first.context
        request = first.online_request
        if request is None:
            assert first.outcome is not None
            await self.journal.card_read(local_id, self._card_data(first.outcome, None))
            return await self._finish_offline(local_id, key, first.outcome)

        await self.journal.card_read(local_id, self._card_data(None, request))
        if request.pin_block is not None:
            await self.journal.pin_captured(local_id)
        self._stan = self._stan % 999_999 + 1
        body = authorization_request(
            request,
            transaction_type=transaction_type,
            amount=amount,
            currency=currency,
            idempotency_key=key,
            reference=reference,
            stan=self._stan,
            now=now,
            original_message_id=original_message_id,
        )
        await self.journal.mark_sent(local_id, body.model_dump_json(context=REVEAL).encode())
        await self.display.show(Prompt("processing", "Processing, do not remove the card"))

        async def journal_id(message_id: str) -> None:
            await self.journal.add_message_id(local_id, message_id)

        try:
            reply = await self.link.exchange(
                body, timeout=self.settings.host_timeout_s, on_sealed=journal_id
            )
        except (HostTimeout, LinkError) as exc:
            log.warning("no answer from the host for transaction %d: %s", local_id, exc)
            await self.journal.queue_reversal(local_id, "host_timeout")
            with contextlib.suppress(KernelError):  # the card may already be gone
                await self.kernel.complete(ctx, HostOutcome.unable())
            return await self._show(
                PaymentResult(
                    local_id, key, "not_completed",
                    "Not completed: no answer from the card issuer. Do not hand over goods; "
                    "the amount will be reversed if it was taken. Try again.",
                    reversal_queued=True,
                )
            )  # fmt: skip

        answer = reply.body
        if isinstance(answer, ErrorResponse) or not isinstance(answer, AuthorizationResponse):
            await self.journal.queue_reversal(local_id, "terminal_error")
            return await self._show(
                PaymentResult(local_id, key, "not_completed",
                              "Not completed: the payment service refused the request",
                              reversal_queued=True)
            )  # fmt: skip
        await self.journal.responded(
            local_id,
            HostAnswer(
                approved=answer.approved,
                response_code=answer.response_code,
                authorization_code=answer.authorization_code,
                host_reference=answer.host_reference,
                correlation_id=reply.envelope.correlation_id,
            ),
        )
        host = HostOutcome(
            approved=answer.approved,
            arc=answer.response_code.encode()[:2],
            issuer_auth_data=(
                bytes.fromhex(answer.issuer_authentication_data)
                if answer.issuer_authentication_data
                else None
            ),
        )
        try:
            outcome = await self.kernel.complete(ctx, host)
        except KernelError as exc:
            if answer.approved:
                await self.journal.queue_reversal(local_id, "card_removed")
                return await self._show(
                    PaymentResult(local_id, key, "not_completed",
                                  f"Not completed: the card left before the end ({exc}). "
                                  "The amount will be reversed.", reversal_queued=True)
                )  # fmt: skip
            await self.journal.decline(local_id)
            return await self._show(self._declined(local_id, key, answer, None))

        if outcome.decision is Decision.APPROVED_ONLINE:
            await self.journal.complete(
                local_id,
                CardOutcome(tc=outcome.cryptogram.hex().upper(), tvr=outcome.tvr.hex().upper(),
                            tsi=outcome.tsi.hex().upper()),
            )  # fmt: skip
            return await self._show(
                PaymentResult(
                    local_id, key, "approved", "APPROVED", answer.response_code,
                    answer.authorization_code, request.pan.masked, outcome.label,
                    outcome.aid.hex().upper(), outcome.tvr.hex().upper(),
                    outcome.tsi.hex().upper(), outcome.cryptogram.hex().upper(),
                    outcome.signature_required,
                )
            )  # fmt: skip
        if answer.approved:  # the host approved, the card did not: reverse
            await self.journal.queue_reversal(local_id, "card_declined")
            result = dataclasses.replace(
                self._declined(local_id, key, answer, outcome),
                message="Declined by the card after approval: the amount will be reversed",
                reversal_queued=True,
            )
            return await self._show(result)
        await self.journal.decline(local_id)
        return await self._show(self._declined(local_id, key, answer, outcome))

    # -- results -------------------------------------------------------------------------

    def _card_data(self, outcome: Outcome | None, request: OnlineRequest | None) -> CardData:
        if request is not None:
            return CardData(
                masked_pan=request.pan.masked,
                aid=request.aid.hex().upper(),
                tvr=request.tvr.hex().upper(),
                tsi=request.tsi.hex().upper(),
                arqc=request.arqc.hex().upper(),
                cvm=request.cvm_results.hex().upper(),
            )
        assert outcome is not None
        return CardData(
            masked_pan="",
            aid=outcome.aid.hex().upper(),
            application_label=outcome.label,
            tvr=outcome.tvr.hex().upper(),
            tsi=outcome.tsi.hex().upper(),
            cvm=outcome.cvm_results.hex().upper(),
        )

    async def _finish_offline(self, local_id: int, key: str, outcome: Outcome) -> PaymentResult:
        if outcome.decision.approved:
            await self.journal.complete(local_id, CardOutcome(tc=outcome.cryptogram.hex().upper()))
            status: Literal["approved", "declined"] = "approved"
            message = "APPROVED"
        else:
            await self.journal.decline(local_id)
            status, message = "declined", "DECLINED by the card"
        return await self._show(
            PaymentResult(local_id, key, status, message, aid=outcome.aid.hex().upper(),
                          application_label=outcome.label, tvr=outcome.tvr.hex().upper(),
                          tsi=outcome.tsi.hex().upper(),
                          cryptogram=outcome.cryptogram.hex().upper())
        )  # fmt: skip

    def _declined(
        self, local_id: int, key: str, answer: AuthorizationResponse, outcome: Outcome | None
    ) -> PaymentResult:
        text = RESPONSE_TEXT.get(answer.response_code, answer.display_text or "Declined")
        return PaymentResult(
            local_id, key, "declined", f"DECLINED: {text}", answer.response_code,
            None, None, outcome.label if outcome else None,
            outcome.aid.hex().upper() if outcome else None,
            outcome.tvr.hex().upper() if outcome else None,
            outcome.tsi.hex().upper() if outcome else None,
            outcome.cryptogram.hex().upper() if outcome else None,
        )  # fmt: skip

    async def _not_completed(self, local_id: int, key: str, why: str) -> PaymentResult:
        await self.journal.not_completed(local_id)
        return await self._show(
            PaymentResult(local_id, key, "not_completed", f"Not completed: {why}")
        )

    async def _show(self, result: PaymentResult, *, card: bool = True) -> PaymentResult:
        kind: Literal["approved", "declined", "not_completed"] = result.status
        lines = tuple(x for x in (result.masked_pan, result.application_label) if x)
        await self.display.show(Prompt(kind, result.message, lines))
        if card:
            await self.display.show(Prompt("remove_card", "Remove card"))
        if self._on_result is not None:
            try:
                await self._on_result(result)
            except Exception:
                log.exception("after-payment step failed for transaction %d", result.local_id)
        return result

    def _result_of(self, record: TransactionRecord, note: str) -> PaymentResult:
        status: Literal["approved", "declined", "not_completed"]
        if record.state == "completed":
            status = "approved"
        elif record.state == "declined":
            status = "declined"
        else:
            status = "not_completed"
        return PaymentResult(
            record.local_id, record.idempotency_key, status, note, record.response_code,
            record.authorization_code, record.masked_pan, record.application_label, record.aid,
            record.tvr, record.tsi, record.tc or record.arqc,
        )  # fmt: skip

    # -- void -----------------------------------------------------------------------------

    async def void_last(self) -> PaymentResult:
        """Void the last approved purchase: a reversal of it, no card needed.

        Voiding the same purchase again returns the first void's result.
        """
        last = next(
            (r for r in await self.journal.recent(50, state="completed")
             if r.transaction_type == "purchase"),
            None,
        )  # fmt: skip
        if last is None or last.reversal_target is None:
            return PaymentResult(0, "", "not_completed", "Not completed: no purchase to void")
        key = f"void:{last.idempotency_key}"[:64]
        existing = await self.journal.by_idempotency_key(key)
        if existing is not None:
            return self._result_of(existing, "this purchase was already voided")
        record = await self.journal.create(
            idempotency_key=key,
            transaction_type="void",
            amount=last.amount,
            currency=last.currency,
            ecr_reference=f"void of {last.local_id}",
        )
        body = ReversalRequest(
            original_message_id=last.reversal_target,
            original_idempotency_key=last.idempotency_key,
            idempotency_key=key,
            reason="cancelled",
            amount=last.amount,
            currency=last.currency,
        )
        await self.journal.mark_sent(record.local_id, body.model_dump_json().encode())

        async def journal_id(message_id: str) -> None:
            await self.journal.add_message_id(record.local_id, message_id)

        try:
            reply = await self.link.exchange(
                body, timeout=self.settings.host_timeout_s, on_sealed=journal_id
            )
        except LinkError:
            await self.journal.queue_reversal(record.local_id, "host_timeout")
            return await self._show(
                PaymentResult(record.local_id, key, "not_completed",
                              "Void not confirmed: it will be sent again until it is",
                              reversal_queued=True),
                card=False,
            )  # fmt: skip
        answer = reply.body
        done = isinstance(answer, ReversalResponse) and answer.outcome in (
            "reversed", "already_reversed", "accepted"
        )  # fmt: skip
        await self.journal.responded(
            record.local_id,
            HostAnswer(approved=done, response_code="00" if done else "25",
                       correlation_id=reply.envelope.correlation_id),
        )  # fmt: skip
        if done:
            await self.journal.complete(record.local_id, CardOutcome())
            return await self._show(
                PaymentResult(record.local_id, key, "approved", "VOIDED",
                              masked_pan=last.masked_pan),
                card=False,
            )  # fmt: skip
        await self.journal.decline(record.local_id)
        return await self._show(
            PaymentResult(record.local_id, key, "declined", "Void refused: purchase not found"),
            card=False,
        )

    # -- reversals -----------------------------------------------------------------------

    async def deliver_reversals(self) -> int:
        """Send every queued reversal once; returns how many the bridge acknowledged."""
        done = 0
        for record in await self.journal.pending_reversals():
            target = record.reversal_target
            if target is None:  # never sent: nothing to reverse
                await self.journal.mark_reversed(record.local_id)
                continue
            reversal = ReversalRequest(
                original_message_id=target,
                original_idempotency_key=record.idempotency_key,
                idempotency_key=f"rev:{record.idempotency_key}"[:64],
                reason=record.reversal_reason or "terminal_error",
                amount=record.amount,
                currency=record.currency,
            )

            async def journal_id(message_id: str, local_id: int = record.local_id) -> None:
                await self.journal.add_message_id(local_id, message_id, role="reversal")

            try:
                answer = await self.link.request(
                    reversal, timeout=self.settings.host_timeout_s, on_sealed=journal_id
                )
            except LinkError as exc:
                log.info("reversal of transaction %d not delivered yet: %s", record.local_id, exc)
                continue
            if isinstance(answer, ReversalResponse):
                await self.journal.mark_reversed(record.local_id)
                done += 1
        return done

    async def recover(self) -> None:
        """Start-up: the journal's rules, then deliver what they queued."""
        recovery = await self.journal.recover()
        if recovery.reversals_queued:
            log.warning("%d reversals queued at start-up", len(recovery.reversals_queued))

    # -- end of day ----------------------------------------------------------------------

    async def close_batch(self, idempotency_key: str | None = None) -> Batch:
        """Close the terminal batch and settle it with the host; the batch, with
        :attr:`~terminal_agent.journal.Batch.host` saying how the host saw it.

        The journal closes the batch first (it stays closed whatever the host does). The
        host gets its completed lines (purchase, refund, void by currency; declined ones
        move no money) under the batch's own wire idempotency key. Its answer, or why
        there is none (``host.state == "pending"``, ``host.reason``), is journaled. A
        repeated ``idempotency_key`` returns the same batch: settled, it is not sent
        again; still pending, the host part is retried with the same wire key.

        Batches reach the host in the order they were closed (the bridge closes its own
        batch when asked, so a later batch sent first would take in the earlier one's
        transactions): older unsettled batches are retried first, and while one of them
        stays unsettled the later ones wait, saying so.
        """
        batch = await self.journal.close_batch(idempotency_key=idempotency_key, for_host=True)
        await self._settle_pending(upto=batch.batch_id)
        return await self.journal.batch(batch.batch_id) or batch

    async def settle_pending(self) -> int:
        """Retry every batch the host has not settled yet, oldest first; how many the
        host settled now (for the service's retry loop, next to the reversals)."""
        return await self._settle_pending(upto=None)

    async def _settle_pending(self, *, upto: int | None) -> int:
        settled = 0
        async with self._settling:
            blocked: tuple[int, str] | None = None
            for batch in await self.journal.pending_settlements():
                if upto is not None and batch.batch_id > upto:
                    break
                if blocked is not None:
                    await self.journal.settlement_failed(
                        batch.batch_id,
                        f"waiting for batch {blocked[0]} to settle first: {blocked[1]}",
                    )
                    continue
                done = await self._settle(batch)
                if done.host is not None and done.host.settled:
                    settled += 1
                else:
                    reason = done.host.reason if done.host is not None else None
                    blocked = (batch.batch_id, reason or "not settled")
        return settled

    async def _settle(self, batch: Batch) -> Batch:
        """One exchange with the host for a pending batch; the batch as journaled after."""
        host = batch.host
        if host is None or host.settled:
            return batch
        voided = await self.journal.voided_purchases(batch.batch_id)
        request = batch_close_request(batch, host.idempotency_key, voided)
        try:
            answer = await self.link.request(request, timeout=self.settings.host_timeout_s)
        except LinkError as exc:
            log.warning("batch %d not settled with the host: %s", batch.batch_id, exc)
            return await self.journal.settlement_failed(batch.batch_id, _unreachable(exc))
        if isinstance(answer, ErrorResponse):
            reason = f"the payment service refused the batch ({answer.code})"
            if answer.detail:
                reason += f": {answer.detail}"
            return await self.journal.settlement_failed(batch.batch_id, reason)
        if not isinstance(answer, BatchCloseResponse):  # the link checks; be total
            return await self.journal.settlement_failed(
                batch.batch_id, "the payment service's answer was not a batch answer"
            )
        status, differences = answer.status, answer.differences
        extra = totals_differences(request.totals, answer.totals)
        if status == "in_balance" and extra:
            # The host says in balance but its own totals say otherwise: never hidden.
            status = "out_of_balance"
            differences = (*differences, *extra)
        log.info(
            "batch %d settled with the host as %s (%s)",
            batch.batch_id,
            status,
            answer.host_batch_id,
        )
        return await self.journal.record_settlement(
            batch.batch_id,
            status=status,
            host_batch_id=answer.host_batch_id,
            totals=[
                HostTotal(t.transaction_type, t.currency, t.count, t.amount) for t in answer.totals
            ],
            differences=differences,
        )


def batch_close_request(
    batch: Batch, idempotency_key: str, voided: dict[str, tuple[int, int]] | None = None
) -> BatchCloseRequest:
    """The wire request for ``batch``: its completed lines under ``idempotency_key``, as the
    host holds them. A void travels as a reversal of its purchase, so the host has neither:
    void lines are left out, and the purchases they cancelled before the close
    (``voided``, per currency: count, amount) come off the purchase lines. The batch as
    the cashier sees it keeps both."""
    voided = voided or {}
    totals: list[BatchTotal] = []
    for line in batch.completed_lines:
        if line.transaction_type == "void":
            continue
        count, amount = line.count, line.amount
        if line.transaction_type == "purchase":
            gone = voided.get(line.currency, (0, 0))
            count, amount = count - gone[0], amount - gone[1]
        if count > 0:
            totals.append(
                BatchTotal(
                    transaction_type=line.transaction_type,
                    currency=line.currency,
                    count=count,
                    amount=amount,
                )
            )
    return BatchCloseRequest(
        batch_id=batch.batch_id,
        idempotency_key=idempotency_key,
        closed_at=batch.closed_at,
        totals=tuple(totals),
    )


def totals_differences(
    ours: tuple[BatchTotal, ...], theirs: tuple[BatchTotal, ...]
) -> tuple[str, ...]:
    """Line by line, where the host's totals differ from the terminal's; empty when they
    agree (the terminal's own check of an answer that says in balance)."""
    return tuple(
        f"terminal check: {line}" for line in batch_differences(ours, theirs, other_name="host")
    )


def _unreachable(exc: LinkError) -> str:
    if isinstance(exc, LinkDown):
        return "no connection to the payment service"
    if isinstance(exc, HostTimeout):
        return "no answer from the payment service"
    return "the payment service's answer could not be used"
