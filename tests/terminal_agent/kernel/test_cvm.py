"""CVM list evaluation (Book 3 10.5, Annex C3), table-driven over crafted 8E values,
and the CVMs performed against the emulated cards."""

from __future__ import annotations

import asyncio

import pytest

from hardware.cards import load_profile
from terminal_agent.kernel import CardDataError, OfflinePinStatus, TerminalConfig, Tvr
from terminal_agent.kernel.cvm import (
    Attempt,
    CvmFacts,
    CvmRule,
    parse_cvm_list,
    process_cvm_list,
)

from .support import ScriptedCardholder, purchase, setup, start

ALL_CVMS = bytes.fromhex("E0E800")  # every CVM this kernel performs
NO_PIN = bytes.fromhex("E02800")  # signature and no CVM only


def _facts(**kw: object) -> CvmFacts:
    values: dict[str, object] = {
        "amount": 1000,
        "transaction_type": 0x00,
        "unattended": False,
        "currency_matches": True,
        "capabilities": ALL_CVMS,
    }
    values.update(kw)
    return CvmFacts(**values)  # type: ignore[arg-type]


def _x_y(x: int, y: int) -> str:
    return f"{x:08X}{y:08X}"


def _run(
    cvm_list: str, facts: CvmFacts, outcomes: dict[int, Attempt]
) -> tuple[str, Tvr, list[int]]:
    tried: list[int] = []

    async def perform(rule: CvmRule) -> Attempt:
        tried.append(rule.method)
        return outcomes.get(rule.method, Attempt.SUCCESSFUL)

    decision = asyncio.run(
        process_cvm_list(parse_cvm_list(bytes.fromhex(cvm_list)), facts, perform)
    )
    assert [r.method for r in decision.performed] == tried
    return decision.results.hex().upper(), decision.tvr, tried


S, U, F = Attempt.SUCCESSFUL, Attempt.UNKNOWN, Attempt.FAILED
NOT_OK = Tvr.CARDHOLDER_VERIFICATION_NOT_SUCCESSFUL

CASES = [
    # (name, list, facts, outcomes, results, tvr, methods performed)
    ("always no CVM", _x_y(0, 0) + "1F00", {}, {}, "1F0002", Tvr(0), [0x1F]),
    ("online PIN unknown", _x_y(0, 0) + "4203" + "1E03", {}, {2: U}, "420300", Tvr(0), [2]),
    (
        "fail next to signature",
        _x_y(0, 0) + "4203" + "1E03",
        {},
        {2: F, 0x1E: U},
        "1E0300",
        Tvr(0),
        [2, 0x1E],
    ),
    ("fail without b7 stops", _x_y(0, 0) + "0200" + "1F00", {}, {2: F}, "020001", NOT_OK, [2]),
    ("fail CVM", _x_y(0, 0) + "0000" + "1F00", {}, {}, "000001", NOT_OK, []),
    ("fail CVM then next", _x_y(0, 0) + "4000" + "1F00", {}, {}, "1F0002", Tvr(0), [0x1F]),
    (
        "unsupported condition 03 skipped",
        _x_y(0, 0) + "4103" + "1F03",
        {"capabilities": NO_PIN},
        {},
        "1F0302",
        Tvr(0),
        [0x1F],
    ),
    (
        "unsupported CVM with condition 00 fails",
        _x_y(0, 0) + "4100" + "1E00",
        {"capabilities": NO_PIN},
        {0x1E: U},
        "1E0000",
        Tvr.PIN_PAD_NOT_PRESENT_OR_NOT_WORKING,
        [0x1E],
    ),
    (
        "unrecognised CVM",
        _x_y(0, 0) + "6500" + "1F00",
        {},
        {},
        "1F0002",
        Tvr.UNRECOGNISED_CVM,
        [0x1F],
    ),
    (
        "unrecognised CVM, no b7",
        _x_y(0, 0) + "2500" + "1F00",
        {},
        {},
        "250001",
        Tvr.UNRECOGNISED_CVM | NOT_OK,
        [],
    ),
    (
        "enciphered offline PIN never supported",
        _x_y(0, 0) + "4400" + "1F00",
        {},
        {},
        "1F0002",
        Tvr(0),
        [0x1F],
    ),
    ("unknown condition skipped", _x_y(0, 0) + "020A" + "1F00", {}, {}, "1F0002", Tvr(0), [0x1F]),
    ("no rule applies", _x_y(0, 0) + "0201", {}, {}, "3F0001", NOT_OK, []),
    (
        "unattended cash",
        _x_y(0, 0) + "0201" + "1F00",
        {"transaction_type": 1, "unattended": True},
        {2: U},
        "020100",
        Tvr(0),
        [2],
    ),
    (
        "manual cash",
        _x_y(0, 0) + "0204" + "1F00",
        {"transaction_type": 1},
        {2: U},
        "020400",
        Tvr(0),
        [2],
    ),
    ("not cash: purchase", _x_y(0, 0) + "1E02" + "1F00", {}, {0x1E: U}, "1E0200", Tvr(0), [0x1E]),
    (
        "not cash: cash skips",
        _x_y(0, 0) + "1E02" + "1F00",
        {"transaction_type": 1},
        {},
        "1F0002",
        Tvr(0),
        [0x1F],
    ),
    (
        "cashback",
        _x_y(0, 0) + "0205" + "1F00",
        {"transaction_type": 9},
        {2: U},
        "020500",
        Tvr(0),
        [2],
    ),
    ("under X", _x_y(2000, 0) + "1F06" + "0200", {}, {}, "1F0602", Tvr(0), [0x1F]),
    ("not under X", _x_y(1000, 0) + "1F06" + "0200", {}, {2: U}, "020000", Tvr(0), [2]),
    ("over X", _x_y(999, 0) + "0207" + "1F00", {}, {2: U}, "020700", Tvr(0), [2]),
    ("not over X", _x_y(1000, 0) + "0207" + "1F00", {}, {}, "1F0002", Tvr(0), [0x1F]),
    ("under Y", _x_y(0, 1001) + "1F08" + "0200", {}, {}, "1F0802", Tvr(0), [0x1F]),
    ("over Y", _x_y(0, 500) + "0209" + "1F00", {}, {2: U}, "020900", Tvr(0), [2]),
    (
        "amounts need the application currency",
        _x_y(5000, 0) + "1F06" + "0200",
        {"currency_matches": False},
        {2: U},
        "020000",
        Tvr(0),
        [2],
    ),
    ("plaintext PIN success", _x_y(0, 0) + "4103" + "1E03", {}, {}, "410302", Tvr(0), [1]),
    ("PIN and signature", _x_y(0, 0) + "0300", {}, {3: U}, "030000", Tvr(0), [3]),
]


