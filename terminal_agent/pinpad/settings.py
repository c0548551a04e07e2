"""Settings of the PIN pad driver (STYLE 9): one typed, frozen pydantic model.

The link timers default to docs/pinpad-protocol.md section 3.4; the port to the udev name
``/dev/pos-pinpad`` (udev/ gives a real pad that stable name; the emulator keeps a symlink
the same way). Tests pass shorter timings here instead of patching constants.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from paycore.pinpad import LinkTimings


class PinpadSettings(BaseModel):
    """Where the pad is and how patient the driver is with it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    port: str = "/dev/pos-pinpad"
    """Serial device path; a stable symlink is reopened after every unplug."""
    baudrate: Annotated[int, Field(gt=0)] = 115200
    """Line rate (8N1, no flow control); a USB CDC-ACM pad ignores it."""

    inter_byte_s: Annotated[float, Field(gt=0, le=5)] = 0.05
    """A partial frame with no new byte for this long is damaged and NAKed."""
    ack_timeout_s: Annotated[float, Field(gt=0, le=30)] = 0.25
    """A request not ACKed within this time is retransmitted."""
    max_retries: Annotated[int, Field(ge=0, le=20)] = 3
    """Retransmissions after the first attempt before a command fails (PinpadTimeout)."""
    response_timeout_s: Annotated[float, Field(gt=0, le=300)] = 2.0
    """From a request's ACK to its response; GET PIN adds its own ``timeout_ms``."""

    reconnect_initial_s: Annotated[float, Field(gt=0)] = 0.1
    """First wait before reopening the port after it closed or failed to open."""
    reconnect_max_s: Annotated[float, Field(gt=0)] = 5.0
    """Longest wait between reopen attempts."""
    reconnect_factor: Annotated[float, Field(ge=1)] = 2.0
    """Each failed reopen multiplies the wait by this, up to ``reconnect_max_s``."""

    subscriber_queue: Annotated[int, Field(ge=1, le=10_000)] = 64
    """Events and state changes held per subscriber; the oldest is dropped beyond it."""

    @model_validator(mode="after")
    def _consistent(self) -> PinpadSettings:
        if self.ack_timeout_s <= self.inter_byte_s:
            # Section 3.4: the peer must have time to NAK a damaged frame first.
            raise ValueError("ack_timeout_s must exceed inter_byte_s")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be at least reconnect_initial_s")
        return self

    @property
    def timings(self) -> LinkTimings:
        """The link timers as the shared codec's :class:`~paycore.pinpad.LinkTimings`."""
        return LinkTimings(
            inter_byte=self.inter_byte_s,
            ack_timeout=self.ack_timeout_s,
            max_retries=self.max_retries,
            response_timeout=self.response_timeout_s,
        )
