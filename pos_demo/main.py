"""``pos-demo``: a full shift on one machine, every part real except the hardware.

It starts, in one process tree: an embedded MQTT broker (amqtt, MQTT 3.1.1, TLS with
the terminal CA's server certificate) unless ``--broker HOST:PORT`` names a running one
(used without TLS); a gateway bridge with a SQLite journal and the issuer simulator;
keys made with ``gateway-bridge keys`` (BDKs in the software key store, the PIN pads'
key-block protection key entered as custodian components); the terminal CA and the
enrolment service; an emulated PIN pad on a pseudo-terminal; an emulated card behind
pcscd + vpcd when they are installed (else answered in-process, as it says). The
terminal is provisioned exactly as a technician does it (docs/provisioning.md): a
one-time code from ``gateway-bridge terminals enrol-code``, then ``terminal-agent
provision``'s steps: its certificate and its data key (TR-31 under an ECDH-agreed key),
the PIN pad's key loaded through the pad's load-key command with its KCV checked. Then
the terminal agent runs. Then it runs the script: an approved purchase with online PIN, a
decline for insufficient funds, a wrong PIN, a refund, and the end-of-day batch close,
printing what the cashier screen and the PIN pad showed. Everything it started is
stopped at the end; its files live in a temporary folder that is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Protocol, TextIO

from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr

from gateway_bridge.app import open_bridge
from gateway_bridge.cli import main as bridge_cli
from gateway_bridge.config import BridgeSettings
from gateway_bridge.config import load_settings as load_bridge_settings
from gateway_bridge.fleet.ca import TerminalCA, new_ec_key
from gateway_bridge.fleet.terminals import enrolment_server
from gateway_bridge.keystore.cli import main as keys_cli
from gateway_bridge.keystore.software import kcv_of
from hardware.cards import EmvCard, catalogue, load_profile
from hardware.pinpad import EmulatedPinpad, PinScript
from paycore.compat import silence_legacy_tdes_warnings
from paycore.currency import by_alpha
from pos_demo.inprocess import InProcessSlot
from terminal_agent.app import Agent, open_agent
from terminal_agent.cashier import CashierFeed, create_cashier_app
from terminal_agent.config import EcrSettings
from terminal_agent.config import load_settings as load_agent_settings
from terminal_agent.display import Display, FanOut, PadDisplay, Prompt
from terminal_agent.journal.model import Batch
from terminal_agent.provision import ProvisionOptions, provision
from terminal_agent.receipts import MerchantSettings, receipt_for
from terminal_agent.receipts.render import render_text
from terminal_agent.transaction import PaymentResult

TERMINAL_ID = "DEMO0001"


class Slot(Protocol):
    """Where the demo inserts cards: hardware.pcsc.slot.CardSlot or InProcessSlot."""

    def __call__(self, card: EmvCard) -> object: ...

    def remove(self) -> None: ...


class Transcript:
    """The cashier screen and the PIN pad, as lines of text."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    async def show(self, prompt: Prompt) -> None:
        extra = f"  [{' | '.join(prompt.lines)}]" if prompt.lines else ""
        self.out.write(f"      screen: {prompt.text}{extra}\n")
        pad = PadDisplay.SHOWN.get(prompt.kind) or (
            "ENTER PIN" if prompt.kind == "enter_pin" else None
        )
        if pad:
            self.out.write(f"      PIN pad: {pad}\n")
        self.out.flush()


def _private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keys(work: Path, *argv: str, stdin: str | None = None) -> str:
    """Run ``gateway-bridge keys`` as the key custodian would, and return what it printed."""
    out = io.StringIO()
    store = ["--store", str(work / "keys.json"), "--kek-file", str(work / "kek.hex")]
    with contextlib.redirect_stdout(out):
        code = keys_cli([argv[0], *store, *argv[1:]], environ={}, stdin=io.StringIO(stdin or ""))
    if code != 0:
        raise SystemExit(f"pos-demo: gateway-bridge keys {argv[0]} failed")
    return out.getvalue()


