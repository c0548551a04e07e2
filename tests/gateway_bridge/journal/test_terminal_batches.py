"""Terminal-requested batch closes in the journal: claim once, answer byte for byte,
take over a dead bridge's claim, release a failed one (both backends)."""

from __future__ import annotations

import asyncio

import pytest

from gateway_bridge.journal import BatchInProgress, UnknownEntry
from tests.gateway_bridge.journal.conftest import Backend, FakeClock
from tests.gateway_bridge.journal.test_journal import opened, run


def test_claim_answer_repeat_takeover_and_release(backend: Backend) -> None:
    clock = FakeClock()

    async def body() -> None:
        journal = await opened(backend, clock=clock)
        other = await backend.open(clock=clock)  # a second bridge on the same database
        try:
            assert await journal.claim_terminal_batch("T1", "b-1", stale_after_s=60) is None
            with pytest.raises(BatchInProgress):
                await other.claim_terminal_batch("T1", "b-1", stale_after_s=60)
            await journal.complete_terminal_batch("T1", "b-1", "H-1", b"answer one")
            assert await other.claim_terminal_batch("T1", "b-1", stale_after_s=60) == b"answer one"
            with pytest.raises(UnknownEntry):
                await journal.complete_terminal_batch("T1", "b-1", "H-1", b"again")

            # A claim whose bridge died is taken over once it is stale, by one bridge only.
            assert await journal.claim_terminal_batch("T1", "b-2", stale_after_s=60) is None
            clock.advance(seconds=61)
            results = await asyncio.gather(
                journal.claim_terminal_batch("T1", "b-2", stale_after_s=60),
                other.claim_terminal_batch("T1", "b-2", stale_after_s=60),
                return_exceptions=True,
            )
            assert sorted(type(r).__name__ for r in results) == ["BatchInProgress", "NoneType"]

            # A failed close is released: the retry claims afresh at once.
            await journal.release_terminal_batch("T1", "b-2")
            assert await other.claim_terminal_batch("T1", "b-2", stale_after_s=60) is None
            # Release never drops an answered batch.
            await journal.release_terminal_batch("T1", "b-1")
            assert (
                await journal.claim_terminal_batch("T1", "b-1", stale_after_s=60) == b"answer one"
            )
            # Keys are per terminal.
            assert await journal.claim_terminal_batch("T2", "b-1", stale_after_s=60) is None
        finally:
            await other.close()
            await journal.close()

    run(body)
