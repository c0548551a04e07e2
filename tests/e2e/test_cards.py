"""Cards that are not the plain case: expired, two applications with the cardholder's
choice on the PIN pad, no PSE, a blocked application, a signature card (issue 6)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from gateway_bridge.connectors.issuer_sim import IssuerSimulator
from hardware.cards import EmvCard, load_profile
from hardware.pcsc.pcscd import PcscdService
from hardware.pcsc.slot import CardSlot
from hardware.pinpad import EmulatedPinpad, PinScript
from paycore.pan import Pan
from paycore.pinpad import Key
from tests.e2e.conftest import assert_no_card_data, hil
from tests.gateway_bridge.rig import Rig


def _bit(hex_bytes: str | None, byte: int, mask: int) -> bool:
    assert hex_bytes is not None
    return bool(bytes.fromhex(hex_bytes)[byte - 1] & mask)


def test_expired_card(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
) -> None:
    """EMV Book 3 10.4.3: the terminal sets TVR byte 2 b7 (expired application) and lets
    terminal action analysis decide; the Mastercard IAC/TAC send it online, so the issuer
    decides. The catalogue's account is ``closed``, and the simulator checks status
    before expiry (docs/issuer-simulator.md, checks 2 and 3): 62. Reopened by the back
    office, the same card is declined 54 for its expiry."""
    pan = Pan("2223003122003222")
    before = issuer.snapshot(pan).balance
    vpcd_card(EmvCard(load_profile("expired")))
    pad.queue_pin(PinScript.entered("1111"))
    pad.queue_pin(PinScript.entered("1111"))

    async def body() -> None:
        async with hil(rig, pcscd_vpcd, pad, issuer, tmp_path) as h:
            closed = await h.terminal.pay(1000, "GBP", idempotency_key="e2e-expired-1")
            assert _bit(closed.tvr, 2, 0x40)  # TVR byte 2 b7: expired application
            assert (closed.status, closed.response_code) == ("declined", "62")
            assert closed.message == "DECLINED: Card restricted" and h.saw("Card restricted")
            issuer.set_status(pan, "active")
            expired = await h.terminal.pay(1000, "GBP", idempotency_key="e2e-expired-2")
            assert _bit(expired.tvr, 2, 0x40)
            assert (expired.status, expired.response_code) == ("declined", "54")
            assert h.saw("DECLINED: Card expired")
            for result in (closed, expired):
                record = await h.record(result)
                assert record.state == "declined" and record.arqc  # it went online
                assert _bit(record.tvr, 2, 0x40)
                bridge = await h.bridge_record(result.idempotency_key)
                assert bridge is not None and bridge.state == "declined"
                assert bridge.response_code == result.response_code
            await h.reconcile([closed, expired])
            assert_no_card_data(h, pan.digits)

    asyncio.run(body())
    assert issuer.snapshot(pan).balance == before


def _press_when_shown(pad: EmulatedPinpad, first_line: str, key: Key) -> threading.Thread:
    """The cardholder: reads the pad's display, then (a human moment later) presses."""

    def watch() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if pad.display[:1] == (first_line,):
                time.sleep(0.3)
                pad.press(key)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_two_applications_cardholder_chooses_the_second(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
) -> None:
    credit, debit = Pan("4242424242424242"), Pan("4111111111111111")
    before = (issuer.snapshot(credit).balance, issuer.snapshot(debit).balance)
    vpcd_card(EmvCard(load_profile("two_apps_choice")))
    pad.queue_pin(PinScript.entered("1357"))

    async def body() -> None:
        async with hil(rig, pcscd_vpcd, pad, issuer, tmp_path) as h:
            chooser = _press_when_shown(h.pad, "SELECT:", Key.DIGIT_2)
            result = await h.terminal.pay(4200, "GBP", idempotency_key="e2e-choice")
            chooser.join(1)
            choose = next(p for p in h.display.prompts if p.kind == "choose_application")
            assert choose.lines == ("1 VISA CREDIT", "2 VISA ELECTRON")
            assert result.status == "approved", result.message
            assert result.aid == "A0000000032010"
            assert result.masked_pan == "411111******1111"
            await h.reconcile([result])
            assert_no_card_data(h, credit.digits, debit.digits)

    asyncio.run(body())
    assert issuer.snapshot(credit).balance == before[0]
    assert issuer.snapshot(debit).balance == before[1] - 4200


def test_card_without_pse_is_selected_from_the_aid_list(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
) -> None:
    pan = Pan("4012888888881881")
    before = issuer.snapshot(pan).balance
    vpcd_card(EmvCard(load_profile("no_pse")))
    pad.queue_pin(PinScript.entered("2222"))

    async def body() -> None:
        async with hil(rig, pcscd_vpcd, pad, issuer, tmp_path) as h:
            result = await h.terminal.pay(1500, "GBP", idempotency_key="e2e-no-pse")
            assert result.status == "approved", result.message
            assert result.aid == "A0000000031010" and result.masked_pan == "401288******1881"
            assert "choose_application" not in h.display.kinds()
            record = await h.record(result)
            assert record.state == "completed" and record.aid == "A0000000031010"
            bridge = await h.bridge_record("e2e-no-pse")
            assert bridge is not None and bridge.state == "approved"
            await h.reconcile([result])
            assert_no_card_data(h, pan.digits)

    asyncio.run(body())
    assert issuer.snapshot(pan).balance == before - 1500


def test_blocked_application_is_not_completed_with_a_clear_message(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
) -> None:
    pan = Pan("5413330002001155")
    vpcd_card(EmvCard(load_profile("blocked_app")))

    async def body() -> None:
        async with hil(rig, pcscd_vpcd, pad, issuer, tmp_path) as h:
            result = await h.terminal.pay(1500, "GBP", idempotency_key="e2e-blocked")
            assert result.status == "not_completed"
            assert result.message.startswith("Not completed: Card error:")
            assert "application" in result.message
            assert h.display.kinds() == ["present_card", "not_completed", "remove_card"]
            record = await h.record(result)
            assert record.state == "not_completed" and record.message_ids == ()
            assert await h.bridge_record("e2e-blocked") is None  # nothing was sent
            await h.reconcile([result])

    asyncio.run(body())
    assert issuer.ledger.entries() == ()
    assert issuer.snapshot(pan).balance == 50_000


def test_signature_card_is_approved_without_a_pin(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    issuer: IssuerSimulator,
    tmp_path: Path,
) -> None:
    pan = Pan("5200828282828210")
    before = issuer.snapshot(pan).balance
    vpcd_card(EmvCard(load_profile("signature_card")))

    async def body() -> None:
        async with hil(rig, pcscd_vpcd, pad, issuer, tmp_path) as h:
            result = await h.terminal.pay(2500, "GBP", idempotency_key="e2e-signature")
            assert result.status == "approved", result.message
            assert result.signature_required
            assert "enter_pin" not in h.display.kinds()
            assert h.saw("Signature required on the receipt")
            assert not _bit(result.tvr, 3, 0x04)  # no online PIN entered
            record = await h.record(result)
            assert record.state == "completed"
            assert record.cvm is not None and record.cvm[:2] == "1E"  # signature (paper)
            await h.reconcile([result])
            assert_no_card_data(h, pan.digits)

    asyncio.run(body())
    assert issuer.snapshot(pan).balance == before - 2500