@pytest.mark.parametrize(
    ("name", "cvm_list", "facts", "outcomes", "results", "tvr", "methods"),
    CASES,
    ids=[case[0] for case in CASES],
)
def test_cvm_list_table(
    name: str,
    cvm_list: str,
    facts: dict[str, object],
    outcomes: dict[int, Attempt],
    results: str,
    tvr: Tvr,
    methods: list[int],
) -> None:
    got_results, got_tvr, tried = _run(cvm_list, _facts(**facts), outcomes)
    assert (got_results, got_tvr, tried) == (results, tvr, methods)


@pytest.mark.parametrize("raw", ["", "00000000000000", "000000000000000042", "0000000000000000"])
def test_malformed_cvm_list(raw: str) -> None:
    with pytest.raises(CardDataError):
        parse_cvm_list(bytes.fromhex(raw))


def test_offline_pin_right_first_time() -> None:
    profile = load_profile("offline_pin_card")
    pin = profile.applications[0].pin.get_secret_value()
    cardholder = ScriptedCardholder(offline_pins=[pin])
    run = setup(profile, cardholder=cardholder)
    ctx = start(run).context
    assert ctx.cvm_results == bytes.fromhex("410302")
    assert cardholder.offline_pin_tries == [3]
    assert run.card.pin_try_counter() == 3
    assert not ctx.tvr & Tvr.CARDHOLDER_VERIFICATION_NOT_SUCCESSFUL


def test_offline_pin_wrong_then_right() -> None:
    profile = load_profile("offline_pin_card")
    pin = profile.applications[0].pin.get_secret_value()
    cardholder = ScriptedCardholder(offline_pins=["0000", pin])
    run = setup(profile, cardholder=cardholder)
    ctx = start(run).context
    assert cardholder.offline_pin_tries == [3, 2]  # the try counter went down
    assert "INCORRECT PIN" in cardholder.messages
    assert ctx.cvm_results == bytes.fromhex("410302")


def test_offline_pin_blocked_then_refused_next_time() -> None:
    profile = load_profile("offline_pin_card")
    cardholder = ScriptedCardholder(offline_pins=["0000", "0001", "0002"])
    run = setup(profile, cardholder=cardholder)
    ctx = start(run).context
    assert cardholder.offline_pin_tries == [3, 2, 1]
    assert run.card.pin_try_counter() == 0
    assert ctx.tvr & Tvr.PIN_TRY_LIMIT_EXCEEDED
    assert ctx.cvm_results == bytes.fromhex("1E0300")  # fell through to signature
    # The next transaction reads the PIN try counter (GET DATA 9F17) and does not ask.
    again = ScriptedCardholder(offline_pins=["1234"])
    run.cardholder = again
    run.card.power_off()
    run.card.power_on()
    ctx2 = start(run).context
    assert again.offline_pin_tries == [] and ctx2.tvr & Tvr.PIN_TRY_LIMIT_EXCEEDED
    assert ctx2.cvm_results == bytes.fromhex("1E0300")


def test_offline_pin_not_possible_and_cancel() -> None:
    profile = load_profile("offline_pin_card")
    cardholder = ScriptedCardholder(offline_status=OfflinePinStatus.NOT_POSSIBLE)
    ctx = start(setup(profile, cardholder=cardholder)).context
    assert ctx.tvr & Tvr.PIN_PAD_NOT_PRESENT_OR_NOT_WORKING
    from terminal_agent.kernel import CardholderAbort

    cancel = ScriptedCardholder(offline_status=OfflinePinStatus.CANCELLED)
    with pytest.raises(CardholderAbort) as info:
        start(setup(profile, cardholder=cancel))
    assert info.value.reason == "cancelled"


def test_signature_card() -> None:
    cardholder = ScriptedCardholder()
    run = setup(load_profile("signature_card"), cardholder=cardholder)
    first = start(run)
    ctx = first.context
    assert ctx.cvm_results == bytes.fromhex("1E0300")
    assert ctx.signature_required and cardholder.signatures == 1
    assert cardholder.online_pin_calls == 0


def test_signature_not_supported_falls_to_no_cvm() -> None:
    config = TerminalConfig(terminal_capabilities=bytes.fromhex("E0C800"))
    ctx = start(setup(load_profile("signature_card"), config=config), purchase()).context
    assert ctx.cvm_results == bytes.fromhex("1F0002") and not ctx.signature_required
