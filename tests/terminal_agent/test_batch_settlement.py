"""End of day settled with the host (issue 6): :meth:`PaymentTerminal.close_batch` and
:meth:`PaymentTerminal.settle_pending`.

First against a stand-in host (what goes on the wire, the stable idempotency key, the
order of retries, refusals), then against the real bridge with the issuer simulator, the
card behind pcscd + vpcd and the PIN pad on a pty: in balance, out of balance, and the
host down then back (one bridge batch only)."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from gateway_bridge.cli import main as bridge_cli
from gateway_bridge.settlement.store import SettlementStore
from hardware.cards import EmvCard, Faults, load_profile
from hardware.pcsc.pcscd import PcscdService
from hardware.pcsc.slot import CardSlot
from hardware.pinpad import EmulatedPinpad, PinScript
from paycore.wire import BatchCloseRequest, BatchCloseResponse, BatchTotal, ErrorResponse
from paycore.wire.messages import Body
from terminal_agent.journal import CardOutcome, HostAnswer, HostTotal, TransactionJournal
from terminal_agent.journal.model import BatchLine
from terminal_agent.link import HostTimeout, LinkDown, LinkError
from terminal_agent.transaction import PaymentTerminal, totals_differences
from tests.gateway_bridge.rig import Rig, running_bridge
from tests.terminal_agent.journal.test_journal import CARD, KEY, drive, request_body
from tests.terminal_agent.test_payment import agent, issuer, pad, rig

__all__ = ["pad", "rig"]

Answer = Callable[[BatchCloseRequest], Body]


def echo(request: BatchCloseRequest) -> Body:
    """A host that agrees with everything: its totals are the terminal's."""
    return BatchCloseResponse(
        host_batch_id=f"HB-{request.batch_id}", status="in_balance", totals=request.totals
    )


class FakeHost:
    """Stands in for :class:`~terminal_agent.link.MqttLink` (its ``request``): answers
    each batch request with ``answer`` (or raises it) and keeps every request sent."""

    def __init__(self, answer: Answer | LinkError = echo) -> None:
        self.answer = answer
        self.requests: list[BatchCloseRequest] = []
        self.bridge_status = None

    async def request(self, body: object, **_: object) -> Body:
        assert isinstance(body, BatchCloseRequest)
        self.requests.append(body)
        if isinstance(self.answer, LinkError):
            raise self.answer
        return self.answer(body)


def terminal_with(journal: TransactionJournal, host: FakeHost) -> PaymentTerminal:
    """A terminal whose only parts used at end of day are the journal and the link."""
    unused = cast(Any, None)
    return PaymentTerminal(
        kernel=unused, reader=unused, cardholder=unused, link=cast(Any, host),
        journal=journal, display=unused,
    )  # fmt: skip


def run(body: Callable[[TransactionJournal], Any], path: Path) -> Any:
    async def main() -> Any:
        async with await TransactionJournal.open(path, KEY) as journal:
            return await body(journal)

    return asyncio.run(main())


async def refund(journal: TransactionJournal, amount: int) -> int:
    """An approved refund, journaled as the agent journals it."""
    record = await journal.create(
        idempotency_key=f"refund-{amount}", transaction_type="refund", amount=amount,
        currency="GBP", ecr_reference="till-1/43",
    )  # fmt: skip
    local_id = record.local_id
    await journal.card_read(local_id, CARD)
    await journal.mark_sent(local_id, request_body(f"r-{local_id}"))
    await journal.responded(local_id, HostAnswer(True, "00", "A1", "R1"))
    await journal.complete(local_id, CardOutcome(tc="01"))
    return local_id


# -- against a stand-in host ----------------------------------------------------------------


