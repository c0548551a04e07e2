"""The simplest card there is, for measuring the PC/SC stack rather than a card."""

from __future__ import annotations


class EchoCard:
    """Answers any command with its own data field and 9000 (T=1 ATR).

    A :class:`hardware.card_interface.CardApplication` that costs nothing per APDU, so a
    round trip through pcscd + vpcd measures the stack alone (bench/bench_apdu.py,
    bench/bench_reader.py).
    """

    def power_on(self) -> bytes:
        return bytes.fromhex("3B800181")  # T=1

    def power_off(self) -> None:
        return None

    def process_apdu(self, command: bytes) -> bytes:
        data = command[5 : 5 + command[4]] if len(command) > 5 else b""
        return data + b"\x90\x00"
