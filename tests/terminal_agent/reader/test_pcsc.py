"""The pyscard adapter against a real pcscd with a vpcd reader and emulated EMV cards."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from smartcard import scard  # type: ignore[import-untyped]
from smartcard.Exceptions import (  # type: ignore[import-untyped]
    CardConnectionException,
    NoCardException,
    NoReadersException,
)
from smartcard.pcsc.PCSCExceptions import (  # type: ignore[import-untyped]
    EstablishContextException,
    ListReadersException,
)

from hardware.cards import PPSE_NAME, PSE_NAME, At, EmvCard, Faults, load_profile
from hardware.pcsc import PcscdService
from hardware.pcsc.fixtures import CardSlot
from paycore import tlv
from terminal_agent.reader import (
    TRACE,
    ApduTransportError,
    CardChannel,
    CardMuteError,
    CardProtocolError,
    CardRemovedError,
    NoReader,
    NoService,
    PcscAdapter,
    ReaderError,
    ReaderLostError,
    ReaderSettings,
    TransientReaderError,
    translate_code,
    translate_exception,
)

T = TypeVar("T")
SETTINGS = ReaderSettings(event_wait=0.2, removal_grace=2.0)


def select(name: bytes) -> bytes:
    return bytes.fromhex("00A40400") + bytes([len(name)]) + name + b"\x00"


READ_RECORD_1_1 = bytes.fromhex("00B2010C00")


class Recording:
    """A card application that remembers the INS byte of every command it answered."""

    def __init__(self, card: EmvCard) -> None:
        self.card = card
        self.commands: list[bytes] = []
        self._lock = threading.Lock()

    def power_on(self) -> bytes:
        return self.card.power_on()

    def power_off(self) -> None:
        self.card.power_off()

    def process_apdu(self, command: bytes) -> bytes:
        with self._lock:
            self.commands.append(command)
        return self.card.process_apdu(command)


class BadAtr:
    """A card whose ATR offers no protocol pcscd can use: it never answers a command."""

    def power_on(self) -> bytes:
        return b"\x00"

    def power_off(self) -> None:
        pass

    def process_apdu(self, command: bytes) -> bytes:
        raise AssertionError("a card without a usable ATR was sent an APDU")


def with_adapter(body: Callable[[PcscAdapter], Awaitable[T]]) -> T:
    async def main() -> T:
        async with PcscAdapter(SETTINGS) as adapter:
            return await body(adapter)

    return asyncio.run(main())


def reference(name: str, *commands: bytes) -> list[bytes]:
    """What a fault-free card of profile ``name`` answers, in process."""
    card = EmvCard(load_profile(name))
    card.power_on()
    return [card.process_apdu(c) for c in commands]


def test_lists_the_vpcd_readers(pcscd_vpcd: PcscdService) -> None:
    assert with_adapter(lambda a: a.list_readers()) == list(pcscd_vpcd.reader_names)


def test_insertion_and_removal_events_and_atr(vpcd_card: CardSlot) -> None:
    card = EmvCard(load_profile("visa_credit"))

    async def body(adapter: PcscAdapter) -> None:
        empty = await adapter.status(vpcd_card.reader)
        assert not empty.present and empty.atr == b""
        assert await adapter.wait_change(vpcd_card.reader, empty, 0.1) is None  # nothing yet
        inserting = asyncio.get_running_loop().run_in_executor(
            None, lambda: vpcd_card(card, wait=False)
        )
        present = await asyncio.wait_for(adapter.wait_for_card(vpcd_card.reader), 5)
        await inserting
        assert present.present and present.atr == card.profile.atr
        assert present.events > empty.events
        removing = asyncio.get_running_loop().run_in_executor(
            None, lambda: vpcd_card.remove(wait=False)
        )
        gone = await asyncio.wait_for(adapter.wait_for_card(vpcd_card.reader, present=False), 5)
        await removing
        assert not gone.present and gone.events > present.events

    with_adapter(body)


def test_select_ppse_pse_and_read_record_through_the_channel(vpcd_card: CardSlot) -> None:
    vpcd_card(EmvCard(load_profile("visa_credit")))
    commands = [select(PPSE_NAME), select(PSE_NAME), READ_RECORD_1_1]

    async def body(adapter: PcscAdapter) -> list[tuple[bytes, int, int]]:
        async with await adapter.connect(vpcd_card.reader) as card:
            assert isinstance(card, CardChannel)
            assert card.atr == load_profile("visa_credit").atr and card.protocol == "T=0"
            return [await card.transmit(c) for c in commands]

    answers = with_adapter(body)
    expected = reference("visa_credit", *commands)
    assert [d + bytes([s1, s2]) for d, s1, s2 in answers] == expected
    fci = tlv.decode(answers[1][0])[0]
    assert fci.tag == 0x6F and answers[1][1:] == (0x90, 0x00)
    record = tlv.decode(answers[2][0])[0]
    assert record.tag == 0x70  # the PSE directory record


def test_t0_get_response_is_done_by_the_adapter(vpcd_card: CardSlot) -> None:
    card = Recording(EmvCard(load_profile("visa_credit"), faults=Faults(t0_get_response=True)))
    vpcd_card(card)

    async def body(adapter: PcscAdapter) -> tuple[bytes, int, int]:
        async with await adapter.connect(vpcd_card.reader) as channel:
            return await channel.transmit(select(PSE_NAME))

    data, sw1, sw2 = with_adapter(body)
    (expected,) = reference("visa_credit", select(PSE_NAME))
    assert data + bytes([sw1, sw2]) == expected
    assert card.commands == [select(PSE_NAME), bytes.fromhex("00C00000") + bytes([len(data)])]


def test_t0_le_correction_is_done_once_by_the_adapter(vpcd_card: CardSlot) -> None:
    card = Recording(EmvCard(load_profile("visa_credit"), faults=Faults(t0_wrong_le=True)))
    vpcd_card(card)

    async def body(adapter: PcscAdapter) -> tuple[bytes, int, int]:
        async with await adapter.connect(vpcd_card.reader) as channel:
            await channel.transmit(select(PSE_NAME))
            return await channel.transmit(READ_RECORD_1_1)

    data, sw1, sw2 = with_adapter(body)
    expected = reference("visa_credit", select(PSE_NAME), READ_RECORD_1_1)[1]
    assert data + bytes([sw1, sw2]) == expected
    assert card.commands[1:] == [READ_RECORD_1_1, READ_RECORD_1_1[:4] + bytes([len(data)])]


def test_card_pulled_mid_exchange_is_card_removed(vpcd_card: CardSlot) -> None:
    link = vpcd_card(EmvCard(load_profile("visa_credit"), faults=Faults(pull_at=At(ins=0xB2))))

    async def body(adapter: PcscAdapter) -> None:
        card = await adapter.connect(vpcd_card.reader)
        assert (await card.transmit(select(PSE_NAME)))[1:] == (0x90, 0x00)
        with pytest.raises(CardRemovedError, match="removed"):
            await card.transmit(READ_RECORD_1_1)
        await card.disconnect()  # nothing left to power off: no error
        with pytest.raises(CardRemovedError, match="closed"):
            await card.transmit(READ_RECORD_1_1)
        assert not (await adapter.status(vpcd_card.reader)).present

    with_adapter(body)
    assert not link.inserted


def test_garbage_answer_is_a_protocol_error(vpcd_card: CardSlot) -> None:
    faults = Faults(garbage_at=At(ins=0xB2), garbage=b"\x6a")
    vpcd_card(EmvCard(load_profile("visa_credit"), faults=faults))

    async def body(adapter: PcscAdapter) -> None:
        async with await adapter.connect(vpcd_card.reader) as card:
            with pytest.raises(CardProtocolError, match="1 byte"):
                await card.transmit(READ_RECORD_1_1)
            assert (await card.transmit(select(PSE_NAME)))[1:] == (0x90, 0x00)  # still there

    with_adapter(body)


def test_card_without_usable_atr_is_mute(vpcd_card: CardSlot) -> None:
    vpcd_card(BadAtr())

    async def body(adapter: PcscAdapter) -> None:
        with pytest.raises(CardMuteError, match="no usable protocol"):
            await adapter.connect(vpcd_card.reader)

    with_adapter(body)


def test_no_card_and_unknown_reader(pcscd_vpcd: PcscdService) -> None:
    async def body(adapter: PcscAdapter) -> None:
        with pytest.raises(CardRemovedError, match="no card"):
            await adapter.connect(pcscd_vpcd.card_reader)
        with pytest.raises(NoReader):
            await adapter.status("No Such Reader 00 00")
        with pytest.raises(NoReader):
            await adapter.connect("No Such Reader 00 00")

    with_adapter(body)


def test_apdus_are_traced_without_card_data(
    vpcd_card: CardSlot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(TRACE, logger="terminal_agent.reader.pcsc")
    vpcd_card(EmvCard(load_profile("visa_credit")))
    app = load_profile("visa_credit").applications[0]

    async def body(adapter: PcscAdapter) -> None:
        async with await adapter.connect(vpcd_card.reader) as card:
            await card.transmit(select(app.aid))
            await card.transmit(bytes.fromhex("80A8000002830000"))
            await card.transmit(bytes.fromhex("00B2011400"))  # SFI 2 record 1: PAN, track 2

    with_adapter(body)
    traced = [r.getMessage() for r in caplog.records if r.levelno == TRACE]
    assert "C-APDU 00B20114, 5 bytes" in traced
    assert any("<redacted>" in m for m in traced)  # tag 57 / 5A values replaced


def test_closed_adapter_refuses_calls() -> None:
    async def body() -> None:
        adapter = PcscAdapter(SETTINGS)
        await adapter.close()
        await adapter.close()
        with pytest.raises(ReaderError, match="closed"):
            await adapter.list_readers()

    asyncio.run(body())


# -- the translation of PC/SC codes and pyscard exceptions -----------------------------


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (scard.SCARD_E_NO_SERVICE, NoService),
        (scard.SCARD_E_SERVICE_STOPPED, NoService),
        (scard.SCARD_E_NO_READERS_AVAILABLE, NoReader),
        (scard.SCARD_E_READER_UNAVAILABLE, NoReader),
        (scard.SCARD_W_REMOVED_CARD, CardRemovedError),
        (scard.SCARD_W_UNRESPONSIVE_CARD, CardMuteError),
        (scard.SCARD_E_INSUFFICIENT_BUFFER, CardProtocolError),
        (scard.SCARD_E_UNEXPECTED, ReaderError),
    ],
)
def test_pcsc_codes_are_translated(code: int, error: type[ReaderError]) -> None:
    translated = translate_code(code, "doing it")
    assert type(translated) is error
    assert translated.code == code & 0xFFFFFFFF
    assert str(translated).startswith("doing it: ")
    assert f"0x{code & 0xFFFFFFFF:08X}" in str(translated)


def test_pyscard_exceptions_are_translated() -> None:
    assert isinstance(
        translate_exception(EstablishContextException(scard.SCARD_E_NO_SERVICE), "x"), NoService
    )
    assert isinstance(
        translate_exception(ListReadersException(scard.SCARD_E_NO_READERS_AVAILABLE), "x"),
        NoReader,
    )
    assert isinstance(translate_exception(NoReadersException(), "x"), NoReader)
    assert isinstance(translate_exception(NoCardException("no card", -1), "x"), CardRemovedError)
    removed = CardConnectionException("t", hresult=scard.SCARD_W_REMOVED_CARD)
    assert isinstance(translate_exception(removed, "x"), CardRemovedError)
    assert type(translate_exception(CardConnectionException("t"), "x")) is ApduTransportError
    assert type(translate_exception(ValueError("?"), "x")) is ReaderError


def test_the_tree_splits_transient_from_permanent() -> None:
    for transient in (NoService, NoReader, CardRemovedError, CardMuteError, ReaderLostError):
        assert issubclass(transient, TransientReaderError)
    for exchange_error in (CardRemovedError, CardMuteError, ReaderLostError, CardProtocolError):
        assert issubclass(exchange_error, ApduTransportError)
    assert not issubclass(CardProtocolError, TransientReaderError)
