"""Test support for the kernel: an async channel over the in-process card, a scripted
cardholder, a fixed random source and a host simulated with pyemv."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hardware.card_interface import CardRemoved
from hardware.cards import (
    ApplicationProfile,
    CardProfile,
    EmvCard,
    Faults,
    InProcessTransport,
    ResponseTooShort,
)
from paycore import dol
from terminal_agent.kernel import (
    Candidate,
    CardChannel,
    CardChannelError,
    EmvKernel,
    FirstPhase,
    HostOutcome,
    OfflinePinOutcome,
    OfflinePinStatus,
    OnlinePinResult,
    OnlinePinStatus,
    Outcome,
    TerminalConfig,
    Transaction,
    TransactionContext,
)
from tests.hardware.test_card_catalogue import expected_cryptogram, issuer_auth_data

TEST_DATE = dt.date(2025, 6, 14)


class AsyncCardChannel:
    """The reader layer for tests: GET RESPONSE on 61xx, re-send on 6Cxx (Book 1 9.3.1)."""

    def __init__(self, card: EmvCard) -> None:
        self.card = card
        self.transport = InProcessTransport(card)
        self.sent: list[bytes] = []

    def _raw(self, apdu: bytes) -> tuple[bytes, int, int]:
        try:
            return self.transport.transmit(apdu)
        except (ResponseTooShort, CardRemoved) as exc:
            raise CardChannelError(str(exc)) from exc

    async def transmit(self, apdu: bytes) -> tuple[bytes, int, int]:
        self.sent.append(bytes(apdu))
        data, sw1, sw2 = self._raw(apdu)
        if sw1 == 0x6C:
            data, sw1, sw2 = self._raw(apdu[:-1] + bytes((sw2,)) if len(apdu) == 5 else apdu)
        collected = bytearray(data)
        for _ in range(64):
            if sw1 != 0x61:
                break
            data, sw1, sw2 = self._raw(bytes((0x00, 0xC0, 0x00, 0x00, sw2)))
            collected += data
        return bytes(collected), sw1, sw2


def verify_apdu(pin: str) -> bytes:
    """VERIFY plaintext PIN (P2 80) with an ISO 9564 format 2 block."""
    nibbles = f"2{len(pin):X}{pin}".ljust(16, "F")
    return bytes.fromhex("0020008008") + bytes.fromhex(nibbles)


@dataclass
class ScriptedCardholder:
    """A cardholder that answers from a script and records what it was asked."""

    choice: int | None = 0
    confirm: bool = True
    online: OnlinePinStatus = OnlinePinStatus.OK
    offline_pins: list[str] = field(default_factory=list)
    offline_status: OfflinePinStatus | None = None  # overrides the PIN script
    choices_offered: list[list[bytes]] = field(default_factory=list)
    confirmations: list[bytes] = field(default_factory=list)
    online_pin_calls: int = 0
    offline_pin_tries: list[int | None] = field(default_factory=list)
    signatures: int = 0
    messages: list[str] = field(default_factory=list)

    async def choose_application(self, candidates: Sequence[Candidate]) -> int | None:
        self.choices_offered.append([c.adf_name for c in candidates])
        return self.choice if self.choice is None else min(self.choice, len(candidates) - 1)

    async def confirm_application(self, candidate: Candidate) -> bool:
        self.confirmations.append(candidate.adf_name)
        return self.confirm

    async def online_pin(self, pan: str, amount: int, currency: str) -> OnlinePinResult:
        self.online_pin_calls += 1
        block = object() if self.online is OnlinePinStatus.OK else None
        return OnlinePinResult(self.online, block)

    async def offline_plaintext_pin(
        self, channel: CardChannel, tries_left: int | None
    ) -> OfflinePinOutcome:
        self.offline_pin_tries.append(tries_left)
        if self.offline_status is not None:
            return OfflinePinOutcome(self.offline_status)
        if not self.offline_pins:
            return OfflinePinOutcome(OfflinePinStatus.BYPASSED)
        _, sw1, sw2 = await channel.transmit(verify_apdu(self.offline_pins.pop(0)))
        sw = sw1 << 8 | sw2
        if sw == 0x9000:
            return OfflinePinOutcome(OfflinePinStatus.VERIFIED)
        if sw & 0xFFF0 == 0x63C0:
            left = sw & 0x0F
            status = OfflinePinStatus.WRONG if left else OfflinePinStatus.BLOCKED
            return OfflinePinOutcome(status, left)
        if sw in (0x6983, 0x6984):
            return OfflinePinOutcome(OfflinePinStatus.BLOCKED, 0)
        return OfflinePinOutcome(OfflinePinStatus.NOT_POSSIBLE)

    async def signature_required(self) -> None:
        self.signatures += 1

    async def show(self, message: str) -> None:
        self.messages.append(message)


class FixedRandom:
    """randint always answers ``number``; randbytes is a counter pattern."""

    def __init__(self, number: int = 50) -> None:
        self.number = number

    def randint(self, a: int, b: int) -> int:
        return max(a, min(b, self.number))

    def randbytes(self, n: int) -> bytes:
        return bytes(range(0x11, 0x11 + n))


def purchase(amount: int = 1234, **kwargs: Any) -> Transaction:
    """A purchase on the test date."""
    return Transaction(amount=amount, date=kwargs.pop("date", TEST_DATE), **kwargs)


def application_for(profile: CardProfile, ctx: TransactionContext) -> ApplicationProfile:
    """The profile application the kernel selected."""
    assert ctx.selected is not None
    return next(a for a in profile.applications if a.aid == ctx.selected.adf_name)


def cdol_values(app: ApplicationProfile, ctx: TransactionContext) -> dict[int, bytes]:
    """What CDOL1 carried, split by tag (rebuilt from the context)."""
    data = dol.build(app.cdol1, ctx.data())
    out: dict[int, bytes] = {}
    pos = 0
    for entry in dol.parse(app.cdol1):
        out[entry.tag] = data[pos : pos + entry.length]
        pos += entry.length
    return out


def verify_arqc(profile: CardProfile, first: FirstPhase) -> None:
    """The ARQC is what the issuer computes with pyemv from the IMK."""
    ctx = first.context
    assert ctx.first_ac is not None
    app = application_for(profile, ctx)
    expected = expected_cryptogram(app, cdol_values(app, ctx), ctx.first_ac.atc, ctx.first_ac.iad)
    assert ctx.first_ac.cryptogram == expected


def host_answer(profile: CardProfile, first: FirstPhase, *, good_arpc: bool = True) -> HostOutcome:
    """An approval with the ARPC the issuer would send (optionally a wrong one)."""
    ctx = first.context
    assert ctx.first_ac is not None
    app = application_for(profile, ctx)
    data = issuer_auth_data(app, ctx.first_ac.cryptogram, ctx.first_ac.atc)
    if not good_arpc:
        data = bytes((data[0] ^ 0xFF,)) + data[1:]
    return HostOutcome(approved=True, arc=b"00", issuer_auth_data=data)


@dataclass
class Run:
    """One transaction's pieces."""

    card: EmvCard
    channel: AsyncCardChannel
    cardholder: ScriptedCardholder
    kernel: EmvKernel


def setup(
    profile: CardProfile,
    *,
    config: TerminalConfig | None = None,
    cardholder: ScriptedCardholder | None = None,
    faults: Faults | None = None,
    rng: FixedRandom | None = None,
) -> Run:
    card = EmvCard(profile, faults=faults)
    return Run(
        card,
        AsyncCardChannel(card),
        cardholder or ScriptedCardholder(),
        EmvKernel(config or TerminalConfig(), rng=rng or FixedRandom()),
    )


def start(run: Run, transaction: Transaction | None = None) -> FirstPhase:
    return asyncio.run(run.kernel.start(run.channel, run.cardholder, transaction or purchase()))


def complete(run: Run, first: FirstPhase, host: HostOutcome) -> Outcome:
    return asyncio.run(run.kernel.complete(first.context, host))
