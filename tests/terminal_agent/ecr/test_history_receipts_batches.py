"""The ECR routes added for the cashier screen's history, receipts and end of day, over a
real journal (no card needed: the journal is filled as the agent fills it): auth, 404s,
bad input, masked PANs only, the 409s without merchant settings or a printer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from pydantic import SecretStr

from paycore.wire import BatchCloseRequest, BatchCloseResponse
from paycore.wire.messages import Body
from terminal_agent.ecr import EcrSettings, create_app
from terminal_agent.journal import CardOutcome, HostAnswer, TransactionJournal
from terminal_agent.journal.model import CardData
from terminal_agent.link import LinkDown
from terminal_agent.receipts import MerchantSettings, PrinterSettings
from tests.terminal_agent.ecr.harness import AUTH, TOKEN
from tests.terminal_agent.journal.test_journal import CARD, KEY, PAN, drive, request_body
from tests.terminal_agent.test_batch_settlement import FakeHost, terminal_with

MERCHANT = MerchantSettings(name="Corner <Shop>", merchant_id="123456789012345", terminal_id="T1")


@contextlib.asynccontextmanager
async def client(
    tmp_path: Path,
    *,
    merchant: MerchantSettings | None = MERCHANT,
    printer: PrinterSettings | None = None,
    host: FakeHost | None = None,
) -> AsyncIterator[tuple[httpx.AsyncClient, TransactionJournal]]:
    async with await TransactionJournal.open(tmp_path / "agent.db", KEY) as journal:
        terminal = terminal_with(journal, host or FakeHost())
        app = create_app(
            terminal, EcrSettings(token_file=tmp_path / "unused"), token=SecretStr(TOKEN),
            merchant=merchant, printer=printer,
        )  # fmt: skip
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ecr") as c:
            yield c, journal


async def approved(journal: TransactionJournal) -> int:
    """A purchase journaled as the agent journals it (CVM results in hex: online PIN)."""
    local_id = await drive(journal, "created")
    card = CardData(masked_pan=CARD.masked_pan, aid=CARD.aid, application_label="VISA",
                    tvr=CARD.tvr, tsi=CARD.tsi, arqc=CARD.arqc, cvm="420300")  # fmt: skip
    await journal.card_read(local_id, card)
    await journal.mark_sent(local_id, request_body(f"b-{local_id}"))
    await journal.responded(local_id, HostAnswer(True, "00", "AB12CD", "R1"))
    await journal.complete(local_id, CardOutcome(tc="0102030405060708"))
    return local_id


ROUTES = [
    ("GET", "/v1/payments/recent"),
    ("GET", "/v1/payments/1/receipt"),
    ("POST", "/v1/payments/1/receipt/print"),
    ("POST", "/v1/batches/close"),
    ("GET", "/v1/batches"),
]


def test_every_new_route_needs_the_token(tmp_path: Path) -> None:
    async def body() -> None:
        async with client(tmp_path) as (c, journal):
            await drive(journal, "completed")
            for method, path in ROUTES:
                for headers in ({}, {"Authorization": "Bearer wrong-token-0000000000"}):
                    answer = await c.request(method, path, headers=headers)
                    assert answer.status_code == 401, (method, path)
                    assert "WWW-Authenticate" in answer.headers
            assert await journal.batches() == []  # nothing closed without the token

    asyncio.run(body())


def test_recent_lists_newest_first_with_masked_pans_only(tmp_path: Path) -> None:
    async def body() -> None:
        async with client(tmp_path) as (c, journal):
            first = await drive(journal, "completed")
            second = await drive(journal, "declined", approved=False)
            answer = await c.get("/v1/payments/recent", params={"limit": "5"}, headers=AUTH)
            assert answer.status_code == 200, answer.text
            payments = answer.json()["payments"]
            assert [p["id"] for p in payments] == [second, first]
            assert [p["status"] for p in payments] == ["declined", "approved"]
            assert payments[1]["masked_pan"] == CARD.masked_pan
            assert PAN not in answer.text
            one = await c.get("/v1/payments/recent", params={"limit": "1"}, headers=AUTH)
            assert len(one.json()["payments"]) == 1
            for bad in ("0", "201", "x"):
                wrong = await c.get("/v1/payments/recent", params={"limit": bad}, headers=AUTH)
                assert wrong.status_code == 422 and wrong.json()["fields"] == ["limit"]

    asyncio.run(body())


def test_receipt_html_both_copies_escaped_and_its_errors(tmp_path: Path) -> None:
    async def body() -> None:
        async with client(tmp_path) as (c, journal):
            done = await approved(journal)
            broken = await drive(journal, "completed")  # a CVM the receipt cannot read
            running = await drive(journal, "card_read")
            customer = await c.get(f"/v1/payments/{done}/receipt", headers=AUTH)
            assert customer.status_code == 200, customer.text
            assert customer.headers["content-type"].startswith("text/html")
            assert 'data-copy="customer"' in customer.text
            assert "Corner &lt;Shop&gt;" in customer.text and "<Shop>" not in customer.text
            assert PAN[-4:] in customer.text and PAN not in customer.text
            merchant = await c.get(
                f"/v1/payments/{done}/receipt", params={"copy": "merchant"}, headers=AUTH
            )
            assert 'data-copy="merchant"' in merchant.text and CARD.masked_pan in merchant.text
            bad = await c.get(f"/v1/payments/{done}/receipt", params={"copy": "x"}, headers=AUTH)
            assert bad.status_code == 422 and bad.json()["fields"] == ["copy"]
            missing = await c.get("/v1/payments/9999/receipt", headers=AUTH)
            assert missing.status_code == 404
            unreadable = await c.get(f"/v1/payments/{broken}/receipt", headers=AUTH)
            assert unreadable.status_code == 409
            pending = await c.get(f"/v1/payments/{running}/receipt", headers=AUTH)
            assert pending.status_code == 409 and "in progress" in pending.json()["message"]
            no_printer = await c.post(f"/v1/payments/{done}/receipt/print", headers=AUTH)
            assert no_printer.status_code == 409
            assert no_printer.json()["message"] == "no printer configured"

        async with client(tmp_path / "x", merchant=None) as (c, journal):
            done = await drive(journal, "completed")
            answer = await c.get(f"/v1/payments/{done}/receipt", headers=AUTH)
            assert answer.status_code == 409 and "merchant" in answer.json()["message"]

    (tmp_path / "x").mkdir()
    asyncio.run(body())


def test_reprint_sends_both_copies_to_the_printer(tmp_path: Path) -> None:
    out = tmp_path / "printer.bin"
    printer = PrinterSettings(path=out, kind="file")

    async def body() -> None:
        async with client(tmp_path, printer=printer) as (c, journal):
            done = await approved(journal)
            answer = await c.post(f"/v1/payments/{done}/receipt/print", headers=AUTH)
            assert answer.status_code == 200, answer.text
            assert answer.json()["copies"] == ["customer", "merchant"]
            assert answer.json()["bytes"] == out.stat().st_size > 0
            missing = await c.post("/v1/payments/9999/receipt/print", headers=AUTH)
            assert missing.status_code == 404

    asyncio.run(body())
    data = out.read_bytes()
    assert data.count(b"CUSTOMER COPY") == 1 and data.count(b"MERCHANT COPY") == 1
    assert PAN.encode() not in data


def test_close_batch_totals_idempotency_and_listing(tmp_path: Path) -> None:
    async def body() -> None:
        async with client(tmp_path) as (c, journal):
            await drive(journal, "completed")
            await drive(journal, "completed")
            await drive(journal, "declined", approved=False)
            await drive(journal, "not_completed")
            closed = await c.post("/v1/batches/close", headers=AUTH | {"Idempotency-Key": "d1"})
            assert closed.status_code == 200, closed.text
            batch = closed.json()
            assert batch["since"] is None
            assert batch["lines"] == [
                {"type": "purchase", "status": "approved", "currency": "GBP", "count": 2,
                 "amount": 2468},
                {"type": "purchase", "status": "declined", "currency": "GBP", "count": 1,
                 "amount": 1234},
            ]  # fmt: skip
            settlement = batch["settlement"]
            assert settlement["status"] == "in_balance"
            assert settlement["message"] == f"IN BALANCE: host batch HB-{batch['id']}"
            assert settlement["totals"] == [
                {"type": "purchase", "currency": "GBP", "count": 2, "amount": 2468}
            ]
            assert (settlement["differences"], settlement["reason"]) == ([], None)
            again = await c.post("/v1/batches/close", headers=AUTH | {"Idempotency-Key": "d1"})
            assert again.json() == batch
            empty = await c.post("/v1/batches/close", headers=AUTH)
            assert empty.json()["lines"] == [] and empty.json()["id"] == batch["id"] + 1
            bad = await c.post("/v1/batches/close", headers=AUTH | {"Idempotency-Key": "a b"})
            assert bad.status_code == 422 and bad.json()["fields"] == ["idempotency-key"]
            listed = (await c.get("/v1/batches", headers=AUTH)).json()["batches"]
            assert [b["id"] for b in listed] == [empty.json()["id"], batch["id"]]
            wrong = await c.get("/v1/batches", params={"limit": "0"}, headers=AUTH)
            assert wrong.status_code == 422

    asyncio.run(body())


def test_the_host_verdict_not_settled_then_out_of_balance_in_the_batch(tmp_path: Path) -> None:
    host = FakeHost(LinkDown("no broker"))
    differences = (
        "purchase GBP: terminal 1 for 12.34 GBP, bridge 0 for 0.00 GBP",
        "acquirer: DE74 debits count: bridge 0, acquirer 1",
    )

    def out_of_balance(request: BatchCloseRequest) -> Body:
        return BatchCloseResponse(
            host_batch_id="HB-7", status="out_of_balance", totals=(), differences=differences
        )

    async def body() -> None:
        async with client(tmp_path, host=host) as (c, journal):
            await drive(journal, "completed")
            first = await c.post("/v1/batches/close", headers=AUTH | {"Idempotency-Key": "x/1"})
            assert first.status_code == 200, first.text
            pending = first.json()["settlement"]
            assert pending["status"] == "not_settled" and pending["attempts"] == 1
            assert pending["reason"] == "no connection to the payment service"
            assert pending["message"] == (
                "Not settled with the host: no connection to the payment service"
            )
            assert pending["host_batch_id"] is None
            host.answer = out_of_balance
            retried = await c.post("/v1/batches/close", headers=AUTH | {"Idempotency-Key": "x/1"})
            shown = retried.json()
            assert shown["id"] == first.json()["id"] and shown["lines"] == first.json()["lines"]
            assert shown["settlement"]["status"] == "out_of_balance"
            verdict = shown["settlement"]
            assert verdict["message"] == "OUT OF BALANCE: host batch HB-7, 2 differences"
            assert verdict["differences"] == list(differences)
            assert len({r.idempotency_key for r in host.requests}) == 1
            listed = (await c.get("/v1/batches", headers=AUTH)).json()["batches"]
            assert listed == [shown]

    asyncio.run(body())
