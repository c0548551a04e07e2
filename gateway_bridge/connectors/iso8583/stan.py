"""Trace numbers and dates of ISO 8583:1987: STAN (DE11), RRN (DE37), DE7, DE12/13, DE90.

STAN policy (docs/iso8583.md):

- Financial and reversal messages carry the *terminal's* STAN (``AuthorizationRequest.stan``,
  1..999999, which the terminal keeps unique per terminal) in DE11, with the terminal id in
  DE41. A reversal advice (0420/0421) and a void (0400) reuse the STAN of the message they
  undo in DE90; the advice's own DE11 is the original's STAN too, as many acquirers require,
  so every field of a reversal can be rebuilt from the journaled original after a restart.
- Network management (0800) has no DE41; its STANs come from the connector's own
  :class:`StanCounter`, rolling 000001..999999 and skipping numbers still in flight.

The RRN is derived, not stored: ``YDDDHHNNNNNN`` (last digit of the year, day of the year,
hour, STAN) from the terminal's own transaction time, so the bridge can name the original
of a reversal even when the connector's memory is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

__all__ = [
    "StanCounter",
    "local_date",
    "local_time",
    "original_data_elements",
    "parse_original_data_elements",
    "rrn",
    "transmission_datetime",
]

MAX_STAN: Final = 999_999


class StanCounter:
    """A rolling STAN source (1..999999) that skips numbers the caller says are in use."""

    def __init__(self, start: int = 1) -> None:
        if not 1 <= start <= MAX_STAN:
            raise ValueError("a STAN is 1 to 999999")
        self._next = start

    def next(self, in_use: Callable[[int], bool] = lambda _stan: False) -> int:
        for _ in range(MAX_STAN):
            stan = self._next
            self._next = stan % MAX_STAN + 1
            if not in_use(stan):
                return stan
        raise RuntimeError("every STAN is in flight")


def transmission_datetime(moment: datetime) -> str:
    """DE7, transmission date and time, ``MMDDhhmmss`` in UTC (naive times are taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%m%d%H%M%S")


def local_time(moment: datetime) -> str:
    """DE12, local transaction time ``hhmmss`` (the terminal's wall clock)."""
    return moment.strftime("%H%M%S")


def local_date(moment: datetime) -> str:
    """DE13, local transaction date ``MMDD``."""
    return moment.strftime("%m%d")


def rrn(terminal_time: datetime, stan: int) -> str:
    """DE37, retrieval reference number ``YDDDHHNNNNNN`` (12 digits)."""
    if not 1 <= stan <= MAX_STAN:
        raise ValueError("a STAN is 1 to 999999")
    day = terminal_time.timetuple().tm_yday
    return f"{terminal_time.year % 10}{day:03d}{terminal_time.hour:02d}{stan:06d}"


def original_data_elements(
    mti: str, stan: int, transmission: str, acquirer_id: str, forwarder_id: str = ""
) -> str:
    """DE90 (n42): original MTI, STAN, DE7, acquiring and forwarding institution (11 each)."""
    return f"{mti:0>4}{stan:06d}{transmission:0>10}{acquirer_id:0>11}{forwarder_id:0>11}"


def parse_original_data_elements(value: str) -> tuple[str, int, str]:
    """(original MTI, STAN, DE7) from DE90; ValueError when it is not 42 digits."""
    if len(value) != 42 or not value.isdigit():
        raise ValueError("DE90 must be 42 digits")
    return value[:4], int(value[4:10]), value[10:20]
