"""GET RESPONSE and Le correction (terminal_agent.reader.apdu), without pcscd."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.cards import PSE_NAME, EmvCard, Faults, load_profile
from terminal_agent.reader.apdu import exchange, split_response, with_le
from terminal_agent.reader.errors import ApduTransportError, CardProtocolError

SELECT_PSE = bytes.fromhex("00A404000E") + PSE_NAME + b"\x00"
READ_RECORD_1_1 = bytes.fromhex("00B2010C00")


class Recorder:
    """A card application's ``process_apdu`` as a ``send``, remembering every command."""

    def __init__(self, card: EmvCard) -> None:
        self.card = card
        self.sent: list[bytes] = []
        card.power_on()

    def __call__(self, command: bytes) -> bytes:
        self.sent.append(command)
        return self.card.process_apdu(command)


def _plain(command: bytes) -> tuple[bytes, int, int]:
    card = EmvCard(load_profile("visa_credit"))
    card.power_on()
    if command == READ_RECORD_1_1:
        card.process_apdu(SELECT_PSE)
    return split_response(card.process_apdu(command))


def test_plain_answers_pass_through_with_one_command() -> None:
    send = Recorder(EmvCard(load_profile("visa_credit")))
    data, sw1, sw2 = exchange(send, SELECT_PSE, max_get_response=4)
    assert (data, sw1, sw2) == _plain(SELECT_PSE)
    assert data[0] == 0x6F and (sw1, sw2) == (0x90, 0x00)
    assert send.sent == [SELECT_PSE]


def test_61xx_is_fetched_with_get_response() -> None:
    send = Recorder(EmvCard(load_profile("visa_credit"), faults=Faults(t0_get_response=True)))
    data, sw1, sw2 = exchange(send, SELECT_PSE, max_get_response=4)
    expected = _plain(SELECT_PSE)
    assert (data, sw1, sw2) == expected
    assert send.sent == [SELECT_PSE, bytes.fromhex("00C00000") + bytes([len(expected[0])])]


def test_6cxx_is_resent_once_with_the_right_le() -> None:
    send = Recorder(EmvCard(load_profile("visa_credit"), faults=Faults(t0_wrong_le=True)))
    send.card.process_apdu(SELECT_PSE)
    data, sw1, sw2 = exchange(send, READ_RECORD_1_1, max_get_response=4)
    assert (data, sw1, sw2) == _plain(READ_RECORD_1_1)
    assert send.sent == [READ_RECORD_1_1, READ_RECORD_1_1[:4] + bytes([len(data)])]


def _scripted(*answers: str) -> tuple[list[bytes], Callable[[bytes], bytes]]:
    sent: list[bytes] = []
    queue = [bytes.fromhex(a) for a in answers]

    def send(command: bytes) -> bytes:
        sent.append(command)
        return queue.pop(0)

    return sent, send


def test_61xx_repeats_and_concatenates_then_gives_up() -> None:
    sent, send = _scripted("6103", "AABBCC6102", "DDEE9000")
    assert exchange(send, READ_RECORD_1_1, max_get_response=2) == (
        bytes.fromhex("AABBCCDDEE"),
        0x90,
        0x00,
    )
    assert sent[1:] == [bytes.fromhex("00C0000003"), bytes.fromhex("00C0000002")]
    _, endless = _scripted("6101", "AA6101", "BB6101", "CC6101")
    with pytest.raises(CardProtocolError, match="after 2 GET RESPONSE"):
        exchange(endless, READ_RECORD_1_1, max_get_response=2)


def test_6cxx_twice_and_61xx_after_6cxx() -> None:
    _, twice = _scripted("6C10", "6C08")
    with pytest.raises(CardProtocolError, match="second Le correction"):
        exchange(twice, READ_RECORD_1_1, max_get_response=2)
    sent, mixed = _scripted("6C02", "6102", "12349000")
    assert exchange(mixed, READ_RECORD_1_1, max_get_response=2) == (
        bytes.fromhex("1234"),
        0x90,
        0x00,
    )
    assert sent == [READ_RECORD_1_1, bytes.fromhex("00B2010C02"), bytes.fromhex("00C0000002")]


def test_with_le_covers_the_four_cases() -> None:
    assert with_le(bytes.fromhex("00B2010C"), 0x20) == bytes.fromhex("00B2010C20")  # case 1
    assert with_le(bytes.fromhex("00B2010C00"), 0x20) == bytes.fromhex("00B2010C20")  # case 2
    assert with_le(bytes.fromhex("80A8000002AABB"), 5) == bytes.fromhex("80A8000002AABB05")
    assert with_le(bytes.fromhex("80A8000002AABB00"), 5) == bytes.fromhex("80A8000002AABB05")
    for bad in ("00B201", "80A8000003AABB", "80A80000000000"):
        with pytest.raises(CardProtocolError):
            with_le(bytes.fromhex(bad), 1)


def test_a_response_without_status_word_is_a_protocol_error() -> None:
    with pytest.raises(CardProtocolError, match="1 byte"):
        split_response(b"\x90")
    assert issubclass(CardProtocolError, ApduTransportError)


@settings(max_examples=300)
@given(st.binary(max_size=12), st.lists(st.binary(max_size=8), min_size=1, max_size=6))
def test_any_answers_give_a_result_or_a_protocol_error(
    command: bytes, answers: list[bytes]
) -> None:
    queue = list(answers)

    def send(_: bytes) -> bytes:
        return queue.pop(0) if queue else b"\x90\x00"

    try:
        data, sw1, sw2 = exchange(send, command, max_get_response=3)
    except CardProtocolError:
        return
    assert sw1 not in (0x61, 0x6C)
    assert 0 <= sw2 <= 0xFF and isinstance(data, bytes)
