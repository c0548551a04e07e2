"""Receipts (terminal_agent.receipts): the required fields on both copies for every
outcome, PAN masking, HTML escaping, the ESC/POS bytes, printing to a file and to a
pseudo-terminal. The journal records are made by the real SQLite journal."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import re
import time
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from paycore.pan import Pan, mask_pan
from terminal_agent.journal import (
    CardData,
    CardOutcome,
    HostAnswer,
    TransactionJournal,
    TransactionRecord,
)
from terminal_agent.receipts import (
    MerchantSettings,
    PrinterConfigError,
    PrinterSettings,
    PrinterUnavailable,
    Receipt,
    ReceiptDataError,
    print_receipt,
    receipt_for,
    render_escpos,
    render_html,
    render_text,
    safe_masked_pan,
)
from terminal_agent.receipts import printer as printer_module
from terminal_agent.transaction import PaymentResult
from tests.vectors import load

PAN = load("luhn_test_pans")["test_pans"][0]["pan"]
MASKED = mask_pan(PAN)
LAST4_ONLY = "*" * (len(PAN) - 4) + PAN[-4:]
AID = "A0000000031010"
ARQC = "9A1B2C3D4E5F6071"
TC = "1F2E3D4C5B6A7988"
AAC = "0A0B0C0D0E0F1011"
T0 = dt.datetime(2026, 3, 14, 9, 22, 5, tzinfo=dt.UTC)
MERCHANT = MerchantSettings(
    name="Boulangerie Martin",
    address=("12 Rue des Lilas", "75011 Paris"),
    merchant_id="123456789012345",
    terminal_id="TERM0042",
    timezone="Europe/Paris",
)


@dataclasses.dataclass(frozen=True)
class Case:
    """One transaction and what its receipt must say."""

    record: TransactionRecord
    result: PaymentResult
    type_word: str
    amount_text: str
    cvm: str
    cryptogram: tuple[str, str] | None
    auth_code: str | None
    response_code: str | None
    outcome: str
    reason: str | None
    signature: bool
    has_card: bool = True


async def _cases(path: Path) -> dict[str, Case]:
    journal = await TransactionJournal.open(path, bytes(32), clock=lambda: T0)
    cases: dict[str, Case] = {}
    async with journal:

        async def card(key: str, kind: typing.Any, amount: int, cvm: str) -> int:
            rec = await journal.create(
                idempotency_key=key, transaction_type=kind, amount=amount, currency="EUR"
            )
            await journal.card_read(
                rec.local_id,
                CardData(MASKED, AID, "", "0000008000", "E800", ARQC, cvm),
            )
            return rec.local_id

        async def approve(local_id: int, code: str) -> TransactionRecord:
            await journal.mark_sent(local_id, b"{}")
            await journal.responded(local_id, HostAnswer(True, "00", code, f"H{local_id}"))
            await journal.complete(local_id, CardOutcome(TC, "0000000000", "E800"))
            got = await journal.get(local_id, history=True)
            assert got is not None
            return got

        # Approved with online PIN (CVM Results 42 03 00: enciphered PIN online).
        lid = await card("pin", "purchase", 1234, "420300")
        await journal.pin_captured(lid)
        rec = await approve(lid, "A1B2C3")
        res = PaymentResult(lid, "pin", "approved", "APPROVED", "00", "A1B2C3", MASKED,
                            "VISA CREDIT", AID, "0000000000", "E800", TC)  # fmt: skip
        cases["online_pin"] = Case(rec, res, "SALE", "12.34 EUR", "PIN VERIFIED", ("TC", TC),
                                   "A1B2C3", "00", "APPROVED", None, False)  # fmt: skip

        # Declined by the issuer: insufficient funds; the card answered AAC.
        lid = await card("dec", "purchase", 99900, "1F0302")
        await journal.mark_sent(lid, b"{}")
        await journal.responded(lid, HostAnswer(False, "51", None, "HREF51"))
        await journal.decline(lid)
        rec = typing.cast(TransactionRecord, await journal.get(lid, history=True))
        res = PaymentResult(lid, "dec", "declined", "DECLINED: Insufficient funds", "51", None,
                            None, "VISA CREDIT", AID, "0000008000", "E800", AAC)  # fmt: skip
        cases["declined"] = Case(rec, res, "SALE", "999.00 EUR", "NO CVM", ("ARQC", ARQC),
                                 None, "51", "DECLINED", "Insufficient funds", False)  # fmt: skip

        # Approved with signature (CVM Results 1E 03 00).
        lid = await card("sig", "purchase", 5000, "1E0300")
        rec = await approve(lid, "S1G000")
        res = PaymentResult(lid, "sig", "approved", "APPROVED", "00", "S1G000", MASKED,
                            "MASTERCARD", AID, "0000000000", "E800", TC, True)  # fmt: skip
        cases["signature"] = Case(rec, res, "SALE", "50.00 EUR", "SIGNATURE", ("TC", TC),
                                  "S1G000", "00", "APPROVED", None, True)  # fmt: skip

        # Refund, no CVM.
        lid = await card("ref", "refund", 250, "3F0000")
        rec = await approve(lid, "R00001")
        res = PaymentResult(lid, "ref", "approved", "APPROVED", "00", "R00001", MASKED,
                            "VISA DEBIT", AID, "0000000000", "E800", TC)  # fmt: skip
        cases["refund"] = Case(rec, res, "REFUND", "2.50 EUR", "NO CVM", ("TC", TC),
                               "R00001", "00", "APPROVED", None, False)  # fmt: skip

        # Void of a purchase: no card read; the journal has no card data at all.
        v = await journal.create(
            idempotency_key="void:pin", transaction_type="void", amount=1234, currency="EUR"
        )
        await journal.mark_sent(v.local_id, b"{}")
        await journal.responded(v.local_id, HostAnswer(True, "00"))
        await journal.complete(v.local_id, CardOutcome())
        rec = typing.cast(TransactionRecord, await journal.get(v.local_id, history=True))
        res = PaymentResult(v.local_id, "void:pin", "approved", "VOIDED", masked_pan=MASKED)
        cases["void"] = Case(rec, res, "VOID", "12.34 EUR", "NO CVM", None, None, "00",
                             "APPROVED", None, False)  # fmt: skip

        # Not completed: online PIN sent, no answer, reversal queued.
        lid = await card("nc", "purchase", 777, "420300")
        await journal.pin_captured(lid)
        await journal.mark_sent(lid, b"{}")
        await journal.queue_reversal(lid, "host_timeout")
        rec = typing.cast(TransactionRecord, await journal.get(lid, history=True))
        res = PaymentResult(
            lid, "nc", "not_completed",
            "Not completed: no answer from the card issuer. Do not hand over goods; "
            "the amount will be reversed if it was taken. Try again.", reversal_queued=True,
        )  # fmt: skip
        cases["not_completed"] = Case(
            rec, res, "SALE", "7.77 EUR", "PIN ENTERED", ("ARQC", ARQC), None, None,
            "NOT COMPLETED", "no answer from the card issuer", False,
        )  # fmt: skip
    return cases


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    path = tmp_path_factory.mktemp("receipts") / "journal.db"
    return asyncio.run(_cases(path))


# -- a small ESC/POS reader: the commands render_escpos may use, nothing else ------------

_COMMANDS = {
    b"\x1b@": ("ESC @", 0),
    b"\x1bt": ("ESC t", 1),
    b"\x1ba": ("ESC a", 1),
    b"\x1bE": ("ESC E", 1),
    b"\x1d!": ("GS !", 1),
    b"\x1bd": ("ESC d", 1),
    b"\x1dV": ("GS V", 1),
}


def parse_escpos(data: bytes) -> list[tuple[str, int | str]]:
    """Tokens: (command, argument) or ("text", line). Anything unknown fails the test."""
    out: list[tuple[str, int | str]] = []
    i = 0
    while i < len(data):
        head = data[i : i + 2]
        if head in _COMMANDS:
            name, nargs = _COMMANDS[head]
            out.append((name, data[i + 2] if nargs else -1))
            i += 2 + nargs
            continue
        end = data.index(b"\n", i)
        chunk = data[i:end]
        assert all(b >= 0x20 for b in chunk), f"stray control byte at {i}"
        out.append(("text", chunk.decode("cp858")))
        i = end + 1
    return out


def escpos_text(data: bytes) -> str:
    return "".join(f"{v}\n" for k, v in parse_escpos(data) if k == "text")


# -- the fields ---------------------------------------------------------------------------


def expected(case: Case, copy: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(label, value) pairs and centred lines the receipt must show."""
    pan = "-" if not case.has_card else (MASKED if copy == "merchant" else LAST4_ONLY)
    local = T0.astimezone(dt.timezone(dt.timedelta(hours=1)))  # Paris in March: CET
    pairs = [
        ("MERCHANT ID", MERCHANT.merchant_id),
        ("TERMINAL ID", MERCHANT.terminal_id),
        ("DATE", local.strftime("%Y-%m-%d")),
        ("TIME", local.strftime("%H:%M:%S") + " CET"),
        ("AMOUNT", case.amount_text),
        ("CARD", pan),
        ("ENTRY MODE", "CHIP"),
        ("CVM", case.cvm),
        ("AUTH CODE", case.auth_code or "-"),
        ("RESPONSE CODE", case.response_code or "-"),
    ]
    if case.type_word != "VOID":
        pairs += [("AID", AID), ("TSI", "E800")]
        pairs += [("TVR", case.result.tvr or case.record.tvr or "")]
        if case.result.application_label:
            pairs.append(("APPLICATION", case.result.application_label))
    if case.cryptogram:
        pairs.append(case.cryptogram)
    centred = [MERCHANT.name, *MERCHANT.address, case.type_word,
               "CUSTOMER COPY" if copy == "customer" else "MERCHANT COPY"]  # fmt: skip
    return pairs, centred


