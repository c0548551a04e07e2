"""Fault personalities of the emulated cards (hardware.cards.faults)."""

from __future__ import annotations

import pytest

from hardware.card_interface import CardRemoved
from hardware.cards import PSE_NAME, SW, At, EmvCard, Faults, InProcessTransport, ResponseTooShort
from hardware.cards.fixtures import EmvCardFactory
from paycore import dol, tlv
from tests.hardware.test_card_catalogue import (
    apdu,
    issuer_auth_data,
    split_ac_response,
    terminal_data,
)

SELECT_PSE = apdu("00A40400", PSE_NAME)


class FakeClock:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def _sw(answer: bytes) -> int:
    return int.from_bytes(answer[-2:], "big")


def test_fixture_builds_cards(emv_card: EmvCardFactory) -> None:
    card = emv_card("visa_debit")
    assert isinstance(card, EmvCard) and card.profile.name == "visa_debit"
    faulty = emv_card("visa_debit", faults=Faults(t0_get_response=True))
    assert faulty.faults.t0_get_response and not card.faults.t0_get_response


def test_slow_card_waits_on_every_apdu(emv_card: EmvCardFactory) -> None:
    clock = FakeClock()
    card = emv_card("visa_debit", faults=Faults(delay=0.25), clock=clock)
    t = InProcessTransport(card)
    for _ in range(3):
        t.transmit(SELECT_PSE)
    assert clock.slept == [0.25, 0.25, 0.25]


def test_card_pulled_before_nth_apdu(emv_card: EmvCardFactory) -> None:
    card = emv_card("visa_debit", faults=Faults(pull_at=At(apdu=3)))
    t = InProcessTransport(card)
    assert t.transmit(SELECT_PSE)[1:] == (0x90, 0x00)
    assert t.transmit(SELECT_PSE)[1:] == (0x90, 0x00)
    with pytest.raises(CardRemoved):
        t.transmit(SELECT_PSE)
    t.reset()  # re-inserted: the one-shot fault is spent
    assert t.transmit(SELECT_PSE)[1:] == (0x90, 0x00)


def test_card_pulled_at_first_generate_ac(emv_card: EmvCardFactory) -> None:
    card = emv_card("visa_debit", faults=Faults(pull_at=At(ins=0xAE)))
    t = InProcessTransport(card)
    app = card.profile.applications[0]
    t.transmit(apdu("00A40400", app.aid))
    assert t.transmit(apdu("80A80000", bytes.fromhex("8300")))[1:] == (0x90, 0x00)
    cdol1 = dol.build(app.cdol1, terminal_data())
    with pytest.raises(CardRemoved):
        t.transmit(apdu("80AE8000", cdol1))
    assert card.atc() == app.atc + 1  # the GPO happened, the GENERATE AC did not


def test_garbage_and_truncated_answers(emv_card: EmvCardFactory) -> None:
    card = emv_card("visa_debit", faults=Faults(garbage_at=At(apdu=1), truncate_at=At(apdu=2)))
    card.power_on()
    assert card.process_apdu(SELECT_PSE) == bytes.fromhex("DEADBEEF")
    full = emv_card("visa_debit")
    full.power_on()
    expected = full.process_apdu(SELECT_PSE)
    cut = card.process_apdu(SELECT_PSE)
    assert cut == expected[: len(expected) // 2]
    short = emv_card("visa_debit", faults=Faults(truncate_at=At(ins=0xFE)))
    t = InProcessTransport(short)
    with pytest.raises(ResponseTooShort):
        t.transmit(apdu("00FE0000"))  # 6D00 cut to one byte


def test_wrong_status_word_at_a_command(emv_card: EmvCardFactory) -> None:
    card = emv_card("visa_debit", faults=Faults(wrong_sw_at=At(ins=0xA8), wrong_sw=0x6581))
    t = InProcessTransport(card)
    t.transmit(apdu("00A40400", card.profile.applications[0].aid))
    data, sw1, sw2 = t.transmit(apdu("80A80000", bytes.fromhex("8300")))
    assert (sw1, sw2) == (0x65, 0x81) and data[0] == 0x80  # the data, with a wrong SW


def test_t0_get_response_chaining(emv_card: EmvCardFactory) -> None:
    card = emv_card("visa_credit", faults=Faults(t0_get_response=True))
    plain = emv_card("visa_credit")
    plain.power_on()
    fci = plain.process_apdu(SELECT_PSE)[:-2]
    t = InProcessTransport(card)
    data, sw1, sw2 = t.transmit(SELECT_PSE)
    assert (data, sw1, sw2) == (b"", 0x61, len(fci))
    # fetch in two pieces: 61xx again for the rest
    first, sw1, sw2 = t.transmit(apdu("00C00000", le=10))
    assert first == fci[:10] and (sw1, sw2) == (0x61, len(fci) - 10)
    rest, sw1, sw2 = t.transmit(apdu("00C00000", le=sw2))
    assert first + rest == fci and (sw1, sw2) == (0x90, 0x00)
    assert _sw(card.process_apdu(apdu("00C00000"))) == SW.CONDITIONS_NOT_SATISFIED
    # pending data is lost when another command comes first
    t.transmit(SELECT_PSE)
    t.transmit(apdu("00B2010C"))
    record, sw1, _ = t.transmit(apdu("00C00000"))
    assert sw1 == 0x90 and record[0] == 0x70  # the record, not the FCI
    # a status word without data is passed through unchanged
    assert t.transmit(apdu("00A40400", bytes.fromhex("A000000099")))[1:] == (0x6A, 0x82)


def test_t0_wrong_le_asks_for_a_resend(emv_card: EmvCardFactory) -> None:
    card = emv_card("visa_credit", faults=Faults(t0_wrong_le=True))
    t = InProcessTransport(card)
    t.transmit(apdu("00A40400", card.profile.applications[0].aid))
    data, sw1, sw2 = t.transmit(apdu("80CA9F36"))
    assert (data, sw1) == (b"", 0x6C) and sw2 == 5
    data, sw1, sw2 = t.transmit(apdu("80CA9F36", le=sw2))
    assert tlv.decode(data)[0].tag == 0x9F36 and (sw1, sw2) == (0x90, 0x00)


def test_aac_at_second_generate_ac_regardless(emv_card: EmvCardFactory) -> None:
    card = emv_card("mastercard_credit", faults=Faults(aac_at_second_gen_ac=True))
    app = card.profile.applications[0]
    t = InProcessTransport(card)
    t.transmit(apdu("00A40400", app.aid))
    t.transmit(apdu("80A80000", bytes.fromhex("8300")))
    answer, _, _ = t.transmit(apdu("80AE8000", dol.build(app.cdol1, terminal_data())))
    cid, atc, arqc, _ = split_ac_response(answer)
    assert cid == 0x80
    auth = issuer_auth_data(app, arqc, atc)
    answer, sw1, _ = t.transmit(apdu("80AE4000", dol.build(app.cdol2, terminal_data(t91=auth))))
    cid, _, _, iad = split_ac_response(answer)
    assert sw1 == 0x90 and cid == 0x00
    assert not iad[2 + 4] & 0x04  # the ARPC itself was fine


def test_at_needs_one_step() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        At()
    with pytest.raises(ValueError, match="exactly one"):
        At(apdu=1, ins=0xAE)
