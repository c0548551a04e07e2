"""The ISO 8583 connector against the acquirer simulator over TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import pytest

from gateway_bridge.acquirer_sim import Faults
from gateway_bridge.connectors.base import ConnectorTimeout, ConnectorUnavailable, Reversal
from gateway_bridge.connectors.iso8583 import Iso8583Connector, Iso8583Settings
from paycore.wire import AuthorizationResponse, ReversalRequest
from tests.gateway_bridge.connectors.test_iso8583_support import (
    ICC,
    OTHER_PAN,
    PAN,
    Harness,
    LedgerIssuer,
    authorization,
    make_request,
    pin_block,
    running,
)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 15))


def issuer_of(h: Harness) -> LedgerIssuer:
    assert isinstance(h.issuer, LedgerIssuer)
    return h.issuer


def mtis(h: Harness) -> list[str]:
    return [m["t"] for m in h.simulator.received]


def reversal_of(
    request: Any, response: AuthorizationResponse | None, original_id: str = "a" * 32
) -> Reversal:
    return Reversal(
        terminal_id="TERM0001",
        merchant_id="MERCHANT0000001",
        message_id="b" * 32,
        request=ReversalRequest(
            original_message_id=original_id,
            idempotency_key="rev-1",
            reason="host_timeout",
            amount=request.amount,
            currency=request.currency,
        ),
        original=request,
        original_response=response,
    )


# -- link management ---------------------------------------------------------------------------


def test_sign_on_then_echoes() -> None:
    async def scenario() -> None:
        async with running(echo_interval=0.05) as h:
            assert h.connector.ready
            await asyncio.sleep(0.3)
            network = [m for m in h.simulator.received if m["t"] == "0800"]
            assert network[0]["70"] == "001"
            assert len(network) >= 3
            assert {m["70"] for m in network[1:]} == {"301"}
            stans = [m["11"] for m in network]
            assert len(set(stans)) == len(stans)  # each its own STAN
            assert h.connector.ready and h.connector.connects == 1

    run(scenario)


def test_refused_sign_on_keeps_retrying() -> None:
    async def scenario() -> None:
        faults = Faults(refuse_sign_on=True)
        async with running(faults=faults, start_wait=0.2) as h:
            assert not h.connector.ready
            with pytest.raises(ConnectorUnavailable):
                await h.connector.authorize(authorization())
            faults.refuse_sign_on = False
            assert await h.connector.wait_ready(2.0)
            assert h.simulator.connections_accepted >= 2

    run(scenario)


def test_unanswered_echo_drops_and_reconnects() -> None:
    async def scenario() -> None:
        faults = Faults(ignore_echoes=1)
        async with running(faults=faults, echo_interval=0.05, request_timeout=0.1) as h:
            for _ in range(100):
                if h.connector.connects >= 2:
                    break
                await asyncio.sleep(0.02)
            assert h.connector.connects >= 2
            assert h.simulator.connections_accepted >= 2

    run(scenario)


def test_not_connected_is_unavailable() -> None:
    async def scenario() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # nothing listens here once closed
        connector = Iso8583Connector(
            Iso8583Settings(port=port, start_wait=0.1, reconnect_initial=0.05, connect_timeout=0.2)
        )
        await connector.start()
        try:
            assert not connector.ready
            with pytest.raises(ConnectorUnavailable):
                await connector.authorize(authorization())
            request = make_request()
            with pytest.raises(ConnectorUnavailable):
                await connector.reverse(reversal_of(request, None))
        finally:
            await connector.close()

    run(scenario)


def test_connection_drop_mid_request_then_reconnect() -> None:
    async def scenario() -> None:
        faults = Faults(drop_next=1)
        async with running(faults=faults) as h:
            with pytest.raises(ConnectorTimeout, match="connection lost"):
                await h.connector.authorize(authorization())
            assert await h.connector.wait_ready(2.0)
            assert h.connector.connects == 2
            response = await h.connector.authorize(
                authorization(make_request(stan=124), message_id="c" * 32)
            )
            assert response.approved

    run(scenario)


def test_host_closing_the_link_reconnects() -> None:
    async def scenario() -> None:
        async with running() as h:
            h.simulator.drop_connections()
            await asyncio.sleep(0.05)
            assert await h.connector.wait_ready(2.0)
            for _ in range(100):
                if h.connector.connects == 2:
                    break
                await asyncio.sleep(0.02)
            assert h.connector.connects == 2
            assert (await h.connector.authorize(authorization())).approved

    run(scenario)


# -- authorisation -------------------------------------------------------------------------------

COMBINATIONS = [
    (dialect, header, tpdu, zone)
    for dialect in ("binary", "ascii")
    for header in ("2byte", "4ascii", "none")
    for tpdu, zone in ((None, 0), ("6000010002", 4))
]


@pytest.mark.parametrize(("dialect", "header", "tpdu", "zone"), COMBINATIONS)
def test_approved_round_trip(
    dialect: Literal["binary", "ascii"],
    header: Literal["2byte", "4ascii", "none"],
    tpdu: str | None,
    zone: Literal[0, 4],
) -> None:
    async def scenario() -> None:
        async with running(dialect=dialect, header=header, tpdu=tpdu, zone_format=zone) as h:
            terminal_block = pin_block()
            request = make_request(pin_block=terminal_block)
            response = await h.connector.authorize(authorization(request))
            assert response.approved and response.response_code == "00"
            assert response.authorization_code == "A00001"
            assert response.issuer_authentication_data == "11223344556677883030"
            assert response.host_reference == "518512000123"
            assert response.display_text == "APPROVED"
            sent = h.simulator.received[-1]
            assert sent["t"] == "0200"
            assert sent["2"] == PAN
            assert sent["3"] == "000000"
            assert sent["4"] == "000000001000"
            assert sent["11"] == "000123"
            assert (sent["12"], sent["13"], sent["14"]) == ("123456", "0704", "2512")
            assert (sent["22"], sent["23"], sent["25"]) == ("051", "001", "00")
            assert sent["35"] == f"{PAN}D25122010000000000"
            assert sent["37"] == "518512000123"
            assert (sent["41"], sent["42"]) == ("TERM0001", "MERCHANT0000001")
            assert sent["49"] == "840"
            assert sent["55"] == ICC
            # DE52 is the zone block, not the terminal's DUKPT block
            assert len(sent["52"]) == (32 if zone == 4 else 16)
            assert sent["52"] != terminal_block.block.get_secret_value()
            assert issuer_of(h).pin_checks == [True]
            assert issuer_of(h).accounts[PAN].balance == 100_000 - 1000

    run(scenario)


def test_declines_wrong_pin_and_funds() -> None:
    async def scenario() -> None:
        async with running(dialect="ascii") as h:
            wrong = make_request(pin_block=pin_block("9999"))
            response = await h.connector.authorize(authorization(wrong))
            assert (response.approved, response.response_code) == (False, "55")
            assert response.display_text == "INCORRECT PIN"
            assert response.authorization_code is None
            assert issuer_of(h).pin_checks == [False]
            poor = make_request(pan=OTHER_PAN, stan=5, pin_block=pin_block("9999", OTHER_PAN))
            response = await h.connector.authorize(authorization(poor, message_id="d" * 32))
            assert (response.approved, response.response_code) == (False, "51")
            assert h.simulator.received[-1]["2"] == OTHER_PAN

    run(scenario)


def test_message_classes_and_processing_codes() -> None:
    async def scenario() -> None:
        async with running(purchase_mti="0100") as h:
            await h.connector.authorize(authorization(make_request(cvm="no_cvm")))
            assert h.simulator.received[-1]["t"] == "0100"
            assert "52" not in h.simulator.received[-1]
            refund = make_request(transaction_type="refund", stan=200, cvm="signature")
            response = await h.connector.authorize(authorization(refund, message_id="e" * 32))
            assert response.approved
            assert (h.simulator.received[-1]["t"], h.simulator.received[-1]["3"]) == (
                "0200",
                "200000",
            )
            # the issuer saw the CVM from nowhere but DE55 (none here): no PIN check
            assert issuer_of(h).seen[-1].request.transaction_type == "refund"
            assert issuer_of(h).accounts[PAN].balance == 100_000

    run(scenario)


def test_issuer_scripts_come_back() -> None:
    async def scenario() -> None:
        async with running(dialect="binary") as h:
            request = make_request(amount=4242)
            response = await h.connector.authorize(authorization(request))
            assert response.issuer_scripts == "720A9F180400000001860100"
            assert response.issuer_authentication_data == "11223344556677883030"

    run(scenario)


def test_void_is_a_reversal_of_the_original() -> None:
    async def scenario() -> None:
        async with running() as h:
            purchase = make_request()
            first = await h.connector.authorize(authorization(purchase))
            void = make_request(
                transaction_type="void",
                stan=124,
                cvm="no_cvm",
                original_message_id="a" * 32,
            )
            response = await h.connector.authorize(
                authorization(
                    void,
                    message_id="f" * 32,
                    original=purchase,
                    original_host_reference=first.host_reference,
                )
            )
            assert response.approved
            sent = h.simulator.received[-1]
            assert sent["t"] == "0400"
            assert sent["11"] == "000124"
            assert sent["37"] == first.host_reference
            assert sent["90"].startswith("0200000123")
            assert issuer_of(h).accounts[PAN].balance == 100_000
            with pytest.raises(ConnectorUnavailable, match="void needs"):
                await h.connector.authorize(authorization(void, message_id="9" * 32))

    run(scenario)


# -- timeouts, unmatched answers, reversals --------------------------------------------------------


def test_timeout_then_late_answer_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        faults = Faults(delay=0.4)
        async with running(faults=faults, request_timeout=0.15) as h:
            with pytest.raises(ConnectorTimeout, match="no answer"):
                await h.connector.authorize(authorization())
            await asyncio.sleep(0.4)  # the late 0210 arrives
            faults.delay = 0
            response = await h.connector.authorize(
                authorization(make_request(stan=321), message_id="c" * 32)
            )
            assert response.approved

    caplog.set_level(logging.INFO)
    run(scenario)
    assert "unmatched 0210 ignored: STAN 000123 terminal TERM0001" in caplog.text
    assert PAN not in caplog.text


def test_wrong_stan_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with running(faults=Faults(wrong_stan=1), request_timeout=0.2) as h:
            with pytest.raises(ConnectorTimeout):
                await h.connector.authorize(authorization())
            assert h.connector.ready  # the link stays up

    run(scenario)
    assert "unmatched 0210 ignored: STAN 000124" in caplog.text


def test_same_stan_twice_in_flight_is_refused() -> None:
    async def scenario() -> None:
        async with running(faults=Faults(delay=0.2)) as h:
            first = asyncio.ensure_future(h.connector.authorize(authorization()))
            await asyncio.sleep(0.05)
            with pytest.raises(ConnectorUnavailable, match="in flight"):
                await h.connector.authorize(authorization(message_id="c" * 32))
            assert (await first).approved

    run(scenario)


def test_reversal_advice_repeats_until_acknowledged() -> None:
    async def scenario() -> None:
        faults = Faults()
        async with running(faults=faults, request_timeout=0.15) as h:
            request = make_request()
            response = await h.connector.authorize(authorization(request))
            faults.ignore_reversals = 2
            reversal = reversal_of(request, response)
            for _ in range(2):
                with pytest.raises(ConnectorTimeout):
                    await h.connector.reverse(reversal)
            assert await h.connector.reverse(reversal) == "reversed"
            advices = [m for m in h.simulator.received if m["t"].startswith("042")]
            assert [m["t"] for m in advices] == ["0420", "0421", "0421"]
            for advice in advices:
                assert advice["11"] == "000123"  # the original's STAN
                assert advice["37"] == response.host_reference
                assert advice["39"] == "68"
                assert advice["90"].startswith("0200000123")
                assert advice["38"] == response.authorization_code
            assert issuer_of(h).accounts[PAN].balance == 100_000
            assert await h.connector.reverse(reversal) == "already_reversed"

    run(scenario)


def test_reversal_after_a_restart_rebuilds_the_original() -> None:
    async def scenario() -> None:
        async with running() as h:
            request = make_request()
            response = await h.connector.authorize(authorization(request))
            fresh = Iso8583Connector(h.connector.settings)  # no memory of what was sent
            await fresh.start()
            try:
                assert await fresh.reverse(reversal_of(request, response)) == "reversed"
            finally:
                await fresh.close()
            advice = h.simulator.received[-1]
            assert advice["t"] == "0420"
            assert advice["90"][:10] == "0200000123"
            assert advice["90"][10:20] == "0704123456"  # DE7 rebuilt from the terminal time

    run(scenario)


def test_reversal_of_unknown_originals() -> None:
    async def scenario() -> None:
        async with running() as h:
            request = make_request(stan=777)
            before = len(h.simulator.received)
            no_original = Reversal(
                terminal_id="TERM0001",
                merchant_id="MERCHANT0000001",
                message_id="b" * 32,
                request=reversal_of(request, None).request,
                original=None,
                original_response=None,
            )
            assert await h.connector.reverse(no_original) == "unknown_original"
            assert len(h.simulator.received) == before  # nothing sent
            never_sent = reversal_of(request, None, original_id="7" * 32)
            assert await h.connector.reverse(never_sent) == "unknown_original"
            assert h.simulator.received[-1]["t"] == "0420"
            assert issuer_of(h).reversals == []  # the acquirer could not name it

    run(scenario)


def test_settings_are_strict() -> None:
    with pytest.raises(ValueError, match="extra"):
        Iso8583Settings.model_validate({"port": 1, "timeout": 3})
    with pytest.raises(ValueError, match="tpdu"):
        Iso8583Settings(port=1, tpdu="60000")
    assert Iso8583Settings(port=1).purchase_mti == "0200"


def test_terminal_id_mapping_and_refusal() -> None:
    async def scenario() -> None:
        async with running(terminal_ids={"shop-1-lane-12": "LANE12"}) as h:
            response = await h.connector.authorize(authorization(terminal_id="shop-1-lane-12"))
            assert response.approved
            assert h.simulator.received[-1]["41"] == "LANE12  "
            with pytest.raises(ConnectorUnavailable, match="identity"):
                await h.connector.authorize(authorization(terminal_id="a-very-long-terminal"))

    run(scenario)
