"""The issuer simulator as a connector: every response code path, ARPCs, money, PIN tries."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_bridge.connectors.base import ConnectorTimeout, Reversal
from gateway_bridge.connectors.issuer_sim import (
    RESPONSE_CODES,
    SCENARIO_FIRST,
    IssuerSimulator,
    load_accounts_file,
    load_catalogue,
)
from gateway_bridge.keystore.base import UnknownKey
from paycore.pan import Pan
from paycore.wire import AuthorizationResponse, EncryptedPinBlock, ReversalRequest
from tests.gateway_bridge.connectors.issuer_sim_support import (
    CATALOGUE,
    DukptPinService,
    EmvCard,
    FakeClock,
    PinPad,
    authorization,
    card_from_profile,
)

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def sim(clock: FakeClock) -> IssuerSimulator:
    return IssuerSimulator(load_catalogue(CATALOGUE), clock=clock)


@pytest.fixture
def pins() -> DukptPinService:
    return DukptPinService()


@pytest.fixture
def pinpad() -> PinPad:
    return PinPad()


def balance(sim: IssuerSimulator, card: EmvCard) -> int:
    return sim.snapshot(Pan(card.pan)).balance


def reversal_of(auth_message_id: str, amount: int, terminal_id: str = "T0001") -> Reversal:
    return Reversal(
        terminal_id=terminal_id,
        merchant_id="M000001",
        message_id="f" * 32,
        request=ReversalRequest(
            original_message_id=auth_message_id,
            idempotency_key="rev-" + auth_message_id[:8],
            reason="host_timeout",
            amount=amount,
            currency="GBP",
        ),
        original=None,
        original_response=None,
    )


def assert_declined_without_arpc(response: AuthorizationResponse, code: str) -> None:
    assert response.response_code == code
    assert not response.approved
    assert response.authorization_code is None
    assert response.issuer_authentication_data is None


# -- approvals and the ARPC, one card per CVN -----------------------------------------------

APPROVING_CARDS = [
    ("visa_credit", 0, "GBP"),  # CVN 18, ARPC method 2
    ("visa_debit", 0, "GBP"),  # CVN 10
    ("two_apps_choice", 1, "GBP"),  # CVN 10, second application
    ("mastercard_credit", 0, "GBP"),  # CVN 16
    ("maestro_debit", 0, "EUR"),  # CVN 17, 19-digit PAN
    ("signature_card", 0, "GBP"),  # CVN 21
]


@pytest.mark.parametrize(("profile", "index", "currency"), APPROVING_CARDS)
def test_approval_debits_and_card_accepts_arpc(
    sim: IssuerSimulator, pins: DukptPinService, profile: str, index: int, currency: str
) -> None:
    card = card_from_profile(profile, index)
    before = balance(sim, card)
    response = sim.authorize_sync(authorization(card, 1234, pins=pins, currency=currency))
    assert response.response_code == "00"
    assert response.approved
    assert response.authorization_code is not None
    assert response.authorization_code.isdigit()
    assert len(response.authorization_code) == 6
    assert response.host_reference is not None
    assert len(response.host_reference) == 12
    assert response.host_reference.isdigit()
    assert response.issuer_authentication_data is not None
    assert card.arpc_ok(response.issuer_authentication_data)
    assert balance(sim, card) == before - 1234
    iad = bytes.fromhex(response.issuer_authentication_data)
    if card.cvn == 18:
        assert iad[4:8] == bytes.fromhex("00800000")  # CSU: issuer approves
    else:
        assert iad[8:] == b"00"  # ARC


def test_cvn20_card(clock: FakeClock, pins: DukptPinService) -> None:
    """expired.toml is the catalogue's CVN 20 card: reopen it and go back to 2021."""
    clock.now = datetime(2021, 1, 10, 9, 0, tzinfo=UTC)
    sim = IssuerSimulator(load_catalogue(CATALOGUE), clock=clock)
    card = card_from_profile("expired")
    assert sim.authorize_sync(authorization(card, 500, pins=pins)).response_code == "62"
    sim.set_status(Pan(card.pan), "active")
    response = sim.authorize_sync(authorization(card, 500, pins=pins))
    assert response.response_code == "00"
    assert response.issuer_authentication_data is not None
    assert card.arpc_ok(response.issuer_authentication_data)


