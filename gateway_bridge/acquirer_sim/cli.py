"""``gateway-bridge acquirer-sim``: run the acquirer host simulator in front of an issuer.

::

    gateway-bridge acquirer-sim --listen 127.0.0.1:8583 --dialect binary --header 2byte \\
        [--tpdu 6000010000] --zone-key HEX [--zone-format 0|4] [--catalogue DIR ...]

The issuer behind it is the issuer simulator
(:class:`gateway_bridge.connectors.issuer_sim.IssuerSimulator`) over the accounts of the
catalogue directories, card profiles or accounts files given (default: the repository's
card catalogue). ``--tpdu`` only says that frames carry a TPDU (replies swap its
addresses); its value is not checked. The zone key is the acquirer's zone PIN key, shared
with the connector's key store (hex; 16 or 24 bytes for format 0, 16/24/32 for format 4).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import get_args

from gateway_bridge.acquirer_sim.server import AcquirerSimSettings, AcquirerSimulator
from gateway_bridge.connectors.base import Connector
from gateway_bridge.connectors.iso8583.dialects import DialectName
from gateway_bridge.connectors.iso8583.framing import HeaderKind

__all__ = ["main"]

log = logging.getLogger(__name__)

IssuerFactory = Callable[[list[Path]], Connector]


def _default_issuer(paths: list[Path]) -> Connector:
    from gateway_bridge.connectors.issuer_sim import IssuerSimulator, repo_catalogue_dir

    if not paths:
        default = repo_catalogue_dir()
        if default is None:
            raise ValueError("no --catalogue given and no repository catalogue found")
        paths = [default]
    return IssuerSimulator.from_paths(paths)


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError("expected HOST:PORT")
    return host, int(port)


def _hex_key(value: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise argparse.ArgumentTypeError("expected hex digits") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway-bridge acquirer-sim", description="ISO 8583 acquirer host simulator"
    )
    parser.add_argument("--listen", type=_listen, default=("127.0.0.1", 8583), metavar="HOST:PORT")
    parser.add_argument("--dialect", choices=get_args(DialectName), default="binary")
    parser.add_argument("--header", choices=get_args(HeaderKind), default="2byte")
    parser.add_argument("--tpdu", metavar="HEX", help="frames carry a 5-byte TPDU")
    parser.add_argument("--zone-key", type=_hex_key, required=True, metavar="HEX")
    parser.add_argument("--zone-format", type=int, choices=(0, 4), default=0)
    parser.add_argument(
        "--catalogue",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="issuer accounts: catalogue dir, card profile or accounts file (repeatable)",
    )
    parser.add_argument(
        "--run-for",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds (default: until SIGINT/SIGTERM)",
    )
    return parser


async def _run(simulator: AcquirerSimulator, run_for: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    await simulator.issuer.start()
    await simulator.start()
    print(f"acquirer simulator listening on port {simulator.port}", flush=True)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), run_for)
    finally:
        await simulator.close()
        await simulator.issuer.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None, *, issuer_factory: IssuerFactory | None = None) -> int:
    """Run the simulator; 0 on a clean stop, 2 on bad arguments or configuration."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    host, port = args.listen
    try:
        settings = AcquirerSimSettings(
            host=host,
            port=port,
            dialect=args.dialect,
            header=args.header,
            tpdu=args.tpdu is not None,
            pin_zone_format=args.zone_format,
        )
        issuer = (issuer_factory or _default_issuer)(list(args.catalogue))
        simulator = AcquirerSimulator(settings, issuer, args.zone_key)
    except ValueError as exc:  # pydantic ValidationError, AccountsError, key length
        print(f"gateway-bridge acquirer-sim: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_run(simulator, args.run_for))
    return 0
