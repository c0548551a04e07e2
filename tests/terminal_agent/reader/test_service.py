"""The supervising ReaderService against the session pcscd, and (in child processes, each
with its own pcscd) against pcscd restarts, a missing pcscd and a reader that comes late."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from hardware.cards import PSE_NAME, At, EmvCard, Faults, load_profile
from hardware.pcsc import PcscdService
from hardware.pcsc.fixtures import CardSlot
from terminal_agent.reader import (
    CardMuteError,
    CardRemovedError,
    ReaderService,
    ReaderSettings,
    ReaderState,
    ReaderStatus,
)
from tests.terminal_agent.reader.test_pcsc import READ_RECORD_1_1, BadAtr, select

FAST = ReaderSettings(
    event_wait=0.2, no_reader_poll=0.1, backoff_initial=0.05, backoff_max=0.2, removal_grace=2.0
)
SCENARIOS = Path(__file__).with_name("pcscd_scenarios.py")
ROOT = Path(__file__).resolve().parents[3]


async def in_thread(fn: Callable[[], object]) -> None:
    await asyncio.get_running_loop().run_in_executor(None, fn)


def run_service(
    body: Callable[[ReaderService], Awaitable[None]], settings: ReaderSettings = FAST
) -> list[ReaderStatus]:
    """Run ``body`` with a started service; every status the listener saw."""
    seen: list[ReaderStatus] = []

    async def main() -> None:
        async with ReaderService(settings) as service:
            service.add_listener(seen.append)
            await body(service)

    asyncio.run(main())
    return seen


def states(seen: list[ReaderStatus]) -> list[str]:
    return [s.state.value for s in seen]


def test_reports_empty_insert_and_remove(vpcd_card: CardSlot) -> None:
    card = EmvCard(load_profile("visa_debit"))
    streamed: list[ReaderStatus] = []

    async def body(service: ReaderService) -> None:
        async def stream() -> None:
            async for status in service.updates():
                streamed.append(status)

        streaming = asyncio.create_task(stream())
        ready = await service.wait_for(ReaderState.READY, timeout=5)
        assert ready.reader == vpcd_card.reader
        await in_thread(lambda: vpcd_card(card))
        present = await service.wait_for(ReaderState.CARD_PRESENT, timeout=5)
        assert present.atr == card.profile.atr and present.reader == vpcd_card.reader
        await in_thread(vpcd_card.remove)
        await service.wait_for(ReaderState.READY, timeout=5)
        await asyncio.sleep(0)
        streaming.cancel()

    seen = run_service(body)
    assert states(seen) == ["ready", "card_present", "ready", "stopped"]
    assert states(streamed)[:4] == ["starting", "ready", "card_present", "ready"]


def test_card_session_exchange_then_card_pulled_mid_exchange(vpcd_card: CardSlot) -> None:
    faults = Faults(pull_at=At(ins=0xB2, occurrence=2))

    async def body(service: ReaderService) -> None:
        await service.wait_for(ReaderState.READY, timeout=5)
        await in_thread(lambda: vpcd_card(EmvCard(load_profile("visa_credit"), faults=faults)))
        async with service.card_session(timeout=5) as card:
            data, sw1, sw2 = await card.transmit(select(PSE_NAME))
            assert data[0] == 0x6F and (sw1, sw2) == (0x90, 0x00)
            assert (await card.transmit(READ_RECORD_1_1))[1:] == (0x90, 0x00)
            with pytest.raises(CardRemovedError):
                await card.transmit(READ_RECORD_1_1)
        vpcd_card.link = None  # the card took itself out
        back = await service.wait_for(ReaderState.READY, timeout=5)
        assert back.reader == vpcd_card.reader
        with pytest.raises(TimeoutError):  # no card: the session waits for one
            async with service.card_session(timeout=0.3):
                raise AssertionError("no card, no session")

    seen = run_service(body)
    assert states(seen) == ["ready", "card_present", "ready", "stopped"]


def test_mute_card_is_reported_until_it_is_taken_out(vpcd_card: CardSlot) -> None:
    async def body(service: ReaderService) -> None:
        await service.wait_for(ReaderState.READY, timeout=5)
        await in_thread(lambda: vpcd_card(BadAtr()))
        with pytest.raises(CardMuteError):
            async with service.card_session(timeout=5):
                raise AssertionError("a mute card gave a session")
        mute = await service.wait_for(ReaderState.CARD_MUTE, timeout=1)
        assert "no usable protocol" in mute.detail
        await asyncio.sleep(0.5)  # the supervisor keeps watching: still mute
        assert service.status.state is ReaderState.CARD_MUTE
        await in_thread(vpcd_card.remove)
        await service.wait_for(ReaderState.READY, timeout=5)

    seen = run_service(body)
    assert states(seen) == ["ready", "card_present", "card_mute", "ready", "stopped"]


def test_a_reader_that_is_not_there_is_no_reader(pcscd_vpcd: PcscdService) -> None:
    async def body(service: ReaderService) -> None:
        status = await service.wait_for(ReaderState.NO_READER, timeout=5)
        assert status.detail == "no reader connected"
        await asyncio.sleep(0.3)  # polled again, still the same state, reported once

    seen = run_service(body, FAST.model_copy(update={"reader": "Acme USB"}))
    assert states(seen) == ["no_reader", "stopped"]


def test_a_failing_listener_does_not_stop_the_service(vpcd_card: CardSlot) -> None:
    def broken(status: ReaderStatus) -> None:
        raise RuntimeError("display gone")

    async def body(service: ReaderService) -> None:
        remove = service.add_listener(broken)
        await service.wait_for(ReaderState.READY, timeout=5)
        remove()
        await in_thread(lambda: vpcd_card(EmvCard(load_profile("visa_debit"))))
        await service.wait_for(ReaderState.CARD_PRESENT, timeout=5)

    assert states(run_service(body))[:2] == ["ready", "card_present"]


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="backoff_max"):
        ReaderSettings(backoff_initial=2, backoff_max=1)
    with pytest.raises(ValueError, match="event_wait"):
        ReaderSettings(event_wait=0)


# -- child processes with their own pcscd ----------------------------------------------


def run_scenario(name: str) -> list[dict[str, str]]:
    """Run a scenario of pcscd_scenarios.py; its lines, repeats of a state folded."""
    env = {k: v for k, v in os.environ.items() if k != "PCSCLITE_CSOCK_NAME"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, str(SCENARIOS), name],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    events: list[dict[str, str]] = []
    for line in done.stdout.splitlines():
        event = json.loads(line)
        if not events or events[-1]["state"] != event["state"]:
            events.append(event)
    return events


def test_no_pcscd_at_start_then_it_appears_then_the_reader_comes() -> None:
    events = run_scenario("startup")
    sequence = [e["state"] for e in events]
    if sequence[3] == "no_service":  # seen between the two pcscd runs, or not: timing
        del sequence[3]
    assert sequence == [
        "starting",
        "no_service",  # nothing listens on the socket yet
        "no_reader",  # pcscd up, but its only reader is not the configured one
        "ready",  # pcscd again, with the configured reader ("plugged in")
        "card_present",
        "exchange ok",
        "ready",
        "stopped",
    ]
    assert "pcscd is not running" in events[1]["detail"]


def test_pcscd_restarted_mid_session_stopped_and_started() -> None:
    events = run_scenario("restart")
    assert [e["state"] for e in events] == [
        "starting",
        "ready",
        "card_present",
        "exchange ok",
        "ReaderLostError",  # pcscd restarted under the open session
        "ready",  # new context, same reader; the card left with the old pcscd
        "no_service",  # pcscd stopped while the service watched
        "ready",  # ... and started again: recovered, no restart of the service
        "card_present",
        "exchange ok",
        "ready",
        "stopped",
    ]
    assert "pcscd is not running" in events[4]["detail"]