def test_only_completed_lines_go_to_the_host_and_its_verdict_is_journaled(
    tmp_path: Path,
) -> None:
    host = FakeHost()

    async def body(journal: TransactionJournal) -> None:
        terminal = terminal_with(journal, host)
        await drive(journal, "completed")
        await drive(journal, "completed")
        await drive(journal, "declined", approved=False)
        await refund(journal, 500)
        batch = await terminal.close_batch()
        assert BatchLine("purchase", "declined", "GBP", 1, 1234) in batch.lines
        (sent,) = host.requests
        assert sent.batch_id == batch.batch_id and sent.closed_at == batch.closed_at
        assert sent.totals == (
            BatchTotal(transaction_type="purchase", currency="GBP", count=2, amount=2468),
            BatchTotal(transaction_type="refund", currency="GBP", count=1, amount=500),
        )
        assert re.fullmatch(r"batch-1-[0-9a-f]{16}", sent.idempotency_key)
        assert batch.host is not None and batch.host.settled
        assert (batch.host.status, batch.host.host_batch_id) == ("in_balance", "HB-1")
        assert batch.host.totals == (
            HostTotal("purchase", "GBP", 2, 2468),
            HostTotal("refund", "GBP", 1, 500),
        )
        assert batch.host.idempotency_key == sent.idempotency_key
        assert batch.host.attempts == 1 and batch.host.reason is None
        assert await terminal.settle_pending() == 0  # nothing left to settle
        assert len(host.requests) == 1

    run(body, tmp_path / "j.db")

    async def reopened(journal: TransactionJournal) -> None:
        (batch,) = await journal.batches()
        assert batch.host is not None and batch.host.status == "in_balance"
        assert batch.host.idempotency_key == host.requests[0].idempotency_key

    run(reopened, tmp_path / "j.db")


def test_host_unreachable_keeps_the_batch_closed_and_a_retry_resends_the_same_key(
    tmp_path: Path,
) -> None:
    host = FakeHost(HostTimeout("no response", ("a" * 32,)))

    async def body(journal: TransactionJournal) -> None:
        terminal = terminal_with(journal, host)
        await drive(journal, "completed")
        first = await terminal.close_batch(idempotency_key="eod/1")
        assert first.host is not None and first.host.state == "pending"
        assert first.host.reason == "no answer from the payment service"
        assert first.host.attempts == 1
        # A payment after the close belongs to the next batch, not to the retry.
        await drive(journal, "completed")
        host.answer = LinkDown("no broker")
        again = await terminal.close_batch(idempotency_key="eod/1")
        assert again.batch_id == first.batch_id and again.lines == first.lines
        assert (
            again.host is not None and again.host.reason == "no connection to the payment service"
        )
        assert again.host.attempts == 2
        host.answer = echo
        done = await terminal.close_batch(idempotency_key="eod/1")
        assert done.batch_id == first.batch_id
        assert done.host is not None and done.host.status == "in_balance"
        assert [r.idempotency_key for r in host.requests] == [first.host.idempotency_key] * 3
        assert {r.totals for r in host.requests} == {
            (BatchTotal(transaction_type="purchase", currency="GBP", count=1, amount=1234),)
        }
        settled = await terminal.close_batch(idempotency_key="eod/1")  # not sent again
        assert settled == done and len(host.requests) == 3
        assert len(await journal.batches()) == 1

    run(body, tmp_path / "j.db")


def test_older_unsettled_batches_reach_the_host_first(tmp_path: Path) -> None:
    host = FakeHost(LinkDown("no broker"))

    async def body(journal: TransactionJournal) -> None:
        terminal = terminal_with(journal, host)
        await drive(journal, "completed")
        one = await terminal.close_batch()
        await drive(journal, "completed")
        two = await terminal.close_batch()  # one is retried first and fails: two waits
        assert [r.batch_id for r in host.requests] == [one.batch_id, one.batch_id]
        assert two.host is not None and two.host.state == "pending"
        assert two.host.reason == (
            f"waiting for batch {one.batch_id} to settle first: "
            "no connection to the payment service"
        )
        host.answer = echo
        assert await terminal.settle_pending() == 2
        assert [r.batch_id for r in host.requests[2:]] == [one.batch_id, two.batch_id]
        assert await journal.pending_settlements() == []

    run(body, tmp_path / "j.db")


