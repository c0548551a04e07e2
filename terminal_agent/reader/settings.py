"""Settings of the card reader adapter and its supervisor (house style 9).

Loaded at the edge (the agent's CLI) and passed into :class:`PcscAdapter` and
:class:`ReaderService`; tests shorten the intervals instead of patching constants.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ReaderSettings"]


class ReaderSettings(BaseModel):
    """Which reader to use, and how patiently to wait for it and for pcscd."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reader: str | None = None
    """Use the first reader whose name starts with this (``None``: the first reader)."""
    exclusive: bool = True
    """Connect with ``SCARD_SHARE_EXCLUSIVE``: nobody else can reset the card mid-sale."""
    event_wait: float = Field(default=1.0, gt=0, le=60)
    """Longest single ``SCardGetStatusChange`` wait, in seconds (a slice, not a deadline)."""
    no_reader_poll: float = Field(default=0.5, gt=0, le=60)
    """How often the reader list is looked at again while no reader is connected."""
    backoff_initial: float = Field(default=0.25, gt=0, le=60)
    """First wait before re-establishing the PC/SC context when pcscd is not there."""
    backoff_max: float = Field(default=5.0, gt=0, le=600)
    """The wait doubles after each failed attempt, up to this."""
    removal_grace: float = Field(default=1.0, ge=0, le=10)
    """After an empty answer, how long to wait for PC/SC to show the card gone (pcscd
    polls readers such as vpcd about every 400 ms); empty and still present is a
    protocol error."""
    max_get_response: int = Field(default=64, ge=1, le=1024)
    """Most GET RESPONSE commands sent for one command (64 x 256 bytes is plenty)."""

    @model_validator(mode="after")
    def _backoff_grows(self) -> ReaderSettings:
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must not be below backoff_initial")
        return self
