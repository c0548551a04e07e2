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
    assert "IN BALANCE against the issuer" in out and "net 7.50 GBP" in out
    for text in (out, done.stderr):
        assert "4761739001010010" not in text
