"""terminal-agent as a technician runs it: its own process, a config file, real devices."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway_bridge.connectors.issuer_sim import IssuerSimulator
from gateway_bridge.connectors.issuer_sim.accounts import repo_catalogue_dir
from hardware.cards import EmvCard, load_profile
from hardware.mosquitto import MosquittoService
from hardware.pcsc.pcscd import PcscdService
from hardware.pcsc.slot import CardSlot
from hardware.pinpad import AesDukptKey, EmulatedPinpad, PinScript
from paycore import tr31
from paycore.pan import Pan
from terminal_agent.cli import main as agent_cli
from terminal_agent.cli import minor_units
from tests.gateway_bridge.rig import DATA_IKID, PIN_IKID, TERMINAL_ID, Rig, make_rig, running_bridge

PAN = Pan("4761739001010010")


def _private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


@pytest.fixture
def rig(tmp_path: Path, mosquitto_broker: MosquittoService) -> Rig:
    (tmp_path / "bridge").mkdir()
    return make_rig(tmp_path / "bridge", mosquitto_broker)


@pytest.fixture
def pad(rig: Rig, tmp_path: Path) -> Iterator[EmulatedPinpad]:
    emulated = EmulatedPinpad(
        kbpk=secrets.token_bytes(32),
        slots={1: AesDukptKey(rig.pin_initial_key, PIN_IKID)},
        link_path=tmp_path / "pos-pinpad",
    )
    emulated.start()
    yield emulated
    emulated.stop()


def agent_config(
    rig: Rig, pcscd: PcscdService, pad: EmulatedPinpad, folder: Path, *, receipts: bool = False
) -> Path:
    """What provisioning leaves on a terminal: the config, the TR-31 key, the secrets."""
    kbpk = secrets.token_bytes(32)
    header = tr31.KeyBlockHeader(
        version_id="D", key_usage="B1", algorithm="A", mode_of_use="X",
        optional_blocks=(("IK", DATA_IKID.hex().upper()),),
    )  # fmt: skip
    (folder / "data-key.tr31").write_text(
        tr31.wrap(kbpk, header, rig.data_initial_key, random=secrets.token_bytes)
    )
    _private(folder / "kbpk.hex", kbpk.hex())
    _private(folder / "journal.key", secrets.token_hex(32))
    config = folder / "agent.toml"
    config.write_text(
        f'terminal_id = "{TERMINAL_ID}"\ncurrency = "GBP"\n'
        f'[broker]\nhost = "{rig.broker.host}"\nport = {rig.broker.port}\n'
        f'[keys]\ndata_key_block_file = "data-key.tr31"\nkbpk_file = "kbpk.hex"\n'
        f'[reader]\nreader = "{pcscd.card_reader}"\n'
        f'[pinpad]\nport = "{pad.link_path}"\n'
        f'[journal]\npath = "journal.db"\nkey_file = "journal.key"\n'
        f"[timeouts]\ncard_s = 10\npin_s = 5\nhost_s = 5\n"
    )
    if receipts:
        with config.open("a") as handle:
            handle.write(
                '[receipts]\nname = "Corner Shop"\naddress = ["1 High Street", "Leeds"]\n'
                f'merchant_id = "M0001"\nterminal_id = "{TERMINAL_ID}"\n'
                '[printer]\npath = "receipts.txt"\nkind = "file"\nwidth = 32\n'
            )
    return config


async def agent(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "terminal_agent.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_pay_then_void_last_from_the_command_line(
    rig: Rig, pcscd_vpcd: PcscdService, vpcd_card: CardSlot, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    catalogue = repo_catalogue_dir()
    assert catalogue is not None
    sim = IssuerSimulator.from_paths([catalogue])
    before = sim.snapshot(PAN).balance
    config = agent_config(rig, pcscd_vpcd, pad, tmp_path, receipts=True)
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(PinScript.entered("1234"))

    async def body() -> None:
        async with running_bridge(rig, sim):
            code, out, err = await agent("pay", "12.50", "--config", str(config))
            assert code == 0, out + err
            assert "[enter_pin]" in out and "[approved] APPROVED" in out
            assert sim.snapshot(PAN).balance == before - 1250
            code, out, err = await agent("pay", "--void-last", "--config", str(config))
            assert code == 0, out + err
            assert "VOIDED" in out
        for text in (out, err):
            assert PAN.digits not in text

    asyncio.run(body())
    assert sim.snapshot(PAN).balance == before
    printed = (tmp_path / "receipts.txt").read_bytes()
    assert printed.startswith(b"\x1b@")  # ESC @: the printer is initialised per receipt
    assert printed.count(b"MERCHANT COPY") == 2 and printed.count(b"CUSTOMER COPY") == 2
    assert b"APPROVED" in printed and b"VOID" in printed and b"Corner Shop" in printed
    assert PAN.digits.encode() not in printed and b"476173" in printed  # merchant copy 6+4
    listing = io.StringIO()
    assert agent_cli(["journal", "--config", str(config)], out=listing) == 0
    lines = listing.getvalue().splitlines()
    assert len(lines) == 2 and all(PAN.digits not in line for line in lines)
    assert "476173******0010" in lines[1] and "completed" in lines[1]


@pytest.mark.parametrize(
    ("text", "minor"), [("12.50", 1250), ("0.01", 1), ("7", 700), ("999999999.99", 99999999999)]
)
def test_amounts_in_major_units(text: str, minor: int) -> None:
    assert minor_units(text, "GBP") == minor


@pytest.mark.parametrize("text", ["-1", "0", "1.234", "abc", "1e3x", "NaN", "10000000000"])
def test_bad_amounts_are_usage_errors(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('terminal_id = "T1"\n[keys]\ndata_key_block_file = "k"\nkbpk_file = "p"\n')
    assert agent_cli(["pay", text, "--config", str(config)]) in (2,)
    assert "terminal-agent:" in capsys.readouterr().err