def renderings(receipt: Receipt) -> Iterator[tuple[str, str]]:
    for width in (32, 42):
        yield f"text{width}", render_text(receipt, width)
        yield f"escpos{width}", escpos_text(render_escpos(receipt, width))


SCENARIOS = ["online_pin", "declined", "signature", "refund", "void", "not_completed"]


@pytest.mark.parametrize("copy", ["customer", "merchant"])
@pytest.mark.parametrize("name", SCENARIOS)
def test_every_required_field_on_every_copy(
    cases: dict[str, Case], name: str, copy: typing.Literal["customer", "merchant"]
) -> None:
    case = cases[name]
    receipt = receipt_for(case.record, case.result, MERCHANT, copy)
    pairs, centred = expected(case, copy)
    page = render_html(receipt)
    for label, value in pairs:
        assert f'<span class="label">{label}</span><span class="value">{value}</span>' in page
    for kind, text in renderings(receipt):
        lines = text.splitlines()
        for label, value in pairs:
            pattern = re.compile(rf"^{re.escape(label)} +{re.escape(value)}$")
            assert any(pattern.match(x) for x in lines), (kind, label)
        stripped = [x.strip() for x in lines]
        for line in centred:
            assert line in stripped, (kind, line)
        result_line = f"*** {case.outcome} ***" if kind.startswith("text") else case.outcome
        assert result_line in stripped, kind
        flat = " ".join(stripped)
        if case.reason:
            assert case.reason in flat, kind
        else:
            assert "Declined" not in flat
        assert ("X" + "_" * 10 in text) == (case.signature and copy == "merchant"), kind
        assert ("CARDHOLDER SIGNATURE" in text) == (case.signature and copy == "merchant")
        assert ("will be reversed" in flat) == (name == "not_completed")


