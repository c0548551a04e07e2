"""Purchases that must not complete, and what is undone: PIN entry cancelled or timed
out, the card's AAC after the host approved, the card pulled after the host approved
(issue 6). Whatever the host approved and the cardholder did not see completed is
reversed, delivered, and the issuer's balance is whole again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway_bridge.connectors.issuer_sim import IssuerSimulator
from hardware.cards import At, EmvCard, Faults, load_profile
from hardware.pcsc.pcscd import PcscdService
from hardware.pcsc.slot import CardSlot
from hardware.pinpad import EmulatedPinpad, PinScript
from paycore.pan import Pan
from tests.e2e.conftest import assert_no_card_data, hil
from tests.gateway_bridge.rig import Rig

PAN = Pan("4761739001010010")  # visa_credit, PIN 1234
GENERATE_AC = 0xAE


@pytest.mark.parametrize(
    ("script", "words"),
    [
        (PinScript.cancelled("12"), "Not completed: Cancelled"),
        (PinScript.timeout("1"), "Not completed: PIN entry timed out"),
    ],
    ids=["cancel", "timeout"],
)
def test_pin_entry_cancelled_or_timed_out_is_not_completed(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
    script: PinScript,
    words: str,
) -> None:
    before = issuer.snapshot(PAN).balance
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(script)

    async def body() -> None:
        async with hil(rig, pcscd_vpcd, pad, issuer, tmp_path, pin_timeout=0.8) as h:
            result = await h.terminal.pay(1800, "GBP", idempotency_key="e2e-pin-abort")
            assert result.status == "not_completed" and not result.reversal_queued
            assert h.display.kinds()[:2] == ["present_card", "enter_pin"]
            assert "processing" not in h.display.kinds()
            assert h.saw(words)
            record = await h.record(result)
            assert record.state == "not_completed" and record.message_ids == ()
            assert await h.bridge_record("e2e-pin-abort") is None
            await h.reconcile([result])

    asyncio.run(body())
    assert issuer.ledger.entries() == ()
    assert issuer.snapshot(PAN).balance == before


def test_card_aac_after_host_approval_is_declined_and_reversed(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
) -> None:
    before = issuer.snapshot(PAN).balance
    vpcd_card(EmvCard(load_profile("visa_credit"), faults=Faults(aac_at_second_gen_ac=True)))
    pad.queue_pin(PinScript.entered("1234"))

    async def body() -> None:
        async with hil(rig, pcscd_vpcd, pad, issuer, tmp_path) as h:
            result = await h.terminal.pay(3300, "GBP", idempotency_key="e2e-aac")
            assert result.status == "declined" and result.reversal_queued
            assert result.response_code == "00"  # the host said yes, the card said no
            assert result.message == (
                "Declined by the card after approval: the amount will be reversed"
            )
            assert h.saw("the amount will be reversed") and "approved" not in h.display.kinds()
            assert issuer.snapshot(PAN).balance == before - 3300  # taken, until reversed
            record = await h.record(result)
            assert record.state == "reversal_pending"
            assert record.reversal_reason == "card_declined"
            assert await h.terminal.deliver_reversals() == 1
            assert await h.terminal.deliver_reversals() == 0  # delivered once
            record = await h.record(result)
            assert record.state == "reversed" and len(record.reversal_message_ids) == 1
            bridge = await h.bridge_record("e2e-aac")
            assert bridge is not None and bridge.reversed_at is not None
            kinds = [e.kind for e in issuer.ledger.entries()]
            assert kinds == ["authorisation", "reversal"]
            await h.reconcile([result])
            assert_no_card_data(h, PAN.digits)

    asyncio.run(body())
    assert issuer.snapshot(PAN).balance == before


def test_card_pulled_after_host_approval_is_not_completed_and_reversed(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
) -> None:
    before = issuer.snapshot(PAN).balance
    pull = Faults(pull_at=At(ins=GENERATE_AC, occurrence=2))
    vpcd_card(EmvCard(load_profile("visa_credit"), faults=pull))
    pad.queue_pin(PinScript.entered("1234"))

    async def body() -> None:
        async with hil(rig, pcscd_vpcd, pad, issuer, tmp_path) as h:
            result = await h.terminal.pay(4400, "GBP", idempotency_key="e2e-pulled")
            assert result.status == "not_completed" and result.reversal_queued
            assert result.message.startswith("Not completed: the card left before the end")
            assert h.saw("The amount will be reversed")
            assert "approved" not in h.display.kinds()
            record = await h.record(result)
            assert record.state == "reversal_pending" and record.reversal_reason == "card_removed"
            assert await h.terminal.deliver_reversals() == 1
            assert (await h.record(result)).state == "reversed"
            bridge = await h.bridge_record("e2e-pulled")
            assert bridge is not None and bridge.state == "approved"
            assert bridge.reversed_at is not None
            await h.reconcile([result])
            assert_no_card_data(h, PAN.digits)

    asyncio.run(body())
    assert issuer.snapshot(PAN).balance == before
