"""``gateway-bridge keys``: administer the key store (docs/key-store.md).

``main(argv)`` takes the arguments after ``gateway-bridge keys`` (a leading ``keys`` is
also accepted)::

    create --id ID --algorithm AES128|AES256 --purpose data|pin|kbpk
    list
    export-initial-key --bdk ID --initial-key-id HEX --kbpk ID
    import-tr31 --id ID --purpose P --kbpk ID --block TEXT
    import-components --id ID --algorithm A --purpose P [--components 2|3]

Store selection (on every subcommand): ``--store FILE`` with ``--kek-file FILE`` (or the
``POS_BRIDGE_KEK`` environment variable in hex) for the software store, or
``--pkcs11-module PATH --token-label L --pin-file F`` for a PKCS#11 token.

Output never contains a key: ``create`` and the imports print the key id, algorithm and
KCV; ``export-initial-key`` prints the TR-31 block (the key wrapped under the KBPK) and the
initial key's KCV. Errors print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn, TextIO, cast

from gateway_bridge.keystore.base import (
    KeyAlgorithm,
    KeyInfo,
    KeyPurpose,
    KeyStore,
    KeyStoreError,
    KeyStoreLocked,
)
from gateway_bridge.keystore.software import SoftwareKeyStore, read_kek_file, read_secret_text
from paycore import tr31
from paycore.errors import PaycoreError

__all__ = ["main"]

KEK_ENV = "POS_BRIDGE_KEK"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser() -> _Parser:
    store = _Parser(add_help=False)
    group = store.add_argument_group("key store")
    group.add_argument("--store", type=Path, help="software key store file")
    group.add_argument("--kek-file", type=Path, help=f"KEK in hex (or ${KEK_ENV})")
    group.add_argument("--pkcs11-module", type=Path, help="PKCS#11 library path")
    group.add_argument("--token-label", help="PKCS#11 token label")
    group.add_argument("--pin-file", type=Path, help="file holding the token user PIN")

    parser = _Parser(prog="gateway-bridge keys", description="Administer the key store.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    create = commands.add_parser("create", parents=[store], help="generate a key")
    create.add_argument("--id", required=True)
    create.add_argument("--algorithm", required=True, choices=["AES128", "AES256"])
    create.add_argument("--purpose", required=True, choices=["data", "pin", "kbpk"])

    commands.add_parser("list", parents=[store], help="list keys (never their values)")

    export = commands.add_parser(
        "export-initial-key", parents=[store], help="a device initial key as TR-31"
    )
    export.add_argument("--bdk", required=True)
    export.add_argument("--initial-key-id", required=True, help="16 hex digits")
    export.add_argument("--kbpk", required=True)

    imp = commands.add_parser("import-tr31", parents=[store], help="import a TR-31 block")
    imp.add_argument("--id", required=True)
    imp.add_argument("--purpose", required=True, choices=["data", "pin", "kbpk"])
    imp.add_argument("--kbpk", required=True)
    imp.add_argument("--block", required=True)

    comp = commands.add_parser(
        "import-components", parents=[store], help="import a key from 2 or 3 components"
    )
    comp.add_argument("--id", required=True)
    comp.add_argument("--algorithm", required=True, choices=["AES128", "AES192", "AES256", "TDES2"])
    comp.add_argument("--purpose", required=True, choices=["data", "pin", "kbpk"])
    comp.add_argument(
        "--components", type=int, choices=[2, 3], default=2, help="how many to prompt for"
    )
    return parser


def _open_store(args: argparse.Namespace, environ: Mapping[str, str], *, create: bool) -> KeyStore:
    software = args.store is not None
    token = args.pkcs11_module is not None or args.token_label is not None
    if software == token:
        raise _UsageError(
            "choose one store: --store FILE with --kek-file, or --pkcs11-module, "
            "--token-label and --pin-file"
        )
    if software:
        if args.kek_file is not None:
            kek = read_kek_file(args.kek_file)
        elif KEK_ENV in environ:
            try:
                kek = bytes.fromhex(environ[KEK_ENV])
            except ValueError:
                raise KeyStoreLocked(f"${KEK_ENV} does not hold a KEK in hex") from None
        else:
            raise _UsageError(f"the software store needs --kek-file or ${KEK_ENV}")
        return SoftwareKeyStore(args.store, kek, create=create)
    if args.pkcs11_module is None or args.token_label is None or args.pin_file is None:
        raise _UsageError("a PKCS#11 store needs --pkcs11-module, --token-label and --pin-file")
    from gateway_bridge.keystore.pkcs11 import Pkcs11KeyStore  # needs python-pkcs11

    return Pkcs11KeyStore(args.pkcs11_module, args.token_label, read_secret_text(args.pin_file))


def _describe(info: KeyInfo) -> str:
    return f"{info.key_id} {info.algorithm} KCV {info.kcv}"


def _read_components(
    count: int, stdin: TextIO, ask: Callable[[str], str]
) -> list[tuple[bytes, str]]:
    if stdin.isatty():
        lines = []
        for number in range(1, count + 1):
            component = ask(f"component {number} (hex): ")
            check = ask(f"component {number} KCV: ")
            lines.append(f"{component} {check}")
    else:
        lines = [line for line in stdin.read().splitlines() if line.strip()]
    if len(lines) not in (2, 3):
        raise _UsageError('give 2 or 3 components, one "HEX KCV" per line')
    components: list[tuple[bytes, str]] = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            components.append((bytes.fromhex(parts[0]), parts[1]))
        except ValueError:
            raise _UsageError(f'component {number} is not "HEX KCV"') from None
    return components


def _run(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    stdin: TextIO,
    ask: Callable[[str], str],
) -> None:
    store = _open_store(args, environ, create=args.command in ("create", "import-components"))
    try:
        if args.command == "create":
            algorithm = cast(KeyAlgorithm, args.algorithm)
            print(_describe(store.create_bdk(args.id, algorithm, cast(KeyPurpose, args.purpose))))
        elif args.command == "list":
            print("ID ALGORITHM PURPOSE KCV CREATED")
            for info in store.list_keys():
                created = info.created_at.isoformat(timespec="seconds")
                print(f"{info.key_id} {info.algorithm} {info.purpose} {info.kcv} {created}")
        elif args.command == "export-initial-key":
            try:
                ikid = bytes.fromhex(args.initial_key_id)
            except ValueError:
                raise _UsageError("--initial-key-id must be 16 hex digits") from None
            if len(ikid) != 8:
                raise _UsageError("--initial-key-id must be 16 hex digits")
            block = store.export_initial_key_tr31(args.bdk, ikid, args.kbpk)
            kcv = dict(tr31.KeyBlockHeader.parse(block).optional_blocks).get("KC", "")[2:]
            print(block)
            print(f"initial key {args.initial_key_id.upper()} KCV {kcv}")
        elif args.command == "import-tr31":
            purpose = cast(KeyPurpose, args.purpose)
            print(_describe(store.import_tr31(args.id, purpose, args.kbpk, args.block)))
        else:
            components = _read_components(args.components, stdin, ask)
            info = store.import_components(
                args.id,
                cast(KeyAlgorithm, args.algorithm),
                cast(KeyPurpose, args.purpose),
                components,
            )
            print(_describe(info))
    finally:
        close = getattr(store, "close", None)
        if callable(close):
            close()


def main(
    argv: list[str],
    *,
    environ: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    ask: Callable[[str], str] = getpass.getpass,
) -> int:
    """Run ``gateway-bridge keys``; 0 on success, 2 on any user or key store error."""
    if argv[:1] == ["keys"]:
        argv = argv[1:]
    env = os.environ if environ is None else environ  # noqa: TID251 - the CLI is the edge
    try:
        args = _parser().parse_args(argv)
        _run(args, env, sys.stdin if stdin is None else stdin, ask)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except (_UsageError, KeyStoreError, PaycoreError) as exc:
        print(f"gateway-bridge keys: error: {exc}", file=sys.stderr)
        return 2
    return 0
