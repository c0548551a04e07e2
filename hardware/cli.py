"""``pos-hw``: emulated devices for hardware-in-the-loop work by hand (docs/hil.md).

    pos-hw cards                      the card catalogue
    pos-hw card PROFILE --port PORT   insert a card into a running vpcd; Ctrl-C removes it
    pos-hw pinpad                     a PIN pad on a pty; PIN typed here or scripted
    pos-hw up                         pcscd + vpcd, a card slot and a PIN pad together

Everything here is test equipment: the cards and keys are test data, and vpcd listens
without authentication. Never on a production terminal.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from hardware.cards import EmvCard, ProfileError, catalogue, load_profile
from hardware.cards.faults import Faults as CardFaults
from hardware.pcsc.pcscd import PcscdService
from hardware.pcsc.slot import CardSlot
from hardware.pcsc.vpcd import VpcdCardLink, VpcdLinkError
from hardware.pinpad import AesDukptKey, EmulatedPinpad, KeySource, PinScript
from hardware.pinpad.keyboard import TerminalKeypad
from hardware.services import ServiceError
from paycore.compat import silence_legacy_tdes_warnings
from paycore.dukpt import aes_initial_key
from paycore.pan import mask_pan

#: TEST ONLY: the ANSI X9.24-3-2017 test BDK and Initial Key ID, so a developer's bridge
#: can decipher the emulated pad's PIN blocks without provisioning.
TEST_PIN_BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
TEST_PIN_IKID = bytes.fromhex("1234567890123456")
_COMMANDS = "insert NAME, remove, cards, pin DIGITS, cancel, status, quit"


def _wait_for_interrupt(stop: threading.Event) -> None:
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cmd_cards(args: argparse.Namespace, out: TextIO) -> int:
    for name in catalogue():
        profile = load_profile(name)
        out.write(f"{name:<20} {profile.description}\n")
        for app in profile.applications:
            out.write(
                f"{'':<20}   {app.label:<16} {app.aid.hex().upper():<16} "
                f"{mask_pan(app.pan.digits)}  CVN {app.cvn}"
                f"{'  BLOCKED' if app.blocked else ''}\n"
            )
    return 0


def _make_card(name: str, delay_ms: float) -> EmvCard:
    faults = CardFaults(delay=delay_ms / 1000) if delay_ms else None
    return EmvCard(load_profile(name), faults=faults)


def _cmd_card(args: argparse.Namespace, out: TextIO) -> int:
    card = _make_card(args.profile, args.delay_ms)
    link = VpcdCardLink(card, args.port, args.host)
    link.insert()
    out.write(
        f"card {args.profile} inserted into vpcd at {args.host}:{args.port}; Ctrl-C removes it\n"
    )
    out.flush()
    stop = threading.Event()
    try:
        _wait_for_interrupt(stop)
    finally:
        link.remove()
        out.write("card removed\n")
    return 0


def _test_pad(link_path: Path | None, keypad: KeySource | None) -> EmulatedPinpad:
    initial_key = aes_initial_key(TEST_PIN_BDK, TEST_PIN_IKID)
    return EmulatedPinpad(
        kbpk=bytes(32),  # TEST key-block protection key: all zeros
        slots={1: AesDukptKey(initial_key, TEST_PIN_IKID)},
        keypad=keypad,
        link_path=link_path,
    )


def _show_display(pad: EmulatedPinpad, out: TextIO, stop: threading.Event) -> threading.Thread:
    def watch() -> None:
        shown: tuple[str, ...] = ()
        while not stop.wait(0.1):
            if pad.display != shown:
                shown = pad.display
                out.write("[pad] " + " | ".join(shown) + "\n")
                out.flush()

    thread = threading.Thread(target=watch, name="pad-display", daemon=True)
    thread.start()
    return thread


def _cmd_pinpad(args: argparse.Namespace, out: TextIO) -> int:
    keyboard = not args.pin and sys.stdin.isatty()
    keypad = TerminalKeypad(sys.stdin.fileno()) if keyboard else None
    pad = _test_pad(args.link, keypad)
    for pin in args.pin:
        pad.queue_pin(PinScript.entered(pin))
    stop = threading.Event()
    with pad:
        out.write(f"PIN pad on {pad.port}")
        out.write(f" (stable link {pad.link_path})\n" if pad.link_path else "\n")
        out.write(
            "slot 1: TEST AES DUKPT key from the X9.24-3 test BDK, "
            f"initial key id {TEST_PIN_IKID.hex().upper()}\n"
        )
        out.write(
            "type the PIN here when the pad asks (Enter = OK, Esc = cancel); Ctrl-C stops\n"
            if keyboard
            else f"{len(args.pin)} scripted PIN entr{'y' if len(args.pin) == 1 else 'ies'}\n"
        )
        out.flush()
        _show_display(pad, out, stop)
        if keypad is not None:
            with keypad:
                _wait_for_interrupt(stop)
        else:
            _wait_for_interrupt(stop)
        stop.set()
    return 0


class _Bench:
    """What `pos-hw up` runs: pcscd with vpcd, one card slot, one PIN pad."""

    def __init__(self, out: TextIO, link: Path | None, delay_ms: float) -> None:
        self.out = out
        self.delay_ms = delay_ms
        self.pcscd = PcscdService()
        self.pad = _test_pad(link, None)
        self.slot = CardSlot(self.pcscd)

    def insert(self, name: str) -> str:
        self.slot(_make_card(name, self.delay_ms))
        return f"card {name} inserted in {self.pcscd.card_reader!r}"

    def remove(self) -> str:
        if self.slot.link is None:
            return "no card in the slot"
        self.slot.remove()
        return "card removed"

    def command(self, line: str) -> str | None:
        """One line from the operator; None means quit."""
        words = line.split()
        if not words:
            return ""
        verb, rest = words[0], words[1:]
        handlers: dict[str, Callable[[], str]] = {
            "insert": lambda: self.insert(rest[0]) if rest else "insert NAME (see `cards`)",
            "remove": self.remove,
            "cards": lambda: " ".join(catalogue()),
            "pin": lambda: self._queue(PinScript.entered(rest[0]) if rest else None),
            "cancel": lambda: self._queue(PinScript.cancelled()),
            "status": self.status,
        }
        if verb in ("quit", "exit"):
            return None
        handler = handlers.get(verb)
        if handler is None:
            return f"unknown command {verb!r}: {_COMMANDS}"
        try:
            return handler()
        except (ProfileError, VpcdLinkError, ValueError) as exc:
            return f"error: {exc}"

    def _queue(self, script: PinScript | None) -> str:
        if script is None:
            return "pin DIGITS"
        self.pad.queue_pin(script)
        return "queued for the next PIN entry"

    def status(self) -> str:
        link = self.slot.link
        card = "empty" if link is None else ("inserted" if link.inserted else "pulled")
        return (
            f"reader {self.pcscd.card_reader!r}: {card}; pad {self.pad.port}; "
            f"pad display {' | '.join(self.pad.display) or '(blank)'}"
        )


def _cmd_up(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    bench = _Bench(out, args.link, args.delay_ms)
    with bench.pcscd, bench.pad:
        env = bench.pcscd.client_env
        # The bench waits for PC/SC to see each insertion: point this process's
        # libpcsclite at the private pcscd before its first call.
        os.environ.update(env)  # noqa: TID251 - the CLI is the edge that owns the env
        out.write("hardware-in-the-loop bench is up (TEST equipment only)\n")
        for key, value in env.items():
            out.write(f"  export {key}={value}\n")
        out.write(f"  reader: {bench.pcscd.card_reader}\n")
        out.write(f"  vpcd port: {bench.pcscd.vpcd_port}\n")
        out.write(f"  PIN pad: {bench.pad.port}")
        out.write(f" (stable link {bench.pad.link_path})\n" if bench.pad.link_path else "\n")
        if args.card:
            out.write(bench.insert(args.card) + "\n")
        out.write(f"commands: {_COMMANDS}\n")
        out.flush()
        try:
            for line in stdin:
                answer = bench.command(line)
                if answer is None:
                    break
                if answer:
                    out.write(answer + "\n")
                    out.flush()
        except KeyboardInterrupt:
            pass
        finally:
            bench.remove()
    out.write("stopped\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pos-hw", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("cards", help="list the emulated card catalogue")
    card = sub.add_parser("card", help="insert an emulated card into a running vpcd")
    card.add_argument("profile", help="a name from `pos-hw cards`")
    card.add_argument("--port", type=int, default=35963, help="vpcd's TCP port (default 35963)")
    card.add_argument("--host", default="127.0.0.1")
    card.add_argument("--delay-ms", type=float, default=0.0, help="slow card: delay per APDU")
    pinpad = sub.add_parser("pinpad", help="an emulated PIN pad on a pseudo-terminal")
    pinpad.add_argument(
        "--pin", action="append", default=[], help="script a PIN entry (repeatable)"
    )
    pinpad.add_argument("--link", type=Path, help="keep a symlink to the pty here")
    up = sub.add_parser("up", help="pcscd + vpcd, a card slot and a PIN pad together")
    up.add_argument("--card", help="insert this card at start")
    up.add_argument("--link", type=Path, help="keep a symlink to the PIN pad's pty here")
    up.add_argument("--delay-ms", type=float, default=0.0, help="slow cards: delay per APDU")
    return parser


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, stdin: TextIO | None = None
) -> int:
    args = _parser().parse_args(argv)
    out = sys.stdout if out is None else out
    silence_legacy_tdes_warnings()
    try:
        if args.command == "cards":
            return _cmd_cards(args, out)
        if args.command == "card":
            return _cmd_card(args, out)
        if args.command == "pinpad":
            return _cmd_pinpad(args, out)
        return _cmd_up(args, out, sys.stdin if stdin is None else stdin)
    except (ProfileError, ServiceError, VpcdLinkError) as exc:
        print(f"pos-hw: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
