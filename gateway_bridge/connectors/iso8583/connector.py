"""The ISO 8583 acquirer connector: an asyncio TCP client implementing ``Connector``.

Life of a link (docs/iso8583.md):

1. connect (``connect_timeout``), TCP_NODELAY;
2. sign on: 0800 with DE70 ``001``; a 0810 with DE39 ``00`` makes the link ready;
3. every ``echo_interval`` seconds an echo test (0800, DE70 ``301``); an unanswered echo
   drops the link;
4. on any loss: requests in flight fail with :class:`ConnectorTimeout` (they were sent,
   the outcome is unknown), new requests fail with :class:`ConnectorUnavailable` (nothing
   is sent), and the connector reconnects after ``reconnect_initial`` seconds, doubling up
   to ``reconnect_max`` while the host stays away.

Messages:

- purchase: ``purchase_mti`` (0200 by default: a single-message system carries online-PIN
  purchases as financial transactions; 0100 for a dual-message acquirer), processing code
  000000; refund: ``refund_mti`` (0200 by default), processing code 200000;
- void: an 0400 reversal request of the original purchase (DE90 and the original's RRN);
  its 0410 answers as an authorisation response (``00`` = voided);
- :meth:`Iso8583Connector.reverse`: a reversal advice, 0420 the first time, 0421 (repeat)
  after that, from the attempt number the bridge's journal keeps (``Reversal.attempt``)
  or this process's own count, whichever is higher. The journal, not the connector,
  keeps retrying until an 0430 arrives;
- :meth:`Iso8583Connector.reconcile`: an 0500 reconciliation request with the bridge's
  totals for one terminal and currency, answered 0510 with DE66 (:mod:`.reconciliation`).

Matching: a response belongs to the request in flight with the same MTI class (``01``,
``02``, ``04``, ``08``), STAN (DE11) and terminal id (DE41); anything else (late answers
after a timeout, a wrong STAN) is logged by MTI, STAN and terminal id, and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway_bridge.connectors.base import (
    Authorization,
    ConnectorTimeout,
    ConnectorUnavailable,
    Reversal,
    ReversalOutcome,
)
from gateway_bridge.connectors.iso8583 import messages
from gateway_bridge.connectors.iso8583.dialects import (
    DialectName,
    Fields,
    decode_message,
    dialect,
    encode_message,
    measure,
)
from gateway_bridge.connectors.iso8583.errors import FramingError, Iso8583Error
from gateway_bridge.connectors.iso8583.framing import Frame, FrameDecoder, Framing, HeaderKind
from gateway_bridge.connectors.iso8583.reconciliation import (
    ReconciliationResult,
    ReconciliationTotals,
    build_reconciliation_request,
    parse_reconciliation_response,
)
from gateway_bridge.connectors.iso8583.stan import (
    StanCounter,
    original_data_elements,
    rrn,
    transmission_datetime,
)
from paycore.currency import by_alpha
from paycore.wire import AuthorizationRequest, AuthorizationResponse

__all__ = ["Iso8583Connector", "Iso8583Settings"]

log = logging.getLogger(__name__)

SIGN_ON: Final = "001"
SIGN_OFF: Final = "002"
ECHO: Final = "301"
_REMEMBERED: Final = 10_000

Seconds = Annotated[float, Field(gt=0)]


class Iso8583Settings(BaseModel):
    """The connector's settings (one typed object; the bridge's config embeds it)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)]
    dialect: DialectName = "binary"
    header: HeaderKind = "2byte"
    #: TPDU sent with every message (10 hex digits, e.g. ``"6000010000"``); None = no TPDU.
    tpdu: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{10}$")] | None = None
    max_frame: Annotated[int, Field(ge=64, le=9999)] = 8192
    purchase_mti: Literal["0100", "0200"] = "0200"
    refund_mti: Literal["0100", "0200"] = "0200"
    #: DE32; empty leaves the element out.
    acquirer_id: Annotated[str, Field(pattern=r"^[0-9]{0,11}$")] = ""
    #: Bridge terminal id -> DE41 where the acquirer's id differs (or the bridge's is > 8).
    terminal_ids: dict[str, str] = Field(default_factory=dict)
    #: Bridge merchant id -> DE42 where they differ.
    merchant_ids: dict[str, str] = Field(default_factory=dict)
    pin_zone_key_id: str = "acquirer-zpk"
    pin_zone_format: Literal[0, 4] = 0
    pin_entry_capability: Literal["0", "1", "2"] = "1"
    connect_timeout: Seconds = 5.0
    request_timeout: Seconds = 30.0
    #: Seconds between echo tests on an idle link; 0 turns them off.
    echo_interval: Annotated[float, Field(ge=0)] = 60.0
    reconnect_initial: Seconds = 0.5
    reconnect_max: Seconds = 30.0
    #: How long :meth:`Iso8583Connector.start` waits for the first sign-on.
    start_wait: Annotated[float, Field(ge=0)] = 5.0


