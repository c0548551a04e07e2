"""The whole Book 3 flow against every catalogue card, with an issuer simulated in pyemv."""

from __future__ import annotations

import pytest

from hardware.cards import At, Faults, catalogue, load_profile
from paycore import tags, tlv
from terminal_agent.kernel import (
    AcType,
    Decision,
    HostOutcome,
    KernelSequenceError,
    OnlineRequest,
    TerminalConfig,
    Tsi,
    Tvr,
)

from .support import (
    ScriptedCardholder,
    complete,
    host_answer,
    setup,
    start,
    verify_arqc,
)

ONLINE_CARDS = [name for name in catalogue() if name != "blocked_app"]


def _cardholder(name: str) -> ScriptedCardholder:
    pin = load_profile(name).applications[0].pin.get_secret_value()
    return ScriptedCardholder(offline_pins=[pin])


@pytest.mark.parametrize("name", ONLINE_CARDS)
def test_every_profile_goes_online_and_completes_with_tc(name: str) -> None:
    profile = load_profile(name)
    run = setup(profile, cardholder=_cardholder(name))
    first = start(run)
    assert first.outcome is None and first.online_request is not None
    ctx = first.context
    assert ctx.first_ac is not None and ctx.first_ac.ac_type is AcType.ARQC
    verify_arqc(profile, first)
    assert ctx.tvr & Tvr.ODA_NOT_PERFORMED and not ctx.tsi & Tsi.ODA_PERFORMED
    assert ctx.tsi & Tsi.CARD_RISK_MANAGEMENT_PERFORMED
    assert ctx.tsi & Tsi.TERMINAL_RISK_MANAGEMENT_PERFORMED
    assert ctx.tsi & Tsi.CARDHOLDER_VERIFICATION_PERFORMED
    atc_before = run.card.atc()
    outcome = complete(run, first, host_answer(profile, first))
    assert outcome.decision is Decision.APPROVED_ONLINE and outcome.decision.approved
    assert outcome.cid & 0xC0 == AcType.TC.value
    assert not outcome.reversal_required
    assert int.from_bytes(outcome.atc, "big") == atc_before
    assert Tsi.from_bytes(outcome.tsi, "big") & Tsi.ISSUER_AUTHENTICATION_PERFORMED
    assert not int.from_bytes(outcome.tvr, "big") & Tvr.ISSUER_AUTHENTICATION_FAILED
    assert ctx.apdu_count == len(run.channel.sent)


@pytest.mark.parametrize("name", ["visa_credit", "mastercard_credit", "visa_debit"])
def test_wrong_arpc_gives_aac_after_approval(name: str) -> None:
    profile = load_profile(name)
    run = setup(profile)
    first = start(run)
    outcome = complete(run, first, host_answer(profile, first, good_arpc=False))
    assert outcome.decision is Decision.DECLINED_AFTER_APPROVAL
    assert outcome.reversal_required and not outcome.decision.approved
    assert outcome.cid & 0xC0 == AcType.AAC.value
    assert int.from_bytes(outcome.tvr, "big") & Tvr.ISSUER_AUTHENTICATION_FAILED


def test_card_declining_at_second_ac_is_a_reversal() -> None:
    profile = load_profile("visa_credit")
    run = setup(profile, faults=Faults(aac_at_second_gen_ac=True))
    first = start(run)
    outcome = complete(run, first, host_answer(profile, first))
    assert outcome.decision is Decision.DECLINED_AFTER_APPROVAL and outcome.reversal_required


def test_host_decline_asks_for_aac() -> None:
    profile = load_profile("mastercard_credit")
    run = setup(profile)
    first = start(run)
    outcome = complete(run, first, HostOutcome(approved=False, arc=b"05"))
    assert outcome.decision is Decision.DECLINED_ONLINE
    assert outcome.cid & 0xC0 == AcType.AAC.value and outcome.arc == b"05"
    assert not Tsi.from_bytes(outcome.tsi, "big") & Tsi.ISSUER_AUTHENTICATION_PERFORMED


def test_unable_to_go_online_uses_default_action_codes() -> None:
    profile = load_profile("visa_credit")
    run = setup(profile)
    first = start(run)
    outcome = complete(run, first, HostOutcome.unable())
    # TVR has "ODA not performed", which the Visa TAC/IAC default both name: decline.
    assert outcome.decision is Decision.DECLINED_UNABLE_ONLINE and outcome.arc == b"Z3"
    assert outcome.cid & 0xC0 == AcType.AAC.value


def test_unable_to_go_online_approves_when_defaults_allow() -> None:
    app = load_profile("visa_debit").applications[0]
    profile = load_profile("visa_debit").model_copy(
        update={"applications": (app.model_copy(update={"iac_default": bytes(5)}),)}
    )
    config = TerminalConfig.model_validate(
        {
            "aids": [
                {
                    "aid": "A0000000031010",
                    "application_version": "0096",
                    "tac_default": "0000000000",
                }
            ]
        }
    )
    run = setup(profile, config=config)
    first = start(run)
    outcome = complete(run, first, HostOutcome.unable())
    assert outcome.decision is Decision.APPROVED_UNABLE_ONLINE and outcome.arc == b"Y3"


