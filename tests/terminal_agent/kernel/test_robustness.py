"""A card that answers garbage ends the transaction with a kernel error, never another one."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.cards import At, Faults, load_profile
from terminal_agent.kernel import (
    CardDataError,
    EmvKernel,
    HostOutcome,
    KernelError,
    TerminalConfig,
)
from terminal_agent.kernel.config import default_aids

from .support import FixedRandom, ScriptedCardholder, host_answer, purchase, setup, start

answers = st.tuples(
    st.one_of(
        st.binary(max_size=64),
        st.builds(lambda body: b"\x6f" + bytes((len(body),)) + body, st.binary(max_size=60)),
        st.builds(lambda body: b"\x70" + bytes((len(body),)) + body, st.binary(max_size=60)),
        st.builds(lambda body: b"\x80" + bytes((len(body),)) + body, st.binary(max_size=60)),
    ),
    st.sampled_from([0x90, 0x62, 0x6A, 0x63, 0x69, 0x61, 0x6C]),
    st.integers(0, 255),
)


class GarbageChannel:
    """Answers each command with the next scripted answer, cycling."""

    def __init__(self, script: list[tuple[bytes, int, int]]) -> None:
        self.script = itertools.cycle(script)
        self.count = 0

    async def transmit(self, apdu: bytes) -> tuple[bytes, int, int]:
        self.count += 1
        return next(self.script)


@settings(max_examples=300)
@given(st.lists(answers, min_size=1, max_size=8), st.sampled_from([True, False]))
def test_garbage_card_gives_a_kernel_error(
    script: list[tuple[bytes, int, int]], use_pse: bool
) -> None:
    kernel = EmvKernel(TerminalConfig(use_pse=use_pse), rng=FixedRandom())
    channel = GarbageChannel(script)

    async def run() -> None:
        first = await kernel.start(channel, ScriptedCardholder(), purchase())
        if first.online_request is not None:
            await kernel.complete(first.context, HostOutcome(approved=True))

    error: KernelError | None = None
    try:
        asyncio.run(run())
    except KernelError as exc:
        error = exc
    assert error is None or str(error)
    assert channel.count < 400  # it terminated by itself


@settings(max_examples=150)
@given(
    st.sampled_from(["visa_credit", "mastercard_credit", "two_apps_choice", "offline_pin_card"]),
    st.integers(1, 16),
    st.binary(min_size=2, max_size=40),
    st.sampled_from(["garbage", "truncate"]),
)
def test_real_card_with_one_bad_answer(name: str, at: int, garbage: bytes, kind: str) -> None:
    profile = load_profile(name)
    faults = (
        Faults(garbage_at=At(apdu=at), garbage=garbage)
        if kind == "garbage"
        else Faults(truncate_at=At(apdu=at))
    )
    pin = profile.applications[0].pin.get_secret_value()
    run = setup(profile, faults=faults, cardholder=ScriptedCardholder(offline_pins=[pin] * 3))
    error: KernelError | None = None
    try:
        first = start(run)
        if first.online_request is not None:
            asyncio.run(run.kernel.complete(first.context, host_answer(profile, first)))
    except KernelError as exc:
        error = exc
    assert error is None or str(error)


def test_card_data_error_names_where_not_what() -> None:
    profile = load_profile("visa_credit")
    bad_gpo = b"\x80\x03\x1c\x00\x08\x90\x00"  # format 1 with a 1-byte AFL
    run = setup(profile, faults=Faults(garbage_at=At(ins=0xA8), garbage=bad_gpo))
    with pytest.raises(CardDataError) as info:
        start(run)
    assert info.value.step == "initiate" and info.value.tag == 0x80
    pan = profile.applications[0].pan.digits
    assert pan not in str(info.value)
    assert default_aids()[0].aid == bytes.fromhex("A0000000031010")
