"""After the sale: a refund with the card, a void of the last purchase without it, and
a whole till session reconciled against the issuer and both journals (issue 6)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway_bridge.connectors.issuer_sim import IssuerSimulator
from hardware.cards import EmvCard, Faults, load_profile
from hardware.pcsc.pcscd import PcscdService
from hardware.pcsc.slot import CardSlot
from hardware.pinpad import EmulatedPinpad, PinScript
from paycore.pan import Pan
from paycore.wire import topics
from tests.e2e.conftest import assert_clean_text, assert_no_card_data, hil
from tests.gateway_bridge.rig import TERMINAL_ID, Rig

PAN = Pan("4761739001010010")  # visa_credit, PIN 1234


def test_refund_credits_the_account(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
) -> None:
    before = issuer.snapshot(PAN).balance
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(PinScript.entered("1234"))

    async def body() -> None:
        async with hil(rig, pcscd_vpcd, pad, issuer, tmp_path) as h:
            result = await h.terminal.pay(
                700, "GBP", transaction_type="refund", idempotency_key="e2e-refund"
            )
            assert result.status == "approved", result.message
            assert result.response_code == "00" and result.authorization_code
            assert h.saw("APPROVED")
            record = await h.record(result)
            assert record.state == "completed" and record.transaction_type == "refund"
            bridge = await h.bridge_record("e2e-refund")
            assert bridge is not None and bridge.state == "approved"
            assert bridge.transaction_type == "refund" and bridge.amount == 700
            (entry,) = await h.ledger_for(record)
            assert entry.kind == "refund" and entry.balance_delta == 700
            await h.reconcile([result])
            assert_no_card_data(h, PAN.digits)

    asyncio.run(body())
    assert issuer.snapshot(PAN).balance == before + 700


def test_void_of_the_last_purchase_restores_the_balance(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
) -> None:
    before = issuer.snapshot(PAN).balance
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(PinScript.entered("1234"))

    async def body() -> None:
        async with hil(rig, pcscd_vpcd, pad, issuer, tmp_path) as h:
            sale = await h.terminal.pay(5600, "GBP", idempotency_key="e2e-void-me")
            assert sale.status == "approved"
            assert issuer.snapshot(PAN).balance == before - 5600
            h.display.prompts.clear()
            void = await h.terminal.void_last()
            assert (void.status, void.message) == ("approved", "VOIDED")
            assert void.masked_pan == "476173******0010"
            assert h.display.kinds() == ["approved"]  # no card asked for, none to remove
            again = await h.terminal.void_last()  # the same void, not a second one
            assert again.local_id == void.local_id and again.status == "approved"
            assert (await h.record(void)).state == "completed"
            bridge = await h.bridge_record("e2e-void-me")
            assert bridge is not None and bridge.reversed_at is not None
            assert [e.kind for e in issuer.ledger.entries()] == ["authorisation", "reversal"]
            if h.acquirer is not None:  # the void travels as a reversal advice
                assert [m["t"] for m in h.acquirer.received if m["t"] != "0800"] == [
                    "0200", "0420"
                ]  # fmt: skip
            await h.reconcile([sale, void])
            assert_no_card_data(h, PAN.digits)

    asyncio.run(body())
    assert issuer.snapshot(PAN).balance == before


def test_a_till_session_reconciles_on_every_side(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
) -> None:
    """Several cards through one agent and one bridge; afterwards, for every idempotency
    key, the issuer holds exactly one net outcome and it is what the cashier saw, and
    neither journal's files nor the broker's retained messages hold card data (the logs
    are guarded for every test by tests/conftest.py)."""
    credit, debit, signature = (
        Pan("4761739001010010"), Pan("4000056655665556"), Pan("5200828282828210")
    )  # fmt: skip
    start = {p.digits: issuer.snapshot(p).balance for p in (credit, debit, signature)}

    async def insert(card: EmvCard) -> None:
        await asyncio.to_thread(vpcd_card, card)

    async def body() -> None:
        async with hil(rig, pcscd_vpcd, pad, issuer, tmp_path) as h:
            results = []
            await insert(EmvCard(load_profile("visa_credit")))
            for pin in ("1234", "1234", "1234"):
                pad.queue_pin(PinScript.entered(pin))
            results.append(await h.terminal.pay(1000, "GBP", idempotency_key="s-1"))
            results.append(await h.terminal.pay(99_951, "GBP", idempotency_key="s-2"))
            results.append(await h.terminal.pay(400, "GBP", idempotency_key="s-3"))
            results.append(await h.terminal.void_last())  # voids s-3
            await insert(EmvCard(load_profile("signature_card")))
            results.append(await h.terminal.pay(2500, "GBP", idempotency_key="s-4"))
            await insert(
                EmvCard(load_profile("visa_debit"), faults=Faults(aac_at_second_gen_ac=True))
            )
            pad.queue_pin(PinScript.entered("4321"))
            results.append(await h.terminal.pay(900, "GBP", idempotency_key="s-5"))
            assert await h.terminal.deliver_reversals() == 1
            await insert(EmvCard(load_profile("visa_credit")))
            pad.queue_pin(PinScript.entered("1234"))
            results.append(
                await h.terminal.pay(300, "GBP", transaction_type="refund", idempotency_key="s-6")
            )
            assert [(r.idempotency_key, r.status) for r in results] == [
                ("s-1", "approved"), ("s-2", "declined"), ("s-3", "approved"),
                ("void:s-3", "approved"), ("s-4", "approved"), ("s-5", "declined"),
                ("s-6", "approved"),
            ]  # fmt: skip
            shown = [p.text for p in h.display.prompts if p.kind in ("approved", "declined")]
            assert shown == [
                "APPROVED", "DECLINED: Insufficient funds", "APPROVED", "VOIDED", "APPROVED",
                "Declined by the card after approval: the amount will be reversed", "APPROVED",
            ]  # fmt: skip
            await h.reconcile(results)
            states = [(await h.record(r)).state for r in results]
            assert states == [
                "completed", "declined", "completed", "completed", "completed", "reversed",
                "completed",
            ]  # fmt: skip
            assert_no_card_data(h, credit.digits, debit.digits, signature.digits)
            retained = await h.retained()
            assert set(retained) == {topics.status_topic(TERMINAL_ID), topics.BRIDGE_STATUS}
            for topic, payload in retained.items():
                assert_clean_text(topic, payload.decode(), credit.digits, debit.digits)

    asyncio.run(body())
    assert issuer.snapshot(credit).balance == start[credit.digits] - 1000 + 300
    assert issuer.snapshot(signature).balance == start[signature.digits] - 2500
    assert issuer.snapshot(debit).balance == start[debit.digits]