def test_arpc_is_bound_to_the_arqc(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("mastercard_credit")
    response = sim.authorize_sync(authorization(card, 700, pins=pins))
    assert response.issuer_authentication_data is not None
    card.generate_ac(700, "GBP")  # the card's last ARQC is now another one
    assert not card.arpc_ok(response.issuer_authentication_data)


def test_async_connector_interface(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("visa_debit")

    async def run() -> tuple[AuthorizationResponse, str]:
        await sim.start()
        auth = authorization(card, 250, pins=pins)
        response = await sim.authorize(auth)
        outcome = await sim.reverse(reversal_of(auth.message_id, 250))
        await sim.close()
        return response, outcome

    response, outcome = asyncio.run(run())
    assert response.response_code == "00"
    assert outcome == "reversed"
    assert sim.name == "issuer_sim"


# -- the checks before the cryptogram ---------------------------------------------------------


def test_unknown_pan_is_14(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("visa_credit")
    response = sim.authorize_sync(authorization(card, 100, pins=pins, pan="4000000000000010"))
    assert_declined_without_arpc(response, "14")
    assert response.host_reference is not None


@pytest.mark.parametrize(("status", "code"), [("lost", "41"), ("stolen", "43"), ("blocked", "62")])
def test_status_codes(sim: IssuerSimulator, pins: DukptPinService, status: str, code: str) -> None:
    card = card_from_profile("visa_credit")
    sim.set_status(Pan(card.pan), status)  # type: ignore[arg-type]
    before = balance(sim, card)
    assert_declined_without_arpc(sim.authorize_sync(authorization(card, 100, pins=pins)), code)
    assert balance(sim, card) == before


def test_blocked_and_closed_catalogue_cards_are_62(
    sim: IssuerSimulator, pins: DukptPinService
) -> None:
    for name in ("blocked_app", "expired"):
        response = sim.authorize_sync(authorization(card_from_profile(name), 100, pins=pins))
        assert_declined_without_arpc(response, "62")


def test_expired_by_clock_is_54(clock: FakeClock, pins: DukptPinService) -> None:
    card = card_from_profile("visa_debit")  # expires 2029-06
    clock.now = datetime(2029, 6, 30, 23, 59, tzinfo=UTC)
    sim = IssuerSimulator(load_catalogue(CATALOGUE), clock=clock)
    assert sim.authorize_sync(authorization(card, 100, pins=pins)).response_code == "00"
    clock.now = datetime(2029, 7, 1, 0, 0, tzinfo=UTC)
    assert_declined_without_arpc(sim.authorize_sync(authorization(card, 100, pins=pins)), "54")


def test_expiry_not_the_accounts_is_54(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("visa_credit")
    response = sim.authorize_sync(authorization(card, 100, pins=pins, expiry="3111"))
    assert_declined_without_arpc(response, "54")


# -- the cryptogram -----------------------------------------------------------------------------


def test_tampered_arqc_is_05_without_arpc(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("visa_credit")
    good = card.generate_ac(100, "GBP")
    assert card.last is not None
    bad = bytearray(card.last.arqc)
    bad[0] ^= 0x01
    tampered = good.replace(card.last.arqc.hex().upper(), bytes(bad).hex().upper())
    assert tampered != good
    before = balance(sim, card)
    response = sim.authorize_sync(authorization(card, 100, pins=pins, emv_data=tampered))
    assert_declined_without_arpc(response, "05")
    assert balance(sim, card) == before


def test_arqc_for_another_amount_is_05(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("mastercard_credit")
    emv = card.generate_ac(100, "GBP")
    assert_declined_without_arpc(
        sim.authorize_sync(authorization(card, 10_000, pins=pins, emv_data=emv)), "05"
    )


def test_arqc_under_another_key_is_05(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("visa_debit")
    card.imk_ac = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    card.__post_init__()
    assert_declined_without_arpc(sim.authorize_sync(authorization(card, 100, pins=pins)), "05")


def test_tc_or_aac_for_a_purchase_is_05(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("visa_debit")
    for cid in (0x40, 0x00):
        emv = card.generate_ac(100, "GBP", cid=cid)
        response = sim.authorize_sync(authorization(card, 100, pins=pins, emv_data=emv))
        assert_declined_without_arpc(response, "05")


def test_iad_naming_another_cvn_is_05(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("visa_debit")  # CVN 10 account
    card.cvn = 18
    card.__post_init__()  # the card now computes CVN 18 cryptograms
    assert_declined_without_arpc(sim.authorize_sync(authorization(card, 100, pins=pins)), "05")


@pytest.mark.parametrize("emv_data", ["", "9F2608", "5A08", "9F0206000000000100"])
def test_unusable_de55_is_05(sim: IssuerSimulator, pins: DukptPinService, emv_data: str) -> None:
    card = card_from_profile("visa_credit")
    response = sim.authorize_sync(authorization(card, 100, pins=pins, emv_data=emv_data))
    assert_declined_without_arpc(response, "05")


@settings(max_examples=150)
@given(data=st.binary(max_size=300))
def test_fuzz_de55_only_declines(data: bytes) -> None:
    sim = IssuerSimulator(
        [a for a in load_catalogue(CATALOGUE) if a.account_id == "visa_credit.0"],
        clock=FakeClock(NOW),
    )
    card = card_from_profile("visa_credit")
    auth = authorization(card, 100, pins=DukptPinService(), emv_data=data.hex().upper())
    assert_declined_without_arpc(sim.authorize_sync(auth), "05")


# -- the PIN ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "profile", ["visa_credit", "visa_debit", "mastercard_credit", "maestro_debit"]
)
def test_right_pin_approves(
    sim: IssuerSimulator, pins: DukptPinService, pinpad: PinPad, profile: str
) -> None:
    card = card_from_profile(profile)
    currency = "EUR" if profile == "maestro_debit" else "GBP"
    block = pinpad.pin_block(card.pin, card.pan)
    response = sim.authorize_sync(
        authorization(card, 300, pins=pins, currency=currency, pin_block=block)
    )
    assert response.response_code == "00"
    assert pins.calls == 1


def test_pin_tries(sim: IssuerSimulator, pins: DukptPinService, pinpad: PinPad) -> None:
    card = card_from_profile("mastercard_credit")  # IBM 3624 offset
    key = Pan(card.pan)

    def attempt(pin: str) -> AuthorizationResponse:
        block = pinpad.pin_block(pin, card.pan)
        return sim.authorize_sync(authorization(card, 100, pins=pins, pin_block=block))

    wrong = attempt("0000")
    assert wrong.response_code == "55"
    assert wrong.issuer_authentication_data is not None  # the cryptogram was fine
    assert card.arpc_ok(wrong.issuer_authentication_data)
    assert bytes.fromhex(wrong.issuer_authentication_data)[8:] == b"55"
    assert sim.snapshot(key).pin_failures == 1
    assert attempt(card.pin).response_code == "00"  # a right PIN resets the count
    assert sim.snapshot(key).pin_failures == 0
    assert attempt("1111").response_code == "55"
    assert attempt("2222").response_code == "55"
    assert attempt("3333").response_code == "75"  # the third wrong one in a row
    assert sim.snapshot(key).pin_blocked
    calls = pins.calls
    assert attempt(card.pin).response_code == "75"  # blocked: not even looked at
    assert pins.calls == calls
    # without a PIN the card still works
    assert sim.authorize_sync(authorization(card, 100, pins=pins)).response_code == "00"
    sim.reset_pin_tries(key)
    assert attempt(card.pin).response_code == "00"


def test_longer_wrong_pin_and_visa_pvv(
    sim: IssuerSimulator, pins: DukptPinService, pinpad: PinPad
) -> None:
    card = card_from_profile("visa_debit")  # Visa PVV
    block = pinpad.pin_block("98765", card.pan)
    response = sim.authorize_sync(authorization(card, 100, pins=pins, pin_block=block))
    assert response.response_code == "55"


def test_key_store_failure_is_96(sim: IssuerSimulator, pinpad: PinPad) -> None:
    class Broken(DukptPinService):
        def verify(
            self, pin_block: EncryptedPinBlock, pan: str, check: Callable[[bytearray], bool]
        ) -> bool:
            raise UnknownKey("no PIN BDK")

    card = card_from_profile("visa_credit")
    block = pinpad.pin_block(card.pin, card.pan)
    response = sim.authorize_sync(authorization(card, 100, pins=Broken(), pin_block=block))
    assert_declined_without_arpc(response, "96")
    assert sim.snapshot(Pan(card.pan)).pin_failures == 0


def test_pin_block_under_another_bdk_is_96_not_counted(
    sim: IssuerSimulator, pinpad: PinPad
) -> None:
    card = card_from_profile("visa_credit")
    block = pinpad.pin_block(card.pin, card.pan)
    other = DukptPinService(bytes.fromhex("00" * 16))
    response = sim.authorize_sync(authorization(card, 100, pins=other, pin_block=block))
    assert_declined_without_arpc(response, "96")
    assert sim.snapshot(Pan(card.pan)).pin_failures == 0


# -- money ---------------------------------------------------------------------------------------


def test_insufficient_funds_is_51(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("visa_debit")  # balance 12345, daily limit 50000
    response = sim.authorize_sync(authorization(card, 12_346, pins=pins))
    assert response.response_code == "51"
    assert response.issuer_authentication_data is not None
    assert card.arpc_ok(response.issuer_authentication_data)
    assert balance(sim, card) == 12_345
    assert sim.authorize_sync(authorization(card, 12_345, pins=pins)).response_code == "00"
    assert balance(sim, card) == 0


def test_daily_limit_is_61_and_resets_next_day(
    sim: IssuerSimulator, clock: FakeClock, pins: DukptPinService
) -> None:
    card = card_from_profile("visa_credit")  # balance 500000, daily limit 200000
    assert sim.authorize_sync(authorization(card, 150_000, pins=pins)).response_code == "00"
    assert sim.authorize_sync(authorization(card, 50_001, pins=pins)).response_code == "61"
    assert sim.authorize_sync(authorization(card, 50_000, pins=pins)).response_code == "00"
    assert sim.snapshot(Pan(card.pan)).daily_spent == 200_000
    clock.now = datetime(2026, 3, 16, 0, 0, 1, tzinfo=UTC)
    assert sim.snapshot(Pan(card.pan)).daily_spent == 0
    assert sim.authorize_sync(authorization(card, 150_000, pins=pins)).response_code == "00"
    assert balance(sim, card) == 500_000 - 350_000


def test_other_currency_is_57(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("visa_credit")  # a GBP account
    response = sim.authorize_sync(authorization(card, 100, pins=pins, currency="EUR"))
    assert response.response_code == "57"
    assert response.issuer_authentication_data is not None


@pytest.mark.parametrize("code", ["05", "13", "51", "57", "61", "62", "91", "96"])
def test_scenario_amounts(sim: IssuerSimulator, pins: DukptPinService, code: str) -> None:
    card = card_from_profile("visa_credit")
    before = balance(sim, card)
    response = sim.authorize_sync(authorization(card, SCENARIO_FIRST + int(code), pins=pins))
    assert response.response_code == code
    assert not response.approved
    assert response.display_text == RESPONSE_CODES[code].text
    assert balance(sim, card) == before
    if code in ("91", "96"):
        assert response.issuer_authentication_data is None
    else:
        assert response.issuer_authentication_data is not None
        assert card.arpc_ok(response.issuer_authentication_data)


def test_other_999_amounts_are_ordinary(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("visa_credit")
    for amount in (SCENARIO_FIRST, SCENARIO_FIRST + 1, SCENARIO_FIRST + 50, 90_005):
        assert sim.authorize_sync(authorization(card, amount, pins=pins)).response_code == "00"
        sim.reverse_sync(reversal_of(sim.ledger.entries()[-1].message_id, amount))
    assert balance(sim, card) == 500_000


def test_timeout_scenario_then_reversal(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("visa_credit")
    before = balance(sim, card)
    auth = authorization(card, SCENARIO_FIRST + 68, pins=pins)
    with pytest.raises(ConnectorTimeout):
        sim.authorize_sync(auth)
    assert balance(sim, card) == before - (SCENARIO_FIRST + 68)  # the host did approve
    assert sim.reverse_sync(reversal_of(auth.message_id, SCENARIO_FIRST + 68)) == "reversed"
    assert balance(sim, card) == before


# -- refunds, voids, reversals -----------------------------------------------------------------


def test_refund_credits(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("visa_debit")
    response = sim.authorize_sync(authorization(card, 2_000, pins=pins, transaction_type="refund"))
    assert response.response_code == "00"
    assert response.issuer_authentication_data is not None
    assert card.arpc_ok(response.issuer_authentication_data)
    assert balance(sim, card) == 12_345 + 2_000
    # a refund may carry an AAC (cards decline refunds offline) or no DE55 at all
    aac = card.generate_ac(500, "GBP", cid=0x00, transaction_type=0x20)
    auth = authorization(card, 500, pins=pins, transaction_type="refund", emv_data=aac)
    assert sim.authorize_sync(auth).response_code == "00"
    bare = authorization(card, 500, pins=pins, transaction_type="refund", emv_data="")
    answer = sim.authorize_sync(bare)
    assert answer.response_code == "00"
    assert answer.issuer_authentication_data is None
    assert balance(sim, card) == 12_345 + 3_000
    assert [e.kind for e in sim.ledger.entries()] == ["refund"] * 3


def test_refund_against_a_purchase_is_capped(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("visa_credit")
    purchase = sim.authorize_sync(authorization(card, 1_000, pins=pins))
    ref = purchase.host_reference

    def refund(amount: int, reference: str | None) -> str:
        auth = authorization(
            card, amount, pins=pins, transaction_type="refund", original_host_reference=reference
        )
        return sim.authorize_sync(auth).response_code

    assert refund(600, ref) == "00"
    assert refund(401, ref) == "13"
    assert refund(400, ref) == "00"
    assert refund(1, "999999999999") == "25"
    assert balance(sim, card) == 500_000


def test_void(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("mastercard_credit")
    purchase_auth = authorization(card, 4_200, pins=pins)
    assert sim.authorize_sync(purchase_auth).response_code == "00"
    assert sim.snapshot(Pan(card.pan)).daily_spent == 4_200

    def void(amount: int, original: str) -> AuthorizationResponse:
        auth = authorization(
            card,
            amount,
            pins=pins,
            transaction_type="void",
            emv_data="",
            original_message_id=original,
        )
        return sim.authorize_sync(auth)

    assert void(4_000, purchase_auth.message_id).response_code == "13"
    assert void(4_200, "e" * 32).response_code == "25"
    voided = void(4_200, purchase_auth.message_id)
    assert voided.response_code == "00"
    assert balance(sim, card) == 750_000
    assert sim.snapshot(Pan(card.pan)).daily_spent == 0
    assert void(4_200, purchase_auth.message_id).response_code == "12"
    assert sim.reverse_sync(reversal_of(purchase_auth.message_id, 4_200)) == "already_reversed"


def test_reversal(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("visa_credit")
    auth = authorization(card, 3_000, pins=pins)
    assert sim.authorize_sync(auth).response_code == "00"
    assert balance(sim, card) == 497_000
    assert sim.reverse_sync(reversal_of(auth.message_id, 3_000)) == "reversed"
    assert balance(sim, card) == 500_000
    assert sim.snapshot(Pan(card.pan)).daily_spent == 0
    assert sim.reverse_sync(reversal_of(auth.message_id, 3_000)) == "already_reversed"
    assert balance(sim, card) == 500_000
    assert sim.reverse_sync(reversal_of("a" * 32, 3_000)) == "unknown_original"
    # another terminal's message id is not this one
    assert sim.reverse_sync(reversal_of(auth.message_id, 3_000, "T0002")) == "unknown_original"
    kinds = [(e.kind, e.balance_delta) for e in sim.ledger.entries()]
    assert kinds == [("authorisation", -3_000), ("reversal", 3_000)]
    assert sim.ledger.is_undone(0)


def test_reversal_of_a_void_restores_the_purchase(
    sim: IssuerSimulator, pins: DukptPinService
) -> None:
    card = card_from_profile("visa_debit")
    purchase = authorization(card, 1_000, pins=pins)
    sim.authorize_sync(purchase)
    void = authorization(
        card,
        1_000,
        pins=pins,
        transaction_type="void",
        emv_data="",
        original_message_id=purchase.message_id,
    )
    assert sim.authorize_sync(void).response_code == "00"
    assert balance(sim, card) == 12_345
    assert sim.reverse_sync(reversal_of(void.message_id, 1_000)) == "reversed"
    assert balance(sim, card) == 11_345
    assert sim.snapshot(Pan(card.pan)).daily_spent == 1_000
    assert sim.reverse_sync(reversal_of(purchase.message_id, 1_000)) == "reversed"
    assert balance(sim, card) == 12_345


def test_reversal_of_a_decline_moves_nothing(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("visa_debit")
    auth = authorization(card, 20_000, pins=pins)
    assert sim.authorize_sync(auth).response_code == "51"
    assert sim.reverse_sync(reversal_of(auth.message_id, 20_000)) == "reversed"
    assert balance(sim, card) == 12_345


def test_ledger_records_decisions(sim: IssuerSimulator, pins: DukptPinService) -> None:
    card = card_from_profile("visa_debit")
    ok = sim.authorize_sync(authorization(card, 100, pins=pins))
    sim.authorize_sync(authorization(card, 99_999_999, pins=pins))
    first, second = sim.ledger.entries()
    assert (first.kind, first.approved, first.response_code) == ("authorisation", True, "00")
    assert first.authorization_code == ok.authorization_code
    assert first.host_reference == ok.host_reference
    assert first.account_id == "visa_debit.0"
    assert (second.approved, second.response_code, second.balance_delta) == (False, "51", 0)
    assert card.pan not in repr(sim.ledger.entries())


# -- concurrency ------------------------------------------------------------------------------


def _small_account(tmp_path: Path) -> tuple[IssuerSimulator, EmvCard]:
    card = EmvCard(
        pan="4000000000000010",
        psn="00",
        expiry="3012",
        cvn=18,
        pin="1234",
        imk_ac=bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"),
        imk_smi=bytes.fromhex("FEDCBA98765432100123456789ABCDEF"),
        imk_smc=bytes.fromhex("89ABCDEF0123456776543210FEDCBA98"),
    )
    path = tmp_path / "accounts.toml"
    path.write_text(
        f"""test_data = true
[[accounts]]
id = "small"
pan = "{card.pan}"
expiry = "2030-12"
cvn = 18
currency = "GBP"
balance_minor = 10000
daily_limit_minor = 1000000
[accounts.keys]
ac = "{card.imk_ac.hex()}"
smi = "{card.imk_smi.hex()}"
smc = "{card.imk_smc.hex()}"
""",
        encoding="utf-8",
    )
    return IssuerSimulator(load_accounts_file(path), clock=FakeClock(NOW)), card


def test_concurrent_tasks_never_overspend(tmp_path: Path) -> None:
    sim, card = _small_account(tmp_path)
    pins = DukptPinService()
    auths = [authorization(card, 700, pins=pins) for _ in range(40)]

    async def run() -> list[AuthorizationResponse]:
        return list(await asyncio.gather(*(sim.authorize(a) for a in auths)))

    responses = asyncio.run(run())
    codes = sorted(r.response_code for r in responses)
    assert codes.count("00") == 14  # 14 * 700 = 9800 <= 10000 < 15 * 700
    assert codes.count("51") == 26
    assert sim.snapshot("small").balance == 10_000 - 14 * 700
    approved = sum(-e.balance_delta for e in sim.ledger.entries() if e.approved)
    assert approved == 9_800


def test_concurrent_threads_never_overspend(tmp_path: Path) -> None:
    sim, card = _small_account(tmp_path)
    pins = DukptPinService()
    auths = [authorization(card, 300, pins=pins) for _ in range(60)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(sim.authorize_sync, auths))
    approved = [r for r in responses if r.approved]
    assert len(approved) == 33  # 33 * 300 = 9900
    assert sim.snapshot("small").balance == 100
    # concurrent reversals of the same message: exactly one wins
    target = auths[[r.approved for r in responses].index(True)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(sim.reverse_sync, [reversal_of(target.message_id, 300)] * 10))
    assert outcomes.count("reversed") == 1
    assert outcomes.count("already_reversed") == 9
    assert sim.snapshot("small").balance == 400


def test_message_ids_that_look_like_pans_stay_out_of_logs(
    sim: IssuerSimulator, pins: DukptPinService
) -> None:
    """A hex message id may hold a Luhn-valid digit run; the log guard fixture checks."""
    card = card_from_profile("visa_debit")
    auth = dataclasses.replace(
        authorization(card, 100, pins=pins), message_id="4111111111111111" + "ab" * 8
    )
    assert sim.authorize_sync(auth).response_code == "00"
    assert sim.reverse_sync(reversal_of(auth.message_id, 100)) == "reversed"
    bad = dataclasses.replace(auth, message_id="5555555555554444" + "cd" * 8)
    assert (
        sim.authorize_sync(
            dataclasses.replace(bad, request=bad.request.model_copy(update={"emv_data": "00"}))
        ).response_code
        == "05"
    )