def make_keys(work: Path, say: TextIO) -> bytes:
    """BDKs, and the PIN pads' KBPK from two custodian components (the value the key
    injection facility put into the pads). Returns that KBPK, for the emulated pad."""
    _private(work / "kek.hex", secrets.token_hex(32))
    _keys(work, "create", "--id", "data-bdk", "--algorithm", "AES128", "--purpose", "data")
    _keys(work, "create", "--id", "pin-bdk", "--algorithm", "AES128", "--purpose", "pin")
    parts = [secrets.token_bytes(32), secrets.token_bytes(32)]
    lines = "".join(f"{p.hex()} {kcv_of(p, 'AES256')}\n" for p in parts)
    _keys(work, "import-components", "--id", "pinpad-kbpk", "--algorithm", "AES256",
          "--purpose", "kbpk", stdin=lines)  # fmt: skip
    listing = _keys(work, "list").strip().splitlines()[1:]
    for line in listing:
        key_id, algorithm, purpose, kcv = line.split()[:4]
        say.write(f"      {key_id:<14} {algorithm:<7} {purpose:<5} KCV {kcv}\n")
    return bytes(a ^ b for a, b in zip(*parts, strict=True))


def make_ca(work: Path, say: TextIO) -> None:
    """The terminal CA with the certificates the demo's servers use (docs/broker.md)."""
    now = datetime.now(UTC)
    ca = TerminalCA.create(work / "ca", passphrase=None, now=now)
    keys = {name: new_ec_key() for name in ("server", "bridge", "signer")}
    issued = {
        "server": ca.issue_server(
            keys["server"].public_key(), ["localhost"], [ip_address("127.0.0.1")], now=now
        ),
        "bridge": ca.issue_client("bridge", keys["bridge"].public_key(), "demo-bridge", now=now),
        "signer": ca.issue_enrolment(keys["signer"].public_key(), "demo-enrolment", now=now),
    }
    for name, key in keys.items():
        (work / f"{name}-cert.pem").write_bytes(issued[name].pem)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _private(work / f"{name}-key.pem", pem.decode())
    say.write("      terminal CA: broker and enrolment server certificates, enrolment signer\n")