def test_refusals_and_differences_are_kept_word_for_word(tmp_path: Path) -> None:
    def out_of_balance(request: BatchCloseRequest) -> Body:
        return BatchCloseResponse(
            host_batch_id="HB-9", status="out_of_balance", totals=(),
            differences=("purchase GBP: terminal 1 for £12.34, bridge 0 for £0.00",),
        )  # fmt: skip

    def lying(request: BatchCloseRequest) -> Body:
        return BatchCloseResponse(host_batch_id="HB-10", status="in_balance", totals=())

    host = FakeHost(lambda r: ErrorResponse(code="unavailable", detail="batch in progress"))

    async def body(journal: TransactionJournal) -> None:
        terminal = terminal_with(journal, host)
        await drive(journal, "completed")
        refused = await terminal.close_batch(idempotency_key="k1")
        assert refused.host is not None and refused.host.state == "pending"
        assert refused.host.reason == (
            "the payment service refused the batch (unavailable): batch in progress"
        )
        host.answer = out_of_balance
        shown = await terminal.close_batch(idempotency_key="k1")
        assert shown.host is not None and shown.host.status == "out_of_balance"
        assert shown.host.differences == (
            "purchase GBP: terminal 1 for £12.34, bridge 0 for £0.00",
        )
        # A host that says "in balance" with totals that differ is not believed.
        await drive(journal, "completed")
        host.answer = lying
        checked = await terminal.close_batch(idempotency_key="k2")
        assert checked.host is not None and checked.host.status == "out_of_balance"
        assert checked.host.differences == (
            "terminal check: purchase GBP: terminal 1 for 12.34 GBP, host 0 for 0.00 GBP",
        )

    run(body, tmp_path / "j.db")


def test_request_building_and_the_terminal_check() -> None:
    def line(kind: Any, count: int, amount: int, currency: str = "GBP") -> BatchTotal:
        return BatchTotal(transaction_type=kind, currency=currency, count=count, amount=amount)

    ours = (line("purchase", 2, 300), line("refund", 1, 50))
    assert totals_differences(ours, ours) == ()
    assert totals_differences(ours, (*ours, line("void", 0, 0))) == ()  # zero lines: absent
    assert totals_differences(ours, (line("purchase", 2, 300), line("refund", 1, 50, "EUR"))) == (
        "terminal check: refund EUR: terminal 0 for 0.00 EUR, host 1 for 0.50 EUR",
        "terminal check: refund GBP: terminal 1 for 0.50 GBP, host 0 for 0.00 GBP",
    )


# -- against the real bridge -----------------------------------------------------------------


def bridge_batches(rig: Rig) -> list[Any]:
    """The batches the bridge closed today (UTC), from its settlement store."""
    path = rig.settings.settlement_store_path()
    assert path is not None
    store = SettlementStore(path)
    try:
        return store.closed_on(datetime.now(UTC).date())
    finally:
        store.close()


