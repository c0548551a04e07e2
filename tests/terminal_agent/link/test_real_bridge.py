"""The link against the real bridge (gateway_bridge.service.Bridge) through Mosquitto.

The bridge's connector is the issuer simulator behind a gate: the test holds the
authorisation while it restarts the broker, so the bridge's answer is lost; the link's
resend (new envelope) finds the request in flight and gets nothing; after the deadline,
the caller's retry of the same body gets the bridge's stored response byte for byte,
correlated to the first envelope and sealed under its KSN.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway_bridge.app import build_connector
from gateway_bridge.connectors.base import Authorization, Connector, Reversal, ReversalOutcome
from hardware.mosquitto import MosquittoService
from paycore.wire import AuthorizationResponse
from terminal_agent.journal import TransactionJournal
from terminal_agent.link import HostTimeout, LinkSettings, MqttLink
from tests.gateway_bridge.rig import DATA_IKID, TERMINAL_ID, make_rig, running_bridge


class GatedConnector:
    """The issuer simulator, holding each authorisation until the test opens the gate."""

    def __init__(self, inner: Connector) -> None:
        self.inner = inner
        self.name = "gated"
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.calls = 0

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def authorize(self, auth: Authorization) -> AuthorizationResponse:
        self.calls += 1
        self.entered.set()
        await self.gate.wait()
        return await self.inner.authorize(auth)

    async def reverse(self, reversal: Reversal) -> ReversalOutcome:
        return await self.inner.reverse(reversal)


def test_real_bridge_restart_then_retry_gets_the_stored_answer(
    mosquitto_broker: MosquittoService, tmp_path: Path
) -> None:
    rig = make_rig(tmp_path, mosquitto_broker)
    connector = GatedConnector(build_connector(rig.settings))
    request = rig.terminal.authorization("visa_credit", 2500, "GBP")

    async def body() -> None:
        async with (
            running_bridge(rig, connector) as bridge,
            await TransactionJournal.open(tmp_path / "terminal.db", bytes(32)) as journal,
            MqttLink(
                LinkSettings(
                    terminal_id=TERMINAL_ID,
                    host=mosquitto_broker.host,
                    port=mosquitto_broker.port,
                    reconnect_initial_s=0.05,
                    reconnect_max_s=0.3,
                ),
                initial_key=rig.terminal.data_initial_key,
                initial_key_id=DATA_IKID,
                counters=journal,
            ) as link,
        ):
            await link.wait_connected(5)
            await link.wait_bridge(online=True, timeout=5)
            first = asyncio.create_task(link.exchange(request, timeout=3))
            await asyncio.wait_for(connector.entered.wait(), 5)
            await asyncio.to_thread(mosquitto_broker.restart)
            connector.gate.set()  # the bridge answers on a connection that is gone
            try:
                await first
            except HostTimeout as exc:
                earlier = exc.message_ids
            else:
                raise AssertionError("the first exchange should have timed out")
            assert len(earlier) == 2  # the original and the resend after the reconnect
            await link.wait_bridge(online=True, timeout=5)

            reply = await link.exchange(request, timeout=5, earlier_message_ids=earlier)
            assert isinstance(reply.body, AuthorizationResponse) and reply.body.approved
            assert reply.envelope.correlation_id == earlier[0]
            assert reply.envelope.ksn[16:] == "00000001"  # the first envelope's KSN
            stored = await bridge.journal.get_authorization(TERMINAL_ID, request.idempotency_key)
            assert stored is not None and stored.response_payload == reply.payload
            assert connector.calls == 1  # authorised once
            assert await journal.next_counter(DATA_IKID.hex().upper()) == 4

    asyncio.run(asyncio.wait_for(body(), 25))
