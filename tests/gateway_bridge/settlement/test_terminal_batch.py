"""A terminal's end-of-day close over MQTT: the bridge closes its own batch at the same
moment, reconciles it with the issuer, and compares it with the terminal's totals."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

from gateway_bridge.connectors.issuer_sim import IssuerSimulator
from gateway_bridge.connectors.issuer_sim.accounts import repo_catalogue_dir
from gateway_bridge.settlement.store import SettlementStore
from hardware.mosquitto import MosquittoService
from paycore.wire import (
    AuthorizationResponse,
    BatchCloseRequest,
    BatchCloseResponse,
    BatchTotal,
    batch_differences,
)
from tests.gateway_bridge.rig import make_rig, running_bridge, terminal_link


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def line(kind: str, count: int, amount: int, currency: str = "GBP") -> BatchTotal:
    return BatchTotal.model_validate(
        {"transaction_type": kind, "currency": currency, "count": count, "amount": amount}
    )


def test_compare_names_every_differing_line() -> None:
    terminal = [line("purchase", 2, 2500), line("refund", 1, 500), line("purchase", 1, 100, "EUR")]
    bridge = [line("purchase", 3, 3700), line("refund", 1, 500)]
    assert batch_differences(terminal, bridge, other_name="bridge") == [
        "purchase EUR: terminal 1 for 1.00 EUR, bridge 0 for 0.00 EUR",
        "purchase GBP: terminal 2 for 25.00 GBP, bridge 3 for 37.00 GBP",
    ]
    assert batch_differences(bridge, bridge, other_name="bridge") == []


def test_a_terminal_close_in_balance_out_of_balance_and_repeated(
    tmp_path: Path, mosquitto_broker: MosquittoService
) -> None:
    rig = make_rig(tmp_path, mosquitto_broker)
    catalogue = repo_catalogue_dir()
    assert catalogue is not None
    issuer = IssuerSimulator.from_paths([catalogue])

    async def close(
        link: object, batch_id: int, key: str, totals: list[BatchTotal]
    ) -> BatchCloseResponse:
        from tests.gateway_bridge.rig import TerminalLink

        assert isinstance(link, TerminalLink)
        request = BatchCloseRequest(
            batch_id=batch_id,
            idempotency_key=key,
            closed_at=dt.datetime.now(dt.UTC),
            totals=tuple(totals),
        )
        answer = await link.exchange(rig.terminal.seal(request, now_ms=now_ms()).to_json())
        _, body = rig.terminal.open(answer, now_ms=now_ms())
        assert isinstance(body, BatchCloseResponse), body
        return body

    async def body() -> None:
        async with running_bridge(rig, issuer), terminal_link(rig) as link:
            for kind, amount in (("purchase", 1250), ("purchase", 800), ("refund", 300)):
                request = rig.terminal.authorization(
                    "visa_credit",
                    amount,
                    "GBP",
                    transaction_type=kind,  # type: ignore[arg-type]
                )
                answer = await link.exchange(rig.terminal.seal(request, now_ms=now_ms()).to_json())
                _, reply = rig.terminal.open(answer, now_ms=now_ms())
                assert isinstance(reply, AuthorizationResponse) and reply.approved

            day1 = [line("purchase", 2, 2050), line("refund", 1, 300)]
            first = await close(link, 1, "batch-1", day1)
            assert first.status == "in_balance", first.differences
            assert first.totals == tuple(day1) and first.differences == ()

            # The same close again (the terminal did not see the answer): the same answer,
            # and no second batch on the bridge.
            again = await close(link, 1, "batch-1", day1)
            assert again == first

            # Day 2: the terminal counts a purchase the bridge never approved.
            request = rig.terminal.authorization("visa_credit", 400, "GBP")
            answer = await link.exchange(rig.terminal.seal(request, now_ms=now_ms()).to_json())
            day2 = [line("purchase", 2, 900)]
            second = await close(link, 2, "batch-2", day2)
            assert second.status == "out_of_balance"
            assert second.totals == (line("purchase", 1, 400),)
            assert len(second.differences) == 1
            assert second.differences[0].startswith("purchase GBP: terminal 2 for")
            assert second.host_batch_id != first.host_batch_id

    asyncio.run(body())
    path = rig.settings.settlement_store_path()
    assert path is not None
    store = SettlementStore(path)
    try:
        days = store.closed_on(dt.datetime.now(dt.UTC).date())
    finally:
        store.close()
    assert [b.status for b in days] == ["in_balance", "in_balance"]  # bridge vs issuer
    assert [b.closed_count for b in days] == [3, 1]
