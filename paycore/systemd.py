"""systemd's notify protocol for both services (sd_notify(3), systemd.service(5)).

Like :mod:`paycore.compat` and the logging filter in :mod:`paycore.redact`, this is process
plumbing both CLIs share, not a payment primitive; it carries no payment data. With
``Type=notify`` a unit waits for ``READY=1`` before it counts as started, and with
``WatchdogSec=`` systemd restarts a service that stops sending ``WATCHDOG=1``. The pings
come from a task on the service's own event loop, so a loop that hangs stops them.

:func:`notify_systemd` does nothing when ``NOTIFY_SOCKET`` is not set (run by hand, in
tests, in a container without systemd).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify_address(value: str) -> str:
    """``NOTIFY_SOCKET`` as a socket address: ``@name`` is Linux's abstract namespace."""
    return "\0" + value[1:] if value.startswith("@") else value


def watchdog_period(usec: str | None) -> float | None:
    """How often to ping: half of ``WATCHDOG_USEC`` (seconds), None without a watchdog."""
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    return int(usec) / 2_000_000


async def notify_systemd(ready: asyncio.Event, environ: Mapping[str, str]) -> None:
    """Send ``READY=1`` once ``ready`` is set, then ``WATCHDOG=1`` every half period.

    Runs until cancelled. Send errors are logged once and end the task (a service is not
    stopped because its supervisor went away).
    """
    target = environ.get("NOTIFY_SOCKET")
    if not target:
        return
    address = notify_address(target)
    period = watchdog_period(environ.get("WATCHDOG_USEC"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            await ready.wait()
            sock.sendto(b"READY=1", address)
            while period is not None:
                await asyncio.sleep(period)
                sock.sendto(b"WATCHDOG=1", address)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", target, exc)
