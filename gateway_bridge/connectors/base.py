"""The acquirer connector interface: where an authorisation leaves the bridge.

A connector takes an authorisation the bridge has opened, checked and journaled, and
returns the host's answer. Two ship with the bridge: the issuer simulator
(:mod:`gateway_bridge.connectors.issuer_sim`) and ISO 8583 over TCP
(:mod:`gateway_bridge.connectors.iso8583`). A new one implements :class:`Connector`
(docs/connectors.md).

Rules every connector keeps:

- ``authorize`` is called at most once per idempotency key (the bridge's journal sees to
  that); a connector that cannot reach its host raises :class:`ConnectorUnavailable`,
  and one that sent the request but got no answer raises :class:`ConnectorTimeout` (the
  bridge then reverses: the host may have approved).
- ``reverse`` is idempotent: the same reversal may arrive many times.
- PIN blocks are handled only through the :class:`PinService` passed in (the key store).
- Nothing is logged with card data; the request's PAN is a :class:`paycore.pan.Pan`.

Exception tree::

    ConnectorError
    ├── ConnectorUnavailable   nothing was sent (no connection, not signed on)
    └── ConnectorTimeout       sent, no answer in time: outcome unknown
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from paycore.pan import Pan
from paycore.wire import (
    AuthorizationRequest,
    AuthorizationResponse,
    EncryptedPinBlock,
    ReversalRequest,
)


class ConnectorError(Exception):
    pass


class ConnectorUnavailable(ConnectorError):
    pass


class ConnectorTimeout(ConnectorError):
    pass


class PinService(Protocol):
    """The key store's PIN operations for one request's PIN block."""

    def verify(
        self, pin_block: EncryptedPinBlock, pan: str, check: Callable[[bytearray], bool]
    ) -> bool: ...

    def translate(
        self, pin_block: EncryptedPinBlock, pan: str, zone_key_id: str, zone_format: Literal[0, 4]
    ) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Authorization:
    """One authorisation as a connector sees it."""

    terminal_id: str
    merchant_id: str
    message_id: str
    request: AuthorizationRequest
    pins: PinService
    #: For a refund or void: the original purchase's request and host reference.
    original: AuthorizationRequest | None = None
    original_host_reference: str | None = None


@dataclass(frozen=True, slots=True)
class Reversal:
    terminal_id: str
    merchant_id: str
    message_id: str
    request: ReversalRequest
    #: The authorisation being reversed and what the host answered, when the bridge knows it.
    original: AuthorizationRequest | None
    original_response: AuthorizationResponse | None
    #: What the bridge's journal kept of the original (it never keeps the whole request):
    #: enough for an acquirer's reversal message (PAN, STAN, RRN, auth code, type).
    original_pan: Pan | None = field(default=None, repr=False)
    original_stan: int | None = None
    original_host_reference: str | None = None
    original_authorization_code: str | None = None
    original_transaction_type: Literal["purchase", "refund", "void"] | None = None
    #: 1 for the first try; the bridge's retry loop counts up (ISO 8583: 0420, then 0421).
    attempt: int = 1


ReversalOutcome = Literal["reversed", "already_reversed", "unknown_original"]


class Connector(Protocol):
    """An acquirer (or issuer) the bridge authorises through."""

    name: str

    async def start(self) -> None:
        """Connect / sign on. Called once before the first request."""
        ...

    async def close(self) -> None: ...

    async def authorize(self, auth: Authorization) -> AuthorizationResponse: ...

    async def reverse(self, reversal: Reversal) -> ReversalOutcome: ...
