"""The emulated card behind the real PC/SC stack: pyscard -> libpcsclite -> pcscd -> vpcd.

Everything here goes through the same pyscard calls the agent's reader adapter makes.
The test card below is deliberately tiny; the EMV card emulator lives in hardware.cards.
"""

from __future__ import annotations

import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smartcard.CardConnection import CardConnection  # type: ignore[import-untyped]
from smartcard.Exceptions import CardConnectionException  # type: ignore[import-untyped]
from smartcard.System import readers  # type: ignore[import-untyped]

from hardware.card_interface import CardRemoved
from hardware.pcsc.fixtures import CardSlot
from hardware.pcsc.pcscd import PcscdService, find_vpcd_driver, render_reader_conf, wait_for_card
from hardware.pcsc.vpcd import TRACE, VpcdCardLink, VpcdLinkError
from hardware.services import free_tcp_port

ATR_T0 = bytes.fromhex("3B00")  # direct convention, no interface bytes: T=0 only
ATR_T1 = bytes.fromhex("3B800181")  # TD1 = 01: T=1 only (TCK = 80 ^ 01)
SW_OK = (0x90, 0x00)


class EchoCard:
    """A test card: INS 01 (case 1), B0 (case 2: Le bytes 00 01 02 ...), D6 (case 3:
    stores the data), 88 (case 4: the data reversed), A4 SELECT; EE pulls the card out."""

    def __init__(self, atr: bytes) -> None:
        self.atr = atr
        self.power_ons = 0
        self.powered = False
        self.stored = b""

    def power_on(self) -> bytes:
        self.power_ons += 1
        self.powered = True
        self.stored = b""
        return self.atr

    def power_off(self) -> None:
        self.powered = False

    def process_apdu(self, command: bytes) -> bytes:
        if len(command) < 4:
            return b"\x67\x00"
        ins, body = command[1], command[4:]
        lc = body[0] if len(body) > 1 else 0
        data = body[1 : 1 + lc] if lc else b""
        le = body[0] if len(body) == 1 else (body[1 + lc] if len(body) == lc + 2 else None)
        if ins == 0xEE:
            raise CardRemoved
        if ins in (0x01, 0xA4):
            return b"\x90\x00"
        if ins == 0xB0 and le is not None:
            return bytes(i % 256 for i in range(le or 256)) + b"\x90\x00"
        if ins == 0xD6 and data:
            self.stored = data
            return b"\x90\x00"
        if ins == 0x88 and data:
            return data[::-1] + b"\x90\x00"
        return b"\x6d\x00"


@contextmanager
def connection_to(reader_name: str) -> Iterator[Any]:
    """A pyscard connection to the card in ``reader_name``, always released."""
    (reader,) = [r for r in readers() if str(r) == reader_name]
    conn = reader.createConnection()
    try:
        conn.connect()
        yield conn
    finally:
        with suppress(CardConnectionException):
            conn.disconnect()
        conn.release()


def test_both_vpcd_readers_are_listed_and_empty(pcscd_vpcd: PcscdService) -> None:
    names = [str(r) for r in readers()]
    assert names == list(pcscd_vpcd.reader_names)
    assert pcscd_vpcd.card_reader == "Virtual PCD 00 00"
    state = wait_for_card(pcscd_vpcd.card_reader, present=False, timeout=1.0)
    assert not state.present
    assert state.atr == b""


@pytest.mark.parametrize(
    ("atr", "protocol"),
    [(ATR_T0, CardConnection.T0_protocol), (ATR_T1, CardConnection.T1_protocol)],
    ids=["T=0", "T=1"],
)
def test_atr_and_apdu_cases_round_trip(vpcd_card: CardSlot, atr: bytes, protocol: int) -> None:
    card = EchoCard(atr)
    link = vpcd_card(card)
    with connection_to(vpcd_card.reader) as conn:
        assert bytes(conn.getATR()) == atr
        assert conn.getProtocol() == protocol  # pcscd picks what the ATR offers
        assert card.powered
        # case 1: no data either way
        assert conn.transmit([0x00, 0x01, 0x00, 0x00]) == ([], *SW_OK)
        # case 2: Le only (Le = 00 means 256)
        assert conn.transmit([0x00, 0xB0, 0x00, 0x00, 0x10]) == (list(range(16)), *SW_OK)
        data, sw1, sw2 = conn.transmit([0x00, 0xB0, 0x00, 0x00, 0x00])
        assert (len(data), sw1, sw2) == (256, *SW_OK)
        assert data == [i % 256 for i in range(256)]
        # case 3: Lc and data
        assert conn.transmit([0x00, 0xD6, 0x00, 0x00, 0x03, 0xA1, 0xB2, 0xC3]) == ([], *SW_OK)
        assert card.stored == bytes([0xA1, 0xB2, 0xC3])
        # case 4: data both ways (vpcd passes bytes through; no T=0 GET RESPONSE here)
        assert conn.transmit([0x80, 0x88, 0x00, 0x00, 0x04, 1, 2, 3, 4, 0x00]) == (
            [4, 3, 2, 1],
            *SW_OK,
        )
        assert conn.transmit([0x00, 0x77, 0x00, 0x00]) == ([], 0x6D, 0x00)
    assert link.apdu_count == 6
    assert link.failure is None


