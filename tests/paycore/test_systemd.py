"""paycore.systemd against a real datagram socket standing in for systemd's."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from paycore.systemd import notify_address, notify_systemd, watchdog_period


def test_addresses_and_periods() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@abstract/name") == "\0abstract/name"
    assert watchdog_period("30000000") == 15.0
    assert [watchdog_period(v) for v in (None, "", "0", "x1")] == [None] * 4


def _receive(sock: socket.socket, count: int) -> list[bytes]:
    sock.settimeout(3)
    return [sock.recv(64) for _ in range(count)]


def test_ready_only_when_ready_then_watchdog_pings(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.setblocking(False)

        async def body() -> list[bytes]:
            ready = asyncio.Event()
            env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "100000"}
            task = asyncio.create_task(notify_systemd(ready, env))
            await asyncio.sleep(0.2)
            try:
                server.recv(64)
            except BlockingIOError:
                pass  # nothing before ready: as it must be
            else:
                raise AssertionError("notified before ready")
            ready.set()
            got = await asyncio.to_thread(_receive, server, 3)
            task.cancel()
            return got

        assert asyncio.run(body()) == [b"READY=1", b"WATCHDOG=1", b"WATCHDOG=1"]


def test_abstract_socket_and_no_socket() -> None:
    name = f"@pos-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(notify_address(name))

        async def body() -> None:
            ready = asyncio.Event()
            ready.set()
            await notify_systemd(ready, {"NOTIFY_SOCKET": name})  # no watchdog: returns
            await notify_systemd(ready, {})  # not under systemd: does nothing

        asyncio.run(body())
        assert _receive(server, 1) == [b"READY=1"]
