"""The README's first command, as a newcomer runs it: pos-demo, start to finish."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("cards", ["pcsc", "in-process"])
def test_the_demo_runs_a_shift_and_cleans_up(cards: str) -> None:
    argv = [sys.executable, "-m", "pos_demo.main"]
    if cards == "in-process":
        argv.append("--in-process-cards")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    expected_reader = "behind pcscd + vpcd" if cards == "pcsc" else "answered in-process"
    assert expected_reader in out
    results = [line.strip() for line in out.splitlines() if line.strip().startswith("result:")]
    assert results == [
        "result: APPROVED (response 00) 476173******0010",
        "result: DECLINED (response 51)",
        "result: DECLINED (response 55)",
        "result: APPROVED (response 00) 476173******0010",
    ]
    assert "PIN pad: ENTER PIN" in out and "Insufficient funds" in out
    # A customer receipt after every payment, the card masked to its last four digits.
    assert out.count("receipt (customer copy):") == 4
    assert out.count("*** APPROVED ***") == 2 and out.count("*** DECLINED ***") == 2
    assert "************0010" in out
    # Provisioned as a technician does it: code, certificate, keys, the pad's KCV checked.
    assert "[ 4/10] enrol    code accepted" in out and "[ 6/10] PIN key  loaded" in out
    assert "matches" in out
    # The end of day, three ways: the terminal's batch, the bridge's, the issuer's ledger.
    assert "terminal  purchase    1     12.50 GBP" in out
    assert "bridge    refund      1      5.00 GBP" in out
    assert "IN BALANCE" in out and "!!" not in out
    for text in (out, done.stderr):
        assert "4761739001010010" not in text
