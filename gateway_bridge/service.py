"""The bridge service: MQTT in, key store, journal, connector, MQTT out (DESIGN 3-6).

:class:`Bridge` has two halves:

- :meth:`Bridge.handle` processes one MQTT message and returns what to publish (or
  nothing). It is where the rules live, and it is tested on its own:

  1. parse the envelope; the topic's terminal id must be the envelope's;
  2. the terminal must be registered and active, and the KSN must carry its initial key
     id; the key store opens the envelope (tampered, expired, wrong key: refused);
  3. the KSN counter must be above the last one seen for the terminal (replays refused);
  4. the journal's unique key decides: a new request goes to the connector once, a
     repeated one gets the stored response byte for byte, one being processed gets no
     second call, a different request under the same key is refused;
  5. the outcome and the exact response payload are journaled, then published.

  A refused message is counted and logged (terminal id and reason; never card data) and
  nothing else happens: no response, no journal entry.

- :meth:`Bridge.run` is the aiomqtt loop: connect (TLS when configured), retained
  ``online`` status with an ``offline`` will, a shared subscription on MQTT 5 (plain on
  3.1.1), bounded concurrency, reconnect with backoff. :meth:`Bridge.reversal_loop`
  retries reversals the connector has not acknowledged yet, and :meth:`Bridge.recover`
  turns authorisations left "sent" by a crash into reversals (the host may have approved).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import aiomqtt
from paho.mqtt import client as paho_client
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway_bridge.config import BridgeSettings
from gateway_bridge.connectors.base import (
    Authorization,
    Connector,
    ConnectorError,
    ConnectorTimeout,
    Reversal,
)
from gateway_bridge.journal.base import (
    AuthorizationEntry,
    AuthorizationOutcome,
    BatchInProgress,
    Conflict,
    Duplicate,
    InFlight,
    Journal,
    New,
    ReversalEntry,
    ReversalRecord,
    TerminalRecord,
    request_digest,
)
from gateway_bridge.keystore.base import KeyStore
from gateway_bridge.metrics import BridgeMetrics
from paycore.errors import CodecError, EnvelopeError
from paycore.wire import (
    REVEAL,
    AuthorizationRequest,
    AuthorizationResponse,
    BatchCloseRequest,
    BridgeStatus,
    EncryptedPinBlock,
    Envelope,
    EnvelopeExpired,
    ErrorResponse,
    ReversalRequest,
    ReversalResponse,
    decode_envelope,
    open_envelope,
    seal,
    topics,
)
from paycore.wire.messages import KIND_OF, REQUEST_KINDS, Body

log = logging.getLogger(__name__)

#: ISO 8583 response codes the bridge answers with itself.
ISSUER_UNAVAILABLE = "91"
SYSTEM_MALFUNCTION = "96"

_DISPLAY = {
    ISSUER_UNAVAILABLE: "Card issuer not reachable - try again",
    SYSTEM_MALFUNCTION: "Payment system error - try again",
}


class Refused(Exception):
    """A message the bridge will not process; ``reason`` is the metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: bytes


class _PinService:
    """The key store's PIN operations for one terminal's PIN pad key (connectors' view)."""

    def __init__(self, keystore: KeyStore, bdk_id: str) -> None:
        self._keystore = keystore
        self._bdk_id = bdk_id

    def verify(
        self, pin_block: EncryptedPinBlock, pan: str, check: Callable[[bytearray], bool]
    ) -> bool:
        return self._keystore.verify_pin(self._bdk_id, pin_block, pan, check)

    def translate(
        self, pin_block: EncryptedPinBlock, pan: str, zone_key_id: str, zone_format: Literal[0, 4]
    ) -> bytes:
        return self._keystore.translate_pin_block(
            self._bdk_id, pin_block, pan, zone_key_id, zone_format
        )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _new_message_id() -> str:
    return uuid.uuid4().hex