def test_cryptogram_labels_and_cvm(cases: dict[str, Case]) -> None:
    got = {n: receipt_for(c.record, c.result, MERCHANT, "merchant") for n, c in cases.items()}
    assert got["online_pin"].cryptogram_type == "TC"
    assert got["declined"].cryptogram_type == "ARQC"
    assert got["not_completed"].cryptogram_type == "ARQC"
    assert got["void"].cryptogram_type is None
    assert got["online_pin"].cvm == "pin_verified"
    assert got["not_completed"].cvm == "pin_entered"
    assert got["signature"].signature_line
    assert not receipt_for(
        cases["signature"].record, cases["signature"].result, MERCHANT, "customer"
    ).signature_line
    # An offline decline (no ARQC, no TC journaled) labels the card's answer AAC.
    offline = dataclasses.replace(cases["declined"].record, arqc=None)
    assert receipt_for(offline, cases["declined"].result, MERCHANT, "merchant").cryptogram == AAC
    # Response code 55 with online PIN: the PIN was not verified.
    bad_pin = dataclasses.replace(cases["declined"].result, response_code="55")
    assert receipt_for(cases["online_pin"].record, dataclasses.replace(
        bad_pin, local_id=cases["online_pin"].record.local_id, idempotency_key="pin"),
        MERCHANT, "merchant").cvm_text == "PIN NOT VERIFIED"  # fmt: skip


