"""``gateway-bridge ca ...`` and ``gateway-bridge broker-config ...`` (docs/broker.md).

``ca_main(argv)`` takes the arguments after ``ca``::

    init --dir D [--name N] [--ca-days N] [--terminal-days N] [--bridge-days N]
         [--server-days N] [--crl-days N] (--passphrase-file F | --no-passphrase)
    issue-terminal --dir D --csr F --out F [--id TID] [--days N]
    issue-bridge --dir D --name N --out F (--csr F | --key-out F) [--days N]
    issue-server --dir D --out F (--csr F | --key-out F) [--dns H]... [--ip A]... [--days N]
    issue-enrolment --dir D --name N --out F (--csr F | --key-out F) [--days N]
    revoke --dir D (--serial HEX | --name CN) [--reason R]
    crl --dir D [--copy-to F]          re-sign the CRLs (before nextUpdate!)
    rotate --dir D                     new CA generation; both in the bundle
    retire --dir D --generation N      drop an old generation
    list --dir D [--json]

The CA passphrase comes from ``--passphrase-file`` or the ``POS_BRIDGE_CA_PASSPHRASE``
environment variable. ``broker_config_main(argv)`` takes the arguments after
``broker-config``::

    --ca-dir D --server-cert F --server-key F --bridge CN [--bridge CN]... --out DIR
    [--install-dir DIR] [--port 8883] [--bind ADDR] [--max-queued-messages N]
    [--persistence-dir DIR] [--user mosquitto]

Both exit 0 on success and 2 on a usage or CA error with one line on stderr; neither
prints a key or a passphrase.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import NoReturn, TextIO

from cryptography.hazmat.primitives import serialization

from gateway_bridge.fleet.broker_config import (
    BrokerDeployment,
    install_file,
    write_broker_config,
)
from gateway_bridge.fleet.ca import (
    CaError,
    CaPolicy,
    Issued,
    PublicKey,
    TerminalCA,
    check_csr,
    new_ec_key,
    now_utc,
    record_json,
)
from paycore.errors import CodecError

PASSPHRASE_ENV = "POS_BRIDGE_CA_PASSPHRASE"  # noqa: S105 - a variable name


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _ca_parser() -> _Parser:
    parser = _Parser(prog="gateway-bridge ca", description="the terminal CA")
    sub = parser.add_subparsers(dest="action", required=True, parser_class=_Parser)

    def command(name: str) -> _Parser:
        p: _Parser = sub.add_parser(name)
        p.add_argument("--dir", type=Path, required=True)
        p.add_argument("--passphrase-file", type=Path)
        return p

    init = command("init")
    init.add_argument("--name", default=CaPolicy().name)
    for field in ("ca_days", "terminal_days", "bridge_days", "server_days", "crl_days"):
        init.add_argument(f"--{field.replace('_', '-')}", type=int)
    init.add_argument("--no-passphrase", action="store_true")

    terminal = command("issue-terminal")
    terminal.add_argument("--csr", type=Path, required=True)
    terminal.add_argument("--id", dest="terminal_id")
    terminal.add_argument("--out", type=Path, required=True)
    terminal.add_argument("--days", type=int)

    for name in ("issue-bridge", "issue-server", "issue-enrolment"):
        p = command(name)
        if name != "issue-server":
            p.add_argument("--name", required=True)
        else:
            p.add_argument("--dns", action="append", default=[])
            p.add_argument("--ip", action="append", default=[], type=ipaddress.ip_address)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--days", type=int)
        source = p.add_mutually_exclusive_group(required=True)
        source.add_argument("--csr", type=Path)
        source.add_argument("--key-out", type=Path, help="generate an EC P-256 key here (0600)")

    revoke = command("revoke")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--serial")
    which.add_argument("--name")
    revoke.add_argument("--reason", default="unspecified")

    crl = command("crl")
    crl.add_argument("--copy-to", type=Path, help="also install the CRL here (0644)")
    command("rotate")
    retire = command("retire")
    retire.add_argument("--generation", type=int, required=True)
    ls = command("list")
    ls.add_argument("--json", action="store_true")
    return parser


def _passphrase(args: argparse.Namespace, environ: Mapping[str, str]) -> bytes | None:
    if args.passphrase_file is not None:
        text: str = args.passphrase_file.read_text(encoding="utf-8").strip()
    else:
        text = environ.get(PASSPHRASE_ENV, "")
    if not text:
        return None
    return text.encode()


def _public_key(args: argparse.Namespace) -> tuple[PublicKey, str | None]:
    """The key to certify, from ``--csr`` (and the CSR's CN) or a new key at ``--key-out``."""
    if args.csr is not None:
        common_name, public = check_csr(args.csr.read_bytes())
        return public, common_name
    key = new_ec_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    install_file(args.key_out, pem, mode=0o600, group=None)
    return key.public_key(), None


def _write_cert(issued: Issued, path: Path, out: TextIO) -> None:
    install_file(path, issued.pem, mode=0o644, group=None)
    r = issued.record
    out.write(
        f"issued {r.kind} {r.name} serial {r.serial} (CA generation {r.generation}), "
        f"valid until {r.not_after.isoformat()}: {path}\n"
    )


def _ca(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO, now: datetime) -> int:
    passphrase = _passphrase(args, environ)
    if args.action == "init":
        if passphrase is None and not args.no_passphrase:
            raise _UsageError(
                f"give --passphrase-file or {PASSPHRASE_ENV}, or --no-passphrase explicitly"
            )
        overrides = {
            k: getattr(args, k)
            for k in ("ca_days", "terminal_days", "bridge_days", "server_days", "crl_days")
            if getattr(args, k) is not None
        }
        policy = CaPolicy.model_validate({"name": args.name, **overrides})
        ca = TerminalCA.create(args.dir, passphrase=passphrase, policy=policy, now=now)
        out.write(f"created CA generation 1 in {args.dir}; bundle {ca.bundle_path}\n")
        return 0
    ca = TerminalCA(args.dir, passphrase=passphrase)
    if args.action == "issue-terminal":
        issued = ca.issue_terminal(
            args.csr.read_bytes(), terminal_id=args.terminal_id, now=now, days=args.days
        )
        _write_cert(issued, args.out, out)
    elif args.action == "issue-bridge":
        public, csr_name = _public_key(args)
        if csr_name is not None and csr_name != args.name:
            raise CaError("the CSR CN is not the bridge name requested")
        _write_cert(
            ca.issue_client("bridge", public, args.name, now=now, days=args.days), args.out, out
        )
    elif args.action == "issue-enrolment":
        public, csr_name = _public_key(args)
        if csr_name is not None and csr_name != args.name:
            raise CaError("the CSR CN is not the signer name requested")
        _write_cert(ca.issue_enrolment(public, args.name, now=now, days=args.days), args.out, out)
    elif args.action == "issue-server":
        public, _ = _public_key(args)
        issued = ca.issue_server(public, args.dns, args.ip, now=now, days=args.days)
        _write_cert(issued, args.out, out)
    elif args.action == "revoke":
        serial = None if args.serial is None else int(args.serial, 16)
        for record in ca.revoke(serial=serial, name=args.name, reason=args.reason, now=now):
            out.write(f"revoked {record.kind} {record.name} serial {record.serial}\n")
        out.write(f"CRL re-signed: {ca.crl_path}; install it and reload the broker\n")
    elif args.action == "crl":
        path = ca.write_crl(now)
        if args.copy_to is not None:
            install_file(args.copy_to, path.read_bytes(), mode=0o644, group=None)
        out.write(f"CRL re-signed: {path}\n")
    elif args.action == "rotate":
        authority = ca.rotate(now)
        out.write(
            f"new CA generation {authority.generation}; the bundle holds generations "
            f"{ca.active_generations()}: install it everywhere before retiring the old one\n"
        )
    elif args.action == "retire":
        ca.retire(args.generation, now)
        out.write(f"retired generation {args.generation}; bundle {ca.active_generations()}\n")
    elif args.json:
        text = record_json(ca.records())
        out.write(text + ("\n" if text else ""))
    else:
        for r in ca.records():
            state = (
                f"revoked {r.revoked_at:%Y-%m-%d}"
                if r.revoked_at
                else ("expired" if r.expired(now) else "valid")
            )
            out.write(
                f"{r.kind:8} {r.name:32} {r.serial:>40} G{r.generation} "
                f"{r.not_before:%Y-%m-%d}..{r.not_after:%Y-%m-%d} {state}\n"
            )
    return 0


def ca_main(
    argv: Sequence[str],
    *,
    environ: Mapping[str, str],
    out: TextIO,
    now: datetime | None = None,
) -> int:
    """``gateway-bridge ca ...``; ``now`` is for tests (default: the clock)."""
    argv = list(argv[1:] if argv and argv[0] == "ca" else argv)
    try:
        return _ca(_ca_parser().parse_args(argv), environ, out, now or now_utc())
    except (_UsageError, CaError, CodecError, OSError) as exc:
        print(f"gateway-bridge ca: {exc}", file=sys.stderr)
        return 2


def _broker_parser() -> _Parser:
    parser = _Parser(prog="gateway-bridge broker-config", description="write a Mosquitto config")
    parser.add_argument("--ca-dir", type=Path, required=True)
    parser.add_argument("--server-cert", type=Path, required=True)
    parser.add_argument("--server-key", type=Path, required=True)
    parser.add_argument("--bridge", action="append", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--install-dir", type=Path)
    parser.add_argument("--port", type=int, default=8883)
    parser.add_argument("--bind", default="0.0.0.0")  # noqa: S104
    parser.add_argument("--max-queued-messages", type=int, default=100_000)
    parser.add_argument("--persistence-dir", type=Path, default=Path("/var/lib/mosquitto"))
    parser.add_argument("--user", default="mosquitto")
    return parser


def broker_config_main(argv: Sequence[str], *, environ: Mapping[str, str], out: TextIO) -> int:
    """``gateway-bridge broker-config ...``: write the Mosquitto directory (no CA key needed)."""
    del environ  # nothing secret is read: bundle, CRL and index are public
    argv = list(argv[1:] if argv and argv[0] == "broker-config" else argv)
    try:
        args = _broker_parser().parse_args(argv)
        ca = TerminalCA(args.ca_dir, passphrase=None)
        for bridge in args.bridge:
            kinds = {r.kind for r in ca.records() if r.name == bridge}
            if kinds - {"bridge"}:
                raise CaError(f"{bridge!r} names a {'/'.join(sorted(kinds))} certificate")
            if not kinds:
                out.write(f"note: no bridge certificate for {bridge!r} issued yet\n")
        deployment = BrokerDeployment(
            bridges=tuple(args.bridge),
            install_dir=(args.install_dir or args.out).resolve(),
            port=args.port,
            bind_address=args.bind,
            max_queued_messages=args.max_queued_messages,
            persistence_dir=args.persistence_dir,
            user=args.user,
        )
        files = write_broker_config(
            args.out,
            deployment,
            bundle_pem=ca.bundle_path.read_bytes(),
            crl_pem=ca.crl_path.read_bytes(),
            server_cert_pem=args.server_cert.read_bytes(),
            server_key_pem=args.server_key.read_bytes(),
        )
    except (_UsageError, CaError, CodecError, OSError) as exc:
        print(f"gateway-bridge broker-config: {exc}", file=sys.stderr)
        return 2
    out.write(
        f"wrote {files.conf}, {files.acl} and the systemd drop-in {files.dropin}; "
        f"start with: mosquitto -c {deployment.install_dir / files.conf.name}\n"
    )
    return 0