class Bridge:
    """One bridge process. Collaborators are passed in, built by the CLI from settings."""

    def __init__(
        self,
        *,
        settings: BridgeSettings,
        keystore: KeyStore,
        journal: Journal,
        connector: Connector,
        metrics: BridgeMetrics | None = None,
        clock_ms: Callable[[], int] = _now_ms,
        message_ids: Callable[[], str] = _new_message_id,
        random: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.settings = settings
        self.keystore = keystore
        self.journal = journal
        self.connector = connector
        self.metrics = metrics if metrics is not None else BridgeMetrics()
        self._clock_ms = clock_ms
        self._message_ids = message_ids
        self._random = random
        self.connected = asyncio.Event()
        self._registry: dict[str, tuple[float, TerminalRecord]] = {}
        self._order: dict[str, asyncio.Lock] = {}

    # -- one message ---------------------------------------------------------------------

    async def handle(self, topic: str, payload: bytes) -> Outgoing | None:
        """Process one request message; what to publish, or None (refused or in flight)."""
        started = time.perf_counter()
        try:
            answer = await self._handle(topic, payload)
        except Refused as refused:
            self.metrics.refused.labels(refused.reason).inc()
            log.warning("refused a message on %s: %s", _safe_topic(topic), refused.reason)
            return None
        if answer is not None:
            self.metrics.latency.observe(time.perf_counter() - started)
        return answer

    async def _handle(self, topic: str, payload: bytes) -> Outgoing | None:
        try:
            envelope = decode_envelope(payload)
            terminal_id, leaf = topics.parse_terminal_topic(topic)
        except CodecError:
            raise Refused("malformed") from None
        if leaf != "req" or envelope.terminal_id != terminal_id:
            raise Refused("topic_mismatch")
        if envelope.kind not in REQUEST_KINDS:
            raise Refused("wrong_kind")
        self.metrics.requests.labels(envelope.kind).inc()

        # One terminal's messages pass the counter check in arrival order: a terminal may
        # have a request and a reversal in flight, and concurrent tasks must not let the
        # later KSN overtake the earlier one and get it refused as a replay.
        if len(self._order) > 100_000:
            self._order = {t: held for t, held in self._order.items() if held.locked()}
        lock = self._order.setdefault(terminal_id, asyncio.Lock())
        async with lock:
            terminal = await self._terminal(terminal_id)
            if terminal is None or terminal.status != "active":
                raise Refused("unknown_terminal")
            if envelope.ksn[:16] != terminal.data_initial_key_id:
                raise Refused("foreign_ksn")
            try:
                aead = self.keystore.envelope_aead(terminal.data_bdk_id, envelope)
                body = open_envelope(
                    envelope,
                    key=aead,
                    now=self._clock_ms(),
                    max_clock_skew_ms=self.settings.limits.max_clock_skew_ms,
                )
            except EnvelopeExpired:
                raise Refused("expired") from None
            except (EnvelopeError, CodecError):
                raise Refused("tampered") from None
            if not await self.journal.advance_counter(terminal_id, int(envelope.ksn[16:], 16)):
                raise Refused("replay")

        if isinstance(body, AuthorizationRequest):
            return await self._authorize(terminal, envelope, body)
        if isinstance(body, ReversalRequest):
            return await self._reverse(terminal, envelope, body)
        if isinstance(body, BatchCloseRequest):
            return await self._close_batch(terminal, envelope, body)
        raise Refused("wrong_kind")  # pragma: no cover - REQUEST_KINDS covers them

    async def _terminal(self, terminal_id: str) -> TerminalRecord | None:
        """The registry entry, cached for ``limits.registry_cache_s`` (one read per request
        otherwise). A revoked terminal is also shut out by the broker (its certificate)."""
        now = time.monotonic()
        cached = self._registry.get(terminal_id)
        if cached is not None and now - cached[0] < self.settings.limits.registry_cache_s:
            return cached[1]
        record = await self.journal.get_terminal(terminal_id)
        if record is not None:
            if len(self._registry) >= 100_000:
                self._registry.clear()
            self._registry[terminal_id] = (now, record)
        return record

    async def _authorize(
        self, terminal: TerminalRecord, envelope: Envelope, request: AuthorizationRequest
    ) -> Outgoing | None:
        canonical = request.model_dump_json(context=REVEAL).encode()
        entry = AuthorizationEntry.from_request(
            terminal_id=terminal.terminal_id,
            merchant_id=terminal.merchant_id,
            message_id=envelope.message_id,
            request=request,
            body=canonical,
        )
        begun = await self.journal.begin_authorization(entry)
        if isinstance(begun, Duplicate):
            self.metrics.duplicates.inc()
            return Outgoing(topics.response_topic(terminal.terminal_id), begun.response_payload)
        if isinstance(begun, InFlight):
            self.metrics.duplicates.inc()
            log.info(
                "request %s of %s is already being processed",
                envelope.message_id,
                terminal.terminal_id,
            )
            return None
        if isinstance(begun, Conflict):
            return self._reply(
                terminal,
                envelope,
                ErrorResponse(
                    code="duplicate_conflict", detail="idempotency key reused for another request"
                ),
            )
        assert isinstance(begun, New)

        original_reference = None
        if request.original_message_id is not None:
            original = await self.journal.find_authorization(
                terminal.terminal_id, request.original_message_id
            )
            original_reference = original.host_reference if original else None
        # No separate "sent" write: an entry still "received" after a crash is treated as
        # possibly sent (recover() reverses it; a host that never saw it says so). That
        # saves one durable write per authorisation on the hot path.
        state: Literal["approved", "declined", "failed", "timed_out"]
        try:
            response = await self.connector.authorize(
                Authorization(
                    terminal_id=terminal.terminal_id,
                    merchant_id=terminal.merchant_id,
                    message_id=envelope.message_id,
                    request=request,
                    pins=_PinService(self.keystore, terminal.pin_bdk_id),
                    original_host_reference=original_reference,
                )
            )
            state = "approved" if response.approved else "declined"
        except ConnectorTimeout:
            self.metrics.connector_errors.labels("timeout").inc()
            response, state = self._declined_by_bridge(ISSUER_UNAVAILABLE), "timed_out"
        except ConnectorError as exc:
            self.metrics.connector_errors.labels("unavailable").inc()
            log.warning(
                "connector refused %s of %s: %s",
                envelope.message_id[:12],
                terminal.terminal_id,
                exc,
            )
            response, state = self._declined_by_bridge(ISSUER_UNAVAILABLE), "failed"
        except Exception:
            self.metrics.connector_errors.labels("error").inc()
            log.exception("connector failed on %s of %s", envelope.message_id, terminal.terminal_id)
            response, state = self._declined_by_bridge(SYSTEM_MALFUNCTION), "timed_out"

        outgoing = self._reply(terminal, envelope, response)
        await self.journal.complete_authorization(
            terminal.terminal_id,
            request.idempotency_key,
            AuthorizationOutcome(
                state=state,
                response_payload=outgoing.payload,
                response_code=response.response_code,
                authorization_code=response.authorization_code,
                host_reference=response.host_reference,
            ),
        )
        if state == "timed_out":
            # The host may have approved what we never heard back about: reverse it.
            await self._queue_bridge_reversal(terminal, envelope, request)
        self.metrics.outcomes.labels(response.response_code).inc()
        return outgoing

    async def _reverse(
        self, terminal: TerminalRecord, envelope: Envelope, request: ReversalRequest
    ) -> Outgoing | None:
        canonical = request.model_dump_json(context=REVEAL).encode()
        entry = ReversalEntry.from_request(
            terminal_id=terminal.terminal_id,
            merchant_id=terminal.merchant_id,
            message_id=envelope.message_id,
            request=await self._resolve_original(terminal, request),
            body=canonical,
        )
        begun = await self.journal.begin_reversal(entry)
        if isinstance(begun, Duplicate):
            self.metrics.duplicates.inc()
            return Outgoing(topics.response_topic(terminal.terminal_id), begun.response_payload)
        if isinstance(begun, Conflict):
            return self._reply(
                terminal,
                envelope,
                ErrorResponse(
                    code="duplicate_conflict", detail="idempotency key reused for another reversal"
                ),
            )
        accepted = ReversalResponse(
            original_message_id=request.original_message_id, outcome="accepted"
        )
        if isinstance(begun, InFlight):
            return self._reply(terminal, envelope, accepted)  # journaled: the retry loop owns it
        assert isinstance(begun, New)
        record = await self.journal.get_reversal(terminal.terminal_id, request.idempotency_key)
        assert record is not None
        outcome = await self._deliver_reversal(record)
        if outcome is None:
            return self._reply(terminal, envelope, accepted)
        outgoing = self._reply(
            terminal,
            envelope,
            ReversalResponse(original_message_id=request.original_message_id, outcome=outcome),
        )
        await self.journal.complete_reversal(record.id, outcome, outgoing.payload)
        self.metrics.reversals.labels(outcome).inc()
        return outgoing

    async def _close_batch(
        self, terminal: TerminalRecord, envelope: Envelope, request: BatchCloseRequest
    ) -> Outgoing:
        """The terminal's end of day: close its batch here too, reconcile, compare
        (gateway_bridge/settlement/terminal.py). A repeat gets the stored answer."""
        from gateway_bridge.settlement.store import SettlementStore
        from gateway_bridge.settlement.terminal import reconciler_for, settle_for_terminal

        path = self.settings.settlement_store_path()
        if path is None:
            detail = "settlement_store is not configured on the bridge"
            return self._reply(terminal, envelope, ErrorResponse(code="unavailable", detail=detail))
        try:
            stored = await self.journal.claim_terminal_batch(
                terminal.terminal_id, request.idempotency_key, stale_after_s=120.0
            )
        except BatchInProgress:
            detail = "this batch is being closed: try again in a minute"
            return self._reply(terminal, envelope, ErrorResponse(code="unavailable", detail=detail))
        if stored is not None:
            self.metrics.duplicates.inc()
            return Outgoing(topics.response_topic(terminal.terminal_id), stored)
        store = SettlementStore(path)  # one small SQLite file, used from this thread only
        try:
            summary, answer = await settle_for_terminal(
                self.journal,
                terminal,
                request,
                store=store,
                reconciler=reconciler_for(self.connector),
                clock=lambda: datetime.fromtimestamp(self._clock_ms() / 1000, UTC),
                random=self._random,
            )
        except BaseException:
            # Nothing was answered: let the terminal's retry close the batch afresh.
            await self.journal.release_terminal_batch(terminal.terminal_id, request.idempotency_key)
            raise
        finally:
            store.close()
        outgoing = self._reply(terminal, envelope, answer)
        await self.journal.complete_terminal_batch(
            terminal.terminal_id, request.idempotency_key, summary.batch_id, outgoing.payload
        )
        log.info(
            "batch %s of %s closed at the terminal's request: %s (%d differences)",
            summary.batch_id,
            terminal.terminal_id,
            answer.status,
            len(answer.differences),
        )
        return outgoing

    async def _resolve_original(
        self, terminal: TerminalRecord, request: ReversalRequest
    ) -> ReversalRequest:
        """The reversal as journaled: its original named by the message id this bridge
        authorised it under. The terminal names the ids it sent; when its first envelope
        was lost and a resend was authorised, only the idempotency key finds it."""
        key = request.original_idempotency_key
        if key is None:
            return request
        original = await self.journal.get_authorization(terminal.terminal_id, key)
        if original is None or original.message_id == request.original_message_id:
            return request
        log.info(
            "reversal %s names %s; the authorisation went through as %s",
            request.idempotency_key,
            request.original_message_id[:12],
            original.message_id[:12],
        )
        return request.model_copy(update={"original_message_id": original.message_id})

    async def _deliver_reversal(
        self, record: ReversalRecord
    ) -> Literal["reversed", "already_reversed", "unknown_original"] | None:
        """Send one reversal to the connector; None when it must be retried later."""
        original = await self.journal.find_authorization(
            record.terminal_id, record.original_message_id
        )
        pan = None
        if original is not None:
            with contextlib.suppress(Exception):
                pan = await self.journal.decrypt_pan(record.terminal_id, original.idempotency_key)
        request = ReversalRequest(
            original_message_id=record.original_message_id,
            idempotency_key=record.idempotency_key,
            reason=record.reason,
            amount=record.amount,
            currency=record.currency,
        )
        try:
            return await self.connector.reverse(
                Reversal(
                    terminal_id=record.terminal_id,
                    merchant_id=record.merchant_id,
                    message_id=record.message_id,
                    request=request,
                    original=None,
                    original_response=None,
                    original_pan=pan,
                    original_stan=original.stan if original else None,
                    original_host_reference=original.host_reference if original else None,
                    original_authorization_code=(original.authorization_code if original else None),
                    original_transaction_type=original.transaction_type if original else None,
                    attempt=record.attempts + 1,
                )
            )
        except ConnectorError as exc:
            self.metrics.connector_errors.labels(type(exc).__name__).inc()
            retry_at = datetime.now(UTC) + timedelta(seconds=self.settings.limits.reversal_retry_s)
            await self.journal.mark_reversal_attempt(record.id, type(exc).__name__, retry_at)
            return None

    async def _queue_bridge_reversal(
        self, terminal: TerminalRecord, envelope: Envelope, request: AuthorizationRequest
    ) -> None:
        reversal = ReversalRequest(
            original_message_id=envelope.message_id,
            idempotency_key=f"bridge-rev:{envelope.message_id}",
            reason="host_timeout",
            amount=request.amount,
            currency=request.currency,
        )
        await self.journal.begin_reversal(
            ReversalEntry(
                terminal_id=terminal.terminal_id,
                merchant_id=terminal.merchant_id,
                idempotency_key=reversal.idempotency_key,
                message_id=self._message_ids(),
                original_message_id=envelope.message_id,
                reason="host_timeout",
                amount=request.amount,
                currency=request.currency,
                request_digest=request_digest(reversal.model_dump_json().encode()),
                origin="bridge",
            )
        )

    def _declined_by_bridge(self, code: str) -> AuthorizationResponse:
        return AuthorizationResponse(
            response_code=code, approved=False, display_text=_DISPLAY[code]
        )

    def _reply(self, terminal: TerminalRecord, request: Envelope, body: Body) -> Outgoing:
        """Seal ``body`` for the terminal under the data_decrypt key of the request's KSN."""
        view = request.model_copy(update={"kind": KIND_OF[type(body)]})
        aead = self.keystore.envelope_aead(terminal.data_bdk_id, view)
        sealed = seal(
            body,
            key=aead,
            alg=request.alg,
            terminal_id=request.terminal_id,
            ksn=request.ksn_bytes,
            message_id=self._message_ids(),
            correlation_id=request.message_id,
            sent_at=self._clock_ms(),
            ttl_ms=self.settings.limits.response_ttl_ms,
            random=self._random,
        )
        return Outgoing(topics.response_topic(request.terminal_id), sealed.to_json())

    # -- background duties ---------------------------------------------------------------

    async def recover(self) -> int:
        """After a crash: authorisations left in flight become reversals (the host may have
        approved them). Returns how many were found."""
        stale = datetime.now(UTC) - timedelta(seconds=self.settings.limits.stale_in_flight_s)
        found = await self.journal.in_flight_authorizations(stale)
        for record in found:
            failed = self._declined_by_bridge(SYSTEM_MALFUNCTION)
            await self.journal.complete_authorization(
                record.terminal_id,
                record.idempotency_key,
                AuthorizationOutcome(
                    state="timed_out", response_payload=b"", response_code=failed.response_code
                ),
            )
            if record.state in ("received", "sent"):
                digest = request_digest(f"bridge-rev:{record.message_id}".encode())
                await self.journal.begin_reversal(
                    ReversalEntry(
                        terminal_id=record.terminal_id,
                        merchant_id=record.merchant_id,
                        idempotency_key=f"bridge-rev:{record.message_id}",
                        message_id=self._message_ids(),
                        original_message_id=record.message_id,
                        reason="terminal_error",
                        amount=record.amount,
                        currency=record.currency,
                        request_digest=digest,
                        origin="bridge",
                    )
                )
        if found:
            log.warning("recovered %d authorisations left in flight", len(found))
        return len(found)

    async def retry_reversals(self) -> int:
        """One pass over the due reversals; returns how many were acknowledged."""
        done = 0
        due = await self.journal.pending_reversals()
        self.metrics.pending_reversals.set(len(due))
        for record in due:
            outcome = await self._deliver_reversal(record)
            if outcome is None:
                continue
            payload = record.response_payload or b""
            await self.journal.complete_reversal(record.id, outcome, payload)
            self.metrics.reversals.labels(outcome).inc()
            done += 1
        return done

    async def reversal_loop(self) -> None:
        while True:
            try:
                await self.retry_reversals()
            except Exception:
                log.exception("reversal retry pass failed; trying again later")
            await asyncio.sleep(self.settings.limits.reversal_retry_s)

    # -- MQTT ----------------------------------------------------------------------------

    def _status(self, state: Literal["online", "offline"]) -> bytes:
        return (
            BridgeStatus(bridge_id=self.settings.bridge_id, state=state).model_dump_json().encode()
        )

    def _client(self) -> aiomqtt.Client:
        broker = self.settings.broker
        v5 = broker.protocol == "5"
        tls_context = None
        if broker.tls is not None:
            tls_context = ssl.create_default_context(cafile=str(broker.tls.ca_file))
            if broker.tls.cert_file is not None:
                tls_context.load_cert_chain(
                    str(broker.tls.cert_file),
                    None if broker.tls.key_file is None else str(broker.tls.key_file),
                )
        password = None
        if broker.password_file is not None:
            password = broker.password_file.read_text(encoding="utf-8").strip()
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 3600
        quiet = logging.getLogger("gateway_bridge.mqtt")
        quiet.setLevel(logging.ERROR)  # aiomqtt warns per publish past 10 pending (DESIGN 9)
        return aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=self.settings.bridge_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else False,
            # paho refuses clean_start on 3.1.1 unless left at its default.
            clean_start=False if v5 else paho_client.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
            username=broker.username,
            password=password,
            keepalive=broker.keepalive_s,
            tls_context=tls_context,
            will=aiomqtt.Will(topics.BRIDGE_STATUS, self._status("offline"), qos=1, retain=True),
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            logger=quiet,
            max_inflight_messages=1000,
        )

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set (or forever), reconnecting to the broker as needed."""
        stop = stop if stop is not None else asyncio.Event()
        broker = self.settings.broker
        subscription = (
            topics.SHARED_REQUEST_SUBSCRIPTION
            if broker.protocol == "5"
            else topics.REQUEST_SUBSCRIPTION
        )
        await self.connector.start()
        await self.recover()
        retry_task = asyncio.create_task(self.reversal_loop(), name="reversal-retry")
        delay = broker.reconnect_min_s
        try:
            while not stop.is_set():
                try:
                    async with self._client() as client:
                        await client.publish(
                            topics.BRIDGE_STATUS, self._status("online"), qos=1, retain=True
                        )
                        await client.subscribe(subscription, qos=1)
                        self.connected.set()
                        delay = broker.reconnect_min_s
                        log.info("bridge %s serving %s", self.settings.bridge_id, subscription)
                        await self._serve(client, stop)
                        await client.publish(
                            topics.BRIDGE_STATUS, self._status("offline"), qos=1, retain=True
                        )
                except aiomqtt.MqttError as exc:
                    self.connected.clear()
                    log.warning("broker connection lost (%s); retrying in %.1f s", exc, delay)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    delay = min(delay * 2, broker.reconnect_max_s)
        finally:
            self.connected.clear()
            retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retry_task
            await self.connector.close()

    async def _serve(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        slots = asyncio.Semaphore(self.settings.limits.max_in_flight)
        tasks: set[asyncio.Task[None]] = set()

        async def process(topic: str, payload: bytes) -> None:
            try:
                self.metrics.in_flight.inc()
                answer = await self.handle(topic, payload)
                if answer is not None:
                    await client.publish(answer.topic, answer.payload, qos=1)
            except aiomqtt.MqttError:
                log.warning("could not publish a response; the terminal will retry")
            except Exception:
                log.exception("request on %s failed", _safe_topic(topic))
            finally:
                self.metrics.in_flight.dec()
                slots.release()

        stopping = asyncio.create_task(stop.wait())
        messages = client.messages.__aiter__()
        try:
            while True:
                next_message = asyncio.ensure_future(messages.__anext__())
                done, _ = await asyncio.wait(
                    {next_message, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                if next_message not in done:
                    next_message.cancel()
                    break
                message = next_message.result()
                payload = message.payload
                if not isinstance(payload, bytes | bytearray):
                    self.metrics.refused.labels("malformed").inc()
                    continue
                await slots.acquire()
                task = asyncio.create_task(process(message.topic.value, bytes(payload)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            stopping.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)


def _safe_topic(topic: str) -> str:
    """A topic for a log line: ours are safe; anything else is cut short."""
    return topic if len(topic) <= 64 and topic.isprintable() else "<unprintable topic>"