def test_merchant_copy_may_show_six_and_four_when_configured(cases: dict[str, Case]) -> None:
    case = cases["online_pin"]
    both = MERCHANT.model_copy(update={"customer_pan_last4_only": False})
    assert receipt_for(case.record, case.result, both, "customer").masked_pan == MASKED
    assert receipt_for(case.record, case.result, MERCHANT, "customer").masked_pan == LAST4_ONLY


def test_record_and_result_must_agree(cases: dict[str, Case]) -> None:
    case = cases["online_pin"]
    other = dataclasses.replace(case.result, local_id=case.result.local_id + 1)
    with pytest.raises(ReceiptDataError):
        receipt_for(case.record, other, MERCHANT, "customer")
    odd = dataclasses.replace(case.record, currency="XXX")
    with pytest.raises(ReceiptDataError, match="currency"):
        receipt_for(odd, case.result, MERCHANT, "customer")
    nowhere = MERCHANT.model_copy(update={"timezone": "Mars/Olympus"})
    with pytest.raises(ReceiptDataError, match="time zone"):
        receipt_for(case.record, case.result, nowhere, "customer")


# -- the PAN --------------------------------------------------------------------------------


def test_the_model_has_no_field_for_a_clear_pan(cases: dict[str, Case]) -> None:
    hints = typing.get_type_hints(Receipt)
    assert not any(Pan in typing.get_args(h) or h is Pan for h in hints.values())
    assert [f for f in Receipt.model_fields if "pan" in f.lower()] == ["masked_pan"]
    good = receipt_for(cases["online_pin"].record, cases["online_pin"].result, MERCHANT,
                       "merchant")  # fmt: skip
    with pytest.raises(ValidationError) as extra:
        Receipt(**{**good.model_dump(), "pan": PAN})
    assert PAN not in str(extra.value)
    with pytest.raises(ValidationError) as clear:
        Receipt(**{**good.model_dump(), "masked_pan": PAN})
    assert PAN not in str(clear.value) and PAN[6:12] not in str(clear.value)


def test_a_clear_pan_in_the_journal_is_masked_anyway(cases: dict[str, Case]) -> None:
    case = cases["online_pin"]
    leaky_record = dataclasses.replace(case.record, masked_pan=PAN)
    leaky_result = dataclasses.replace(case.result, masked_pan=PAN)
    receipt = receipt_for(leaky_record, leaky_result, MERCHANT, "merchant")
    assert receipt.masked_pan == MASKED
    for _, text in renderings(receipt):
        assert PAN not in text and MASKED in text


def _visible(value: str) -> tuple[int, int]:
    """(digits among the first six places, digits among the last four); asserts that
    nothing but digits and ``*`` shows, and no digit outside those places."""
    assert set(value) <= set("0123456789*"), "only digits and * may show"
    n = len(value)
    places = [i for i, c in enumerate(value) if c != "*"]
    trail = [i for i in places if i >= n - 4]
    lead = [i for i in places if i < 6 and i < n - 4]
    assert len(lead) + len(trail) == len(places), "a digit outside the first six, last four"
    return len(lead), len(trail)


def _card_line(lines: list[str]) -> tuple[int, str]:
    hits = [(i, x) for i, x in enumerate(lines) if x.startswith("CARD ") or "CARD<" in x]
    assert len(hits) == 1
    return hits[0]


