"""MQTT topic names of protocol version 1 (DESIGN section 4, docs/mqtt-protocol.md).

A terminal writes only its own ``req`` and ``status`` and reads only its own ``resp`` and
``config``; bridges share the request subscription. The terminal id is the CN of the
terminal's client certificate, so it may not contain MQTT wildcards or separators.
"""

from __future__ import annotations

import re

from paycore.errors import CodecError

PREFIX = "pos/v1"
TERMINAL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
_TERMINAL_ID = re.compile(TERMINAL_ID_PATTERN)

BRIDGE_STATUS = f"{PREFIX}/bridge/status"
#: What every bridge subscribes to on an MQTT 5 broker: the broker hands each request
#: to one bridge of the group.
SHARED_REQUEST_SUBSCRIPTION = f"$share/bridges/{PREFIX}/t/+/req"
#: The same filter without the share, for MQTT 3.1.1 brokers (a single bridge).
REQUEST_SUBSCRIPTION = f"{PREFIX}/t/+/req"

_TOPIC = re.compile(r"^pos/v1/t/(?P<tid>[^/]+)/(?P<leaf>req|resp|status|config)$")


def check_terminal_id(terminal_id: str) -> str:
    """``terminal_id`` if it is a valid terminal id, else :class:`CodecError`."""
    if not _TERMINAL_ID.fullmatch(terminal_id):
        raise CodecError("invalid terminal id", field="terminal_id")
    return terminal_id


def request_topic(terminal_id: str) -> str:
    return f"{PREFIX}/t/{check_terminal_id(terminal_id)}/req"


def response_topic(terminal_id: str) -> str:
    return f"{PREFIX}/t/{check_terminal_id(terminal_id)}/resp"


def status_topic(terminal_id: str) -> str:
    return f"{PREFIX}/t/{check_terminal_id(terminal_id)}/status"


def config_topic(terminal_id: str) -> str:
    return f"{PREFIX}/t/{check_terminal_id(terminal_id)}/config"


def parse_terminal_topic(topic: str) -> tuple[str, str]:
    """Split ``pos/v1/t/{tid}/{leaf}`` into (terminal id, leaf); CodecError otherwise."""
    match = _TOPIC.fullmatch(topic)
    if match is None:
        raise CodecError("not a terminal topic of protocol v1", field="topic")
    return check_terminal_id(match["tid"]), match["leaf"]