def test_removal_is_a_pcsc_event_and_reinsertion_works(vpcd_card: CardSlot) -> None:
    first = EchoCard(ATR_T0)
    vpcd_card(first)
    with connection_to(vpcd_card.reader) as conn:
        assert conn.transmit([0x00, 0xA4, 0x04, 0x00, 0x02, 0xA0, 0x00]) == ([], *SW_OK)
        vpcd_card.remove()  # waits for SCardGetStatusChange to report the reader empty
        with pytest.raises(CardConnectionException):
            conn.transmit([0x00, 0xA4, 0x04, 0x00, 0x02, 0xA0, 0x00])

    second = EchoCard(ATR_T1)
    vpcd_card(second)
    with connection_to(vpcd_card.reader) as conn:
        assert bytes(conn.getATR()) == ATR_T1
        assert conn.transmit([0x00, 0x88, 0x00, 0x00, 0x02, 5, 6, 0x00]) == ([6, 5], *SW_OK)
    assert second.power_ons >= 2  # on insertion, then pcscd's power-up


def test_card_pulled_by_the_application_mid_exchange(vpcd_card: CardSlot) -> None:
    link = vpcd_card(EchoCard(ATR_T0))
    inserted = wait_for_card(vpcd_card.reader, present=True)
    with connection_to(vpcd_card.reader) as conn:
        with pytest.raises(CardConnectionException):
            conn.transmit([0x00, 0xEE, 0x00, 0x00])
        assert link.wait_removed(2.0)
    assert not link.inserted
    assert link.failure is None
    gone = wait_for_card(vpcd_card.reader, present=False, after_events=inserted.events)
    assert gone.events > inserted.events
    # A new card right away is seen as a new insertion.
    vpcd_card(EchoCard(ATR_T1))
    with connection_to(vpcd_card.reader) as conn:
        assert bytes(conn.getATR()) == ATR_T1


def test_apdu_latency_shows_quickack(vpcd_card: CardSlot) -> None:
    """Without TCP_QUICKACK re-armed before each recv every APDU takes ~44 ms."""
    vpcd_card(EchoCard(ATR_T1))
    with connection_to(vpcd_card.reader) as conn:
        times = []
        for _ in range(50):
            start = time.perf_counter()
            assert conn.transmit([0x00, 0x88, 0x00, 0x00, 0x01, 0x42, 0x00])[1:] == SW_OK
            times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.010