@settings(max_examples=60)
@given(
    pan=st.one_of(
        st.text(alphabet="0123456789", min_size=12, max_size=19),
        st.text(alphabet="0123456789*X -", max_size=24),
    ),
    copy=st.sampled_from(["customer", "merchant"]),
)
def test_no_rendering_shows_more_than_six_and_four(
    cases: dict[str, Case], pan: str, copy: typing.Literal["customer", "merchant"]
) -> None:
    case = cases["online_pin"]
    record = dataclasses.replace(case.record, masked_pan=pan)
    result = dataclasses.replace(case.result, masked_pan=pan)
    receipt = receipt_for(record, result, MERCHANT, copy)
    blank = receipt_for(
        dataclasses.replace(record, masked_pan=None),
        dataclasses.replace(result, masked_pan=None), MERCHANT, copy,
    )  # fmt: skip
    if receipt.masked_pan is not None:
        lead, trail = _visible(receipt.masked_pan)
        assert lead <= (0 if copy == "customer" else 6) and trail <= 4
        assert lead + trail <= 10
        # Nothing invented: every visible digit is the input's digit at that place.
        assert all(c in ("*", p) for c, p in zip(receipt.masked_pan, pan, strict=True))
    outputs = [
        (render_text(receipt, 32), render_text(blank, 32)),
        (render_text(receipt, 42), render_text(blank, 42)),
        (render_html(receipt), render_html(blank)),
        (escpos_text(render_escpos(receipt)), escpos_text(render_escpos(blank))),
    ]
    for shown, reference in outputs:
        a, b = shown.splitlines(), reference.splitlines()
        assert len(a) == len(b)
        index, line = _card_line(a)
        # The PAN changes the card line and nothing else.
        assert [x for i, x in enumerate(a) if i != index] == [
            x for i, x in enumerate(b) if i != index
        ]
        assert len(re.findall(r"\d", line)) <= 10


@settings(max_examples=100)
@given(st.text(max_size=30))
def test_safe_masked_pan_is_idempotent_and_a_fixed_point_of_mask_pan(value: str) -> None:
    once = safe_masked_pan(value)
    assert safe_masked_pan(once) == once and len(once) == len(value)
    digits = "".join(c if c.isascii() and c.isdigit() else "0" for c in value)
    assert safe_masked_pan(mask_pan(digits)) == mask_pan(digits)


# -- HTML ---------------------------------------------------------------------------------


def test_html_escapes_everything(cases: dict[str, Case]) -> None:
    case = cases["declined"]
    evil = MERCHANT.model_copy(
        update={"name": "<script>alert('x')</script>", "address": ('"><img src=x onerror=1>',)}
    )
    page = render_html(receipt_for(case.record, case.result, evil, "customer"))
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=1&gt;" in page
    assert page.count("<section") == 1 and page.rstrip().endswith("</section>")
    assert '<p class="result declined">DECLINED</p>' in page


# -- ESC/POS --------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [32, 42])
def test_escpos_commands(cases: dict[str, Case], width: typing.Literal[32, 42]) -> None:
    case = cases["signature"]
    receipt = receipt_for(case.record, case.result, MERCHANT, "merchant")
    data = render_escpos(receipt, width)
    assert data.startswith(b"\x1b@\x1bt\x13")
    assert data.endswith(b"\x1bd\x04\x1dV\x01")
    tokens = parse_escpos(data)
    assert tokens[0] == ("ESC @", -1) and tokens[-1] == ("GS V", 1)
    at = tokens.index(("text", "APPROVED"))
    assert tokens[at - 3 : at] == [("ESC a", 1), ("ESC E", 1), ("GS !", 0x11)]
    assert tokens[at + 1 : at + 4] == [("GS !", 0), ("ESC E", 0), ("ESC a", 0)]
    text = [str(v) for k, v in tokens if k == "text"]
    plain = render_text(receipt, width).replace("*** APPROVED ***", "APPROVED")
    assert [t.strip() for t in text] == [x.strip() for x in plain.splitlines()]
    assert all(len(t) <= width for t in text)
    assert render_escpos(receipt, width, partial_cut=False).endswith(b"\x1dV\x00")


def test_escpos_text_cannot_carry_commands(cases: dict[str, Case]) -> None:
    case = cases["refund"]
    sneaky = MERCHANT.model_copy(update={"name": "Shop\x1bd\xff\x1dV\x00€"})
    data = render_escpos(receipt_for(case.record, case.result, sneaky, "customer"))
    tokens = parse_escpos(data)  # fails on any stray control byte
    assert [k for k, _ in tokens].count("GS V") == 1
    assert ("text", "Shop?d\xff?V?€") in tokens


