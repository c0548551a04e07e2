"""pos-demo --interactive: a person takes a payment from the cashier page (here: by HTTP,
as the page itself does; tests/terminal_agent/cashier drives the page in Chromium)."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import httpx


def test_interactive_demo_serves_the_page_and_takes_a_payment() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pos_demo.main", "--interactive"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        url = ""
        for line in proc.stdout:
            found = re.search(r"cashier page: (http://\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url, proc.stderr.read() if proc.stderr else ""
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200
        token = re.search(r'name="cashier-token" content="([^"]+)"', page.text)
        assert token is not None, page.text[:500]
        base = url.rsplit("/cashier", 1)[0]
        headers = {"Authorization": f"Bearer {token.group(1)}"}

        proc.stdin.write("insert visa_credit\npin 1234\n")
        proc.stdin.flush()
        created = httpx.post(
            f"{base}/v1/payments",
            json={"amount": 1250, "currency": "GBP", "reference": "till-1",
                  "idempotency_key": "demo-interactive-1", "type": "purchase"},
            headers=headers,
            timeout=10,
        )  # fmt: skip
        assert created.status_code == 202, created.text
        payment_id = created.json()["id"]
        deadline = time.monotonic() + 30
        status = "pending"
        while status == "pending" and time.monotonic() < deadline:
            time.sleep(0.1)
            status = httpx.get(
                f"{base}/v1/payments/{payment_id}", headers=headers, timeout=10
            ).json()["status"]
        assert status == "approved"
    finally:
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
        proc.stdin.close()
