"""Child-process scenarios for test_service.py: a ReaderService against a pcscd of its own.

libpcsclite reads ``PCSCLITE_CSOCK_NAME`` once per process, and the test process is bound
to the session pcscd, which other tests need running. So scenarios that stop, restart or
delay pcscd run here, in a fresh interpreter, with their own :class:`PcscdService`
whose socket path is fixed before the first PC/SC call. Each reader state and each step
is printed as one JSON line; the test asserts the sequence.

Usage: ``python pcscd_scenarios.py startup|restart``
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from hardware.cards import PSE_NAME, EmvCard, load_profile
from hardware.pcsc import PcscdService
from hardware.pcsc.slot import CardSlot
from terminal_agent.reader import (
    ReaderLostError,
    ReaderService,
    ReaderSettings,
    ReaderState,
    ReaderStatus,
)

SETTINGS = ReaderSettings(
    reader="Virtual PCD",
    event_wait=0.2,
    no_reader_poll=0.1,
    backoff_initial=0.05,
    backoff_max=0.2,
)
SELECT_PSE = bytes.fromhex("00A404000E") + PSE_NAME + b"\x00"
TIMEOUT = 10.0


def say(state: str, detail: str = "") -> None:
    print(json.dumps({"state": state, "detail": detail}), flush=True)


def report(status: ReaderStatus) -> None:
    say(status.state.value, status.detail)


async def in_thread(fn: object) -> None:
    await asyncio.get_running_loop().run_in_executor(None, fn)  # type: ignore[arg-type]


async def exchange(service: ReaderService) -> None:
    async with service.card_session(timeout=TIMEOUT) as card:
        _, sw1, sw2 = await card.transmit(SELECT_PSE)
    if (sw1, sw2) == (0x90, 0x00):
        say("exchange ok")


async def startup(workdir: Path) -> None:
    other = PcscdService(workdir=workdir, friendly_name="Acme USB")
    ours = PcscdService(workdir=workdir)
    service = ReaderService(SETTINGS)
    report(service.status)
    service.add_listener(report)
    async with service:
        await service.wait_for(ReaderState.NO_SERVICE, timeout=TIMEOUT)
        await in_thread(other.start)
        await service.wait_for(ReaderState.NO_READER, timeout=TIMEOUT)
        await asyncio.sleep(0.3)
        await in_thread(other.stop)
        await in_thread(ours.start)
        await service.wait_for(ReaderState.READY, timeout=TIMEOUT)
        slot = CardSlot(ours)
        await in_thread(lambda: slot(EmvCard(load_profile("visa_credit"))))
        await service.wait_for(ReaderState.CARD_PRESENT, timeout=TIMEOUT)
        await exchange(service)
        await in_thread(slot.remove)
        await service.wait_for(ReaderState.READY, timeout=TIMEOUT)
    ours.stop()


async def restart(workdir: Path) -> None:
    pcscd = PcscdService(workdir=workdir)
    pcscd.start()
    slot = CardSlot(pcscd)
    service = ReaderService(SETTINGS)
    report(service.status)
    service.add_listener(report)
    async with service:
        await service.wait_for(ReaderState.READY, timeout=TIMEOUT)
        await in_thread(lambda: slot(EmvCard(load_profile("visa_credit"))))
        await service.wait_for(ReaderState.CARD_PRESENT, timeout=TIMEOUT)
        await exchange(service)
        # pcscd restarted under an open session: the exchange fails, the service recovers
        async with service.card_session(timeout=TIMEOUT) as card:
            await in_thread(pcscd.restart)
            try:
                await card.transmit(SELECT_PSE)
            except ReaderLostError as exc:
                say(type(exc).__name__, str(exc))
        slot.link = None  # the card went with the old pcscd
        await service.wait_for(ReaderState.READY, timeout=TIMEOUT)
        # pcscd stopped while the service watches, then started again
        await in_thread(pcscd.stop)
        await service.wait_for(ReaderState.NO_SERVICE, timeout=TIMEOUT)
        await asyncio.sleep(0.5)  # several failed attempts, backing off
        await in_thread(pcscd.start)
        await service.wait_for(ReaderState.READY, timeout=TIMEOUT)
        await in_thread(lambda: slot(EmvCard(load_profile("visa_credit"))))
        await service.wait_for(ReaderState.CARD_PRESENT, timeout=TIMEOUT)
        await exchange(service)
        await in_thread(slot.remove)
        await service.wait_for(ReaderState.READY, timeout=TIMEOUT)
    pcscd.stop()


def main(argv: list[str]) -> int:
    (scenario,) = argv
    with tempfile.TemporaryDirectory(prefix="reader-scenario-") as tmp:
        workdir = Path(tmp)
        # Before the first PC/SC call of this process, and before pcscd exists.
        os.environ["PCSCLITE_CSOCK_NAME"] = str(workdir / "run" / "pcscd.comm")
        body = {"startup": startup, "restart": restart}[scenario]
        asyncio.run(body(workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
