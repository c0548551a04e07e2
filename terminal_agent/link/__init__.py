"""The terminal agent's MQTT link to the gateway bridges (DESIGN 4, docs/mqtt-protocol.md).

:class:`MqttLink` keeps the connection (aiomqtt, reconnect loop with backoff, TCP_NODELAY,
TLS with a client certificate when configured), the retained terminal status with its
``offline`` will, a watch on the retained bridge status, and the encrypted
request/response exchange under the terminal's AES DUKPT data key, with counters the
journal has made durable first. Settings are a :class:`LinkSettings`.

Errors::

    LinkError
    ├── LinkTransientError       nothing usable came back; the request may work later
    │   ├── HostTimeout              published (or maybe), no response in time: the only
    │   │                            sign of a denied publish; the host may have approved
    │   └── LinkDown                 no broker connection before the deadline: not published
    └── LinkPermanentError       an answer came and cannot be used
        ├── ResponseRefused          authentic, but expired (or from the future)
        └── BadResponse              authentic, but not an answer to this request's kind

Errors of the counter source (the journal's, e.g. ``CounterExhausted``) and of the
caller's ``on_sealed`` hook propagate unchanged. Nothing logged carries card data: only
message ids (cut short) and reasons.
"""

from __future__ import annotations

from terminal_agent.link.client import CounterSource, LinkStats, MqttLink, Reply
from terminal_agent.link.errors import (
    BadResponse,
    HostTimeout,
    LinkDown,
    LinkError,
    LinkPermanentError,
    LinkTransientError,
    ResponseRefused,
)
from terminal_agent.link.settings import LinkSettings, TlsFiles

__all__ = [
    "BadResponse",
    "CounterSource",
    "HostTimeout",
    "LinkDown",
    "LinkError",
    "LinkPermanentError",
    "LinkSettings",
    "LinkStats",
    "LinkTransientError",
    "MqttLink",
    "Reply",
    "ResponseRefused",
    "TlsFiles",
]