@contextlib.asynccontextmanager
async def embedded_broker(port: int, work: Path) -> AsyncIterator[None]:
    """amqtt on TLS with the CA's server certificate; client certificates are verified
    against the CA when presented (amqtt has no per-terminal ACL: Mosquitto does that)."""
    from amqtt.broker import Broker  # type: ignore[import-untyped]

    listener = {
        "type": "tcp",
        "bind": f"127.0.0.1:{port}",
        "ssl": True,
        "certfile": str(work / "server-cert.pem"),
        "keyfile": str(work / "server-key.pem"),
        "cafile": str(work / "ca" / "ca-bundle.pem"),
    }
    broker = Broker(
        {
            "listeners": {"default": listener},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    try:
        yield
    finally:
        await broker.shutdown()


@contextlib.contextmanager
def card_slot(use_pcsc: bool, say: TextIO) -> Iterator[tuple[Slot, str | None]]:
    """(slot, PC/SC reader name or None for the in-process slot)."""
    if use_pcsc:
        from hardware.pcsc.pcscd import PcscdService
        from hardware.pcsc.slot import CardSlot

        with PcscdService() as pcscd:
            # This process is the terminal's PC/SC client; the demo is the edge.
            os.environ.update(pcscd.client_env)  # noqa: TID251
            say.write(f"      cards: behind pcscd + vpcd, reader {pcscd.card_reader!r}\n")
            slot = CardSlot(pcscd)
            try:
                yield slot, pcscd.card_reader
            finally:
                slot.remove()
        return
    say.write("      cards: answered in-process (no PC/SC: pcscd and vpcd not used)\n")
    yield InProcessSlot(), None


def _pcsc_available() -> bool:
    if shutil.which("pcscd") is None or os.geteuid() != 0:
        return False
    try:
        from hardware.pcsc.pcscd import find_vpcd_driver

        find_vpcd_driver()
    except Exception:  # noqa: BLE001 - any failure means: not usable here
        return False
    return True


async def _interactive(
    agent: Agent, slot: Slot, pad: EmulatedPinpad, feed: CashierFeed, work: Path, say: TextIO
) -> None:
    """Leave everything running with the cashier page on localhost; cards come from here."""
    import uvicorn

    token = secrets.token_urlsafe(24)
    ecr = EcrSettings(host="127.0.0.1", port=_free_port(), token_file=work / "ecr.token")
    app = create_cashier_app(agent.terminal, ecr, feed, token=SecretStr(token), pinpad=agent.pinpad)
    server = uvicorn.Server(
        uvicorn.Config(app, host=ecr.host, port=ecr.port, access_log=False, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    say.write(f"7/7  cashier page: http://{ecr.host}:{ecr.port}/cashier\n")
    say.write(f"     cards: {' '.join(catalogue())}\n")
    say.write("     commands: insert NAME, remove, pin DIGITS, cancel, quit\n")
    say.flush()
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            words = line.split()
            if not line or words[:1] == ["quit"]:
                break
            if not words:
                continue
            verb, rest = words[0], words[1:]
            if verb == "insert" and rest and rest[0] in catalogue():
                await asyncio.to_thread(slot, EmvCard(load_profile(rest[0])))
                say.write(f"     card {rest[0]} inserted\n")
            elif verb == "remove":
                await asyncio.to_thread(slot.remove)
                say.write("     card removed\n")
            elif verb == "pin" and rest and rest[0].isdigit():
                pad.queue_pin(PinScript.entered(rest[0]))
                say.write("     the cardholder will type that PIN at the next PIN entry\n")
            elif verb == "cancel":
                pad.queue_pin(PinScript.cancelled())
                say.write("     the cardholder will press CANCEL at the next PIN entry\n")
            else:
                say.write("     commands: insert NAME, remove, pin DIGITS, cancel, quit\n")
            say.flush()
    finally:
        feed.close()
        server.should_exit = True
        await serving


def prepare(work: Path, host: str, port: int, tls: bool, say: TextIO) -> tuple[bytes, str, str]:
    """Keys, the CA, the bridge's configuration, the terminal's registration and its
    enrolment code (the operator's part, before anything runs). Returns (the pads' KBPK,
    the code, the CA pin)."""
    say.write("1/7  keys: BDKs in the bridge's key store, the PIN pads' KBPK from components\n")
    pad_kbpk = make_keys(work, say)
    make_ca(work, say)
    assert bridge_cli(["journal-keys", str(work / "journal.keys")], out=io.StringIO()) == 0
    broker_tls = (
        '[broker.tls]\nca_file = "ca/ca-bundle.pem"\ncert_file = "bridge-cert.pem"\n'
        'key_file = "bridge-key.pem"\n'
        if tls
        else ""
    )
    (work / "bridge.toml").write_text(
        f'bridge_id = "demo-bridge"\n[broker]\nhost = "{host}"\nport = {port}\n'
        f'protocol = "3.1.1"\n{broker_tls}'
        f'[keystore]\npath = "keys.json"\nkek_file = "kek.hex"\n'
        f'[journal]\npath = "journal.db"\n[journal_keys]\nkey_file = "journal.keys"\n'
        f'[enrolment]\nhost = "127.0.0.1"\nport = {_free_port()}\nca_dir = "ca"\n'
        'tls_cert_file = "server-cert.pem"\ntls_key_file = "server-key.pem"\n'
        'signer_cert_file = "signer-cert.pem"\nsigner_key_file = "signer-key.pem"\n'
        f'broker_host = "{host}"\nbroker_port = {port}\n'
        'pinpad_kbpk_ids = ["pinpad-kbpk"]\naudit_log = "enrolment-audit.jsonl"\n'
    )
    config = str(work / "bridge.toml")
    registered = bridge_cli(
        ["terminals", "add", "--config", config, "--id", TERMINAL_ID, "--merchant", "DEMO-SHOP",
         "--data-bdk", "data-bdk", "--pin-bdk", "pin-bdk"], out=io.StringIO(),
    )  # fmt: skip
    issued = io.StringIO()
    coded = bridge_cli(
        ["terminals", "enrol-code", "--config", config, "--id", TERMINAL_ID, "--by", "demo"],
        out=issued,
        environ={},
    )
    if registered != 0 or coded != 0:
        raise SystemExit("pos-demo: could not register the demo terminal")
    words = issued.getvalue().split()
    code, pin = words[words.index("code") + 3], words[words.index("--ca-pin") + 1]
    say.write(f"      terminal {TERMINAL_ID} registered; one-time enrolment code issued\n")
    return pad_kbpk, code, pin


async def run_demo(
    args: argparse.Namespace, work: Path, host: str, port: int,
    prepared: tuple[bytes, str, str], out: TextIO,
) -> int:  # fmt: skip
    say = out
    broker = embedded_broker(port, work) if not args.broker else contextlib.nullcontext()
    where = "embedded amqtt (MQTT 3.1.1, TLS)" if not args.broker else "given (no TLS)"
    say.write(f"2/7  broker: {where} on {host}:{port}\n")
    async with broker:
        bridge_settings = load_bridge_settings(work / "bridge.toml")
        say.write("3/7  gateway bridge: SQLite journal, issuer simulator, enrolment service\n")
        async with (
            open_bridge(bridge_settings, environ={}) as bridge,
            enrolment_server(bridge_settings, environ={}),
        ):
            stop = asyncio.Event()
            bridge_task = asyncio.create_task(bridge.run(stop))
            await asyncio.wait_for(bridge.connected.wait(), 15)
            try:
                return await _shop(args, work, prepared, bridge_settings, bridge, out)
            finally:
                stop.set()
                await asyncio.wait_for(bridge_task, 15)


async def _provision(
    work: Path, prepared: tuple[bytes, str, str], url: str, pad: EmulatedPinpad,
    reader: str | None, say: TextIO,
) -> Path:  # fmt: skip
    """``terminal-agent provision``'s steps, as the technician runs them."""
    _, code, pin = prepared
    terminal = work / "terminal"
    options = ProvisionOptions(
        url=url,
        terminal_id=TERMINAL_ID,
        code=code,
        ca_pin=pin,
        technician="demo",
        config_dir=terminal / "etc",
        state_dir=terminal / "var",
        pinpad_port=str(pad.link_path),
        reader=reader,
        udev_dir=None,
        systemd_dir=None,
        self_test=False,
        extra_config="\n[timeouts]\ncard_s = 15\npin_s = 15\nhost_s = 10\n",
    )
    lines = io.StringIO()
    status = await provision(options, lines)
    for line in lines.getvalue().splitlines():
        say.write(f"      {line}\n")
    if status != 0:
        raise SystemExit("pos-demo: provisioning failed (above)")
    return terminal / "etc" / "agent.toml"


async def _shop(
    args: argparse.Namespace,
    work: Path,
    prepared: tuple[bytes, str, str],
    bridge_settings: BridgeSettings,
    bridge: object,
    out: TextIO,
) -> int:
    say = out
    pad = EmulatedPinpad(kbpk=prepared[0], link_path=work / "pos-pinpad")
    pad.start()
    say.write(f"4/7  PIN pad: emulated on {pad.port} (stable link {pad.link_path})\n")
    try:
        use_pcsc = _pcsc_available() and not args.in_process_cards
        with card_slot(use_pcsc, say) as (slot, reader_name):
            enrol = bridge_settings.enrolment
            assert enrol is not None
            say.write(f"5/7  provisioning {TERMINAL_ID} with its one-time code:\n")
            config = await _provision(
                work, prepared, f"https://127.0.0.1:{enrol.port}", pad, reader_name, say
            )
            provisioned = load_agent_settings(config)
            # The embedded broker speaks MQTT 3.1.1; a broker given on the command line is
            # used without TLS (a development setup).
            section = provisioned.broker.model_copy(
                update={"protocol": "3.1.1"} | ({"tls": None} if args.broker else {})
            )
            settings = provisioned.model_copy(update={"broker": section})
            feed = CashierFeed() if args.interactive else None
            display: Display = Transcript(out) if feed is None else FanOut([Transcript(out), feed])
            async with open_agent(settings, display) as agent:
                say.write("6/7  terminal agent: reader, PIN pad driver, MQTT link, journal\n")
                if reader_name is None:
                    agent.terminal.reader = slot  # type: ignore[assignment]
                await agent.link.wait_connected(15)
                await agent.pinpad.wait_connected(15)
                if args.interactive and feed is not None:
                    await _interactive(agent, slot, pad, feed, work, say)
                    return 0
                say.write("7/7  the shift:\n")
                failures = await _script(agent, slot, pad, say)
                say.write("  - end of day: the terminal closes its batch; the bridge closes\n")
                say.write("    its own and reconciles both with the issuer's ledger\n")
                batch = await agent.terminal.close_batch()
                failures += _show_batch(batch, say)
    finally:
        await asyncio.to_thread(pad.stop)  # the pad's own loop runs in its own thread
    return 0 if not failures else 1


def _show_batch(batch: Batch, say: TextIO) -> int:
    """Print the terminal's batch and the host's verdict; 1 unless all three agree."""
    for line in batch.completed_lines:
        money = by_alpha(line.currency).format(line.amount)
        say.write(f"      terminal  {line.transaction_type:<9} {line.count:>3}  {money:>12}\n")
    host = batch.host
    if host is None or not host.settled:
        reason = "never sent" if host is None else host.reason
        say.write(f"      NOT SETTLED with the host: {reason}\n")
        return 1
    for total in host.totals:
        money = by_alpha(total.currency).format(total.amount)
        say.write(f"      bridge    {total.transaction_type:<9} {total.count:>3}  {money:>12}\n")
    verdict = (host.status or "unreconciled").replace("_", " ").upper()
    say.write(f"      batch {batch.batch_id} / host {host.host_batch_id}: {verdict}\n")
    for difference in host.differences:
        say.write(f"      !! {difference}\n")
    return 0 if host.status == "in_balance" else 1


#: The shop on the demo's receipts.
MERCHANT = MerchantSettings(
    name="Demo Corner Shop",
    address=("1 High Street", "Leeds LS1 1AA"),
    merchant_id="DEMO-SHOP",
    terminal_id=TERMINAL_ID,
)


async def _print_receipt(agent: Agent, result: PaymentResult, say: TextIO) -> None:
    """The customer copy, as the till's printer would print it (docs/receipts.md)."""
    record = await agent.terminal.journal.get(result.local_id)
    if record is None:
        return
    text = render_text(receipt_for(record, result, MERCHANT, "customer"), 32)
    say.write("      receipt (customer copy):\n")
    for line in text.splitlines():
        say.write(f"        | {line}\n")


async def _script(agent: Agent, slot: Slot, pad: EmulatedPinpad, say: TextIO) -> int:
    failures = 0
    script = [
        ("purchase 12.50, PIN 1234", "purchase", 1250, "1234", "approved"),
        ("purchase 999.51 (no funds for it)", "purchase", 99_951, "1234", "declined"),
        ("purchase 20.00, wrong PIN", "purchase", 2000, "9999", "declined"),
        ("refund 5.00", "refund", 500, "1234", "approved"),
    ]  # fmt: skip
    for title, kind, amount, pin, expected in script:
        say.write(f"  - {title}\n")
        await asyncio.to_thread(slot, EmvCard(load_profile("visa_credit")))
        pad.queue_pin(PinScript.entered(pin))
        result: PaymentResult = await agent.terminal.pay(
            amount,
            "GBP",
            transaction_type=kind,  # type: ignore[arg-type]
        )
        await asyncio.to_thread(slot.remove)
        code = f" (response {result.response_code})" if result.response_code else ""
        say.write(f"      result: {result.status.upper()}{code} {result.masked_pan or ''}\n")
        await _print_receipt(agent, result, say)
        if result.status != expected:
            failures += 1
            say.write(f"      !! expected {expected}\n")
    await agent.terminal.deliver_reversals()
    return failures


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pos-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", help="HOST:PORT of a running MQTT broker (default: embedded)")
    parser.add_argument(
        "--interactive",
        action="store_true",
        help="leave it running with the cashier page on localhost; insert cards from here",
    )
    parser.add_argument(
        "--in-process-cards",
        action="store_true",
        help="answer the card in this process even when pcscd and vpcd are installed",
    )
    args = parser.parse_args(argv)
    silence_legacy_tdes_warnings()
    say = out or sys.stdout
    host, port = "127.0.0.1", _free_port()
    if args.broker:
        host, _, given = args.broker.rpartition(":")
        port = int(given)
    with tempfile.TemporaryDirectory(prefix="pos-demo-") as tmp:
        work = Path(tmp)
        prepared = prepare(work, host, port, not args.broker, say)
        code = asyncio.run(run_demo(args, work, host, port, prepared, say))
    if code == 0:
        say.write("done: every process the demo started has stopped and its files are removed\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
