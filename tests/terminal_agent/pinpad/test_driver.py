"""PinpadDriver against the emulated pad over real ptys (docs/pinpad-protocol.md)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from pydantic import ValidationError

from hardware.pinpad import AesDukptKey, EmulatedPinpad, Faults, PinScript
from hardware.pinpad.fixtures import PinpadFactory
from paycore import dukpt, pinblock, tr31
from paycore.pan import Pan
from paycore.pinpad import (
    Command,
    Key,
    KeyPressedEvent,
    KeyType,
    LinkTimings,
    PinBlockFormat,
    PinpadProtocolError,
    Status,
)
from terminal_agent.pinpad import (
    LinkState,
    PinEntry,
    PinEntryStatus,
    PinpadDisconnected,
    PinpadDriver,
    PinpadPermanentError,
    PinpadRefused,
    PinpadSettings,
    PinpadTimeout,
    PinpadTransientError,
)
from tests.vectors import load

T = TypeVar("T")

AES = load("dukpt_aes_x9_24_3")["aes128_bdk"]
BDK = bytes.fromhex(AES["bdk"])
IKID = bytes.fromhex(AES["initial_key_id"])
PAN = load("luhn_test_pans")["test_pans"][2]["pan"]
KBPK = bytes.fromhex("88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6")

PAD_TIMINGS = LinkTimings(inter_byte=0.02, ack_timeout=0.1, max_retries=3, response_timeout=1.0)


def settings_for(port: str | Path, **overrides: float) -> PinpadSettings:
    values: dict[str, float] = {
        "inter_byte_s": 0.02,
        "ack_timeout_s": 0.1,
        "max_retries": 3,
        "response_timeout_s": 1.0,
        "reconnect_initial_s": 0.02,
        "reconnect_max_s": 0.2,
    }
    values.update(overrides)
    return PinpadSettings.model_validate({"port": str(port), **values})


def aes_slot() -> AesDukptKey:
    return AesDukptKey(dukpt.aes_initial_key(BDK, IKID), IKID)


def start_pad(
    pinpad: PinpadFactory,
    *scripts: PinScript,
    faults: Faults | None = None,
    timings: LinkTimings = PAD_TIMINGS,
) -> EmulatedPinpad:
    """A pad with the test AES DUKPT key (BDK-derived, X9.24-3 test IKID) in slot 0."""
    return pinpad(kbpk=KBPK, slots={0: aes_slot()}, scripts=scripts, faults=faults, timings=timings)


def run_with_driver(
    pad: EmulatedPinpad,
    body: Callable[[PinpadDriver], Awaitable[T]],
    **overrides: float,
) -> T:
    """Run ``body(driver)`` with a connected driver on the pad's stable link path."""
    link_path = pad.link_path
    assert link_path is not None

    async def main() -> T:
        async with PinpadDriver(settings_for(link_path, **overrides)) as driver:
            await driver.wait_connected(2.0)
            return await body(driver)

    return asyncio.run(main())


def host_pin(entry: PinEntry) -> str:
    """What the host's key store does: the BDK-derived initial key deciphers the block."""
    assert entry.status is PinEntryStatus.OK
    assert entry.pin_block is not None
    ksn = bytes.fromhex(entry.pin_block.ksn)
    block = bytes.fromhex(entry.pin_block.block.get_secret_value())
    initial_key = dukpt.aes_initial_key(BDK, ksn[:8])
    return pinblock.decipher_format4_dukpt(initial_key, ksn, block, PAN)


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


# -- every command -----------------------------------------------------------------------


def test_identify_display_beep_cancel_key_status(pinpad: PinpadFactory) -> None:
    pad = start_pad(pinpad)

    async def body(driver: PinpadDriver) -> None:
        identity = await driver.identify()
        assert (identity.model, identity.serial, identity.key_slots) == (
            pad.model,
            pad.serial,
            4,
        )
        assert identity.kbpk_kcv.hex().upper() == tr31.kcv_aes_cmac(KBPK, 5)
        await driver.display(["TOTAL", "EUR 12.34"], timeout_ms=0)
        assert pad.display == ("TOTAL", "EUR 12.34")
        await driver.beep(3, 20)
        assert pad.beeps == 3
        await driver.cancel()  # idle: answered OK
        status = await driver.key_status(0)
        assert status.key_type is KeyType.AES128_DUKPT
        assert status.key_id == IKID
        assert status.counter == 0
        empty = await driver.key_status(1)
        assert (empty.key_type, empty.key_id, empty.counter) == (KeyType.EMPTY, b"", 0)

    run_with_driver(pad, body)
    assert pad.stats.executed[Command.IDENTIFY] == 1
    assert pad.stats.executed[Command.KEY_STATUS] == 2


