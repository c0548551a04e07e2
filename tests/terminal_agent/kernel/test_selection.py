"""Application selection (Book 1 12) against the emulated cards."""

from __future__ import annotations

import asyncio

import pytest

from hardware.cards import load_profile
from terminal_agent.kernel import CardholderAbort, NoApplication, TerminalConfig
from terminal_agent.kernel.apdu import CardLink
from terminal_agent.kernel.context import TransactionContext
from terminal_agent.kernel.selection import build_candidate_list

from .support import FixedRandom, ScriptedCardholder, purchase, setup, start

CREDIT, DEBIT = bytes.fromhex("A0000000031010"), bytes.fromhex("A0000000032010")


def test_two_applications_ask_the_cardholder_with_both() -> None:
    cardholder = ScriptedCardholder(choice=1)
    run = setup(load_profile("two_apps_choice"), cardholder=cardholder)
    first = start(run)
    assert cardholder.choices_offered == [[CREDIT, DEBIT]]  # priority 1 before 2
    assert first.context.selected is not None and first.context.selected.adf_name == DEBIT
    assert first.context.selected.preferred_name == "Visa Debit"


def test_cardholder_cancel_at_selection() -> None:
    run = setup(load_profile("two_apps_choice"), cardholder=ScriptedCardholder(choice=None))
    with pytest.raises(CardholderAbort):
        start(run)


def test_single_application_with_confirmation_bit_is_confirmed() -> None:
    config = TerminalConfig.model_validate(
        {"aids": [{"aid": "A0000000032010", "application_version": "0096"}]}
    )
    cardholder = ScriptedCardholder(confirm=False)
    with pytest.raises(CardholderAbort):
        start(setup(load_profile("two_apps_choice"), config=config, cardholder=cardholder))
    assert cardholder.confirmations == [DEBIT]


def test_no_pse_selects_from_the_aid_list() -> None:
    run = setup(load_profile("no_pse"))
    first = start(run)
    assert run.channel.sent[0][5:-1] == b"1PAY.SYS.DDF01" and run.channel.sent[1][1] == 0xA4
    assert first.context.selected is not None and first.context.selected.adf_name == CREDIT
    assert run.cardholder.choices_offered == []  # one candidate, no confirmation bit
    assert first.online_request is not None


def test_partial_match_and_exact_only() -> None:
    profile = load_profile("no_pse")

    def candidates(config: TerminalConfig) -> list[bytes]:
        run = setup(profile, config=config)
        ctx = TransactionContext(config, purchase(), FixedRandom().randbytes(4))
        asyncio.run(build_candidate_list(ctx, CardLink(run.channel)))
        return [c.adf_name for c in ctx.candidates]

    partial = TerminalConfig.model_validate(
        {"use_pse": False, "aids": [{"aid": "A000000003", "application_version": "0096"}]}
    )
    assert candidates(partial) == [CREDIT]
    exact_only = TerminalConfig.model_validate(
        {
            "use_pse": False,
            "aids": [
                {"aid": "A000000003", "application_version": "0096", "partial_selection": False}
            ],
        }
    )
    assert candidates(exact_only) == []


@pytest.mark.parametrize("use_pse", [True, False])
def test_blocked_application_is_excluded(use_pse: bool) -> None:
    run = setup(load_profile("blocked_app"), config=TerminalConfig(use_pse=use_pse))
    with pytest.raises(NoApplication):
        start(run)


def test_card_not_answering_select_is_no_application() -> None:
    from hardware.cards import At, Faults

    faults = Faults(wrong_sw_at=At(ins=0xA4), wrong_sw=0x6A81)
    with pytest.raises(NoApplication) as info:
        start(setup(load_profile("visa_credit"), faults=faults))
    assert info.value.card_blocked