def test_bad_width_is_refused(cases: dict[str, Case]) -> None:
    case = cases["refund"]
    receipt = receipt_for(case.record, case.result, MERCHANT, "customer")
    with pytest.raises(ValueError, match="32 or 42"):
        render_text(receipt, 40)  # type: ignore[arg-type]


# -- printing ----------------------------------------------------------------------------------


@pytest.fixture
def receipt(cases: dict[str, Case]) -> Receipt:
    case = cases["online_pin"]
    return receipt_for(case.record, case.result, MERCHANT, "customer")


def test_print_to_a_file_appends(receipt: Receipt, tmp_path: Path) -> None:
    target = tmp_path / "receipts.bin"
    n = print_receipt(receipt, target)
    assert n == len(render_escpos(receipt))
    print_receipt(receipt, PrinterSettings(path=target, kind="file", width=32))
    assert target.read_bytes() == render_escpos(receipt) + render_escpos(receipt, 32)


def _read_exactly(fd: int, n: int) -> bytes:
    got = b""
    while len(got) < n:
        got += os.read(fd, n - len(got))
    return got


@pytest.mark.parametrize("kind", ["device", "serial"])
def test_print_to_a_pseudo_terminal(
    receipt: Receipt, kind: typing.Literal["device", "serial"]
) -> None:
    master, slave = os.openpty()
    try:
        path = Path(os.ttyname(slave))
        n = print_receipt(receipt, PrinterSettings(path=path, kind=kind, baudrate=19200))
        # Byte for byte: a tty must not turn LF into CR LF on the way to the printer.
        assert _read_exactly(master, n) == render_escpos(receipt)
    finally:
        os.close(slave)
        os.close(master)


def test_bare_pty_path_is_a_device(receipt: Receipt) -> None:
    master, slave = os.openpty()
    try:
        n = print_receipt(receipt, Path(os.ttyname(slave)))
        assert _read_exactly(master, n) == render_escpos(receipt)
    finally:
        os.close(slave)
        os.close(master)


def test_missing_device_is_unavailable_and_not_created(receipt: Receipt) -> None:
    path = Path("/dev/pos-receipt-printer-that-is-not-there")
    with pytest.raises(PrinterUnavailable) as info:
        print_receipt(receipt, path)
    assert info.value.path == str(path) and not path.exists()
    with pytest.raises(PrinterUnavailable):
        print_receipt(receipt, PrinterSettings(path=path, kind="serial"))


def test_wrong_kind_of_target_is_a_config_error(receipt: Receipt, tmp_path: Path) -> None:
    with pytest.raises(PrinterConfigError):
        print_receipt(receipt, tmp_path)  # a directory
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    with pytest.raises(PrinterConfigError, match="character device"):
        print_receipt(receipt, PrinterSettings(path=plain, kind="device"))
    with pytest.raises(PrinterConfigError, match="regular file"):
        print_receipt(receipt, PrinterSettings(path=Path("/dev/null"), kind="file"))


def test_a_printer_that_stops_taking_data_times_out() -> None:
    master, slave = os.openpty()
    try:
        fd = os.open(os.ttyname(slave), os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            with pytest.raises(PrinterUnavailable, match="in time"):
                printer_module._write_all(fd, bytes(1 << 20), time.monotonic() + 0.2, "pty")
        finally:
            os.close(fd)
    finally:
        os.close(slave)
        os.close(master)


# -- golden files: every template, byte for byte --------------------------------------

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("copy", ["customer", "merchant"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_text_and_escpos_match_their_golden_files(
    cases: dict[str, Case], scenario: str, copy: typing.Literal["customer", "merchant"]
) -> None:
    """golden/<scenario>-<copy>.txt is the reviewed plain-text layout, and
    golden/<scenario>-<copy>.escpos.txt the text the printer gets (the printer centres and
    enlarges by command, so its text has no padding and no stars).

    A change to what a receipt says shows up here as a diff to read, not as a surprise
    on paper.
    """
    case = cases[scenario]
    receipt = receipt_for(case.record, case.result, MERCHANT, copy)
    text = render_text(receipt, 42)
    assert text == (GOLDEN / f"{scenario}-{copy}.txt").read_text(encoding="utf-8")
    printed = escpos_text(render_escpos(receipt, 42))
    assert printed == (GOLDEN / f"{scenario}-{copy}.escpos.txt").read_text(encoding="utf-8")
