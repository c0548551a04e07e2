"""The ECR app around the real agent (card behind pcscd + vpcd, PIN pad on a pty,
Mosquitto, the real bridge), as tests/terminal_agent/test_payment.py builds it, and an
httpx client speaking ASGI to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from hardware.pcsc.pcscd import PcscdService
from hardware.pinpad import EmulatedPinpad
from terminal_agent.ecr import EcrSettings, create_app
from tests.gateway_bridge.rig import Rig
from tests.terminal_agent.test_payment import Agent, agent

TOKEN = "ecr-test-token-" + "7" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Api:
    client: httpx.AsyncClient
    agent: Agent

    async def create(self, **fields: Any) -> httpx.Response:
        body = {"amount": 1250, "currency": "GBP", "reference": "till1/42"} | fields
        return await self.client.post("/v1/payments", json=body, headers=AUTH)

    async def get(self, path: str, **params: str) -> httpx.Response:
        return await self.client.get(path, params=params, headers=AUTH)

    async def post(self, path: str) -> httpx.Response:
        return await self.client.post(path, headers=AUTH)

    async def settled(self, payment_id: int, timeout: float = 15.0) -> dict[str, Any]:
        """Poll as a register would until the payment is no longer pending."""
        async with asyncio.timeout(timeout):
            while True:
                response = await self.get(f"/v1/payments/{payment_id}")
                assert response.status_code == 200, response.text
                payment: dict[str, Any] = response.json()
                if payment["status"] != "pending":
                    return payment
                await asyncio.sleep(0.05)

    async def pending(self, payment_id: int, state: str = "created") -> None:
        """Wait until the journal shows ``state`` (e.g. the card wait has begun)."""
        async with asyncio.timeout(5):
            while True:
                record = await self.agent.journal.get(payment_id)
                if record is not None and record.state == state:
                    return
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def ecr_api(
    rig: Rig, pcscd: PcscdService, tmp_path: Path, pad: EmulatedPinpad, host_timeout: float = 5.0
) -> AsyncIterator[Api]:
    async with agent(rig, pcscd, tmp_path, pad, host_timeout=host_timeout) as a:
        app = create_app(
            a.terminal, EcrSettings(token_file=tmp_path / "unused"), token=SecretStr(TOKEN)
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ecr") as client:
            try:
                yield Api(client, a)
            finally:
                await app.state.ecr.aclose()
