"""``gateway-bridge keys``, called as ``main(argv)`` with captured output."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from gateway_bridge.keystore.cli import main
from paycore import dukpt, tr31
from tests.gateway_bridge.keystore.conftest import SoftHsm, wipe_token
from tests.gateway_bridge.keystore.helpers import (
    ALL_KEYS,
    DATA_BDK,
    IKID,
    KBPK,
    components,
    tr31_block,
)

KEK = bytes(range(32))


def _lines(parts: list[tuple[bytes, str]]) -> io.StringIO:
    return io.StringIO("".join(f"{key.hex().upper()} {kcv}\n" for key, kcv in parts))


def _no_keys(text: str) -> None:
    initial = dukpt.aes_initial_key(DATA_BDK, IKID)
    for key in (*ALL_KEYS, initial, KEK):
        assert key.hex() not in text.lower()
    assert "Traceback" not in text


@pytest.fixture
def software(tmp_path: Path) -> list[str]:
    kek_file = tmp_path / "kek.hex"
    kek_file.write_text(KEK.hex())
    kek_file.chmod(0o600)
    return ["--store", str(tmp_path / "keys.json"), "--kek-file", str(kek_file)]


def _load(argv_store: list[str], key_id: str, algorithm: str, purpose: str, key: bytes) -> int:
    return main(
        [
            "import-components",
            "--id",
            key_id,
            "--algorithm",
            algorithm,
            "--purpose",
            purpose,
            *argv_store,
        ],
        stdin=_lines(components(key, algorithm)),
    )


def test_software_store_end_to_end(software: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["create", "--id", "gen", "--algorithm", "AES256", "--purpose", "pin", *software]) == 0
    )
    out = capsys.readouterr().out.split()
    assert out[:3] == ["gen", "AES256", "KCV"] and len(out[3]) == 6
    assert _load(software, "data-bdk", "AES128", "data", DATA_BDK) == 0
    assert capsys.readouterr().out == f"data-bdk AES128 KCV {tr31.kcv_aes_cmac(DATA_BDK)}\n"
    assert _load(software, "kbpk", "AES256", "kbpk", KBPK) == 0
    capsys.readouterr()

    assert main(["keys", "list", *software]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0] == "ID ALGORITHM PURPOSE KCV CREATED"
    assert [line.split()[:4] for line in listing[1:]] == [
        ["data-bdk", "AES128", "data", tr31.kcv_aes_cmac(DATA_BDK)],
        ["gen", "AES256", "pin", out[3]],
        ["kbpk", "AES256", "kbpk", tr31.kcv_aes_cmac(KBPK)],
    ]

    argv = [
        "export-initial-key",
        "--bdk",
        "data-bdk",
        "--initial-key-id",
        IKID.hex(),
        "--kbpk",
        "kbpk",
    ]
    assert main([*argv, *software]) == 0
    captured = capsys.readouterr()
    block, kcv_line = captured.out.splitlines()
    header, key = tr31.unwrap(KBPK, block)
    assert (header.version_id, header.key_usage) == ("D", "B1")
    assert key == dukpt.aes_initial_key(DATA_BDK, IKID)
    assert kcv_line == f"initial key {IKID.hex().upper()} KCV {tr31.kcv_aes_cmac(key)}"
    _no_keys(captured.out.replace(block, "") + captured.err)

    imp = ["import-tr31", "--id", "via-tr31", "--purpose", "data", "--kbpk", "kbpk"]
    assert main([*imp, "--block", tr31_block(DATA_BDK, "B0"), *software]) == 0
    assert capsys.readouterr().out == f"via-tr31 AES128 KCV {tr31.kcv_aes_cmac(DATA_BDK)}\n"


def test_three_components_and_prompts(
    software: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    three = components(KBPK, "AES256", 3)
    argv = ["import-components", "--id", "k3", "--algorithm", "AES256", "--purpose", "kbpk"]
    assert main([*argv, *software], stdin=_lines(three)) == 0
    assert capsys.readouterr().out == f"k3 AES256 KCV {tr31.kcv_aes_cmac(KBPK)}\n"

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter(x for key, kcv in components(DATA_BDK, "AES128") for x in (key.hex(), kcv))
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    argv = ["import-components", "--id", "typed", "--algorithm", "AES128", "--purpose", "data"]
    assert main([*argv, *software], stdin=Tty(), ask=ask) == 0
    assert prompts == [
        "component 1 (hex): ",
        "component 1 KCV: ",
        "component 2 (hex): ",
        "component 2 KCV: ",
    ]
    assert capsys.readouterr().out == f"typed AES128 KCV {tr31.kcv_aes_cmac(DATA_BDK)}\n"


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], expect: str, **kw: object) -> None:
    assert main(argv, **kw) == 2  # type: ignore[arg-type]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert expect in captured.err
    _no_keys(captured.err)


def test_errors_are_one_line_and_exit_2(
    software: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = components(DATA_BDK, "AES128")
    bad = [parts[0], (parts[1][0], "ABCDEF" if parts[1][1] != "ABCDEF" else "123456")]
    argv = ["import-components", "--id", "x", "--algorithm", "AES128", "--purpose", "data"]
    _fails([*argv, *software], capsys, "does not match its KCV", stdin=_lines(bad))
    _fails([*argv, *software], capsys, "2 or 3", stdin=io.StringIO("00 000000\n"))
    _fails(["list", *software], capsys, "no key store")
    _fails(
        ["create", "--id", "x", "--algorithm", "AES512", "--purpose", "data", *software],
        capsys,
        "invalid choice",
    )
    _fails(["list"], capsys, "choose one store")
    _fails(["bogus"], capsys, "invalid choice")
    assert _load(software, "kbpk", "AES256", "kbpk", KBPK) == 0
    capsys.readouterr()
    imp = ["import-tr31", "--id", "t", "--purpose", "data", "--kbpk", "kbpk", "--block"]
    block = tr31_block(DATA_BDK, "B0")
    _fails([*imp, block[:-1] + ("0" if block[-1] != "0" else "1"), *software], capsys, "refused")
    _fails([*imp, tr31_block(DATA_BDK, "M3", mode="C"), *software], capsys, "usage M3")
    export = ["export-initial-key", "--bdk", "kbpk", "--initial-key-id", "12", "--kbpk", "kbpk"]
    _fails([*export, *software], capsys, "16 hex digits")
    # file modes and KEKs
    store_path = Path(software[1])
    store_path.chmod(0o644)
    _fails(["list", *software], capsys, f"chmod 600 {store_path}")
    store_path.chmod(0o600)
    wrong = tmp_path / "wrong.hex"
    wrong.write_text("00" * 32)
    wrong.chmod(0o600)
    _fails(["list", "--store", str(store_path), "--kek-file", str(wrong)], capsys, "wrong KEK")
    wrong.chmod(0o666)
    _fails(["list", "--store", str(store_path), "--kek-file", str(wrong)], capsys, "chmod 600")
    _fails(["list", "--store", str(store_path)], capsys, "POS_BRIDGE_KEK", environ={})
    _fails(["list", "--store", str(store_path)], capsys, "hex", environ={"POS_BRIDGE_KEK": "zz"})


def test_kek_from_the_environment(software: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["create", "--id", "e", "--algorithm", "AES128", "--purpose", "data", *software]) == 0
    )
    capsys.readouterr()
    store = software[:2]
    assert main(["list", *store], environ={"POS_BRIDGE_KEK": KEK.hex()}) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("e AES128 data ")


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "export-initial-key" in capsys.readouterr().out


def test_pkcs11_store(softhsm: SoftHsm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin + "\n")
    pin_file.chmod(0o600)
    token = ["--pkcs11-module", str(softhsm.module), "--token-label", softhsm.label]
    token += ["--pin-file", str(pin_file)]
    try:
        assert (
            main(
                ["create", "--id", "hsm-data", "--algorithm", "AES128", "--purpose", "data", *token]
            )
            == 0
        )
        assert capsys.readouterr().out.startswith("hsm-data AES128 KCV ")
        assert _load(token, "kbpk", "AES256", "kbpk", KBPK) == 0
        assert _load(token, "data-bdk", "AES128", "data", DATA_BDK) == 0
        capsys.readouterr()
        assert main(["list", *token]) == 0
        assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == [
            "data-bdk",
            "hsm-data",
            "kbpk",
        ]
        argv = [
            "export-initial-key",
            "--bdk",
            "data-bdk",
            "--initial-key-id",
            IKID.hex(),
            "--kbpk",
            "kbpk",
        ]
        assert main([*argv, *token]) == 0
        block = capsys.readouterr().out.splitlines()[0]
        assert tr31.unwrap(KBPK, block)[1] == dukpt.aes_initial_key(DATA_BDK, IKID)
        _fails(
            [
                "create",
                "--id",
                "t",
                "--algorithm",
                "AES128",
                "--purpose",
                "data",
                *token[:4],
                "--pin-file",
                str(tmp_path / "none"),
            ],
            capsys,
            "cannot open",
        )
        _fails(
            ["import-components", "--id", "t", "--algorithm", "TDES2", "--purpose", "pin", *token],
            capsys,
            "AES keys only",
            stdin=_lines(components(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"), "TDES2")),
        )
        pin_file.write_text("111111")
        _fails(["list", *token], capsys, "refused")
    finally:
        wipe_token(softhsm)