def test_in_balance_after_a_purchase_and_a_refund(
    rig: Rig, pcscd_vpcd: PcscdService, vpcd_card: CardSlot, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(PinScript.entered("1234"))
    pad.queue_pin(PinScript.entered("1234"))

    async def body() -> None:
        async with running_bridge(rig, issuer()), agent(rig, pcscd_vpcd, tmp_path, pad) as a:
            sale = await a.terminal.pay(1250, "GBP", idempotency_key="eod-sale")
            back = await a.terminal.pay(400, "GBP", transaction_type="refund",
                                        idempotency_key="eod-refund")  # fmt: skip
            assert (sale.status, back.status) == ("approved", "approved"), back.message
            batch = await a.terminal.close_batch(idempotency_key="eod-1")
            assert batch.host is not None and batch.host.settled, batch.host
            assert batch.host.status == "in_balance", batch.host.differences
            assert batch.host.differences == ()
            assert batch.host.totals == (
                HostTotal("purchase", "GBP", 1, 1250),
                HostTotal("refund", "GBP", 1, 400),
            )
            (summary,) = bridge_batches(rig)
            assert summary.batch_id == batch.host.host_batch_id
            again = await a.terminal.close_batch(idempotency_key="eod-1")
            assert again == batch
            assert len(bridge_batches(rig)) == 1

    asyncio.run(body())


def test_a_voided_purchase_is_in_neither_settled_total(
    rig: Rig, pcscd_vpcd: PcscdService, vpcd_card: CardSlot, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    """A void travels as a reversal: the bridge holds neither the purchase nor the void,
    so the terminal settles without both, while its own batch still shows both; a
    purchase voided only after the close stays in that batch, the void in none."""
    vpcd_card(EmvCard(load_profile("visa_credit")))
    for _ in range(3):
        pad.queue_pin(PinScript.entered("1234"))

    async def body() -> None:
        async with running_bridge(rig, issuer()), agent(rig, pcscd_vpcd, tmp_path, pad) as a:
            kept = await a.terminal.pay(700, "GBP", idempotency_key="eod-kept")
            gone = await a.terminal.pay(1250, "GBP", idempotency_key="eod-gone")
            assert (kept.status, gone.status) == ("approved", "approved")
            assert (await a.terminal.void_last()).status == "approved"
            batch = await a.terminal.close_batch()
            shown = {(x.transaction_type, x.count, x.amount) for x in batch.completed_lines}
            assert shown == {("purchase", 2, 1950), ("void", 1, 1250)}
            assert batch.host is not None and batch.host.status == "in_balance", batch.host
            assert batch.host.totals == (HostTotal("purchase", "GBP", 1, 700),)

            late = await a.terminal.pay(300, "GBP", idempotency_key="eod-late")
            assert late.status == "approved"
            first = await a.terminal.close_batch()
            assert first.host is not None and first.host.status == "in_balance"
            assert (await a.terminal.void_last()).status == "approved"
            second = await a.terminal.close_batch()
            assert second.host is not None and second.host.status == "in_balance", second.host
            assert second.host.totals == ()

    asyncio.run(body())


def test_out_of_balance_while_a_reversal_has_not_reached_the_bridge(
    rig: Rig, pcscd_vpcd: PcscdService, vpcd_card: CardSlot, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    """The card declines (AAC) after the host approved: the terminal has no completed
    purchase, the bridge has an approved one until the reversal reaches it."""
    vpcd_card(EmvCard(load_profile("visa_debit"), faults=Faults(aac_at_second_gen_ac=True)))
    pad.queue_pin(PinScript.entered("4321"))

    async def body() -> None:
        async with running_bridge(rig, issuer()), agent(rig, pcscd_vpcd, tmp_path, pad) as a:
            result = await a.terminal.pay(900, "GBP", idempotency_key="eod-aac")
            assert result.reversal_queued, result.message
            batch = await a.terminal.close_batch()
            assert batch.lines == ()  # nothing completed on the terminal
            assert batch.host is not None and batch.host.status == "out_of_balance"
            assert batch.host.totals == (HostTotal("purchase", "GBP", 1, 900),)
            assert batch.host.differences == (
                "purchase GBP: terminal 0 for 0.00 GBP, bridge 1 for 9.00 GBP",
            )
            # Once the reversal is delivered the next batch carries nothing more for it.
            assert await a.terminal.deliver_reversals() == 1
            nxt = await a.terminal.close_batch()
            assert nxt.host is not None and nxt.host.host_batch_id != batch.host.host_batch_id
            assert (nxt.host.status, nxt.host.totals) == ("in_balance", ())

    asyncio.run(body())


def test_host_down_not_settled_then_settled_once_it_is_back(
    rig: Rig, pcscd_vpcd: PcscdService, vpcd_card: CardSlot, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    sim = issuer()
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(PinScript.entered("1234"))

    async def body() -> None:
        async with agent(rig, pcscd_vpcd, tmp_path, pad, host_timeout=1.5) as a:
            async with running_bridge(rig, sim):
                sale = await a.terminal.pay(2000, "GBP", idempotency_key="eod-down")
                assert sale.status == "approved", sale.message
            down = await a.terminal.close_batch()
            assert down.host is not None and down.host.state == "pending"
            assert down.host.reason in (
                "no answer from the payment service", "no connection to the payment service"
            )  # fmt: skip
            assert (await a.journal.batches()) == [down]  # closed, and only once
            async with running_bridge(rig, sim):
                assert await a.terminal.settle_pending() == 1
            (settled,) = await a.journal.batches()
            assert settled.batch_id == down.batch_id
            assert settled.host is not None and settled.host.status == "in_balance"
            assert settled.host.idempotency_key == down.host.idempotency_key
            assert settled.host.totals == (HostTotal("purchase", "GBP", 1, 2000),)
            assert settled.host.attempts == 2

    asyncio.run(body())
    summaries = bridge_batches(rig)
    assert len(summaries) == 1  # the bridge closed one batch for both attempts
    out = io.StringIO()
    today = datetime.now(UTC).date().isoformat()
    assert bridge_cli(["report", "--config", str(rig.config), today],
                      out=out) == 0  # fmt: skip
    assert summaries[0].batch_id in out.getvalue()