def test_get_pin_block_deciphers_on_the_host(pinpad: PinpadFactory) -> None:
    pad = start_pad(pinpad, PinScript.entered("4711"), PinScript.entered("90125", delay=0.01))

    async def body(driver: PinpadDriver) -> tuple[PinEntry, PinEntry, int]:
        first = await driver.get_pin(1234, 978, PAN, timeout_ms=2000)
        second = await driver.get_pin(99, 840, Pan(PAN), key_slot=0, min_len=5, max_len=6)
        return first, second, (await driver.key_status(0)).counter

    first, second, counter = run_with_driver(pad, body)
    assert host_pin(first) == "4711"
    assert host_pin(second) == "90125"
    assert first.format is PinBlockFormat.ISO4_AES_DUKPT
    assert first.ksn == IKID + bytes.fromhex("00000001")
    assert second.ksn == IKID + bytes.fromhex("00000002")
    assert first.pin_block is not None
    assert first.pin_block.format == 4
    assert first.pin_block.ksn == first.ksn.hex().upper()
    assert counter == 2
    secret = first.pin_block.block.get_secret_value()
    for text in (repr(first), str(first), repr(first.pin_block)):
        assert secret not in text
        assert PAN not in text


@pytest.mark.parametrize(
    ("script", "bypass", "expected"),
    [
        (PinScript.cancelled("12"), False, PinEntryStatus.CANCELLED),
        (PinScript.timeout("12"), False, PinEntryStatus.TIMEOUT),
        (PinScript.bypassed(), True, PinEntryStatus.BYPASSED),
    ],
)
def test_get_pin_outcomes(
    pinpad: PinpadFactory, script: PinScript, bypass: bool, expected: PinEntryStatus
) -> None:
    pad = start_pad(pinpad, script)

    async def body(driver: PinpadDriver) -> tuple[PinEntry, int]:
        entry = await driver.get_pin(500, 978, PAN, timeout_ms=250, bypass_allowed=bypass)
        return entry, (await driver.key_status(0)).counter

    entry, counter = run_with_driver(pad, body)
    assert entry == PinEntry(expected)
    assert entry.pin_block is None
    assert counter == 0  # no block made, so the DUKPT counter did not move


def test_host_cancel_ends_pin_entry(pinpad: PinpadFactory) -> None:
    pad = start_pad(pinpad)  # nobody types: only the CANCEL can end it early

    async def body(driver: PinpadDriver) -> tuple[PinEntry, float]:
        started = time.monotonic()
        entry = asyncio.create_task(driver.get_pin(100, 978, PAN, timeout_ms=10_000))
        await until(lambda: pad.stats.executed[Command.GET_PIN] == 1)
        await driver.cancel()
        return await entry, time.monotonic() - started

    entry, elapsed = run_with_driver(pad, body)
    assert entry.status is PinEntryStatus.CANCELLED
    assert elapsed < 2.0
    assert pad.stats.executed[Command.CANCEL] == 1


def test_display_during_pin_entry_is_busy_and_entry_goes_on(pinpad: PinpadFactory) -> None:
    pad = start_pad(pinpad, PinScript.entered("2468", delay=0.06))

    async def body(driver: PinpadDriver) -> tuple[PinEntry, PinpadRefused]:
        await driver.display(["WELCOME"])
        entry = asyncio.create_task(driver.get_pin(100, 978, PAN, timeout_ms=3000))
        await until(lambda: pad.stats.executed[Command.GET_PIN] == 1)
        with pytest.raises(PinpadRefused) as refused:
            await driver.display(["TOTAL", "EUR 1.00"])
        assert not entry.done()
        return await entry, refused.value

    entry, refused = run_with_driver(pad, body)
    assert refused.status is Status.BUSY
    assert refused.command == Command.DISPLAY
    assert "BUSY" in str(refused)
    assert host_pin(entry) == "2468"
    assert pad.display == ("WELCOME",)


