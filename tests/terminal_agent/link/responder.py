"""A test responder for the link's tests: a small aiomqtt client playing the bridge.

It holds the data BDK, derives the terminal's initial key from it (X9.24-3), opens each
request with the data_encrypt key of its KSN and answers as the test tells it: approve,
stay silent, hold until released, answer twice, answer late, tamper, expire, or answer
under an earlier request's header (as the bridge does when it replays a stored answer).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiomqtt

from paycore import dukpt
from paycore.wire import (
    AuthorizationResponse,
    Envelope,
    decode_envelope,
    open_envelope,
    seal,
    topics,
)
from paycore.wire.messages import Body

BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
IKID = bytes.fromhex("D47A000100000001")
INITIAL_KEY = dukpt.aes_initial_key(BDK, IKID)
APPROVED = AuthorizationResponse(
    response_code="00", approved=True, authorization_code="AB12CD", host_reference="HR1"
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def answer(
    request: Envelope,
    body: Body = APPROVED,
    *,
    sent_at: int | None = None,
    ttl_ms: int = 15_000,
    correlation_id: str | None = None,
) -> bytes:
    """``body`` sealed as the bridge would answer ``request`` (under its KSN)."""
    key = dukpt.aes_working_key(INITIAL_KEY, request.ksn_bytes, "data_decrypt", "AES128")
    return seal(
        body,
        key=key,
        terminal_id=request.terminal_id,
        ksn=request.ksn_bytes,
        message_id=secrets.token_hex(16),
        correlation_id=correlation_id or request.message_id,
        sent_at=now_ms() if sent_at is None else sent_at,
        ttl_ms=ttl_ms,
    ).to_json()


def tampered(payload: bytes) -> bytes:
    envelope = decode_envelope(payload)
    raw = bytearray(base64.b64decode(envelope.ciphertext))
    raw[0] ^= 1
    return envelope.model_copy(update={"ciphertext": base64.b64encode(raw).decode()}).to_json()


Behaviour = Callable[[Envelope, Body], list[bytes]]


def approve(request: Envelope, body: Body) -> list[bytes]:
    return [answer(request)]


@dataclass
class Responder:
    host: str
    port: int
    behaviour: Behaviour = approve
    received: list[tuple[Envelope, Body]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    client: aiomqtt.Client | None = None

    async def publish(self, terminal_id: str, payload: bytes) -> None:
        assert self.client is not None
        await self.client.publish(topics.response_topic(terminal_id), payload, qos=1)

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    identifier=f"responder-{secrets.token_hex(3)}",
                    socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                ) as client:
                    await client.subscribe(topics.REQUEST_SUBSCRIPTION, qos=1)
                    self.client = client
                    self.connected.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        envelope = decode_envelope(message.payload)
                        key = dukpt.aes_working_key(
                            INITIAL_KEY, envelope.ksn_bytes, "data_encrypt", "AES128"
                        )
                        body = open_envelope(envelope, key=key, now=now_ms())
                        self.received.append((envelope, body))
                        self.arrived.set()
                        for payload in self.behaviour(envelope, body):
                            await self.publish(envelope.terminal_id, payload)
            except aiomqtt.MqttError:
                self.connected.clear()
                self.client = None
                await asyncio.sleep(0.05)

    async def next_request(self, count: int, timeout: float = 5.0) -> tuple[Envelope, Body]:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received[count - 1]


@contextlib.asynccontextmanager
async def running(responder: Responder) -> AsyncIterator[Responder]:
    task = asyncio.create_task(responder.run())
    try:
        await asyncio.wait_for(responder.connected.wait(), 10)
        yield responder
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
