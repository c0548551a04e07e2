"""A bridge under test with everything real: keys made and delivered through the key
store's own paths, a journal, a connector, Mosquitto, and a test terminal over MQTT.

Keys: a key-block protection key is loaded from two components (as key custodians do),
the data and PIN BDKs are created in the store, and the terminal's and the PIN pad's
initial keys leave it as TR-31 blocks which the test terminal unwraps: the terminal
never sees a BDK. The terminal is registered with ``gateway-bridge terminals add``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from gateway_bridge.app import open_bridge
from gateway_bridge.cli import main as bridge_cli
from gateway_bridge.config import BridgeSettings, load_settings
from gateway_bridge.connectors.base import Connector
from gateway_bridge.keystore.base import KeyStore
from gateway_bridge.keystore.software import SoftwareKeyStore, kcv_of
from gateway_bridge.service import Bridge
from hardware.mosquitto import MosquittoService
from paycore import tr31
from paycore.wire import topics
from tests.gateway_bridge.conftest import SoftHsm
from tests.gateway_bridge.terminal_sim import TestTerminal

TERMINAL_ID = "T0001"
DATA_IKID = bytes.fromhex("D47A000100000001")
PIN_IKID = bytes.fromhex("9A11000200000001")


def _private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


@dataclass
class Rig:
    settings: BridgeSettings
    config: Path
    terminal: TestTerminal
    broker: MosquittoService
    #: The initial keys as the terminal and its PIN pad received them (TR-31, unwrapped).
    data_initial_key: bytes = b""
    pin_initial_key: bytes = b""


def make_rig(
    tmp_path: Path,
    broker: MosquittoService,
    *,
    journal_toml: str | None = None,
    connector_toml: str = "",
    limits_toml: str = "",
    softhsm: SoftHsm | None = None,
    zone_pin_key: bytes | None = None,
) -> Rig:
    store: KeyStore
    if softhsm is None:
        kek = secrets.token_bytes(32)
        kek_file = _private(tmp_path / "kek.hex", kek.hex())
        store = SoftwareKeyStore(tmp_path / "keys.json", kek, create=True)
        keystore_toml = (
            f'[keystore]\nkind = "software"\npath = "keys.json"\nkek_file = "{kek_file.name}"\n'
        )
    else:
        from gateway_bridge.keystore.pkcs11 import Pkcs11KeyStore

        pin_file = _private(tmp_path / "token.pin", softhsm.pin)
        store = Pkcs11KeyStore(softhsm.module, softhsm.label, softhsm.pin)
        keystore_toml = (
            f'[keystore]\nkind = "pkcs11"\nmodule = "{softhsm.module}"\n'
            f'token_label = "{softhsm.label}"\npin_file = "{pin_file.name}"\n'
        )
    part1, part2 = secrets.token_bytes(32), secrets.token_bytes(32)
    kbpk = bytes(a ^ b for a, b in zip(part1, part2, strict=True))
    store.import_components(
        "kbpk-1",
        "AES256",
        "kbpk",
        [(part1, kcv_of(part1, "AES256")), (part2, kcv_of(part2, "AES256"))],
    )
    store.create_bdk("data-bdk", "AES128", "data")
    store.create_bdk("pin-bdk", "AES128", "pin")
    _, data_initial = tr31.unwrap(
        kbpk, store.export_initial_key_tr31("data-bdk", DATA_IKID, "kbpk-1")
    )
    _, pin_initial = tr31.unwrap(kbpk, store.export_initial_key_tr31("pin-bdk", PIN_IKID, "kbpk-1"))
    if zone_pin_key is not None:  # the acquirer's zone PIN key, delivered under the KBPK
        header = tr31.KeyBlockHeader(version_id="D", key_usage="P0", algorithm="A", mode_of_use="B")
        block = tr31.wrap(kbpk, header, zone_pin_key, random=secrets.token_bytes)
        store.import_tr31("acquirer-zpk", "pin", "kbpk-1", block)
    close = getattr(store, "close", None)
    if close is not None:
        close()

    out = io.StringIO()
    assert bridge_cli(["journal-keys", str(tmp_path / "journal.keys")], out=out) == 0
    journal = journal_toml or f'[journal]\nkind = "sqlite"\npath = "{tmp_path / "journal.db"}"\n'
    config = tmp_path / "bridge.toml"
    config.write_text(
        f'bridge_id = "bridge-test"\n'
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\nprotocol = "5"\n'
        f"reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n"
        f"{keystore_toml}"
        f"{journal}"
        f'[journal_keys]\nkey_file = "journal.keys"\n'
        f"{connector_toml}{limits_toml}"
    )
    assert (
        bridge_cli(
            [
                "terminals", "add", "--config", str(config), "--id", TERMINAL_ID,
                "--merchant", "M000000000000001", "--data-initial-key-id", DATA_IKID.hex(),
                "--data-bdk", "data-bdk", "--pin-bdk", "pin-bdk",
            ],
            out=out,
        )
        == 0
    )  # fmt: skip
    terminal = TestTerminal(
        TERMINAL_ID,
        data_initial_key=data_initial,
        data_ikid=DATA_IKID,
        pin_initial_key=pin_initial,
        pin_ikid=PIN_IKID,
    )
    return Rig(load_settings(config), config, terminal, broker, data_initial, pin_initial)


@contextlib.asynccontextmanager
async def running_bridge(rig: Rig, connector: Connector | None = None) -> AsyncIterator[Bridge]:
    async with open_bridge(rig.settings, environ={}, connector=connector) as bridge:
        stop = asyncio.Event()
        task = asyncio.create_task(bridge.run(stop))
        try:
            await asyncio.wait_for(bridge.connected.wait(), 10)
            yield bridge
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


class TerminalLink:
    """The test terminal's MQTT side: publish requests, collect what comes back."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    async def publish(self, payload: bytes) -> None:
        await self.client.publish(topics.request_topic(TERMINAL_ID), payload, qos=1)

    async def next(self, timeout: float = 10.0) -> bytes:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def exchange(self, payload: bytes, timeout: float = 10.0) -> bytes:
        await self.publish(payload)
        return await self.next(timeout)


@contextlib.asynccontextmanager
async def terminal_link(rig: Rig, terminal_id: str = TERMINAL_ID) -> AsyncIterator[TerminalLink]:
    async with aiomqtt.Client(
        rig.broker.host,
        rig.broker.port,
        identifier=f"test-{terminal_id}-{secrets.token_hex(3)}",
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    ) as client:
        link = TerminalLink(client)
        await client.subscribe(topics.response_topic(terminal_id), qos=1)

        async def pump() -> None:
            async for message in client.messages:
                if isinstance(message.payload, bytes | bytearray):
                    link.received.put_nowait(bytes(message.payload))

        task = asyncio.create_task(pump())
        try:
            yield link
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