def test_apdus_are_traced_without_their_data(
    vpcd_card: CardSlot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(TRACE, logger="hardware.pcsc.vpcd")
    vpcd_card(EchoCard(ATR_T1))
    with connection_to(vpcd_card.reader) as conn:
        conn.transmit([0x00, 0x88, 0x00, 0x00, 0x03, 0xDE, 0xAD, 0xBE, 0x00])
    traced = [r.getMessage() for r in caplog.records if r.levelno == TRACE]
    assert "C-APDU: 9 bytes, INS 88" in traced
    assert "R-APDU: 5 bytes" in traced
    assert any("get ATR" in m for m in traced)
    assert not any("DEAD" in m.upper().replace(" ", "") for m in traced)


def test_pcsc_scan_child_process_finds_the_reader(pcscd_vpcd: PcscdService) -> None:
    env = {"PATH": os.defpath, **pcscd_vpcd.client_env}
    out = subprocess.run(
        ["pcsc_scan", "-r"], env=env, capture_output=True, text=True, timeout=20, check=True
    ).stdout
    assert pcscd_vpcd.card_reader in out


def test_libpcsclite_reads_the_socket_variable_once_per_process(
    pcscd_vpcd: PcscdService,
) -> None:
    """Why ``pcscd_vpcd`` is session-scoped: changing the variable later has no effect."""
    script = (
        "import os\n"
        "from smartcard import scard\n"
        "def ok():\n"
        "    r, c = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)\n"
        "    if r == scard.SCARD_S_SUCCESS: scard.SCardReleaseContext(c)\n"
        "    return r == scard.SCARD_S_SUCCESS\n"
        "first = ok()\n"
        "os.environ['PCSCLITE_CSOCK_NAME'] = '/nonexistent/pcscd.comm'\n"
        "print(first, ok())\n"
    )
    env = {"PATH": os.defpath, **pcscd_vpcd.client_env}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "True"]
    bogus = {"PATH": os.defpath, "PCSCLITE_CSOCK_NAME": "/nonexistent/pcscd.comm"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=bogus, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


def test_link_closes_cleanly_when_pcscd_stops() -> None:
    card = EchoCard(ATR_T0)
    with PcscdService() as service:
        link = VpcdCardLink(card, service.vpcd_port)
        link.insert()
        deadline = time.monotonic() + 5
        while card.power_ons < 2 and time.monotonic() < deadline:  # pcscd powered it up
            time.sleep(0.02)
        assert card.power_ons >= 2
        assert link.inserted
    assert link.wait_removed(5.0)
    assert link.failure is None
    assert not link.inserted
    with pytest.raises(VpcdLinkError):
        link.insert()  # nothing listens any more


def test_reader_conf_names_the_port_in_hex() -> None:
    text = render_reader_conf("Virtual PCD", 0x8C7B, find_vpcd_driver())
    assert "CHANNELID    0x8C7B\n" in text
    assert "DEVICENAME   /dev/null:0x8C7B\n" in text
    assert "libifdvpcd.so" in text
    with pytest.raises(ValueError, match="port"):
        render_reader_conf("x", 65535, find_vpcd_driver())


# -- the vpcd protocol against a fake vpcd (no pcscd): framing and robustness --------


class FakeVpcd:
    """A listening socket standing in for vpcd: accepts the card, speaks raw frames."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.peer: socket.socket | None = None

    def accept(self) -> socket.socket:
        self.server.settimeout(5)
        self.peer, _ = self.server.accept()
        self.peer.settimeout(5)
        return self.peer

    def close(self) -> None:
        if self.peer is not None:
            self.peer.close()
        self.server.close()


def _frame(payload: bytes) -> bytes:
    return struct.pack(">H", len(payload)) + payload


def _read_frame(sock: socket.socket) -> bytes:
    header = sock.recv(2, socket.MSG_WAITALL)
    (length,) = struct.unpack(">H", header)
    return sock.recv(length, socket.MSG_WAITALL)


def test_vpcd_protocol_controls_and_apdus() -> None:
    fake = FakeVpcd()
    card = EchoCard(ATR_T1)
    link = VpcdCardLink(card, fake.port)
    try:
        link.insert()
        peer = fake.accept()
        peer.sendall(_frame(b"\x04"))
        assert _read_frame(peer) == ATR_T1
        peer.sendall(_frame(b"\x00"))  # power off: no answer
        peer.sendall(_frame(b"\x01"))  # power on: no answer
        # Split header and body across sends, as vpcd 3.3 does.
        apdu = bytes([0x00, 0x88, 0x00, 0x00, 0x02, 7, 8, 0x00])
        peer.sendall(_frame(apdu)[:2])
        time.sleep(0.01)
        peer.sendall(apdu)
        assert _read_frame(peer) == bytes([8, 7, 0x90, 0x00])
        assert card.power_ons == 2
        assert card.powered
        peer.sendall(_frame(b"\x02") + _frame(b"\x04"))  # reset, then the ATR again
        assert _read_frame(peer) == ATR_T1
        assert card.power_ons == 3
    finally:
        link.remove()
        fake.close()
    assert not link.inserted


@settings(max_examples=40)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_from_vpcd_never_break_the_link(garbage: bytes) -> None:
    fake = FakeVpcd()
    link = VpcdCardLink(EchoCard(ATR_T0), fake.port)
    try:
        link.insert()
        peer = fake.accept()
        peer.sendall(garbage)
        peer.shutdown(socket.SHUT_WR)  # vpcd goes away
        assert link.wait_removed(5.0)
        assert link.failure is None
    finally:
        link.remove()
        fake.close()


def test_insert_twice_and_unreachable_vpcd_are_refused() -> None:
    fake = FakeVpcd()
    link = VpcdCardLink(EchoCard(ATR_T0), fake.port)
    try:
        link.insert()
        with pytest.raises(VpcdLinkError, match="already"):
            link.insert()
    finally:
        link.remove()
        fake.close()
    with pytest.raises(VpcdLinkError, match="cannot reach vpcd"):
        VpcdCardLink(EchoCard(ATR_T0), free_tcp_port(), connect_timeout=1).insert()


def test_card_application_bug_is_kept_not_swallowed() -> None:
    class Broken(EchoCard):
        def process_apdu(self, command: bytes) -> bytes:
            raise ZeroDivisionError

    fake = FakeVpcd()
    link = VpcdCardLink(Broken(ATR_T0), fake.port)
    try:
        link.insert()
        peer = fake.accept()
        peer.sendall(_frame(bytes([0x00, 0xA4, 0x00, 0x00])))
        assert peer.recv(2) == b""  # the card went away instead of answering
        assert link.wait_removed(5.0)
        assert isinstance(link.failure, ZeroDivisionError)
    finally:
        link.remove()
        fake.close()