MatchKey = tuple[str, str, str]


@dataclass(slots=True)
class _Link:
    writer: asyncio.StreamWriter
    pending: dict[MatchKey, asyncio.Future[Fields]] = field(default_factory=dict)
    lost: bool = False


@dataclass(frozen=True, slots=True)
class _Sent:
    """What the connector sent for an original, to name it in a later 0400/0420."""

    mti: str
    stan: int
    transmission: str
    rrn: str


def _key(fields: Mapping[str, str]) -> MatchKey:
    return (messages.mti_class(fields.get("t", "")), fields.get("11", ""), fields.get("41", ""))


class Iso8583Connector:
    """ISO 8583 over TCP to an acquirer host (see the module docstring)."""

    name = "iso8583"

    def __init__(
        self, settings: Iso8583Settings, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.settings = settings
        self._dialect = dialect(settings.dialect, settings.pin_zone_format)
        self._framing = Framing(settings.header, settings.tpdu is not None, settings.max_frame)
        self._tpdu = bytes.fromhex(settings.tpdu) if settings.tpdu else None
        self._clock = clock or (lambda: datetime.now(UTC))
        self._network_stan = StanCounter()
        self._link: _Link | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sent: OrderedDict[str, _Sent] = OrderedDict()
        self._reversal_tries: OrderedDict[str, int] = OrderedDict()
        self.connects = 0  #: links signed on so far (for metrics and tests)

    # -- Connector ---------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True while a link is signed on."""
        return self._ready.is_set()

    async def start(self) -> None:
        """Start the link supervisor; wait up to ``start_wait`` seconds for the first sign-on.

        Returns either way: while the host is away requests raise ConnectorUnavailable and
        the supervisor keeps reconnecting.
        """
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._supervise())
        await self.wait_ready(self.settings.start_wait)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a signed-on link; True if there is one."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self._ready.is_set()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def authorize(self, auth: Authorization) -> AuthorizationResponse:
        """Send the 0100/0200 (or the 0400 of a void) and map its answer."""
        link = self._require_link()
        request = auth.request
        identity = self._identity(auth.terminal_id, auth.merchant_id)
        now = self._clock()
        if request.transaction_type == "void":
            fields = self._void_fields(auth, identity, now)
        else:
            mti = (
                self.settings.refund_mti
                if request.transaction_type == "refund"
                else self.settings.purchase_mti
            )
            pin_hex = None
            if request.pin_block is not None:
                pin_hex = (
                    auth.pins.translate(
                        request.pin_block,
                        request.pan.digits,
                        self.settings.pin_zone_key_id,
                        self.settings.pin_zone_format,
                    )
                    .hex()
                    .upper()
                )
            fields = messages.build_financial_request(
                mti=mti,
                request=request,
                identity=identity,
                transmission=transmission_datetime(now),
                pin_block_hex=pin_hex,
                pin_entry_capability=self.settings.pin_entry_capability,
                rrn=rrn(request.terminal_time, request.stan),
            )
        self._remember(auth.message_id, fields)
        answer = await self._exchange(link, fields)
        try:
            return messages.parse_authorization_response(answer)
        except Iso8583Error as exc:
            log.warning(
                "unusable %s answer for STAN %s terminal %s (%s): outcome unknown",
                answer.get("t"),
                fields["11"],
                identity.terminal_id.strip(),
                exc,
            )
            raise ConnectorTimeout("the host's answer is not usable; outcome unknown") from None

    async def reverse(self, reversal: Reversal) -> ReversalOutcome:
        """Send a reversal advice (0420, then 0421 for repeats) for the original.

        The original is named by what the bridge's journal kept of it (PAN, type, STAN,
        host reference; the bridge never keeps the whole request) or, within this
        process, by what this connector remembers sending. ``unknown_original`` without
        sending when neither is known (it was never journaled, so it was never sent).
        """
        original = reversal.original
        pan = original.pan if original is not None else reversal.original_pan
        kind = (
            original.transaction_type
            if original is not None
            else reversal.original_transaction_type
        )
        stan = original.stan if original is not None else reversal.original_stan
        if pan is None or kind is None or stan is None:
            return "unknown_original"
        link = self._require_link()
        original_id = reversal.request.original_message_id
        identity = self._identity(reversal.terminal_id, reversal.merchant_id)
        tries = max(self._reversal_tries.pop(original_id, 0), reversal.attempt - 1)
        self._reversal_tries[original_id] = tries + 1
        while len(self._reversal_tries) > _REMEMBERED:
            self._reversal_tries.popitem(last=False)
        mti = "0420" if tries == 0 else "0421"
        now = self._clock()
        sent = self._sent.get(original_id)
        if sent is None:
            sent = (
                self._original(original_id, original, reversal.original_response)
                if original is not None
                else _Sent(
                    self.settings.refund_mti if kind == "refund" else self.settings.purchase_mti,
                    stan,
                    transmission_datetime(now),
                    reversal.original_host_reference or "",
                )
            )
        fields: Fields = {
            "t": mti,
            "2": pan.digits,
            "3": messages.processing_code(kind),
            "4": f"{reversal.request.amount:012d}",
            "7": transmission_datetime(now),
            "11": f"{sent.stan:06d}",
            "12": (original.terminal_time if original is not None else now).strftime("%H%M%S"),
            "13": (original.terminal_time if original is not None else now).strftime("%m%d"),
            "22": f"05{self.settings.pin_entry_capability}",
            "25": "00",
            "39": messages.REVERSAL_REASONS[reversal.request.reason],
            "41": identity.terminal_id,
            "42": identity.merchant_id,
            "49": by_alpha(reversal.request.currency).numeric,
            "90": original_data_elements(
                sent.mti, sent.stan, sent.transmission, identity.acquirer_id
            ),
        }
        if original is not None:
            fields["14"] = original.expiry
        if sent.rrn:
            fields["37"] = sent.rrn
        code = (
            reversal.original_response.authorization_code
            if reversal.original_response is not None
            else reversal.original_authorization_code
        )
        if code:
            fields["38"] = code
        if identity.acquirer_id:
            fields["32"] = identity.acquirer_id
        answer = await self._exchange(link, fields)
        outcome = messages.reversal_outcome(answer)
        if outcome is None:
            log.warning(
                "0430 for STAN %s terminal %s not an acknowledgement (DE39 %s)",
                fields["11"],
                identity.terminal_id.strip(),
                answer.get("39"),
            )
            raise ConnectorTimeout("reversal not acknowledged; retry")
        return outcome

    async def reconcile(
        self,
        terminal_id: str,
        merchant_id: str,
        currency: str,
        totals: ReconciliationTotals,
    ) -> ReconciliationResult:
        """Send an 0500 with the bridge's totals for one terminal and currency; the 0510's
        settlement code (DE66) and the acquirer's own totals (:mod:`.reconciliation`)."""
        link = self._require_link()
        identity = self._identity(terminal_id, merchant_id)
        now = self._clock()
        stan = self._network_stan.next(
            lambda n: ("05", f"{n:06d}", identity.terminal_id) in link.pending
        )
        fields = build_reconciliation_request(
            terminal_id=identity.terminal_id,
            merchant_id=identity.merchant_id,
            currency_numeric=by_alpha(currency).numeric,
            totals=totals,
            stan=stan,
            transmission=transmission_datetime(now),
            settlement_date=now.strftime("%m%d"),
        )
        answer = await self._exchange(link, fields)
        try:
            return parse_reconciliation_response(answer)
        except Iso8583Error as exc:
            raise ConnectorUnavailable(f"unusable 0510: {exc}") from None

    # -- message building helpers ------------------------------------------------------------

    def _identity(self, terminal_id: str, merchant_id: str) -> messages.Identity:
        tid = self.settings.terminal_ids.get(terminal_id, terminal_id)
        mid = self.settings.merchant_ids.get(merchant_id, merchant_id)
        try:
            return messages.Identity(tid, mid, self.settings.acquirer_id)
        except ValueError as exc:
            raise ConnectorUnavailable(f"no acquirer identity for this terminal: {exc}") from None

    def _remember(self, message_id: str, fields: Mapping[str, str]) -> None:
        self._sent[message_id] = _Sent(fields["t"], int(fields["11"]), fields["7"], fields["37"])
        while len(self._sent) > _REMEMBERED:
            self._sent.popitem(last=False)

    def _original(
        self,
        message_id: str,
        request: AuthorizationRequest,
        response: AuthorizationResponse | None,
    ) -> _Sent:
        """How the original was sent: remembered, or rebuilt from the journaled request."""
        known = self._sent.get(message_id)
        if known is not None:
            return known
        mti = (
            self.settings.refund_mti
            if request.transaction_type == "refund"
            else self.settings.purchase_mti
        )
        reference = response.host_reference if response and response.host_reference else None
        return _Sent(
            mti,
            request.stan,
            transmission_datetime(request.terminal_time),
            reference or rrn(request.terminal_time, request.stan),
        )

    def _void_fields(
        self, auth: Authorization, identity: messages.Identity, now: datetime
    ) -> Fields:
        original = auth.original
        original_id = auth.request.original_message_id
        if original is None or original_id is None:
            raise ConnectorUnavailable("a void needs the original purchase; nothing sent")
        request = auth.request
        sent = self._original(original_id, original, None)
        reference = auth.original_host_reference or sent.rrn
        fields: Fields = {
            "t": "0400",
            "2": original.pan.digits,
            "3": messages.processing_code(original.transaction_type),
            "4": f"{original.amount:012d}",
            "7": transmission_datetime(now),
            "11": f"{request.stan:06d}",
            "12": request.terminal_time.strftime("%H%M%S"),
            "13": request.terminal_time.strftime("%m%d"),
            "14": original.expiry,
            "22": f"05{self.settings.pin_entry_capability}",
            "25": "00",
            "37": reference,
            "41": identity.terminal_id,
            "42": identity.merchant_id,
            "49": by_alpha(original.currency).numeric,
            "90": original_data_elements(
                sent.mti, sent.stan, sent.transmission, identity.acquirer_id
            ),
        }
        if identity.acquirer_id:
            fields["32"] = identity.acquirer_id
        return fields

    # -- the link ----------------------------------------------------------------------------

    def _require_link(self) -> _Link:
        link = self._link
        if link is None or link.lost or not self._ready.is_set():
            raise ConnectorUnavailable("acquirer link is not signed on")
        return link

    async def _exchange(self, link: _Link, fields: Fields) -> Fields:
        """Send ``fields`` on ``link`` and wait for the matching response."""
        key = _key(fields)
        if key in link.pending:
            raise ConnectorUnavailable("a request with this STAN is in flight for this terminal")
        try:
            frame = self._framing.encode(encode_message(self._dialect.spec, fields), self._tpdu)
        except Iso8583Error as exc:
            raise ConnectorUnavailable(f"request cannot be encoded: {exc}") from None
        if link.lost:
            raise ConnectorUnavailable("acquirer link is down")
        future: asyncio.Future[Fields] = asyncio.get_running_loop().create_future()
        link.pending[key] = future
        try:
            link.writer.write(frame)
            await link.writer.drain()
            return await asyncio.wait_for(future, self.settings.request_timeout)
        except TimeoutError:
            log.warning(
                "no answer to %s STAN %s terminal %s within %.1f s",
                fields["t"],
                key[1],
                key[2].strip(),
                self.settings.request_timeout,
            )
            raise ConnectorTimeout("no answer in time; outcome unknown") from None
        except (ConnectionError, OSError):
            raise ConnectorTimeout("connection lost while sending; outcome unknown") from None
        finally:
            if link.pending.get(key) is future:
                del link.pending[key]

    async def _supervise(self) -> None:
        backoff = self.settings.reconnect_initial
        while True:
            signed_on = False
            try:
                signed_on = await self._run_link()
            except (OSError, TimeoutError) as exc:
                log.warning(
                    "acquirer %s:%s unreachable: %s",
                    self.settings.host,
                    self.settings.port,
                    type(exc).__name__,
                )
            except Exception as exc:  # noqa: BLE001 - the supervisor outlives any one link
                log.error("acquirer link failed unexpectedly: %s", type(exc).__name__)
            if signed_on:
                backoff = self.settings.reconnect_initial
            log.info("reconnecting to the acquirer in %.2f s", backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.reconnect_max)

    async def _run_link(self) -> bool:
        """Connect, sign on and keep one link; returns when it is lost (True if it signed on)."""
        settings = self.settings
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(settings.host, settings.port), settings.connect_timeout
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(writer)
        reading = asyncio.get_running_loop().create_task(self._read(reader, link))
        signed_on = False
        try:
            answer = await self._network(link, SIGN_ON)
            if answer.get("39") != "00":
                log.warning("sign-on refused (DE39 %s)", answer.get("39"))
                return False
            signed_on = True
            self.connects += 1
            self._link = link
            self._ready.set()
            log.info("signed on to the acquirer %s:%s", settings.host, settings.port)
            await self._keep_alive(link, reading)
            return True
        except (ConnectorTimeout, ConnectorUnavailable) as exc:
            log.warning("acquirer link failed: %s", exc)
            return signed_on
        finally:
            self._ready.clear()
            if self._link is link:
                self._link = None
            self._drop(link, writer)
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading

    async def _keep_alive(self, link: _Link, reading: asyncio.Task[None]) -> None:
        interval = self.settings.echo_interval or None
        while True:
            done, _ = await asyncio.wait({reading}, timeout=interval)
            if done or link.lost:
                log.warning("acquirer closed the link")
                return
            await self._network(link, ECHO)

    async def _network(self, link: _Link, code: str) -> Fields:
        stan = self._network_stan.next(lambda n: ("08", f"{n:06d}", "") in link.pending)
        fields: Fields = {
            "t": "0800",
            "7": transmission_datetime(self._clock()),
            "11": f"{stan:06d}",
            "70": code,
        }
        return await self._exchange(link, fields)

    def _drop(self, link: _Link, writer: asyncio.StreamWriter) -> None:
        link.lost = True
        writer.close()
        for future in link.pending.values():
            if not future.done():
                future.set_exception(
                    ConnectorTimeout("connection lost with the request in flight; outcome unknown")
                )
        link.pending.clear()

    async def _read(self, reader: asyncio.StreamReader, link: _Link) -> None:
        decoder = FrameDecoder(self._framing, lambda data: measure(self._dialect.spec, data))
        while True:
            try:
                data = await reader.read(65536)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                break
            try:
                frames = decoder.feed(data)
            except FramingError as exc:
                log.warning("acquirer stream lost its framing (%s); dropping the link", exc)
                break
            for frame in frames:
                self._on_frame(link, frame)
        self._drop(link, link.writer)

    def _on_frame(self, link: _Link, frame: Frame) -> None:
        try:
            fields = decode_message(self._dialect.spec, frame.message)
        except Iso8583Error as exc:
            log.warning("undecodable message from the acquirer ignored (%s)", exc)
            return
        mti = fields.get("t", "")
        if len(mti) == 4 and mti[2] in "13":
            key = _key(fields)
            future = link.pending.get(key)
            if future is None or future.done():
                log.warning(
                    "unmatched %s ignored: STAN %s terminal %s", mti, key[1], key[2].strip()
                )
                return
            future.set_result(fields)
            return
        if mti == "0800":
            self._answer_network(link, fields)
            return
        log.warning("unexpected %s from the acquirer ignored", mti)

    def _answer_network(self, link: _Link, fields: Fields) -> None:
        """Answer the host's own 0800 (echo, sign-on) with an 0810 ``00``."""
        answer: Fields = {k: fields[k] for k in ("7", "11", "70") if k in fields}
        answer.update({"t": "0810", "39": "00"})
        try:
            message = encode_message(self._dialect.spec, answer)
            link.writer.write(self._framing.encode(message, self._tpdu))
        except Iso8583Error as exc:
            log.warning("cannot answer the host's 0800 (%s)", exc)
