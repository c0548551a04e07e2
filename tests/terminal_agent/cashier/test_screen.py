"""The cashier screen in Debian's Chromium (Playwright, headless) against the real agent:
card behind pcscd + vpcd, PIN pad on a pty, Mosquitto and the real bridge; the page is
served by uvicorn on a free loopback port. Screenshots go under the test's tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from playwright.async_api import Browser, Page, ViewportSize, async_playwright, expect
from pydantic import SecretStr

from hardware.cards import EmvCard, Faults, load_profile
from hardware.pcsc.pcscd import PcscdService
from hardware.pcsc.slot import CardSlot
from hardware.pinpad import EmulatedPinpad, PinScript
from terminal_agent.cardholder import PadCardholder
from terminal_agent.cashier import CashierFeed, create_cashier_app
from terminal_agent.display import FanOut, RecordingDisplay
from terminal_agent.ecr import EcrSettings
from terminal_agent.journal import TransactionJournal
from terminal_agent.kernel import EmvKernel, TerminalConfig
from terminal_agent.link import LinkSettings, MqttLink
from terminal_agent.pinpad import PinpadDriver, PinpadSettings
from terminal_agent.reader import ReaderService, ReaderSettings
from terminal_agent.receipts import MerchantSettings
from terminal_agent.transaction import PaymentTerminal, TransactionSettings
from tests.gateway_bridge.rig import DATA_IKID, TERMINAL_ID, Rig, running_bridge
from tests.terminal_agent.ecr.harness import TOKEN
from tests.terminal_agent.test_payment import PAN, issuer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SMALL = ViewportSize(width=800, height=480)
LARGE = ViewportSize(width=1280, height=800)


@dataclass
class Screen:
    url: str
    browser: Browser
    display: RecordingDisplay
    journal: TransactionJournal
    shots: Path

    async def page(self, viewport: ViewportSize = SMALL) -> Page:
        page = await self.browser.new_page(viewport={"width": viewport["width"],
                                                     "height": viewport["height"]})  # fmt: skip
        await page.goto(self.url + "/cashier")
        await expect(page.locator("body")).to_have_attribute("data-feed", "open")
        return page

    async def shot(self, page: Page, name: str) -> None:
        path = self.shots / f"{name}.png"
        await page.screenshot(path=path)
        print(f"screenshot: {path}")
        assert path.stat().st_size > 1000


@contextlib.asynccontextmanager
async def screen(
    rig: Rig,
    pcscd: PcscdService,
    tmp_path: Path,
    pad: EmulatedPinpad,
    *,
    reader: str | None,
    **options: Any,
) -> AsyncIterator[Screen]:
    """The agent (as tests/terminal_agent/test_payment.py builds it, with the cashier feed
    in its displays), its ECR + cashier app under uvicorn, and headless Chromium."""
    recording, feed = RecordingDisplay(), CashierFeed()
    display = FanOut([recording, feed])
    journal = await TransactionJournal.open(tmp_path / "agent.db", secrets.token_bytes(32))
    link_settings = LinkSettings(
        terminal_id=TERMINAL_ID, host=rig.broker.host, port=rig.broker.port, protocol="5"
    )
    assert pad.link_path is not None
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        async with (
            ReaderService(ReaderSettings(reader=reader)) as reader_service,
            PinpadDriver(PinpadSettings(port=str(pad.link_path))) as pinpad,
            MqttLink(
                link_settings, initial_key=rig.data_initial_key, initial_key_id=DATA_IKID,
                counters=journal,
            ) as link,
        ):  # fmt: skip
            await link.wait_connected(10)
            await pinpad.wait_connected(10)
            terminal = PaymentTerminal(
                kernel=EmvKernel(TerminalConfig()),
                reader=reader_service,
                cardholder=PadCardholder(pinpad, display, pin_key_slot=1, pin_timeout_s=5),
                link=link,
                journal=journal,
                display=display,
                settings=TransactionSettings(card_timeout_s=10, host_timeout_s=5),
            )
            app = create_cashier_app(
                terminal, EcrSettings(token_file=tmp_path / "unused"), feed,
                token=SecretStr(TOKEN), **options,
            )  # fmt: skip
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
            server = uvicorn.Server(config)
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            try:
                async with asyncio.timeout(10):
                    while not server.started:
                        await asyncio.sleep(0.02)
                async with async_playwright() as pw:
                    browser = await pw.chromium.launch(
                        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                    )
                    try:
                        url = f"http://127.0.0.1:{port}"
                        yield Screen(url, browser, recording, journal, shots)
                    finally:
                        await browser.close()
            finally:
                feed.close()
                server.should_exit = True
                await serving
                sock.close()
    finally:
        await journal.close()


async def type_amount(page: Page, digits: str) -> None:
    for digit in digits:
        await page.click(f'.key[data-key="{digit}"]')


def test_purchase_approved_then_void_last(
    rig: Rig, pcscd_vpcd: PcscdService, vpcd_card: CardSlot, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    sim = issuer()
    before = sim.snapshot(PAN).balance
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(PinScript.entered("1234"))

    async def body() -> None:
        async with (
            running_bridge(rig, sim),
            screen(rig, pcscd_vpcd, tmp_path, pad, reader=pcscd_vpcd.card_reader) as s,
        ):
            page = await s.page(LARGE)
            await expect(page.locator("#banners .banner")).to_have_count(0)
            await expect(page.locator("#void")).to_be_disabled()  # nothing to void yet
            await type_amount(page, "1250")
            await page.click('.key[data-key="0"]')
            await page.click('.key[data-key="back"]')
            await expect(page.locator("#amount")).to_have_text("12.50")
            await s.shot(page, "amount-1280x800")
            await page.click("#pay")
            await expect(page.locator("#headline")).to_have_text("APPROVED", timeout=15_000)
            await expect(page.locator("#extra")).to_contain_text("476173******0010")
            await s.shot(page, "approved-1280x800")
            assert {"present_card", "enter_pin", "processing"} <= set(s.display.kinds())
            assert PAN.digits not in await page.content()
            record = (await s.journal.recent())[0]
            assert (record.state, record.amount, record.currency) == ("completed", 1250, "GBP")
            assert record.ecr_reference == "cashier"

            await page.set_viewport_size(SMALL)
            await page.click("#void")
            await expect(page.locator("#headline")).to_have_text("VOIDED", timeout=10_000)
            await s.shot(page, "voided-800x480")
            await expect(page.locator("#void")).to_be_disabled()
            kinds = [r.transaction_type for r in await s.journal.recent()]
            assert kinds == ["void", "purchase"]

    asyncio.run(body())
    assert sim.snapshot(PAN).balance == before  # taken, then given back by the void


def test_decline_in_plain_words_then_cancel_during_pin_entry(
    rig: Rig, pcscd_vpcd: PcscdService, vpcd_card: CardSlot, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(PinScript.entered("1234"))

    async def body() -> None:
        async with (
            running_bridge(rig, issuer()),
            screen(rig, pcscd_vpcd, tmp_path, pad, reader=pcscd_vpcd.card_reader) as s,
        ):
            page = await s.page()
            await type_amount(page, "99951")
            await expect(page.locator("#amount")).to_have_text("999.51")
            await page.click("#pay")
            await expect(page.locator("#headline")).to_have_text("DECLINED", timeout=15_000)
            await expect(page.locator("#detail")).to_have_text("Insufficient funds")
            await s.shot(page, "declined-800x480")
            await expect(page.locator("#pay")).to_be_enabled()  # the amount stays to retry

            # No PIN queued this time: the pad waits, and the cashier cancels.
            await page.click("#pay")
            await expect(page.locator("#headline")).to_have_text(
                "ENTER PIN ON THE PIN PAD", timeout=10_000
            )
            await expect(page.locator("#cancel")).to_be_visible()
            await s.shot(page, "enter-pin-800x480")
            await page.click("#cancel")
            await expect(page.locator("#headline")).to_have_text("NOT COMPLETED", timeout=10_000)
            await expect(page.locator("#detail")).to_contain_text("cancelled by the register")
            await expect(page.locator("#cancel")).to_be_hidden()
            await s.shot(page, "cancelled-800x480")
            states = [r.state for r in await s.journal.recent()]
            assert states == ["not_completed", "declined"]

    asyncio.run(body())


def test_banners_reader_missing_bridge_offline_pinpad_missing_and_local_only(
    rig: Rig, pcscd_vpcd: PcscdService, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    async def body() -> None:
        # No bridge running, and a reader name that does not exist.
        async with screen(rig, pcscd_vpcd, tmp_path, pad, reader="No Such Reader 9") as s:
            page = await s.page()
            await expect(page.locator("#banner-reader_missing")).to_contain_text(
                "Card reader missing", timeout=10_000
            )
            await expect(page.locator("#banner-reader_missing")).to_contain_text("USB cable")
            await expect(page.locator("#banner-bridge_offline")).to_contain_text(
                "Payment gateway offline"
            )
            await expect(page.locator("#banner-pinpad_missing")).to_have_count(0)
            await s.shot(page, "banners-800x480")
            await asyncio.to_thread(pad.stop)  # unplugged: the banner is pushed to the page
            await expect(page.locator("#banner-pinpad_missing")).to_contain_text(
                "PIN pad missing", timeout=10_000
            )
            big = await s.page(LARGE)
            await expect(big.locator(".banner")).to_have_count(3)
            await s.shot(big, "banners-1280x800")

            async with httpx.AsyncClient(base_url=s.url) as client:
                rebound = await client.get("/cashier", headers={"Host": "evil.example"})
                assert rebound.status_code == 403 and TOKEN not in rebound.text
                events = await client.get("/cashier/events", headers={"Host": "evil.example"})
                assert events.status_code == 403
                page_html = await client.get("/cashier")
                assert page_html.status_code == 200 and TOKEN in page_html.text
                assert "script-src 'self'" in page_html.headers["Content-Security-Policy"]
                assert page_html.headers["Cache-Control"] == "no-store"
                unauth = await client.get("/v1/cashier/last-purchase")
                assert unauth.status_code == 401
                missing = await client.get("/cashier/static/..%2Fapp.py")
                assert missing.status_code == 404

    asyncio.run(body())


def test_history_receipt_close_batch_and_keys_low_banner(
    rig: Rig, pcscd_vpcd: PcscdService, vpcd_card: CardSlot, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(PinScript.entered("1234"))
    merchant = MerchantSettings(name="Corner Shop", merchant_id="123456789012345", terminal_id="T1")
    # The emulated pad's fresh key has ~2**32 keys less a few: a threshold above that is "low".
    options = {"merchant": merchant, "key_threshold": 2**33, "key_interval_s": 0.2}

    async def body() -> None:
        async with (
            running_bridge(rig, issuer()),
            screen(rig, pcscd_vpcd, tmp_path, pad, reader=pcscd_vpcd.card_reader, **options) as s,
        ):
            page = await s.page(LARGE)
            await expect(page.locator("#banner-pinpad_keys_low")).to_contain_text(
                "PIN pad keys running low \u2014 ask for new keys (provisioning)"
            )
            await expect(page.locator("#banner-terminal_keys_low")).to_have_count(1)
            await type_amount(page, "725")
            await page.click("#pay")
            await expect(page.locator("#headline")).to_have_text("APPROVED", timeout=15_000)

            await page.click("#show-history")
            item = page.locator(".history-item").first
            await expect(item).to_contain_text("7.25 GBP")
            await expect(item).to_contain_text("476173******0010")
            await expect(item).to_contain_text("approved")
            await s.shot(page, "history-1280x800")
            await item.click()
            body_ = page.locator("#receipt-body .receipt")
            await expect(body_).to_have_attribute("data-copy", "customer")
            await expect(body_).to_contain_text("Corner Shop")
            await expect(body_).to_contain_text("0010")
            await page.click("#receipt-merchant")
            await expect(body_).to_have_attribute("data-copy", "merchant")
            await expect(body_).to_contain_text("476173******0010")
            await page.click("#receipt-print")
            await expect(page.locator("#receipt-message")).to_have_text("no printer configured")
            await s.shot(page, "receipt-1280x800")
            assert PAN.digits not in await page.content()

            await page.locator("#receipt .close-view").click()
            await page.click("#show-totals")
            await expect(page.locator("#totals-today")).to_contain_text("7.25 GBP")
            await expect(page.locator("#batch-info")).to_have_text("No batch closed yet")
            await expect(page.locator("#batch-settlement")).to_be_hidden()
            await page.click("#close-batch")
            await expect(page.locator("#batch-info")).to_contain_text("Batch 1 closed")
            row = page.locator("#totals-batch tr.line.approved")
            await expect(row).to_contain_text("purchase")
            await expect(row).to_contain_text("7.25 GBP")
            batches = await s.journal.batches()
            assert [(b.batch_id, len(b.lines)) for b in batches] == [(1, 1)]
            assert (batches[0].lines[0].count, batches[0].lines[0].amount) == (1, 725)
            host = batches[0].host
            assert host is not None and host.status == "in_balance" and host.host_batch_id
            verdict = page.locator("#batch-settlement")
            await expect(verdict).to_have_class("in_balance")
            await expect(page.locator("#settlement-verdict")).to_have_text(
                f"IN BALANCE \u2014 host batch {host.host_batch_id}"
            )
            await expect(page.locator("#settlement-differences li")).to_have_count(0)
            await s.shot(page, "totals-1280x800")
            await page.click("#close-batch")  # nothing new since: an empty batch
            await expect(page.locator("#batch-info")).to_contain_text("Batch 2 closed")
            await expect(page.locator("#totals-batch")).to_contain_text("No payments")
            await expect(verdict).to_have_class("in_balance")

    asyncio.run(body())


def test_close_batch_shows_not_settled_then_out_of_balance_line_by_line(
    rig: Rig, pcscd_vpcd: PcscdService, vpcd_card: CardSlot, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    """No bridge: "Not settled with the host" and the reason; "Settle again" once the
    bridge is back sends the same batch, which is out of balance (a card AAC after the
    host approved left an approval at the bridge whose reversal is still queued)."""
    sim = issuer()
    vpcd_card(EmvCard(load_profile("visa_debit"), faults=Faults(aac_at_second_gen_ac=True)))
    pad.queue_pin(PinScript.entered("4321"))

    async def body() -> None:
        async with screen(rig, pcscd_vpcd, tmp_path, pad, reader=pcscd_vpcd.card_reader) as s:
            page = await s.page(LARGE)
            async with running_bridge(rig, sim):
                await type_amount(page, "900")
                await page.click("#pay")
                await expect(page.locator("#headline")).to_have_text("DECLINED", timeout=15_000)
            await page.click("#show-totals")
            await page.click("#close-batch")
            verdict = page.locator("#batch-settlement")
            await expect(verdict).to_have_class("not_settled", timeout=15_000)
            await expect(page.locator("#settlement-verdict")).to_have_text(
                re.compile(r"^Not settled with the host: no (answer from|connection to) the "
                           r"payment service$")
            )  # fmt: skip
            await s.shot(page, "batch-not-settled-1280x800")
            async with running_bridge(rig, sim):
                await page.click("#settle-again")
                await expect(verdict).to_have_class("out_of_balance", timeout=15_000)
            await expect(page.locator("#batch-info")).to_contain_text("Batch 1 closed")
            await expect(page.locator("#settlement-verdict")).to_contain_text("OUT OF BALANCE")
            lines = page.locator("#settlement-differences li.difference")
            await expect(lines).to_have_text(
                ["purchase GBP: terminal 0 for 0.00 GBP, bridge 1 for 9.00 GBP"]
            )
            await expect(page.locator("#settle-again")).to_be_hidden()
            await s.shot(page, "batch-out-of-balance-1280x800")
            (batch,) = await s.journal.batches()
            assert batch.host is not None and batch.host.attempts == 2
            assert batch.host.status == "out_of_balance"

    asyncio.run(body())
