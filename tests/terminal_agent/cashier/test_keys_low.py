"""The keys-low banners (issue 7): AES DUKPT keys left and the KeyWatch thresholds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from paycore.dukpt import AES_MAX_COUNTER, AesOriginator
from terminal_agent.cashier.feed import KEYS_LOW_TEXT, KeyWatch, aes_keys_left
from terminal_agent.pinpad import PinpadTimeout


@pytest.mark.parametrize("counter", [1, 2, 0xFFFF, 0x12345678, 0xFFFF0000, AES_MAX_COUNTER])
def test_keys_left_matches_the_originator(counter: int) -> None:
    originator = AesOriginator(bytes(16), bytes(8), next_counter=counter)
    assert aes_keys_left(counter) == originator.keys_left
    assert aes_keys_left(AES_MAX_COUNTER + 1) == 0


@dataclass
class Status:
    keys_left: int


class Pad:
    def __init__(self, left: int) -> None:
        self.left, self.calls, self.fail = left, 0, False

    async def key_status(self, slot: int) -> Status:
        assert slot == 3
        self.calls += 1
        if self.fail:
            raise PinpadTimeout("no answer")
        return Status(self.left)


class Counters:
    def __init__(self, value: int) -> None:
        self.value = value

    async def next_counter(self) -> int:
        return self.value


def test_banners_under_the_threshold_only_and_the_last_answer_kept() -> None:
    async def body() -> None:
        pad, counters = Pad(9_999), Counters(1)
        watch = KeyWatch(pad, counters, slot=3, threshold=10_000, interval_s=0)
        shown = await watch.banners()
        assert [b.id for b in shown] == ["pinpad_keys_low"] and shown[0].text == KEYS_LOW_TEXT
        pad.left = 10_000
        assert await watch.banners() == []
        pad.left, pad.fail = 5, True  # the pad is busy: the last answer stays
        assert await watch.banners() == []
        counters.value = AES_MAX_COUNTER - 100
        assert [b.id for b in await watch.banners()] == ["terminal_keys_low"]
        slow = KeyWatch(pad, None, slot=3, interval_s=3600)
        pad.fail = False
        await slow.banners()
        await slow.banners()
        assert pad.calls == 5  # 4 above, and 1 for the slow watch however often asked

    asyncio.run(body())