def _offline_profile(name: str = "visa_debit") -> object:
    base = load_profile(name)
    app = base.applications[0].model_copy(
        update={"iac_online": bytes(5), "iac_default": bytes(5), "iac_denial": bytes(5)}
    )
    return base.model_copy(update={"applications": (app,)})


def test_offline_approval_with_tc_at_first_ac() -> None:
    profile = _offline_profile()
    config = TerminalConfig.model_validate(
        {
            "floor_limit": 100000,
            "aids": [
                {
                    "aid": "A0000000031010",
                    "application_version": "0096",
                    "tac_online": "0000000000",
                    "tac_default": "0000000000",
                }
            ],
        }
    )
    run = setup(profile, config=config)  # type: ignore[arg-type]
    first = start(run)
    assert first.outcome is not None and first.online_request is None
    assert first.outcome.decision is Decision.APPROVED_OFFLINE
    assert first.outcome.cid & 0xC0 == AcType.TC.value
    with pytest.raises(KernelSequenceError):
        complete(run, first, HostOutcome(approved=True))


def test_offline_decline_on_tac_denial() -> None:
    config = TerminalConfig.model_validate(
        {
            "aids": [
                {"aid": "A0000000041010", "application_version": "0002", "tac_denial": "0040000000"}
            ]
        }
    )
    run = setup(load_profile("expired"), config=config)
    first = start(run)
    assert first.context.requested_first is AcType.AAC
    assert first.outcome is not None and first.outcome.decision is Decision.DECLINED_OFFLINE


def test_online_only_terminal_always_asks_for_arqc() -> None:
    profile = _offline_profile()
    config = TerminalConfig.model_validate(
        {
            "terminal_type": 0x21,
            "floor_limit": 100000,
            "aids": [
                {"aid": "A0000000031010", "application_version": "0096", "tac_online": "0000000000"}
            ],
        }
    )
    run = setup(profile, config=config)  # type: ignore[arg-type]
    first = start(run)
    assert first.context.requested_first is AcType.ARQC and first.online_request is not None
    outcome = complete(run, first, HostOutcome.unable())
    assert outcome.decision is Decision.DECLINED_UNABLE_ONLINE


def test_de55_has_the_cryptogram_data_and_no_sensitive_tags() -> None:
    profile = load_profile("visa_credit")
    run = setup(profile)
    first = start(run)
    request = first.online_request
    assert isinstance(request, OnlineRequest)
    ctx = first.context
    assert ctx.first_ac is not None
    de55 = tlv.flatten(tlv.decode(request.de55))
    assert de55[0x9F26] == ctx.first_ac.cryptogram == request.arqc
    assert de55[0x9F27] == bytes((ctx.first_ac.cid,))
    assert de55[0x9F36] == ctx.first_ac.atc and de55[0x9F10] == ctx.first_ac.iad
    assert de55[0x95] == ctx.tvr.to_bytes() == request.tvr
    assert de55[0x9F34] == request.cvm_results == bytes.fromhex("420300")
    assert de55[0x9F37] == ctx.unpredictable_number
    assert de55[0x9F02] == bytes.fromhex("000000001234")
    assert de55[0x82] == bytes.fromhex("1C00") and de55[0x84] == bytes.fromhex("A0000000031010")
    assert de55[0x5F2A] == bytes.fromhex("0826") and de55[0x9F1A] == bytes.fromhex("0826")
    assert not any(tags.is_sensitive(tag) for tag in de55)
    assert 0x57 not in de55 and 0x5A not in de55
    app = profile.applications[0]
    assert request.pan.digits == app.pan.digits
    assert request.track2 is not None and request.track2.get_secret_value().hex().startswith(
        app.pan.digits
    )
    assert request.psn == "01" and request.expiry == "3012"
    assert request.pin_block is not None  # online PIN was the CVM
    assert app.pan.digits not in repr(request) and app.pan.digits not in repr(ctx)


def test_t0_chaining_and_wrong_le_are_handled_by_the_channel() -> None:
    profile = load_profile("mastercard_credit")
    for faults in (Faults(t0_get_response=True), Faults(t0_wrong_le=True)):
        run = setup(profile, faults=faults)
        first = start(run)
        outcome = complete(run, first, host_answer(profile, first))
        assert outcome.decision is Decision.APPROVED_ONLINE


def test_gpo_refused_removes_the_application_and_selects_again() -> None:
    profile = load_profile("two_apps_choice")
    cardholder = ScriptedCardholder(choice=0)
    run = setup(
        profile,
        cardholder=cardholder,
        faults=Faults(wrong_sw_at=At(ins=0xA8), wrong_sw=0x6985),
    )
    first = start(run)
    assert first.context.selected is not None
    assert first.context.selected.adf_name == bytes.fromhex("A0000000032010")
    assert cardholder.confirmations == [bytes.fromhex("A0000000032010")]  # 87 b8 set
    assert "TRY AGAIN" in cardholder.messages
    assert first.online_request is not None


def test_apdu_count_and_sequence() -> None:
    run = setup(load_profile("visa_credit"))
    first = start(run)
    instructions = [apdu[1] for apdu in run.channel.sent]
    assert instructions[0] == 0xA4 and instructions[-1] == 0xAE
    gpo = instructions.index(0xA8)
    assert 0xB2 in instructions[gpo:] and instructions.count(0xAE) == 1
    assert first.context.apdu_count == len(run.channel.sent)
