"""The acquirer host simulator: an asyncio TCP server speaking the connector's ISO 8583.

It decodes what :class:`gateway_bridge.connectors.iso8583.Iso8583Connector` sends, in the
same dialect and framing, and fronts an issuer (any object implementing
:class:`gateway_bridge.connectors.base.Connector`, normally the issuer simulator):

- 0800 sign-on (DE70 001), sign-off (002), echo (301) -> 0810 ``00``;
- 0100/0200 -> an :class:`Authorization` for the issuer (PIN block under the zone key,
  :class:`.pins.ZonePinService`) -> 0110/0210 with DE38, DE39 and DE55 (91, 71/72);
- 0400 void -> the issuer's void of the original named by DE90 -> 0410;
- 0420/0421 reversal advice -> the issuer's reversal -> 0430 (``00`` reversed, ``94``
  already reversed, ``25`` original unknown);
- 0500 reconciliation request -> 0510 with DE66 ``1`` (in balance) or ``2`` (out of
  balance) against its own :attr:`AcquirerSimulator.tally` of what it approved, voided
  and reversed for that terminal and currency, and its totals (the tally starts over);
  an 0500 that does not parse answers DE66 ``3``, DE39 ``30``.

Malformed requests answer ``30`` (format error); an issuer that cannot answer, ``91``.
Originals are remembered per terminal id and STAN (in memory) so that voids and reversals
can name them to the issuer.

:class:`Faults` switches, for tests: delay answers, drop the connection instead of
answering, leave reversal advices unanswered, answer with a wrong STAN, refuse sign-on,
leave echoes unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway_bridge.acquirer_sim.pins import ZonePinService
from gateway_bridge.connectors.base import (
    Authorization,
    Connector,
    ConnectorError,
    Reversal,
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
from gateway_bridge.connectors.iso8583.errors import (
    FramingError,
    Iso8583Error,
    MessageDecodeError,
)
from gateway_bridge.connectors.iso8583.framing import (
    Frame,
    FrameDecoder,
    Framing,
    HeaderKind,
    reply_tpdu,
)
from gateway_bridge.connectors.iso8583.reconciliation import (
    AcquirerTally,
    ReconciliationTotals,
    parse_reconciliation_request,
    reconciliation_response_fields,
)
from gateway_bridge.connectors.iso8583.stan import parse_original_data_elements
from paycore.currency import by_numeric
from paycore.errors import CodecError
from paycore.wire import AuthorizationRequest, AuthorizationResponse, ReversalRequest

__all__ = ["AcquirerSimSettings", "AcquirerSimulator", "Faults"]

log = logging.getLogger(__name__)

Reason = Literal["host_timeout", "card_declined", "card_removed", "cancelled", "terminal_error"]
#: DE39 of a reversal advice -> the reason given to the issuer (see messages.REVERSAL_REASONS).
_REASONS: Final[Mapping[str, Reason]] = {"68": "host_timeout", "17": "cancelled"}


class AcquirerSimSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    host: str = "127.0.0.1"
    #: 0 picks a free port (read it from :attr:`AcquirerSimulator.port`).
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    dialect: DialectName = "binary"
    header: HeaderKind = "2byte"
    #: Whether frames carry a 5-byte TPDU (replies swap its addresses).
    tpdu: bool = False
    max_frame: Annotated[int, Field(ge=64, le=9999)] = 8192
    pin_zone_format: Literal[0, 4] = 0


@dataclass(slots=True)
class Faults:
    """Test switches; counters count down as they fire."""

    #: Seconds to wait before answering an 0100/0200/0400.
    delay: float = 0.0
    #: Close the connection instead of answering the next N 0100/0200/0400.
    drop_next: int = 0
    #: Leave the next N 0420/0421 unanswered.
    ignore_reversals: int = 0
    #: Answer the next N 0100/0200/0400 with DE11 changed.
    wrong_stan: int = 0
    #: Leave the next N echo tests unanswered.
    ignore_echoes: int = 0
    #: Answer sign-on with DE39 91.
    refuse_sign_on: bool = False


@dataclass(frozen=True, slots=True)
class _Original:
    message_id: str
    request: AuthorizationRequest
    response: AuthorizationResponse


class AcquirerSimulator:
    """The acquirer host (see the module docstring). ``zone_key`` is the shared ZPK."""

    def __init__(
        self,
        settings: AcquirerSimSettings,
        issuer: Connector,
        zone_key: bytes,
        *,
        faults: Faults | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.issuer = issuer
        self.faults = faults or Faults()
        self.pins = ZonePinService(zone_key, settings.pin_zone_format)
        self._dialect = dialect(settings.dialect, settings.pin_zone_format)
        self._framing = Framing(settings.header, settings.tpdu, settings.max_frame)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # message handlers
        self._serving: set[asyncio.Task[None]] = set()  # one per connection
        self._originals: dict[tuple[str, int], _Original] = {}
        #: Every message received, decoded (in memory only; for tests to inspect).
        self.received: deque[Fields] = deque(maxlen=1000)
        self.connections_accepted = 0
        #: What it approved, voided and reversed since the last 0500 (per DE41, currency).
        self.tally = AcquirerTally()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the simulator is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.settings.host, self.settings.port
        )
        log.info("acquirer simulator listening on %s:%d", self.settings.host, self.port)

    async def close(self) -> None:
        """Stop listening, close every connection and stop the handlers."""
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Connection tasks end by themselves once their transport is closed (cancelling
        # them would make asyncio's stream callback log the CancelledError).
        if self._serving:
            await asyncio.wait(list(self._serving), timeout=2.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def drop_connections(self) -> None:
        """Close every client connection now (the connector sees the link drop)."""
        for writer in list(self._connections):
            writer.close()

    # -- connections -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections_accepted += 1
        self._connections.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
        decoder = FrameDecoder(self._framing, lambda data: measure(self._dialect.spec, data))
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except (ConnectionError, OSError):
                    break
                if not data:
                    break
                try:
                    frames = decoder.feed(data)
                except FramingError as exc:
                    log.warning("client stream lost its framing (%s); closing", exc)
                    break
                for frame in frames:
                    handler = asyncio.get_running_loop().create_task(self._handle(frame, writer))
                    self._tasks.add(handler)
                    handler.add_done_callback(self._tasks.discard)
        finally:
            self._connections.discard(writer)
            writer.close()
            if task is not None:
                self._serving.discard(task)

    def _send(self, writer: asyncio.StreamWriter, frame: Frame, fields: Fields) -> None:
        if writer.is_closing():
            return
        tpdu = reply_tpdu(frame.tpdu) if frame.tpdu is not None else None
        try:
            writer.write(self._framing.encode(encode_message(self._dialect.spec, fields), tpdu))
        except Iso8583Error as exc:
            log.warning("cannot encode the %s answer (%s)", fields.get("t"), exc)

    async def _handle(self, frame: Frame, writer: asyncio.StreamWriter) -> None:
        try:
            fields = decode_message(self._dialect.spec, frame.message)
        except Iso8583Error as exc:
            log.warning("undecodable message ignored (%s)", exc)
            return
        self.received.append(fields)
        mti = fields.get("t", "")
        if mti == "0800":
            answer = self._network(fields)
        elif mti in ("0100", "0200", "0400"):
            answer = await self._financial(fields, writer)
        elif mti in ("0420", "0421"):
            answer = await self._reversal(fields)
        elif mti == "0500":
            answer = self._reconcile(fields)
        else:
            log.warning("unsupported %s ignored", mti)
            return
        if answer is not None:
            self._send(writer, frame, answer)

    # -- message handlers ------------------------------------------------------------------------

    def _network(self, fields: Fields) -> Fields | None:
        code = fields.get("70", "")
        if code == "301" and self.faults.ignore_echoes > 0:
            self.faults.ignore_echoes -= 1
            return None
        refused = code == "001" and self.faults.refuse_sign_on
        answer: Fields = {k: fields[k] for k in ("7", "11", "70") if k in fields}
        answer.update({"t": "0810", "39": "91" if refused else "00"})
        return answer

    def _format_error(self, fields: Fields) -> Fields:
        answer: Fields = {k: fields[k] for k in messages.ECHOED if k in fields}
        answer.update({"t": messages.response_mti(fields["t"]), "39": "30"})
        return answer

    async def _financial(self, fields: Fields, writer: asyncio.StreamWriter) -> Fields | None:
        faults = self.faults
        if faults.delay:
            await asyncio.sleep(faults.delay)
        if faults.drop_next > 0:
            faults.drop_next -= 1
            log.info("fault: dropping the connection instead of answering %s", fields["t"])
            writer.close()
            return None
        try:
            answer = await self._authorise(fields)
        except Iso8583Error as exc:
            log.info("%s refused as a format error (%s)", fields["t"], exc)
            answer = self._format_error(fields)
        if faults.wrong_stan > 0 and "11" in answer:
            faults.wrong_stan -= 1
            answer["11"] = f"{int(answer['11']) % 999_999 + 1:06d}"
        return answer

    def _lookup_original(self, fields: Fields) -> _Original | None:
        try:
            _, stan, _ = parse_original_data_elements(fields.get("90", ""))
        except ValueError:
            return None
        return self._originals.get((fields.get("41", ""), stan))

    async def _authorise(self, fields: Fields) -> Fields:
        mti = fields["t"]
        now = self._clock()
        original: _Original | None = None
        if mti == "0400":
            original = self._lookup_original(fields)
            if original is None:
                answer = self._format_error(fields)
                answer["39"] = "25"
                return answer
            kind: Literal["purchase", "refund", "void"] = "void"
        else:
            code = fields.get("3", "")
            if code[:2] not in ("00", "20"):
                raise MessageDecodeError("processing code not supported", field="3")
            kind = "refund" if code[:2] == "20" else "purchase"
        request = messages.authorization_request_from_fields(
            fields,
            zone_format=self.settings.pin_zone_format,
            now=now,
            transaction_type=kind,
            original_message_id=original.message_id if original else None,
        )
        auth = Authorization(
            terminal_id=fields["41"].strip(),
            merchant_id=fields.get("42", "").strip(),
            message_id=secrets.token_hex(16),
            request=request,
            pins=self.pins,
            original=original.request if original else None,
            original_host_reference=original.response.host_reference if original else None,
        )
        try:
            response = await self.issuer.authorize(auth)
        except ConnectorError as exc:
            log.warning("issuer did not answer %s (%s)", mti, type(exc).__name__)
            response = AuthorizationResponse(response_code="91", approved=False)
        if mti != "0400":
            self._originals[(fields["41"], request.stan)] = _Original(
                auth.message_id, request, response
            )
        if response.approved:
            self.tally.approved(fields["41"].strip(), fields.get("49", ""), kind, request.amount)
        return messages.authorization_response_fields(fields, response)

    async def _reversal(self, fields: Fields) -> Fields | None:
        if self.faults.ignore_reversals > 0:
            self.faults.ignore_reversals -= 1
            log.info("fault: leaving %s STAN %s unanswered", fields["t"], fields.get("11"))
            return None
        answer: Fields = {k: fields[k] for k in messages.ECHOED if k in fields}
        answer["t"] = "0430"
        original = self._lookup_original(fields)
        if original is None:
            answer["39"] = messages.OUTCOME_CODES["unknown_original"]
            return answer
        try:
            currency = by_numeric(fields.get("49", "")).alpha
            reversal = Reversal(
                terminal_id=fields["41"].strip(),
                merchant_id=fields.get("42", "").strip(),
                message_id=secrets.token_hex(16),
                request=ReversalRequest(
                    original_message_id=original.message_id,
                    idempotency_key=f"rev:{original.message_id}",
                    reason=_REASONS.get(fields.get("39", ""), "terminal_error"),
                    amount=int(fields.get("4", "0")),
                    currency=currency,
                ),
                original=original.request,
                original_response=original.response,
            )
        except (ValueError, CodecError):
            answer["39"] = "30"
            return answer
        try:
            outcome = await self.issuer.reverse(reversal)
        except ConnectorError as exc:
            log.warning("issuer did not take the reversal (%s)", type(exc).__name__)
            answer["39"] = "91"
            return answer
        answer["39"] = messages.OUTCOME_CODES[outcome]
        if outcome == "reversed" and original.response.approved:
            self.tally.reversed(
                fields["41"].strip(),
                fields.get("49", ""),
                original.request.transaction_type,
                original.request.amount,
            )
        return answer

    def _reconcile(self, fields: Fields) -> Fields:
        try:
            request = parse_reconciliation_request(fields)
        except Iso8583Error as exc:
            log.info("0500 refused as a format error (%s)", exc)
            answer = reconciliation_response_fields(fields, ReconciliationTotals(), "3")
            answer["39"] = "30"
            return answer
        own = self.tally.take(request.terminal_id, request.currency_numeric)
        in_balance = own == request.totals
        log.info("0500 for terminal %s: in balance %s", request.terminal_id, in_balance)
        return reconciliation_response_fields(fields, own, "1" if in_balance else "2")
