"""Each TVR bit the kernel sets, driven by a card profile or a terminal setting."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from hardware.cards import CardProfile, load_profile
from terminal_agent.kernel import OnlinePinStatus, TerminalConfig, Tvr

from .support import FixedRandom, ScriptedCardholder, purchase, setup, start


def _variant(
    name: str, *, record_data: dict[str, bytes] | None = None, **update: Any
) -> CardProfile:
    base = load_profile(name)
    app = base.applications[0]
    if record_data:
        records = list(app.records)
        first = records[-1]
        records[-1] = first.model_copy(update={"data": {**first.data, **record_data}})
        update["records"] = tuple(records)
    return base.model_copy(update={"applications": (app.model_copy(update=update),)})


def _config(**settings: Any) -> TerminalConfig:
    return TerminalConfig.model_validate(settings)


def _tvr(profile: CardProfile, config: TerminalConfig | None = None, **kwargs: Any) -> Tvr:
    rng = kwargs.pop("rng", None)
    cardholder = kwargs.pop("cardholder", None)
    run = setup(profile, config=config, rng=rng, cardholder=cardholder)
    return start(run, purchase(**kwargs)).context.tvr


def test_clean_card_sets_only_oda_floor_limit_and_online_pin() -> None:
    tvr = _tvr(load_profile("visa_credit"))
    assert tvr == Tvr.ODA_NOT_PERFORMED | Tvr.EXCEEDS_FLOOR_LIMIT | Tvr.ONLINE_PIN_ENTERED


def test_expired_application() -> None:
    assert _tvr(load_profile("expired")) & Tvr.EXPIRED_APPLICATION
    assert not _tvr(load_profile("mastercard_credit")) & Tvr.EXPIRED_APPLICATION


def test_application_not_yet_effective() -> None:
    profile = load_profile("visa_credit")  # effective 2024-01-01
    assert _tvr(profile, date=dt.date(2023, 12, 31)) & Tvr.APPLICATION_NOT_YET_EFFECTIVE
    assert not _tvr(profile, date=dt.date(2024, 1, 1)) & Tvr.APPLICATION_NOT_YET_EFFECTIVE


def test_application_version_mismatch() -> None:
    config = _config(aids=[{"aid": "A0000000031010", "application_version": "0099"}])
    assert _tvr(load_profile("visa_credit"), config) & Tvr.DIFFERENT_APPLICATION_VERSIONS
    assert not _tvr(load_profile("visa_credit")) & Tvr.DIFFERENT_APPLICATION_VERSIONS


def test_service_not_allowed_by_usage_control() -> None:
    no_cashback = _variant("visa_credit", auc=bytes.fromhex("FF00"))
    tvr = _tvr(no_cashback, transaction_type=0x09, amount_other=500)
    assert tvr & Tvr.SERVICE_NOT_ALLOWED
    assert not _tvr(no_cashback) & Tvr.SERVICE_NOT_ALLOWED
    international_goods_only = _variant("visa_credit", auc=bytes.fromhex("1100"))
    assert _tvr(international_goods_only) & Tvr.SERVICE_NOT_ALLOWED  # domestic purchase
    assert not _tvr(international_goods_only, config=None) & Tvr.EXPIRED_APPLICATION
    foreign = _config(country_code=276)
    assert not _tvr(international_goods_only, foreign) & Tvr.SERVICE_NOT_ALLOWED


def test_floor_limit() -> None:
    profile = load_profile("visa_credit")
    assert _tvr(profile, _config(floor_limit=1234)) & Tvr.EXCEEDS_FLOOR_LIMIT  # equal counts
    assert not _tvr(profile, _config(floor_limit=1235)) & Tvr.EXCEEDS_FLOOR_LIMIT
    per_aid = _config(
        floor_limit=100000,
        aids=[{"aid": "A0000000031010", "application_version": "0096", "floor_limit": 1000}],
    )
    assert _tvr(profile, per_aid) & Tvr.EXCEEDS_FLOOR_LIMIT


@pytest.mark.parametrize(
    ("amount", "number", "selected"),
    [
        (1000, 20, True),  # below the threshold: target 20 %
        (1000, 21, False),
        # halfway between threshold 2000 and floor 10000: 20 + (80 - 20) / 2 = 50 %
        (6000, 50, True),
        (6000, 51, False),
        (9999, 79, True),  # just below the floor limit: almost the max target
        (10000, 1, False),  # at the floor limit no random selection (floor limit bit instead)
    ],
)
def test_random_selection_biased(amount: int, number: int, selected: bool) -> None:
    config = _config(
        floor_limit=10000,
        random_selection={"threshold": 2000, "target_percent": 20, "max_target_percent": 80},
    )
    tvr = _tvr(load_profile("visa_credit"), config, amount=amount, rng=FixedRandom(number))
    assert bool(tvr & Tvr.SELECTED_RANDOMLY_FOR_ONLINE) is selected


def test_random_selection_disabled_by_default() -> None:
    tvr = _tvr(load_profile("visa_credit"), _config(floor_limit=10000), rng=FixedRandom(1))
    assert not tvr & Tvr.SELECTED_RANDOMLY_FOR_ONLINE


@pytest.mark.parametrize(
    ("atc", "last_online", "ucol", "expected"),
    [
        (
            30,
            15,
            0x05,
            Tvr.LOWER_CONSECUTIVE_OFFLINE_LIMIT_EXCEEDED
            | Tvr.UPPER_CONSECUTIVE_OFFLINE_LIMIT_EXCEEDED,
        ),
        (30, 15, 0x20, Tvr.LOWER_CONSECUTIVE_OFFLINE_LIMIT_EXCEEDED),
        (16, 15, 0x05, Tvr(0)),
        (16, 0, 0x40, Tvr.NEW_CARD | Tvr.LOWER_CONSECUTIVE_OFFLINE_LIMIT_EXCEEDED),
    ],
)
def test_velocity_checking(atc: int, last_online: int, ucol: int, expected: Tvr) -> None:
    profile = _variant(
        "visa_credit",
        record_data={"9F23": bytes((ucol,))},
        atc=atc,
        last_online_atc=last_online,
    )
    velocity = (
        Tvr.LOWER_CONSECUTIVE_OFFLINE_LIMIT_EXCEEDED
        | Tvr.UPPER_CONSECUTIVE_OFFLINE_LIMIT_EXCEEDED
        | Tvr.NEW_CARD
    )
    assert _tvr(profile) & velocity == expected


def test_no_velocity_check_without_ucol() -> None:
    profile = _variant("visa_credit", atc=30, last_online_atc=0)
    tvr = _tvr(profile)
    assert not tvr & (Tvr.LOWER_CONSECUTIVE_OFFLINE_LIMIT_EXCEEDED | Tvr.NEW_CARD)


def test_merchant_forced_online() -> None:
    assert _tvr(load_profile("visa_credit"), force_online=True) & Tvr.MERCHANT_FORCED_ONLINE


def test_pin_not_entered_and_pin_pad_missing() -> None:
    bypass = ScriptedCardholder(online=OnlinePinStatus.BYPASSED)
    tvr = _tvr(load_profile("visa_credit"), cardholder=bypass)
    assert tvr & Tvr.PIN_PAD_PRESENT_PIN_NOT_ENTERED and not tvr & Tvr.ONLINE_PIN_ENTERED
    assert not tvr & Tvr.CARDHOLDER_VERIFICATION_NOT_SUCCESSFUL  # signature followed
    no_pad = _tvr(load_profile("visa_credit"), _config(pinpad_present=False))
    assert no_pad & Tvr.PIN_PAD_NOT_PRESENT_OR_NOT_WORKING


def test_cvm_failure_on_online_pin_required() -> None:
    bypass = ScriptedCardholder(online=OnlinePinStatus.BYPASSED)
    run = setup(load_profile("maestro_debit"), cardholder=bypass)
    ctx = start(run).context
    assert ctx.tvr & Tvr.CARDHOLDER_VERIFICATION_NOT_SUCCESSFUL
    assert ctx.cvm_results == bytes.fromhex("020001")


def test_icc_data_missing_without_cvm_list() -> None:
    base = load_profile("visa_credit")
    app = base.applications[0]
    records = tuple(
        r.model_copy(update={"tags": tuple(t for t in r.tags if t != "8E")}) for r in app.records
    )
    profile = base.model_copy(
        update={"applications": (app.model_copy(update={"records": records}),)}
    )
    run = setup(profile)
    ctx = start(run).context
    assert ctx.tvr & Tvr.ICC_DATA_MISSING and ctx.cvm_results == bytes.fromhex("3F0000")
