"""The terminal's MQTT link: status, the request/response exchange, the bridge's status.

DESIGN 4 and docs/mqtt-protocol.md, the aiomqtt way (STYLE 7): :meth:`MqttLink.run` is an
explicit reconnect loop with backoff around ``async with aiomqtt.Client(...)``; each
connection publishes the retained ``online`` :class:`~paycore.wire.TerminalStatus` (the
will publishes ``offline`` on the same topic when the connection dies uncleanly),
subscribes to the terminal's ``resp`` topic and to the retained bridge status, and reads
``client.messages`` until it drops.

:meth:`MqttLink.exchange` (and :meth:`MqttLink.request`) seal a request body into an
envelope under the AES DUKPT ``data_encrypt`` key of a counter the counter source (the
journal) has made durable first, publish it QoS 1 on ``pos/v1/t/{tid}/req`` and wait for
the response whose ``correlation_id`` is that message id, or any earlier message id of
the same logical request given by the caller. Responses are opened with the
``data_decrypt`` key of the response's own KSN (a stored response from an earlier
envelope is sealed under that envelope's KSN). If the connection drops while a request
waits, the same body is sealed again in a new envelope (new counter, new message id) and
published on the next connection, until the deadline. Late, duplicate, foreign and
unauthentic responses are counted and ignored; an authentic expired one is refused, except
the bridge's stored answer to an envelope of the same request sent before (a retry after
a restart), which is the outcome however old it is.

Denied publishes look successful (DESIGN 9: Mosquitto's PUBACK 135 does not fail
aiomqtt's ``publish``), so a response timeout is the only signal: :class:`HostTimeout`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Protocol

import aiomqtt
from paho.mqtt import client as paho_client
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from paycore.dukpt import AesOriginator, AesTransaction, aes_working_key
from paycore.errors import CodecError, EnvelopeError
from paycore.wire import (
    AuthorizationRequest,
    AuthorizationResponse,
    BatchCloseRequest,
    BatchCloseResponse,
    BridgeStatus,
    Envelope,
    EnvelopeExpired,
    ErrorResponse,
    HealthCheck,
    MessageError,
    ReversalRequest,
    ReversalResponse,
    TerminalStatus,
    decode_envelope,
    decode_json,
    open_envelope,
    seal,
    topics,
)
from paycore.wire.messages import REQUEST_KINDS, Body
from terminal_agent.link.errors import (
    BadResponse,
    HostTimeout,
    LinkDown,
    ResponseRefused,
)
from terminal_agent.link.settings import LinkSettings

log = logging.getLogger(__name__)

Request = AuthorizationRequest | ReversalRequest | BatchCloseRequest
ReaderState = Literal["ready", "card_present", "missing", "no_service", "unknown"]
PinpadState = Literal["ready", "missing", "unknown"]

#: Which response bodies answer which request.
_ANSWERS: dict[type[Body], tuple[type[Body], ...]] = {
    AuthorizationRequest: (AuthorizationResponse, ErrorResponse),
    ReversalRequest: (ReversalResponse, ErrorResponse),
    BatchCloseRequest: (BatchCloseResponse, ErrorResponse),
}


class CounterSource(Protocol):
    """Where DUKPT counters come from: each returned counter is durably marked used."""

    async def reserve_counter(self, key_id: str) -> int: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _new_message_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Reply:
    """A response accepted for a request."""

    envelope: Envelope
    body: Body
    payload: bytes = field(repr=False)
    """The MQTT payload exactly as received."""
    sent_message_ids: tuple[str, ...]
    """The envelopes this call published (the caller journals them through ``on_sealed``)."""


@dataclass
class LinkStats:
    """What the link saw; ignored responses are counted by why (for tests and metrics)."""

    connects: int = 0
    published: int = 0
    resent: int = 0
    accepted: int = 0
    late: int = 0
    duplicate: int = 0
    foreign: int = 0
    malformed: int = 0
    unauthentic: int = 0
    expired: int = 0
    wrong_kind: int = 0


@dataclass(eq=False)
class _Connection:
    client: aiomqtt.Client
    generation: int
    lost: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Pending:
    request_type: type[Body]
    future: asyncio.Future[Reply]
    ids: list[str] = field(default_factory=list)
    #: Envelopes of the same request sent before this exchange (journaled): the bridge's
    #: stored answer to one of them is the outcome however old it is.
    earlier: frozenset[str] = frozenset()


class MqttLink:
    """The terminal's connection to the bridges. Use ``async with`` (runs :meth:`run` in a
    task) or run :meth:`run` yourself."""

    def __init__(
        self,
        settings: LinkSettings,
        *,
        initial_key: bytes,
        initial_key_id: bytes,
        counters: CounterSource,
        clock_ms: Callable[[], int] = _now_ms,
        message_ids: Callable[[], str] = _new_message_id,
    ) -> None:
        if len(initial_key) not in (16, 32):
            raise ValueError("the terminal's data initial key must be AES-128 or AES-256")
        if len(initial_key_id) != 8:
            raise ValueError("the Initial Key ID must be 8 bytes")
        self.settings = settings
        self._initial_key = bytes(initial_key)
        self._ikid = bytes(initial_key_id)
        self._key_type: Literal["AES128", "AES256"] = (
            "AES128" if len(initial_key) == 16 else "AES256"
        )
        self._counters = counters
        self._clock_ms = clock_ms
        self._message_ids = message_ids
        self._originator: AesOriginator | None = None
        self._pending: dict[str, _Pending] = {}
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._conn: _Connection | None = None
        self._up = asyncio.Event()
        self._generation = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._bridge: BridgeStatus | None = None
        self._bridge_changed = asyncio.Event()
        self._status = TerminalStatus(
            terminal_id=settings.terminal_id,
            state="online",
            software_version=settings.software_version,
        )
        self.stats = LinkStats()
        self._resp_topic = topics.response_topic(settings.terminal_id)
        self._req_topic = topics.request_topic(settings.terminal_id)
        self._status_topic = topics.status_topic(settings.terminal_id)

    def __repr__(self) -> str:
        return (
            f"MqttLink(terminal_id={self.settings.terminal_id!r}, "
            f"connected={self.connected}, pending={len(self._pending)})"
        )

    # -- state -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.lost.is_set()

    async def wait_connected(self, timeout: float) -> None:
        """Return once connected; :class:`LinkDown` if not within ``timeout`` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        if await self._connection_before(deadline) is None:
            raise LinkDown("no broker connection")

    @property
    def bridge_status(self) -> BridgeStatus | None:
        """The last retained bridge status seen (None: none seen, or it was cleared)."""
        return self._bridge

    @property
    def bridge_online(self) -> bool:
        return self._bridge is not None and self._bridge.state == "online"

    async def wait_bridge(self, *, online: bool, timeout: float) -> None:
        """Return once :attr:`bridge_online` is ``online``; TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while self.bridge_online != online:
                self._bridge_changed.clear()
                await self._bridge_changed.wait()

    async def update_status(
        self,
        *,
        reader: ReaderState | None = None,
        pinpad: PinpadState | None = None,
        health: Sequence[HealthCheck] | None = None,
        health_at: datetime | None = None,
    ) -> None:
        """Change the devices (or the self-test results) shown in the retained status;
        published now if connected (and on every reconnect)."""
        changes: dict[str, object] = {}
        if reader is not None:
            changes["reader"] = reader
        if pinpad is not None:
            changes["pinpad"] = pinpad
        if health is not None:
            changes["health"] = tuple(h.model_dump() for h in health)
            changes["health_at"] = health_at
        self._status = TerminalStatus.model_validate({**self._status.model_dump(), **changes})
        conn = self._conn
        if conn is not None and not conn.lost.is_set():
            with contextlib.suppress(aiomqtt.MqttError):
                await self._publish_status(conn.client, "online")

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> MqttLink:
        self._stop.clear()
        self._task = asyncio.create_task(self.run(self._stop), name="mqtt-link")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the loop: publish ``offline`` (retained), disconnect cleanly."""
        self._stop.set()
        if self._task is not None:
            task, self._task = self._task, None
            await task

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        v5 = s.protocol == "5"
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = s.session_expiry_s
        quiet = logging.getLogger(f"{__name__}.aiomqtt")
        quiet.setLevel(logging.ERROR)  # aiomqtt warns per publish past 10 pending (DESIGN 9)
        offline = self._status.model_copy(update={"state": "offline"})
        return aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.identifier,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else False,
            # paho refuses clean_start on 3.1.1 unless left at its default.
            clean_start=False if v5 else paho_client.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
            keepalive=s.keepalive_s,
            timeout=s.connect_timeout_s,
            tls_context=None if s.tls is None else s.tls.context(),
            will=aiomqtt.Will(
                self._status_topic, offline.model_dump_json().encode(), qos=1, retain=True
            ),
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],  # DESIGN 9: Nagle
            logger=quiet,
        )

    async def _publish_status(
        self, client: aiomqtt.Client, state: Literal["online", "offline"]
    ) -> None:
        status = self._status.model_copy(update={"state": state})
        await client.publish(
            self._status_topic, status.model_dump_json().encode(), qos=1, retain=True
        )

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Stay connected until ``stop`` is set, reconnecting with backoff."""
        stop = stop if stop is not None else asyncio.Event()
        s = self.settings
        delay = s.reconnect_initial_s
        while not stop.is_set():
            conn: _Connection | None = None
            try:
                async with self._client() as client:
                    await client.subscribe(self._resp_topic, qos=1)
                    await client.subscribe(topics.BRIDGE_STATUS, qos=1)
                    published = self._status
                    await self._publish_status(client, "online")
                    self._generation += 1
                    conn = _Connection(client, self._generation)
                    self._conn = conn
                    if self._status is not published:
                        # update_status ran while the first publish was on its way and saw
                        # no connection yet: the retained status must be the latest one.
                        await self._publish_status(client, "online")
                    self._up.set()
                    self.stats.connects += 1
                    delay = s.reconnect_initial_s
                    log.info("terminal %s connected to the broker", s.terminal_id)
                    await self._serve(client, stop)
                    conn.lost.set()  # no new publishes from here: we are leaving cleanly
                    self._up.clear()
                    await self._publish_status(client, "offline")
            except aiomqtt.MqttError as exc:
                log.warning("broker connection lost (%s); retrying in %.1f s", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * s.reconnect_factor, s.reconnect_max_s)
            finally:
                if conn is not None:
                    conn.lost.set()
                    self._up.clear()
                    if self._conn is conn:
                        self._conn = None

    async def _serve(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        messages = client.messages.__aiter__()
        try:
            while True:
                next_message = asyncio.ensure_future(messages.__anext__())
                done, _ = await asyncio.wait(
                    {next_message, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                if next_message not in done:
                    next_message.cancel()
                    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                        await next_message
                    return
                message = next_message.result()
                payload = message.payload
                if not isinstance(payload, bytes | bytearray):
                    self.stats.malformed += 1
                    continue
                if message.topic.matches(self._resp_topic):
                    self._on_response(bytes(payload))
                elif message.topic.matches(topics.BRIDGE_STATUS):
                    self._on_bridge_status(bytes(payload))
        finally:
            stopping.cancel()

    # -- incoming ------------------------------------------------------------------------

    def _on_bridge_status(self, payload: bytes) -> None:
        if not payload:  # the retained status was cleared
            self._bridge = None
        else:
            try:
                self._bridge = decode_json(payload, BridgeStatus)
            except MessageError:
                self.stats.malformed += 1
                log.warning("ignored a malformed bridge status")
                return
        log.info("bridge status: %s", "online" if self.bridge_online else "offline")
        self._bridge_changed.set()

    def _on_response(self, payload: bytes) -> None:
        try:
            envelope = decode_envelope(payload)
        except MessageError as exc:
            self.stats.malformed += 1
            log.warning("ignored a malformed response (%s)", exc)
            return
        correlation = envelope.correlation_id
        if (
            envelope.terminal_id != self.settings.terminal_id
            or envelope.kind in REQUEST_KINDS
            or correlation is None
            or envelope.ksn_bytes[:8] != self._ikid
        ):
            self.stats.foreign += 1
            log.warning("ignored a response that is not for this terminal's requests")
            return
        pending = self._pending.get(correlation)
        if pending is None or pending.future.done():
            if pending is not None:
                self.stats.duplicate += 1
                why = "duplicate"
            elif correlation in self._finished:
                self.stats.late += 1
                why = "late"
            else:
                self.stats.foreign += 1
                why = "unknown"
            log.info("ignored a %s response to %s", why, correlation[:12])
            return
        try:
            key = aes_working_key(
                self._initial_key, envelope.ksn_bytes, "data_decrypt", envelope.key_type
            )
            body = open_envelope(
                envelope,
                key=key,
                now=self._clock_ms(),
                max_clock_skew_ms=self.settings.max_clock_skew_ms,
                check_expiry=correlation not in pending.earlier,
            )
        except EnvelopeExpired:
            self.stats.expired += 1
            log.warning("refused an expired response to %s", correlation[:12])
            pending.future.set_exception(
                ResponseRefused(f"the response to {correlation[:12]} has expired")
            )
            return
        except (EnvelopeError, CodecError, ValueError):
            # Not authentic: anyone on the topic could have sent it. Keep waiting.
            self.stats.unauthentic += 1
            log.warning("ignored a response to %s that does not open", correlation[:12])
            return
        if not isinstance(body, _ANSWERS[pending.request_type]):
            self.stats.wrong_kind += 1
            pending.future.set_exception(
                BadResponse(f"{envelope.kind} does not answer the request {correlation[:12]}")
            )
            return
        self.stats.accepted += 1
        pending.future.set_result(
            Reply(envelope=envelope, body=body, payload=payload, sent_message_ids=())
        )

    # -- outgoing ------------------------------------------------------------------------

    async def request(
        self,
        body: Request,
        *,
        timeout: float | None = None,
        earlier_message_ids: Iterable[str] = (),
        on_sealed: Callable[[str], Awaitable[None]] | None = None,
    ) -> Body:
        """Send ``body`` and return the host's answer (see :meth:`exchange`)."""
        reply = await self.exchange(
            body, timeout=timeout, earlier_message_ids=earlier_message_ids, on_sealed=on_sealed
        )
        return reply.body

    async def exchange(
        self,
        body: Request,
        *,
        timeout: float | None = None,
        earlier_message_ids: Iterable[str] = (),
        on_sealed: Callable[[str], Awaitable[None]] | None = None,
    ) -> Reply:
        """Seal, publish and wait for the answer to ``body``, within ``timeout`` seconds.

        ``earlier_message_ids`` are the envelopes already sent for the same logical request
        (a retry after a restart: the same body, byte for byte); a response to any of them
        is accepted. ``on_sealed(message_id)`` is awaited before each envelope is published
        (the caller journals the id there: write-ahead). Waits for a connection up to the
        deadline; reseals and republishes after a reconnect.

        Raises :class:`LinkDown` (never published), :class:`HostTimeout` (published, no
        answer), :class:`ResponseRefused` (expired answer), :class:`BadResponse` (an answer
        of the wrong kind); errors of the counter source and of ``on_sealed`` propagate.
        """
        request_type = type(body)
        if request_type not in _ANSWERS:
            raise TypeError("only authorization and reversal requests can be sent")
        loop = asyncio.get_running_loop()
        wait = self.settings.request_timeout_s if timeout is None else timeout
        deadline = loop.time() + wait
        earlier = tuple(earlier_message_ids)
        pending = _Pending(request_type, loop.create_future(), earlier=frozenset(earlier))
        for message_id in earlier:
            self._pending[message_id] = pending
            pending.ids.append(message_id)
        sent: list[str] = []
        generation = -1
        maybe_sent = False
        try:
            while True:
                conn = await self._connection_before(deadline)
                if conn is None:
                    break
                if conn.generation != generation:
                    envelope = await self._seal(
                        body, max(1, round((deadline - loop.time()) * 1000))
                    )
                    self._pending[envelope.message_id] = pending
                    pending.ids.append(envelope.message_id)
                    if on_sealed is not None:
                        await on_sealed(envelope.message_id)
                    sent.append(envelope.message_id)
                    if len(sent) > 1:
                        self.stats.resent += 1
                    maybe_sent = True
                    # Once per connection: after a failed publish, wait for the next one.
                    generation = conn.generation
                    if await self._publish(conn, envelope.to_json(), deadline):
                        self.stats.published += 1
                lost = asyncio.ensure_future(conn.lost.wait())
                waiters: set[asyncio.Future[Any]] = {pending.future, lost}
                try:
                    await asyncio.wait(
                        waiters,
                        timeout=max(0.0, deadline - loop.time()),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    lost.cancel()
                if pending.future.done():
                    reply = pending.future.result()
                    return Reply(
                        envelope=reply.envelope,
                        body=reply.body,
                        payload=reply.payload,
                        sent_message_ids=tuple(sent),
                    )
                if loop.time() >= deadline:
                    break
                log.info("connection lost while %s waits; resending", sent[-1][:12])
        finally:
            for message_id in pending.ids:
                self._pending.pop(message_id, None)
                self._finished[message_id] = None
            while len(self._finished) > self.settings.remembered_ids:
                self._finished.popitem(last=False)
            if not pending.future.done():
                pending.future.cancel()
        if maybe_sent:
            raise HostTimeout(f"no response to {sent[0][:12]} within {wait:.1f} s", tuple(sent))
        raise LinkDown(f"no broker connection within {wait:.1f} s; nothing was published")

    async def _connection_before(self, deadline: float) -> _Connection | None:
        loop = asyncio.get_running_loop()
        while True:
            conn = self._conn
            if conn is not None and not conn.lost.is_set():
                return conn
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(), remaining)

    async def _publish(self, conn: _Connection, payload: bytes, deadline: float) -> bool:
        """Publish QoS 1; False if the connection went before the broker acknowledged."""
        loop = asyncio.get_running_loop()
        publish = asyncio.ensure_future(
            conn.client.publish(self._req_topic, payload, qos=1, timeout=math.inf)
        )
        lost = asyncio.ensure_future(conn.lost.wait())
        waiters: set[asyncio.Future[Any]] = {publish, lost}
        try:
            await asyncio.wait(
                waiters,
                timeout=max(0.0, deadline - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            lost.cancel()
        if not publish.done():
            publish.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await publish
            return False
        try:
            publish.result()
        except aiomqtt.MqttError as exc:
            log.warning("publishing a request failed (%s)", exc)
            return False
        return True

    async def _seal(self, body: Request, ttl_ms: int) -> Envelope:
        counter = await self._counters.reserve_counter(self._ikid.hex().upper())
        transaction = self._transaction(counter)
        return seal(
            body,
            key=transaction.working_key("data_encrypt", self._key_type),
            terminal_id=self.settings.terminal_id,
            ksn=transaction.ksn,
            message_id=self._message_ids(),
            sent_at=self._clock_ms(),
            ttl_ms=ttl_ms,
        )

    def _transaction(self, counter: int) -> AesTransaction:
        """The originator's transaction for ``counter``, which the counter source has made
        durable: the originator is (re)positioned there, so it hands out nothing else."""
        originator = self._originator
        if originator is None or originator.next_counter != counter:
            originator = AesOriginator(self._initial_key, self._ikid, next_counter=counter)
            self._originator = originator
        transaction = originator.next_transaction()
        if transaction.counter != counter:
            # The counter source handed out a counter DUKPT skips: never seal under another.
            raise ValueError("the reserved DUKPT counter is not a usable transaction counter")
        return transaction
