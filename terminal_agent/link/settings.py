"""Settings of the terminal's MQTT link (STYLE 9): one typed, frozen pydantic model.

Loaded at the edge (the CLI), passed to :class:`~terminal_agent.link.MqttLink`. Tests
shorten the timers here instead of patching constants. Keys are not settings: the
terminal's initial key comes from its provisioned key store.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from paycore.wire.topics import check_terminal_id


class TlsFiles(BaseModel):
    """The broker's CA, and the terminal's client certificate (CN = terminal id) and key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """A verifying client context; with the client certificate when one is configured."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if self.cert_file is not None:
            context.load_cert_chain(
                str(self.cert_file), None if self.key_file is None else str(self.key_file)
            )
        return context


class LinkSettings(BaseModel):
    """Where the broker is and how patient the link is with it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    terminal_id: Annotated[str, AfterValidator(check_terminal_id)]
    """The terminal id: the CN of the client certificate, the ``{tid}`` of the topics."""
    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 8883
    protocol: Literal["5", "3.1.1"] = "5"
    """MQTT version; the application protocol is the same on both (DESIGN 4)."""
    tls: TlsFiles | None = None
    client_id: str | None = None
    """MQTT client identifier; the terminal id when not given."""
    keepalive_s: Annotated[int, Field(ge=1, le=3600)] = 30
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    """How long one connection attempt (and one subscribe) may take."""
    session_expiry_s: Annotated[int, Field(ge=0)] = 600
    """How long the broker keeps the session (and queues responses) while disconnected."""

    request_timeout_s: Annotated[float, Field(gt=0, le=300)] = 15.0
    """Default deadline of a request; also the envelope's expiry (expires_at - sent_at)."""
    max_clock_skew_ms: Annotated[int, Field(ge=0, le=3_600_000)] = 300_000
    """A response sent further than this in the future is refused as expired."""

    reconnect_initial_s: Annotated[float, Field(gt=0)] = 0.2
    reconnect_max_s: Annotated[float, Field(gt=0)] = 10.0
    reconnect_factor: Annotated[float, Field(ge=1)] = 2.0

    software_version: Annotated[str, Field(max_length=32)] = ""
    remembered_ids: Annotated[int, Field(ge=16, le=1_000_000)] = 1024
    """Finished requests' message ids kept to tell a late response from a foreign one."""

    @model_validator(mode="after")
    def _consistent(self) -> LinkSettings:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be at least reconnect_initial_s")
        return self

    @property
    def identifier(self) -> str:
        return self.client_id if self.client_id is not None else self.terminal_id
