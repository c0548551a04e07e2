"""Purchases with online PIN from card to issuer and back: approval, declines, PIN
retries and the issuer's PIN try limit, and an expired card (issue 6)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway_bridge.connectors.issuer_sim import IssuerSimulator
from hardware.cards import EmvCard, load_profile
from hardware.pcsc.pcscd import PcscdService
from hardware.pcsc.slot import CardSlot
from hardware.pinpad import EmulatedPinpad, PinScript
from paycore.pan import Pan
from tests.e2e.conftest import assert_no_card_data, hil
from tests.gateway_bridge.rig import Rig

PAN = "4761739001010010"  # visa_credit, PIN 1234


def _bit(hex_bytes: str | None, byte: int, mask: int) -> bool:
    """EMV numbering: ``byte`` is 1-based, ``mask`` the bit's value (b8 = 0x80)."""
    assert hex_bytes is not None
    return bool(bytes.fromhex(hex_bytes)[byte - 1] & mask)


def test_approved_online_pin_purchase(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
) -> None:
    before = issuer.snapshot(Pan(PAN)).balance
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(PinScript.entered("1234"))

    async def body() -> None:
        async with hil(rig, pcscd_vpcd, pad, issuer, tmp_path) as h:
            result = await h.terminal.pay(1250, "GBP", idempotency_key="e2e-approved")
            # The cashier: insert card, PIN, processing, approved, remove card.
            assert h.display.kinds() == [
                "present_card", "enter_pin", "processing", "approved", "remove_card"
            ]  # fmt: skip
            assert h.display.prompts[0].lines == ("12.50 GBP",)
            assert h.texts()[3] == "APPROVED"
            assert h.display.prompts[3].lines == ("476173******0010", "Visa Credit")
            # The card: TC at the second GENERATE AC, online PIN in TVR, TSI steps done.
            assert result.status == "approved" and result.response_code == "00"
            assert result.aid == "A0000000031010" and result.application_label == "Visa Credit"
            assert result.cryptogram and len(result.cryptogram) == 16
            assert _bit(result.tvr, 3, 0x04)  # online PIN entered
            assert not _bit(result.tvr, 2, 0x40)  # not expired
            assert _bit(result.tsi, 1, 0x40) and _bit(result.tsi, 1, 0x08)  # CVM, terminal RM
            assert not result.signature_required
            # The agent's journal: completed, the TC kept, the body gone.
            record = await h.record(result)
            assert record.state == "completed" and not record.has_body
            assert record.tc == result.cryptogram and record.masked_pan == "476173******0010"
            full = await h.journal.get(record.local_id, history=True)
            assert full is not None
            assert [state for state, _ in full.history] == [
                "created", "card_read", "pin_captured", "sent", "responded", "completed"
            ]  # fmt: skip
            # The bridge's journal: approved with the issuer's codes, masked PAN only.
            bridge = await h.bridge_record("e2e-approved")
            assert bridge is not None and bridge.state == "approved"
            assert bridge.response_code == "00" and bridge.amount == 1250
            assert bridge.authorization_code == result.authorization_code
            assert bridge.masked_pan == "476173******0010"
            assert bridge.message_id in record.message_ids
            if h.acquirer is not None:  # the ISO 8583 run: one financial request, no advice
                assert [m["t"] for m in h.acquirer.received if m["t"] != "0800"] == ["0200"]
                assert bridge.host_reference is not None and bridge.stan is not None
            await h.reconcile([result])
            assert_no_card_data(h, PAN)

    asyncio.run(body())
    assert issuer.snapshot(Pan(PAN)).balance == before - 1250


def test_decline_51_is_shown_in_plain_words(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
) -> None:
    before = issuer.snapshot(Pan(PAN)).balance
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(PinScript.entered("1234"))

    async def body() -> None:
        async with hil(rig, pcscd_vpcd, pad, issuer, tmp_path) as h:
            result = await h.terminal.pay(99_951, "GBP", idempotency_key="e2e-51")
            assert (result.status, result.response_code) == ("declined", "51")
            assert result.message == "DECLINED: Insufficient funds"
            assert "declined" in h.display.kinds() and "approved" not in h.display.kinds()
            assert h.saw("Insufficient funds")
            # The card saw the issuer's decline (authenticated ARPC) and gave an AAC.
            assert result.cryptogram and result.authorization_code is None
            record = await h.record(result)
            assert record.state == "declined" and record.response_code == "51"
            bridge = await h.bridge_record("e2e-51")
            assert bridge is not None and (bridge.state, bridge.response_code) == (
                "declined", "51"
            )  # fmt: skip
            (entry,) = await h.ledger_for(record)
            assert not entry.approved and entry.balance_delta == 0
            await h.reconcile([result])
            assert_no_card_data(h, PAN)

    asyncio.run(body())
    assert issuer.snapshot(Pan(PAN)).balance == before


def test_wrong_pin_then_right_pin(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
) -> None:
    before = issuer.snapshot(Pan(PAN)).balance
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(PinScript.entered("9999"))
    pad.queue_pin(PinScript.entered("1234"))

    async def body() -> None:
        async with hil(rig, pcscd_vpcd, pad, issuer, tmp_path) as h:
            wrong = await h.terminal.pay(2000, "GBP", idempotency_key="e2e-pin-1")
            assert (wrong.status, wrong.response_code) == ("declined", "55")
            assert h.saw("Incorrect PIN")
            assert issuer.snapshot(Pan(PAN)).pin_failures == 1
            h.display.prompts.clear()
            right = await h.terminal.pay(2000, "GBP", idempotency_key="e2e-pin-2")
            assert (right.status, right.response_code) == ("approved", "00")
            assert h.display.kinds()[:2] == ["present_card", "enter_pin"]
            assert h.saw("APPROVED") and not h.saw("Incorrect PIN")
            assert issuer.snapshot(Pan(PAN)).pin_failures == 0  # a right PIN resets
            assert (await h.record(wrong)).state == "declined"
            assert (await h.record(right)).state == "completed"
            await h.reconcile([wrong, right])
            assert_no_card_data(h, PAN)

    asyncio.run(body())
    assert issuer.snapshot(Pan(PAN)).balance == before - 2000


def test_pin_tries_exceeded_after_three_wrong_online_pins(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
) -> None:
    """docs/issuer-simulator.md: the wrong PIN that reaches the limit (3) already answers
    75, and so does every later online-PIN attempt, even with the right PIN."""
    before = issuer.snapshot(Pan(PAN)).balance
    vpcd_card(EmvCard(load_profile("visa_credit")))
    for pin in ("1111", "2222", "3333", "1234"):
        pad.queue_pin(PinScript.entered(pin))

    async def body() -> None:
        async with hil(rig, pcscd_vpcd, pad, issuer, tmp_path) as h:
            results = [
                await h.terminal.pay(500, "GBP", idempotency_key=f"e2e-tries-{n}") for n in range(4)
            ]
            assert [r.response_code for r in results] == ["55", "55", "75", "75"]
            assert all(r.status == "declined" for r in results)
            assert [r.message for r in results[2:]] == ["DECLINED: PIN tries exceeded"] * 2
            snapshot = issuer.snapshot(Pan(PAN))
            assert snapshot.pin_blocked and snapshot.pin_failures == 3
            for result in results:
                bridge = await h.bridge_record(result.idempotency_key)
                assert bridge is not None and bridge.response_code == result.response_code
                assert (await h.record(result)).state == "declined"
            await h.reconcile(results)
            assert_no_card_data(h, PAN)

    asyncio.run(body())
    assert issuer.snapshot(Pan(PAN)).balance == before