def test_refusals_map_statuses(pinpad: PinpadFactory) -> None:
    pad = start_pad(pinpad)

    async def body(driver: PinpadDriver) -> list[PinpadRefused]:
        calls: list[Awaitable[object]] = [
            driver.get_pin(100, 978, PAN, key_slot=1),
            driver.key_status(9),
            driver.display(["1", "2", "3", "4", "5"]),
            driver.get_pin(100, 978, PAN, format=PinBlockFormat.ISO0_TDES_DUKPT),
            driver.get_pin(100, 978, PAN[:10]),
        ]
        errors = []
        for call in calls:
            with pytest.raises(PinpadRefused) as caught:
                await call
            errors.append(caught.value)
        return errors

    errors = run_with_driver(pad, body)
    assert [e.status for e in errors] == [
        Status.NO_KEY,
        Status.BAD_SLOT,
        Status.BAD_VALUE,
        Status.WRONG_KEY_TYPE,
        Status.BAD_VALUE,
    ]
    assert all(isinstance(e, PinpadPermanentError) for e in errors)
    assert "key slot is empty" in str(errors[0])
    assert "no such key slot" in str(errors[1])
    assert all(PAN not in str(e) and PAN[:10] not in str(e) for e in errors)


def test_out_of_range_value_is_a_caller_error_before_sending(pinpad: PinpadFactory) -> None:
    pad = start_pad(pinpad)

    async def body(driver: PinpadDriver) -> None:
        with pytest.raises(PinpadProtocolError):
            await driver.beep(300, 10)  # count is a u8

    run_with_driver(pad, body)
    assert pad.stats.executed[Command.BEEP] == 0


# -- key loading -------------------------------------------------------------------------


def test_load_key_returns_kcv_and_tampered_block_is_refused(pinpad: PinpadFactory) -> None:
    pad = pinpad(kbpk=KBPK, timings=PAD_TIMINGS, scripts=[PinScript.entered("1357")])
    initial_key = dukpt.aes_initial_key(BDK, IKID)
    header = tr31.KeyBlockHeader("D", "B1", "A", "X", optional_blocks=(("IK", IKID.hex()),))
    block = tr31.wrap(KBPK, header, initial_key, random=os.urandom)
    at = len(block) - 40
    tampered = block[:at] + ("0" if block[at] != "0" else "1") + block[at + 1 :]

    async def body(driver: PinpadDriver) -> tuple[bytes, PinEntry, PinpadRefused, int]:
        kcv = await driver.load_key(2, block)
        detail = await driver.load_key_detail(3, block)
        assert detail.key_type is KeyType.AES128_DUKPT
        entry = await driver.get_pin(100, 978, PAN, key_slot=2)
        with pytest.raises(PinpadRefused) as refused:
            await driver.load_key(2, tampered)
        status = await driver.key_status(2)
        assert status.key_id == IKID
        return kcv, entry, refused.value, status.counter

    kcv, entry, refused, counter = run_with_driver(pad, body)
    assert kcv.hex().upper() == tr31.kcv_aes_cmac(initial_key, 5)
    assert host_pin(entry) == "1357"
    assert refused.status is Status.KEY_BLOCK_TAMPERED
    assert counter == 1  # the refused block left the slot as it was


# -- events --------------------------------------------------------------------------------


def test_key_events_reach_iterators_and_callbacks(pinpad: PinpadFactory) -> None:
    pad = start_pad(pinpad)

    async def body(driver: PinpadDriver) -> tuple[list[object], list[object]]:
        called: list[object] = []
        remove = driver.on_event(called.append)
        received: list[object] = []
        with driver.events() as events:
            for key in (Key.F1, Key.ENTER, Key.CANCEL):
                pad.press(key)
            async with asyncio.timeout(2):
                async for event in events:
                    received.append(event)
                    if len(received) == 3:
                        break
        remove()
        pad.press(Key.F2)
        await until(lambda: driver.stats.events == 4)
        return received, called

    received, called = run_with_driver(pad, body)
    expected = [KeyPressedEvent(Key.F1), KeyPressedEvent(Key.ENTER), KeyPressedEvent(Key.CANCEL)]
    assert received == expected
    assert called == expected  # the F2 came after the callback was removed


