"""Settlement: batch close, totals from real journal rows, reconciliation with the issuer
simulator's ledger and (over TCP) with the acquirer simulator's 0500/0510, the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_bridge.app import read_journal_keys
from gateway_bridge.connectors.base import Authorization, Reversal
from gateway_bridge.connectors.iso8583 import BINARY, decode_message
from gateway_bridge.connectors.iso8583.errors import Iso8583Error
from gateway_bridge.connectors.iso8583.reconciliation import (
    ReconciliationTotals,
    parse_reconciliation_request,
    parse_reconciliation_response,
)
from gateway_bridge.connectors.issuer_sim import IssuerSimulator, load_catalogue
from gateway_bridge.journal import (
    AuthorizationEntry,
    AuthorizationOutcome,
    Journal,
    New,
    ReversalEntry,
    SqliteJournal,
    TerminalRegistration,
)
from gateway_bridge.settlement import (
    AcquirerReconciler,
    LedgerReconciler,
    SettlementStore,
    settle,
)
from gateway_bridge.settlement.cli import report_main, settle_main
from gateway_bridge.settlement.report import CSV_HEADER
from paycore.wire import AuthorizationResponse, ReversalRequest
from tests.gateway_bridge.connectors.issuer_sim_support import (
    CATALOGUE,
    DukptPinService,
    card_from_profile,
)
from tests.gateway_bridge.connectors.issuer_sim_support import (
    authorization as sim_authorization,
)
from tests.gateway_bridge.connectors.test_iso8583_support import (
    authorization as iso_authorization,
)
from tests.gateway_bridge.connectors.test_iso8583_support import make_request, running

MERCHANT = "M000001"


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


def _keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "journal.keys"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(bytes(range(64)).hex() + "\n")
    return path


async def _journal(
    tmp_path: Path,
    terminal_id: str = "T0001",
    merchant: str = MERCHANT,
    clock: Callable[[], datetime] | None = None,
) -> Journal:
    keys = read_journal_keys(_keys_file(tmp_path))
    path = tmp_path / "journal.db"
    journal = await (
        SqliteJournal.open(path, keys)
        if clock is None
        else SqliteJournal.open(path, keys, clock=clock)
    )
    await journal.register_terminal(
        TerminalRegistration(terminal_id, merchant, "D47A000100000001", "data-bdk", "pin-bdk")
    )
    return journal


async def _record(journal: Journal, auth: Authorization, response: AuthorizationResponse) -> None:
    """Journal ``auth`` and its answer as the bridge does (real rows)."""
    r = auth.request
    begun = await journal.begin_authorization(
        AuthorizationEntry(
            terminal_id=auth.terminal_id,
            merchant_id=auth.merchant_id,
            idempotency_key=r.idempotency_key,
            message_id=auth.message_id,
            request_digest=hashlib.sha256(auth.message_id.encode()).digest(),
            transaction_type=r.transaction_type,
            amount=r.amount,
            currency=r.currency,
            pan=r.pan,
            stan=r.stan,
            original_message_id=r.original_message_id,
        )
    )
    assert isinstance(begun, New)
    await journal.complete_authorization(
        auth.terminal_id,
        r.idempotency_key,
        AuthorizationOutcome(
            state="approved" if response.approved else "declined",
            response_payload=b"{}",
            response_code=response.response_code,
            authorization_code=response.authorization_code,
            host_reference=response.host_reference,
        ),
    )


async def _reverse_in_journal(journal: Journal, auth: Authorization) -> Reversal:
    request = ReversalRequest(
        original_message_id=auth.message_id,
        idempotency_key=f"rev-{auth.message_id}",
        reason="cancelled",
        amount=auth.request.amount,
        currency=auth.request.currency,
    )
    begun = await journal.begin_reversal(
        ReversalEntry(
            terminal_id=auth.terminal_id,
            merchant_id=auth.merchant_id,
            idempotency_key=request.idempotency_key,
            message_id=f"r{auth.message_id[1:]}",
            original_message_id=auth.message_id,
            reason="cancelled",
            amount=request.amount,
            currency=request.currency,
            request_digest=hashlib.sha256(request.idempotency_key.encode()).digest(),
        )
    )
    assert isinstance(begun, New)
    await journal.complete_reversal(begun.entry_id, "reversed", b"")
    return Reversal(
        terminal_id=auth.terminal_id,
        merchant_id=auth.merchant_id,
        message_id=f"r{auth.message_id[1:]}",
        request=request,
        original=auth.request,
        original_response=None,
    )


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 22, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


# -- against the issuer simulator's ledger ---------------------------------------------------


async def _issuer_day(journal: Journal, issuer: IssuerSimulator) -> None:
    """Two purchases, a refund, a purchase reversed: through the simulator and journaled."""
    card = card_from_profile("visa_credit")
    pins = DukptPinService()
    for amount in (1250, 3000):
        auth = sim_authorization(card, amount, pins=pins, currency="GBP")
        await _record(journal, auth, await issuer.authorize(auth))
    refund = sim_authorization(card, 500, pins=pins, currency="GBP", transaction_type="refund")
    await _record(journal, refund, await issuer.authorize(refund))
    undone = sim_authorization(card, 700, pins=pins, currency="GBP")
    await _record(journal, undone, await issuer.authorize(undone))
    reversal = await _reverse_in_journal(journal, undone)
    assert await issuer.reverse(reversal) == "reversed"


def test_in_balance_with_the_issuer_ledger_then_a_transaction_it_never_saw(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        issuer = IssuerSimulator(load_catalogue(CATALOGUE))
        clock = Clock()
        journal = await _journal(tmp_path, clock=clock)
        store = SettlementStore(":memory:")
        reconciler = LedgerReconciler(issuer.ledger.entries)
        try:
            await _issuer_day(journal, issuer)
            [batch] = await settle(
                journal, store=store, reconciler=reconciler, clock=clock, random=os.urandom
            )
            assert batch.status == "in_balance", batch.mismatches
            assert batch.closed_count == 3
            gbp = batch.totals["GBP"]
            assert (gbp.purchases.count, gbp.purchases.amount) == (2, 4250)
            assert (gbp.refunds.count, gbp.refunds.amount) == (1, 500)
            assert (gbp.reversed_purchases.count, gbp.reversed_purchases.amount) == (1, 700)
            assert gbp.net == 3750

            # next day: one purchase the issuer saw, one only the journal has
            clock.now = clock.now.replace(day=2)
            card = card_from_profile("visa_credit")
            seen = sim_authorization(card, 900, pins=DukptPinService(), currency="GBP")
            await _record(journal, seen, await issuer.authorize(seen))
            ghost = sim_authorization(card, 4100, pins=DukptPinService(), currency="GBP")
            await _record(journal, ghost, AuthorizationResponse(response_code="00", approved=True))
            [second] = await settle(
                journal, store=store, reconciler=reconciler, clock=clock, random=os.urandom
            )
            assert second.status == "out_of_balance"
            assert second.totals["GBP"].purchases.amount == 5000
            [line] = second.mismatches
            assert line.message_id == ghost.message_id
            assert (line.problem, line.bridge, line.other) == (
                "not in the issuer's ledger",
                4100,
                None,
            )
            assert line.masked_pan.endswith(card.pan[-4:]) and card.pan not in line.masked_pan
            assert [b.batch_id for b in store.closed_on(clock.now.date())] == [second.batch_id]
        finally:
            await journal.close()
            store.close()

    run(scenario)


def test_an_amount_that_differs_and_an_issuer_only_approval(tmp_path: Path) -> None:
    async def scenario() -> None:
        issuer = IssuerSimulator(load_catalogue(CATALOGUE))
        journal = await _journal(tmp_path)
        store = SettlementStore(":memory:")
        card = card_from_profile("visa_credit")
        try:
            auth = sim_authorization(card, 1000, pins=DukptPinService(), currency="GBP")
            response = await issuer.authorize(auth)
            # the journal kept another amount than the issuer approved
            wrong = Authorization(
                terminal_id=auth.terminal_id,
                merchant_id=auth.merchant_id,
                message_id=auth.message_id,
                request=auth.request.model_copy(update={"amount": 1100}),
                pins=auth.pins,
            )
            await _record(journal, wrong, response)
            # the issuer approved this one; the journal recorded it declined
            lost = sim_authorization(card, 222, pins=DukptPinService(), currency="GBP")
            assert (await issuer.authorize(lost)).approved
            await _record(journal, lost, AuthorizationResponse(response_code="91", approved=False))
            [batch] = await settle(
                journal,
                store=store,
                reconciler=LedgerReconciler(issuer.ledger.entries),
                clock=Clock(),
                random=os.urandom,
            )
            assert batch.status == "out_of_balance"
            lines = {m.message_id: m for m in batch.mismatches}
            assert (lines[auth.message_id].problem, lines[auth.message_id].bridge) == (
                "amount differs",
                1100,
            )
            assert lines[auth.message_id].other == 1000
            assert (
                lines[lost.message_id].problem == "approved by the issuer, declined in the journal"
            )
            assert lines[lost.message_id].other == 222
        finally:
            await journal.close()
            store.close()

    run(scenario)


# -- against the acquirer simulator over TCP (0500/0510) -------------------------------------


def _iso(stan: int, amount: int, kind: str = "purchase", message_id: str = "") -> Authorization:
    request = make_request(
        stan=stan,
        amount=amount,
        transaction_type=kind,
        idempotency_key=f"idem-{stan}",
        cvm="no_cvm",
        pin_block=None,
    )
    return iso_authorization(request, message_id=message_id or f"{stan:032x}")


def test_0500_round_trip_against_the_acquirer_simulator() -> None:
    async def scenario() -> None:
        async with running() as h:
            for stan, amount in ((11, 1000), (12, 2500)):
                assert (await h.connector.authorize(_iso(stan, amount))).approved
            ours = ReconciliationTotals(debits_count=2, debits_amount=3500)
            result = await h.connector.reconcile("TERM0001", "MERCHANT0000001", "USD", ours)
            assert result.in_balance and result.settlement_code == "1"
            assert result.acquirer_totals == ours
            sent = [m for m in h.simulator.received if m["t"] == "0500"][-1]
            assert (sent["76"], sent["88"], sent["97"], sent["50"]) == (
                "0000000002",
                "0000000000003500",
                "D0000000000003500",
                "840",
            )
            # the acquirer started a new period: a claim of one more purchase is out
            assert (await h.connector.authorize(_iso(13, 400))).approved
            claim = ReconciliationTotals(debits_count=2, debits_amount=1400)
            result = await h.connector.reconcile("TERM0001", "MERCHANT0000001", "USD", claim)
            assert not result.in_balance and result.settlement_code == "2"
            assert claim.differences(result.acquirer_totals) == [
                ("debits_count", "76", 2, 1),
                ("debits_amount", "88", 1400, 400),
            ]

    run(scenario)


def test_settle_against_the_acquirer_in_and_out_of_balance(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        journal = await _journal(tmp_path, "TERM0001", "MERCHANT0000001", clock)
        store = SettlementStore(":memory:")
        try:
            async with running() as h:
                reconciler = AcquirerReconciler(h.connector)
                for stan, amount in ((21, 1000), (22, 2000)):
                    auth = _iso(stan, amount)
                    await _record(journal, auth, await h.connector.authorize(auth))
                refund = _iso(23, 300, "refund")
                await _record(journal, refund, await h.connector.authorize(refund))
                undone = _iso(24, 800)
                await _record(journal, undone, await h.connector.authorize(undone))
                reversal = await _reverse_in_journal(journal, undone)
                assert await h.connector.reverse(reversal) == "reversed"
                [batch] = await settle(
                    journal, store=store, reconciler=reconciler, clock=clock, random=os.urandom
                )
                assert batch.status == "in_balance", batch.mismatches
                usd = batch.totals["USD"]
                assert (usd.purchases.amount, usd.refunds.amount, usd.net) == (3000, 300, 2700)
                assert usd.reversed_purchases.amount == 800

                clock.now = clock.now.replace(hour=23)
                ghost = _iso(25, 4242)
                await _record(
                    journal, ghost, AuthorizationResponse(response_code="00", approved=True)
                )
                [second] = await settle(
                    journal, store=store, reconciler=reconciler, clock=clock, random=os.urandom
                )
                assert second.status == "out_of_balance"
                assert [(m.element, m.bridge, m.other) for m in second.mismatches] == [
                    ("76", 1, 0),
                    ("88", 4242, 0),
                ]
        finally:
            await journal.close()
            store.close()

    run(scenario)


# -- the CLI ---------------------------------------------------------------------------------


def _config(tmp_path: Path) -> Path:
    _keys_file(tmp_path)
    config = tmp_path / "bridge.toml"
    config.write_text(
        '[keystore]\npath = "keys.db"\nkek_file = "kek"\n'
        '[journal]\npath = "journal.db"\n'
        '[journal_keys]\nkey_file = "journal.keys"\n'
        '[connector]\nkind = "issuer_sim"\n'
    )
    return config


def test_cli_settle_and_report(tmp_path: Path) -> None:
    config = _config(tmp_path)
    issuer = IssuerSimulator(load_catalogue(CATALOGUE))

    async def prepare() -> None:
        journal = await _journal(tmp_path)
        try:
            await _issuer_day(journal, issuer)
        finally:
            await journal.close()

    run(prepare)
    out = io.StringIO()
    code = settle_main(
        ["--config", str(config)], environ={}, out=out, issuer_ledger=issuer.ledger.entries
    )
    assert code == 0, out.getvalue()
    assert "IN BALANCE against the issuer" in out.getvalue()
    today = datetime.now(UTC).date().isoformat()

    csv_out = io.StringIO()
    assert report_main([today, "--config", str(config), "--csv"], environ={}, out=csv_out) == 0
    rows = list(csv.DictReader(io.StringIO(csv_out.getvalue())))
    assert tuple(csv.reader(io.StringIO(csv_out.getvalue())).__next__()) == CSV_HEADER
    [row] = rows
    assert (row["terminal_id"], row["currency"], row["status"]) == ("T0001", "GBP", "in_balance")
    assert (row["purchases_count"], row["purchases_amount"]) == ("2", "4250")
    assert (row["refunds_amount"], row["reversals_amount"], row["net_amount"]) == (
        "500",
        "700",
        "3750",
    )

    # out of process (no ledger): the next batch closes, empty and not reconciled
    out = io.StringIO()
    assert settle_main(["--config", str(config)], environ={}, out=out) == 3
    assert "NOT RECONCILED" in out.getvalue() and "no transactions" in out.getvalue()

    text = io.StringIO()
    assert report_main([today, "--config", str(config)], environ={}, out=text) == 0
    assert text.getvalue().count("batch T0001-") == 2


def test_cli_out_of_balance_exits_1_and_empty_day(tmp_path: Path) -> None:
    config = _config(tmp_path)
    issuer = IssuerSimulator(load_catalogue(CATALOGUE))
    card = card_from_profile("visa_credit")

    async def prepare() -> None:
        journal = await _journal(tmp_path)
        try:
            ghost = sim_authorization(card, 999, pins=DukptPinService(), currency="GBP")
            await _record(journal, ghost, AuthorizationResponse(response_code="00", approved=True))
        finally:
            await journal.close()

    run(prepare)
    out = io.StringIO()
    code = settle_main(
        ["--config", str(config), "--terminal", "T0001"],
        environ={},
        out=out,
        issuer_ledger=issuer.ledger.entries,
    )
    assert code == 1
    assert "OUT OF BALANCE" in out.getvalue()
    assert "not in the issuer's ledger" in out.getvalue()
    assert card.pan not in out.getvalue() and card.pan[-4:] in out.getvalue()

    empty = io.StringIO()
    assert report_main(["1999-01-01", "--config", str(config)], environ={}, out=empty) == 0
    assert empty.getvalue() == "no batches closed on 1999-01-01\n"
    empty_csv = io.StringIO()
    assert (
        report_main(["1999-01-01", "--config", str(config), "--csv"], environ={}, out=empty_csv)
        == 0
    )
    assert list(csv.reader(io.StringIO(empty_csv.getvalue()))) == [list(CSV_HEADER)]
    assert settle_main(["--config", str(config), "--terminal", "NOPE"], environ={}, out=out) == 2


# -- the codec ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_reconciliation_decoders_raise_only_their_own_error(data: bytes) -> None:
    try:
        fields = decode_message(BINARY.spec, data)
    except Iso8583Error:
        return
    for parse in (parse_reconciliation_request, parse_reconciliation_response):
        with contextlib.suppress(Iso8583Error):
            parse(fields)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["t", "3", "41", "50", "66", "74", "76", "86", "88", "97"]),
        st.text(max_size=20),
    )
)
def test_reconciliation_parsers_on_any_fields(fields: dict[str, str]) -> None:
    for parse in (parse_reconciliation_request, parse_reconciliation_response):
        with contextlib.suppress(Iso8583Error):
            parse(fields)
