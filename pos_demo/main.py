"""``pos-demo``: a full shift on one machine, every part real except the hardware.

It starts, in one process tree: an embedded MQTT broker (amqtt, MQTT 3.1.1) unless
``--broker HOST:PORT`` names a running one; a gateway bridge with a SQLite journal and
the issuer simulator; keys made with ``gateway-bridge keys`` (BDKs in the software key
store, key-block protection keys entered as custodian components, the terminal's and
the PIN pad's initial keys delivered as TR-31 blocks); an emulated PIN pad on a
pseudo-terminal that loads its key through the pad's load-key command; an emulated card
behind pcscd + vpcd when they are installed (else answered in-process, as it says); and
the terminal agent. Then it runs the script: an approved purchase with online PIN, a
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
from pathlib import Path
from typing import Protocol, TextIO

from pydantic import SecretStr

from gateway_bridge.app import open_bridge
from gateway_bridge.cli import main as bridge_cli
from gateway_bridge.config import load_settings as load_bridge_settings
from gateway_bridge.keystore.cli import main as keys_cli
from gateway_bridge.keystore.software import kcv_of
from gateway_bridge.settlement import LedgerReconciler, SettlementStore, settle
from gateway_bridge.settlement.report import write_text
from hardware.cards import EmvCard, catalogue, load_profile
from hardware.pinpad import EmulatedPinpad, PinScript
from paycore.compat import silence_legacy_tdes_warnings
from pos_demo.inprocess import InProcessSlot
from terminal_agent.app import Agent, open_agent
from terminal_agent.cashier import CashierFeed, create_cashier_app
from terminal_agent.config import EcrSettings
from terminal_agent.config import load_settings as load_agent_settings
from terminal_agent.display import Display, FanOut, PadDisplay, Prompt
from terminal_agent.transaction import PaymentResult

TERMINAL_ID = "DEMO0001"
DATA_IKID = "DE40000100000001"
PIN_IKID = "DE40000200000001"


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


def make_keys(work: Path, say: TextIO) -> tuple[bytes, str, bytes, str]:
    """BDKs, KBPKs from components, initial keys as TR-31. Returns (terminal KBPK, terminal
    key block, pad KBPK, pad key block)."""
    _private(work / "kek.hex", secrets.token_hex(32))
    _keys(work, "create", "--id", "data-bdk", "--algorithm", "AES128", "--purpose", "data")
    _keys(work, "create", "--id", "pin-bdk", "--algorithm", "AES128", "--purpose", "pin")
    kbpks: list[bytes] = []
    for name in ("terminal-kbpk", "pinpad-kbpk"):
        parts = [secrets.token_bytes(32), secrets.token_bytes(32)]
        lines = "".join(f"{p.hex()} {kcv_of(p, 'AES256')}\n" for p in parts)
        _keys(work, "import-components", "--id", name, "--algorithm", "AES256", "--purpose",
              "kbpk", stdin=lines)  # fmt: skip
        kbpks.append(bytes(a ^ b for a, b in zip(*parts, strict=True)))
    term = _keys(work, "export-initial-key", "--bdk", "data-bdk", "--initial-key-id", DATA_IKID,
                 "--kbpk", "terminal-kbpk").splitlines()  # fmt: skip
    pad = _keys(work, "export-initial-key", "--bdk", "pin-bdk", "--initial-key-id", PIN_IKID,
                "--kbpk", "pinpad-kbpk").splitlines()  # fmt: skip
    listing = _keys(work, "list").strip().splitlines()[1:]
    for line in listing:
        key_id, algorithm, purpose, kcv = line.split()[:4]
        say.write(f"      {key_id:<14} {algorithm:<7} {purpose:<5} KCV {kcv}\n")
    say.write(
        f"      terminal initial key {term[1].split(' KCV ')[1]} (TR-31, {len(term[0])} chars)\n"
    )
    say.write(
        f"      PIN pad initial key  {pad[1].split(' KCV ')[1]} (TR-31, {len(pad[0])} chars)\n"
    )
    return kbpks[0], term[0], kbpks[1], pad[0]


@contextlib.asynccontextmanager
async def embedded_broker(port: int) -> AsyncIterator[None]:
    from amqtt.broker import Broker  # type: ignore[import-untyped]

    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
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


def prepare(work: Path, host: str, port: int, say: TextIO) -> tuple[bytes, str, bytes, str]:
    """Keys, the bridge's configuration and the terminal's registration (the operator's
    part, before anything runs)."""
    say.write("1/7  keys: BDKs in the bridge's key store, KBPKs from custodian components\n")
    keys = make_keys(work, say)
    assert bridge_cli(["journal-keys", str(work / "journal.keys")], out=io.StringIO()) == 0
    (work / "bridge.toml").write_text(
        f'bridge_id = "demo-bridge"\n[broker]\nhost = "{host}"\nport = {port}\n'
        f'protocol = "3.1.1"\n[keystore]\npath = "keys.json"\nkek_file = "kek.hex"\n'
        f'[journal]\npath = "journal.db"\n[journal_keys]\nkey_file = "journal.keys"\n'
    )
    registered = bridge_cli(
        ["terminals", "add", "--config", str(work / "bridge.toml"), "--id", TERMINAL_ID,
         "--merchant", "DEMO-SHOP", "--data-initial-key-id", DATA_IKID,
         "--data-bdk", "data-bdk", "--pin-bdk", "pin-bdk"], out=io.StringIO(),
    )  # fmt: skip
    if registered != 0:
        raise SystemExit("pos-demo: could not register the demo terminal")
    return keys


async def run_demo(
    args: argparse.Namespace, work: Path, host: str, port: int,
    keys: tuple[bytes, str, bytes, str], out: TextIO,
) -> int:  # fmt: skip
    say = out
    term_kbpk, term_block, pad_kbpk, pad_block = keys
    broker = embedded_broker(port) if not args.broker else contextlib.nullcontext()
    where = "embedded amqtt (MQTT 3.1.1)" if not args.broker else "given"
    say.write(f"2/7  broker: {where} on {host}:{port}\n")
    async with broker:
        bridge_settings = load_bridge_settings(work / "bridge.toml")
        say.write(
            f"3/7  gateway bridge: SQLite journal, issuer simulator, terminal {TERMINAL_ID}\n"
        )
        async with open_bridge(bridge_settings, environ={}) as bridge:
            stop = asyncio.Event()
            bridge_task = asyncio.create_task(bridge.run(stop))
            await asyncio.wait_for(bridge.connected.wait(), 15)
            try:
                return await _shop(args, work, host, port, term_kbpk, term_block, pad_kbpk,
                                   pad_block, bridge, out)  # fmt: skip
            finally:
                stop.set()
                await asyncio.wait_for(bridge_task, 15)


async def _shop(
    args: argparse.Namespace,
    work: Path,
    host: str,
    port: int,
    term_kbpk: bytes,
    term_block: str,
    pad_kbpk: bytes,
    pad_block: str,
    bridge: object,
    out: TextIO,
) -> int:
    say = out
    pad = EmulatedPinpad(kbpk=pad_kbpk, link_path=work / "pos-pinpad")
    pad.start()
    say.write(f"4/7  PIN pad: emulated on {pad.port} (stable link {pad.link_path})\n")
    try:
        use_pcsc = _pcsc_available() and not args.in_process_cards
        with card_slot(use_pcsc, say) as (slot, reader_name):
            (work / "data-key.tr31").write_text(term_block)
            _private(work / "kbpk.hex", term_kbpk.hex())
            _private(work / "agent-journal.key", secrets.token_hex(32))
            reader_line = f'[reader]\nreader = "{reader_name}"\n' if reader_name else ""
            (work / "agent.toml").write_text(
                f'terminal_id = "{TERMINAL_ID}"\ncurrency = "GBP"\n'
                f'[broker]\nhost = "{host}"\nport = {port}\nprotocol = "3.1.1"\n'
                f'[keys]\ndata_key_block_file = "data-key.tr31"\nkbpk_file = "kbpk.hex"\n'
                f"{reader_line}"
                f'[pinpad]\nport = "{pad.link_path}"\n'
                f'[journal]\npath = "agent.db"\nkey_file = "agent-journal.key"\n'
                f"[timeouts]\ncard_s = 15\npin_s = 15\nhost_s = 10\n"
            )
            settings = load_agent_settings(work / "agent.toml")
            feed = CashierFeed() if args.interactive else None
            display: Display = Transcript(out) if feed is None else FanOut([Transcript(out), feed])
            async with open_agent(settings, display) as agent:
                say.write("5/7  terminal agent: reader, PIN pad driver, MQTT link, journal\n")
                if reader_name is None:
                    agent.terminal.reader = slot  # type: ignore[assignment]
                await agent.link.wait_connected(15)
                await agent.pinpad.wait_connected(15)
                kcv = await agent.pinpad.load_key(1, pad_block)
                say.write(
                    f"6/7  PIN pad key loaded by its load-key command: KCV {kcv.hex().upper()}\n"
                )
                if args.interactive and feed is not None:
                    await _interactive(agent, slot, pad, feed, work, say)
                    return 0
                say.write("7/7  the shift:\n")
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
                    say.write(
                        f"      result: {result.status.upper()}{code} {result.masked_pan or ''}\n"
                    )
                    if result.status != expected:
                        failures += 1
                        say.write(f"      !! expected {expected}\n")
                await agent.terminal.deliver_reversals()
            say.write("  - end of day: batch close, reconciled with the issuer's ledger\n")
            connector = bridge.connector  # type: ignore[attr-defined]
            report = io.StringIO()
            summaries = await settle(
                bridge.journal,  # type: ignore[attr-defined]
                store=SettlementStore(work / "settlement.db"),
                reconciler=LedgerReconciler(connector.ledger.entries),
                clock=lambda: datetime.now(UTC),
                random=secrets.token_bytes,
            )
            write_text(summaries, report)
            for line in report.getvalue().splitlines():
                say.write(f"      {line}\n")
            if any(summary.status != "in_balance" for summary in summaries):
                failures += 1
    finally:
        await asyncio.to_thread(pad.stop)  # the pad's own loop runs in its own thread
    return 0 if not failures else 1


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
        keys = prepare(work, host, port, say)
        code = asyncio.run(run_demo(args, work, host, port, keys, say))
    if code == 0:
        say.write("done: every process the demo started has stopped and its files are removed\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