# -- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [7, 23])
def test_noise_and_dropped_bytes_are_recovered(pinpad: PinpadFactory, seed: int) -> None:
    faults = Faults(noise=0.3, drop=0.25, noise_inbound=0.2, drop_inbound=0.2, seed=seed)
    timings = LinkTimings(inter_byte=0.02, ack_timeout=0.1, max_retries=8, response_timeout=1.0)
    pad = start_pad(pinpad, PinScript.entered("8642"), faults=faults, timings=timings)

    async def body(driver: PinpadDriver) -> PinEntry:
        for i in range(12):
            identity = await driver.identify()
            assert identity.serial == pad.serial
            await driver.display([f"LINE {i}"])
            assert pad.display == (f"LINE {i}",)
        return await driver.get_pin(100, 978, PAN, timeout_ms=2000)

    driver_stats = []

    async def recording(driver: PinpadDriver) -> PinEntry:
        try:
            return await body(driver)
        finally:
            driver_stats.append(driver.stats)

    entry = run_with_driver(pad, recording, max_retries=8)
    stats = driver_stats[0]
    assert host_pin(entry) == "8642"
    # Each request ran exactly once on the pad, whatever was retransmitted.
    assert pad.stats.executed[Command.IDENTIFY] == 12
    assert pad.stats.executed[Command.DISPLAY] == 12
    # And the faults did bite, on both directions.
    assert stats.naks_sent > 0  # the pad's frames arrived damaged
    assert stats.retransmissions > 0  # ours were lost or NAKed
    assert pad.stats.retransmissions > 0
    assert stats.duplicates + pad.stats.duplicates > 0


def test_silent_pad_times_out_then_recovers(pinpad: PinpadFactory) -> None:
    pad = start_pad(pinpad)

    async def body(driver: PinpadDriver) -> float:
        await driver.identify()
        pad.faults.silent = True
        started = time.monotonic()
        with pytest.raises(PinpadTimeout) as caught:
            await driver.identify()
        elapsed = time.monotonic() - started
        assert isinstance(caught.value, PinpadTransientError)
        assert driver.stats.retransmissions == 3
        assert driver.stats.ack_timeouts == 4
        pad.faults.silent = False
        await driver.identify()
        return elapsed

    elapsed = run_with_driver(pad, body)
    assert 0.35 <= elapsed < 1.5  # (1 + max_retries) ACK timeouts of 0.1 s


def test_response_timeout_after_ack(pinpad: PinpadFactory) -> None:
    pad = start_pad(pinpad)

    async def body(driver: PinpadDriver) -> float:
        started = time.monotonic()
        task = asyncio.create_task(driver.get_pin(100, 978, PAN, timeout_ms=200))
        await until(lambda: pad.stats.executed[Command.GET_PIN] == 1)
        pad.faults.silent = True  # its TIMEOUT response never arrives
        with pytest.raises(PinpadTimeout):
            await task
        elapsed = time.monotonic() - started
        pad.faults.silent = False
        await until(lambda: pad.stats.executed[Command.CANCEL] == 1 or not driver._background)
        assert (await driver.identify()).serial == pad.serial
        return elapsed

    elapsed = run_with_driver(pad, body, response_timeout_s=0.3)
    assert 0.45 <= elapsed < 1.5  # timeout_ms + response timeout, from the ACK


# -- reconnection -----------------------------------------------------------------------


