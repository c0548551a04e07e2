"""Payments through the whole agent: the card behind pcscd + vpcd, the PIN pad on a pty,
the agent's reader, kernel, PIN pad driver, journal and MQTT link, a real Mosquitto and
the real bridge with the issuer simulator. Every log line of every test is checked for
card data by the suite's guard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway_bridge.connectors.issuer_sim import IssuerSimulator
from gateway_bridge.connectors.issuer_sim.accounts import repo_catalogue_dir
from hardware.cards import EmvCard, load_profile
from hardware.mosquitto import MosquittoService
from hardware.pcsc.pcscd import PcscdService
from hardware.pcsc.slot import CardSlot
from hardware.pinpad import AesDukptKey, EmulatedPinpad, PinScript
from paycore.pan import Pan
from terminal_agent.cardholder import PadCardholder
from terminal_agent.display import RecordingDisplay
from terminal_agent.journal import TransactionJournal
from terminal_agent.kernel import EmvKernel, TerminalConfig
from terminal_agent.link import LinkSettings, MqttLink
from terminal_agent.pinpad import PinpadDriver, PinpadSettings
from terminal_agent.reader import ReaderService, ReaderSettings
from terminal_agent.transaction import PaymentResult, PaymentTerminal, TransactionSettings
from tests.gateway_bridge.rig import DATA_IKID, PIN_IKID, TERMINAL_ID, Rig, make_rig, running_bridge

PAN = Pan("4761739001010010")


@dataclass
class Agent:
    terminal: PaymentTerminal
    display: RecordingDisplay
    journal: TransactionJournal
    pad: EmulatedPinpad


@pytest.fixture
def rig(tmp_path: Path, mosquitto_broker: MosquittoService) -> Rig:
    return make_rig(tmp_path, mosquitto_broker)


@contextlib.asynccontextmanager
async def agent(
    rig: Rig, pcscd: PcscdService, tmp_path: Path, pad: EmulatedPinpad, host_timeout: float = 5.0
) -> AsyncIterator[Agent]:
    display = RecordingDisplay()
    journal = await TransactionJournal.open(tmp_path / "agent.db", secrets.token_bytes(32))
    link_settings = LinkSettings(
        terminal_id=TERMINAL_ID, host=rig.broker.host, port=rig.broker.port, protocol="5"
    )
    assert pad.link_path is not None
    try:
        async with (
            ReaderService(ReaderSettings(reader=pcscd.card_reader)) as reader,
            PinpadDriver(PinpadSettings(port=str(pad.link_path))) as pinpad,
            MqttLink(
                link_settings,
                initial_key=rig.data_initial_key,
                initial_key_id=DATA_IKID,
                counters=journal,
            ) as link,
        ):
            await link.wait_connected(10)
            await pinpad.wait_connected(10)
            terminal = PaymentTerminal(
                kernel=EmvKernel(TerminalConfig()),
                reader=reader,
                cardholder=PadCardholder(pinpad, display, pin_key_slot=1, pin_timeout_s=5),
                link=link,
                journal=journal,
                display=display,
                settings=TransactionSettings(card_timeout_s=10, host_timeout_s=host_timeout),
            )
            yield Agent(terminal, display, journal, pad)
    finally:
        await journal.close()


def issuer() -> IssuerSimulator:
    catalogue = repo_catalogue_dir()
    assert catalogue is not None
    return IssuerSimulator.from_paths([catalogue])


@pytest.fixture
def pad(rig: Rig, tmp_path: Path) -> Iterator[EmulatedPinpad]:
    emulated = EmulatedPinpad(
        kbpk=secrets.token_bytes(32),
        slots={1: AesDukptKey(rig.pin_initial_key, PIN_IKID)},
        link_path=tmp_path / "pos-pinpad",
    )
    emulated.start()
    yield emulated
    emulated.stop()


def test_approved_purchase_with_online_pin(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Also the proof for the logs: everything is logged at every level down to TRACE
    (APDUs, frames, envelopes) and the suite's guard finds no card data in any of it."""
    caplog.set_level(1)
    sim = issuer()
    before = sim.snapshot(PAN).balance
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(PinScript.entered("1234"))

    async def body() -> PaymentResult:
        async with running_bridge(rig, sim), agent(rig, pcscd_vpcd, tmp_path, pad) as a:
            result = await a.terminal.pay(1250, "GBP", idempotency_key="till1-0001")
            record = await a.journal.by_idempotency_key("till1-0001")
            assert record is not None and record.state == "completed" and not record.has_body
            assert a.display.kinds()[:2] == ["present_card", "enter_pin"]
            assert "approved" in a.display.kinds()
            again = await a.terminal.pay(1250, "GBP", idempotency_key="till1-0001")
            assert again.status == "approved" and again.local_id == result.local_id
            return result

    result = asyncio.run(body())
    traced = [r for r in caplog.records if r.levelno < logging.DEBUG]
    assert any(r.name.startswith("terminal_agent.reader") for r in traced)  # APDUs were logged
    assert any(r.name.startswith("terminal_agent.pinpad") for r in traced)  # frames too
    for record in caplog.records:
        text = record.getMessage()
        assert PAN.digits not in text and "D3012" not in text  # PAN, track 2 separator+expiry
    assert result.status == "approved", result.message
    assert result.response_code == "00" and result.authorization_code
    assert result.masked_pan == "476173******0010"
    assert result.cryptogram  # the card's TC
    assert sim.snapshot(PAN).balance == before - 1250


@pytest.mark.parametrize(
    ("amount", "pin", "code"), [(99_951, "1234", "51"), (700, "9999", "55")], ids=["51", "55"]
)
def test_declines_are_shown_in_plain_words(
    rig: Rig,
    pcscd_vpcd: PcscdService,
    vpcd_card: CardSlot,
    pad: EmulatedPinpad,
    tmp_path: Path,
    amount: int,
    pin: str,
    code: str,
) -> None:
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(PinScript.entered(pin))

    async def body() -> tuple[PaymentResult, list[str]]:
        async with running_bridge(rig, issuer()), agent(rig, pcscd_vpcd, tmp_path, pad) as a:
            result = await a.terminal.pay(amount, "GBP")
            return result, [p.text for p in a.display.prompts]

    result, texts = asyncio.run(body())
    assert (result.status, result.response_code) == ("declined", code)
    words = {"51": "Insufficient funds", "55": "Incorrect PIN"}[code]
    assert any(words in t for t in texts)


def test_host_timeout_is_not_completed_and_the_reversal_is_delivered_later(
    rig: Rig, pcscd_vpcd: PcscdService, vpcd_card: CardSlot, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    sim = issuer()
    before = sim.snapshot(PAN).balance
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(PinScript.entered("1234"))

    async def body() -> None:
        async with agent(rig, pcscd_vpcd, tmp_path, pad, host_timeout=1.5) as a:
            # No bridge: nobody answers.
            result = await a.terminal.pay(3000, "GBP", idempotency_key="till1-0002")
            assert result.status == "not_completed" and result.reversal_queued
            assert "no answer" in result.message
            assert await a.terminal.deliver_reversals() == 0  # still nobody there
            async with running_bridge(rig, sim):
                assert await a.terminal.deliver_reversals() == 1
            record = await a.journal.by_idempotency_key("till1-0002")
            assert record is not None and record.state == "reversed"

    asyncio.run(body())
    # The bridge never saw the authorisation (it was down), so nothing was taken.
    assert sim.snapshot(PAN).balance == before
