"""pos-hw, run the way a developer runs it: as its own process, against real pcscd and ptys."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware.cards import catalogue, load_profile
from hardware.cli import TEST_PIN_BDK, main
from hardware.pcsc.pcscd import PcscdService, wait_for_card
from paycore import dukpt, pinblock
from paycore.pinpad import GetPinRequest, GetPinResponse, PinBlockFormat
from tests.hardware.pinpad_client import PinpadClient

PROBE = """
import sys
from smartcard.System import readers
(reader,) = [r for r in readers() if str(r) == sys.argv[1]]
conn = reader.createConnection()
conn.connect()
data, sw1, sw2 = conn.transmit(list(bytes.fromhex("00A404000E325041592E5359532E444446303100")))
print(f"{sw1:02X}{sw2:02X}", bytes(conn.getATR()).hex().upper())
conn.disconnect()
"""


def pos_hw(*args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hardware.cli", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def read_until(proc: subprocess.Popen[str], marker: str) -> list[str]:
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(
        f"{marker!r} never printed; stderr: {proc.stderr.read() if proc.stderr else ''}"
    )


def test_cards_lists_the_catalogue_with_masked_pans() -> None:
    out = io.StringIO()
    assert main(["cards"], out=out) == 0
    text = out.getvalue()
    for name in catalogue():
        assert name in text
        for app in load_profile(name).applications:
            assert app.pan.digits not in text
            assert app.pan.digits[:6] in text and app.pan.digits[-4:] in text


def test_unknown_card_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["card", "no_such_card", "--port", "1"]) == 2
    assert "no_such_card" in capsys.readouterr().err


def test_card_goes_into_a_running_pcscd_and_leaves_on_ctrl_c(
    pcscd_vpcd: PcscdService, processes: list[subprocess.Popen[str]]
) -> None:
    proc = pos_hw("card", "visa_debit", "--port", str(pcscd_vpcd.vpcd_port))
    processes.append(proc)
    read_until(proc, "inserted")
    state = wait_for_card(pcscd_vpcd.card_reader, present=True, timeout=5.0)
    assert state.atr == load_card_atr()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert not wait_for_card(pcscd_vpcd.card_reader, present=False, timeout=5.0).present


def load_card_atr() -> bytes:
    from hardware.cards import EmvCard

    return EmvCard(load_profile("visa_debit")).power_on()


def test_pinpad_serves_a_pty_and_its_pin_block_deciphers_with_the_test_bdk(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    proc = pos_hw("pinpad", "--pin", "2468", "--link", str(tmp_path / "pos-pinpad"))
    processes.append(proc)
    lines = read_until(proc, "scripted PIN")
    port = lines[0].split()[3]
    assert Path(port).exists() and (tmp_path / "pos-pinpad").resolve() == Path(port).resolve()
    pan = "4761739001010010"
    client = PinpadClient(str(tmp_path / "pos-pinpad"))
    try:
        request = GetPinRequest(
            1000, 978, pan, PinBlockFormat.ISO4_AES_DUKPT, 1, 3000, 4, 12, False
        )
        answer = client.call(request, timeout=5.0)
    finally:
        client.close()
    assert isinstance(answer, GetPinResponse)
    initial_key = dukpt.aes_initial_key(TEST_PIN_BDK, answer.ksn[:8])
    assert pinblock.decipher_format4_dukpt(initial_key, answer.ksn, answer.pin_block, pan) == "2468"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_up_starts_pcscd_a_card_slot_and_a_pad(processes: list[subprocess.Popen[str]]) -> None:
    proc = pos_hw("up", "--card", "mastercard_credit", stdin=subprocess.PIPE)
    processes.append(proc)
    lines = read_until(proc, "commands:")
    env = dict(os.environ)
    for line in lines:
        if line.strip().startswith("export "):
            key, value = line.strip()[len("export ") :].split("=", 1)
            env[key] = value
    reader = next(line.split(": ", 1)[1] for line in lines if "reader:" in line)
    assert "PCSCLITE_CSOCK_NAME" in env
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, reader], env=env, capture_output=True, text=True, timeout=30
    )
    assert probe.returncode == 0, probe.stderr
    sw, atr = probe.stdout.split()
    assert sw == "9000"
    assert bytes.fromhex(atr) == load_card_atr()

    assert proc.stdin is not None
    proc.stdin.write("remove\nstatus\nbogus\nquit\n")
    proc.stdin.flush()
    rest = read_until(proc, "stopped")
    assert "card removed" in rest
    assert any("empty" in line for line in rest)
    assert any("unknown command" in line for line in rest)
    assert proc.wait(timeout=10) == 0