def test_unplug_and_replug_reconnects_and_reports_state(pinpad: PinpadFactory) -> None:
    pad = start_pad(pinpad)  # the first PIN entry waits for keys that never come

    async def body(driver: PinpadDriver) -> list[LinkState]:
        seen: list[LinkState] = []
        driver.on_state(seen.append)
        with driver.states() as states:
            await driver.identify()
            first_port = pad.port
            entry = asyncio.create_task(driver.get_pin(100, 978, PAN, timeout_ms=10_000))
            await until(lambda: pad.stats.executed[Command.GET_PIN] == 1)
            pad.unplug()
            with pytest.raises(PinpadDisconnected):
                await entry
            async with asyncio.timeout(2):
                assert await states.get() is LinkState.DISCONNECTED
            assert driver.state is LinkState.DISCONNECTED
            with pytest.raises(PinpadDisconnected):
                await driver.identify()
            await asyncio.sleep(0.1)  # a few failed reopen attempts with backoff
            assert first_port is not None
            assert pad.replug() is not None
            async with asyncio.timeout(2):
                assert await states.get() is LinkState.CONNECTED
            identity = await driver.identify()
            assert identity.serial == pad.serial
            pad.queue_pin(PinScript.entered("2222"))
            entry2 = await driver.get_pin(100, 978, PAN)
            assert host_pin(entry2) == "2222"
            assert entry2.ksn == IKID + bytes.fromhex("00000001")  # no block was made before
        assert driver.stats.connects == 2
        assert driver.stats.disconnects == 1
        return seen

    seen = run_with_driver(pad, body)
    # ... and the driver closing at the end of run_with_driver.
    assert seen == [LinkState.DISCONNECTED, LinkState.CONNECTED, LinkState.DISCONNECTED]


def test_waits_for_a_pad_that_is_not_there_yet(pinpad: PinpadFactory, tmp_path: Path) -> None:
    pad = start_pad(pinpad)
    later = tmp_path / "pos-pinpad-later"

    async def main() -> None:
        async with PinpadDriver(settings_for(later)) as driver:
            with pytest.raises(PinpadDisconnected):
                await driver.wait_connected(0.15)
            with pytest.raises(PinpadDisconnected):
                await driver.identify()
            assert pad.port is not None
            later.symlink_to(pad.port)  # udev creates the name when the pad is plugged in
            await driver.wait_connected(2.0)
            assert (await driver.identify()).serial == pad.serial

    asyncio.run(main())


def test_close_ends_subscriptions(pinpad: PinpadFactory) -> None:
    pad = start_pad(pinpad)

    async def body(driver: PinpadDriver) -> list[LinkState]:
        states = driver.states()
        await driver.close()
        return [state async for state in states]

    assert run_with_driver(pad, body) == [LinkState.DISCONNECTED]


# -- hygiene -------------------------------------------------------------------------------


def test_frames_are_traced_without_the_pan(
    pinpad: PinpadFactory, caplog: pytest.LogCaptureFixture
) -> None:
    pad = start_pad(pinpad, PinScript.entered("1234"))
    caplog.set_level(1)

    async def body(driver: PinpadDriver) -> PinEntry:
        return await driver.get_pin(100, 978, PAN)

    entry = run_with_driver(pad, body)
    assert entry.pin_block is not None
    block = entry.pin_block.block.get_secret_value()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("terminal_agent")]
    assert any("tx REQUEST" in m and "GET_PIN" in m for m in messages)
    assert any("rx RESPONSE" in m and "GET_PIN" in m for m in messages)
    for message in messages:
        assert PAN not in message
        assert PAN[-8:] not in message
        assert block not in message


def test_settings_validate_and_map_to_link_timings() -> None:
    settings = PinpadSettings()
    assert settings.port == "/dev/pos-pinpad"
    assert settings.timings == LinkTimings()
    with pytest.raises(ValidationError):
        PinpadSettings(inter_byte_s=0.3, ack_timeout_s=0.2)
    with pytest.raises(ValidationError):
        PinpadSettings(reconnect_initial_s=2, reconnect_max_s=1)
    with pytest.raises(ValidationError):
        PinpadSettings(unknown=1)  # type: ignore[call-arg]
    assert "PinpadDriver(port='/dev/pos-pinpad'" in repr(PinpadDriver(settings))
    logging.getLogger(__name__).debug("settings %s", settings)


def test_a_closed_driver_releases_the_port_for_the_next_one(pinpad: PinpadFactory) -> None:
    """close() must close the port: it is opened exclusively, so a leaked descriptor
    would keep every later driver (the service after provisioning, the doctor) out."""
    pad = start_pad(pinpad)
    serials = [run_with_driver(pad, lambda d: _serial(d)) for _ in range(3)]
    assert serials == [pad.serial] * 3
    assert pad.stats.executed[Command.IDENTIFY] == 3


async def _serial(driver: PinpadDriver) -> str:
    return (await driver.identify()).serial
