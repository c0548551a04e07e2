"""Every catalogue card behind the real PC/SC stack, driven by pyscard itself.

pcscd + vpcd + the emulated card, no wrapper of ours on the terminal side: pyscard lists
the reader, reads the ATR, selects the PPSE, and the catalogue's contact driver reads each
application and asks for an ARQC, which is checked with pyemv from the issuer master key;
the second GENERATE AC accepts the issuer's ARPC and refuses a wrong one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
from smartcard.Exceptions import CardConnectionException  # type: ignore[import-untyped]
from smartcard.System import readers  # type: ignore[import-untyped]

from hardware.cards import PPSE_NAME, SW, EmvCard, catalogue, load_profile
from hardware.pcsc.fixtures import CardSlot
from paycore import dol, tlv
from tests.hardware.test_card_catalogue import (
    ContactDriver,
    apdu,
    dol_values,
    expected_cryptogram,
    issuer_auth_data,
    split_ac_response,
    terminal_data,
)


class PyscardTransport:
    """transmit() over a pyscard connection: the same call shape as the in-process one."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def transmit(self, command: bytes) -> tuple[bytes, int, int]:
        data, sw1, sw2 = self.connection.transmit(list(command))
        return bytes(data), sw1, sw2


@contextmanager
def card_session(slot: CardSlot, card: EmvCard) -> Iterator[tuple[Any, PyscardTransport]]:
    slot(card)
    (reader,) = [r for r in readers() if str(r) == slot.reader]
    connection = reader.createConnection()
    connection.connect()
    try:
        yield connection, PyscardTransport(connection)
    finally:
        with suppress(CardConnectionException):
            connection.disconnect()
        connection.release()
        slot.remove()


@pytest.mark.parametrize("name", catalogue())
def test_complete_read_of_every_catalogue_card_through_pcscd(
    vpcd_card: CardSlot, name: str
) -> None:
    profile = load_profile(name)
    card = EmvCard(profile)
    with card_session(vpcd_card, card) as (connection, transport):
        assert bytes(connection.getATR()) == card.power_on()

        ppse, sw1, sw2 = transport.transmit(apdu("00A40400", PPSE_NAME))
        if profile.ppse:
            assert (sw1 << 8 | sw2) == SW.OK
            listed = [e.data for e in tlv.find_all(tlv.decode(ppse), 0x4F)]
            assert listed == [app.aid for app in profile.applications]
        else:
            assert (sw1 << 8 | sw2) == SW.FILE_NOT_FOUND

        driver = ContactDriver(transport)
        assert driver.candidates() == [app.aid for app in profile.applications]
        for app in profile.applications:
            if app.blocked:
                _, sw = driver.send(apdu("00A40400", app.aid))
                assert sw == SW.SELECTED_FILE_INVALIDATED
                continue
            result = driver.read_application(app.aid, terminal_data())
            assert result.card_data[0x5A].hex().rstrip("f") == app.pan.digits
            cid, atc, arqc, iad = split_ac_response(result.ac_answer)
            assert cid == 0x80
            assert arqc == expected_cryptogram(
                app, dol_values(app.cdol1, result.cdol1_data), atc, iad
            )


@pytest.mark.parametrize("arpc_ok", [True, False], ids=["issuer ARPC", "wrong ARPC"])
def test_second_generate_ac_checks_the_arpc_through_pcscd(
    vpcd_card: CardSlot, arpc_ok: bool
) -> None:
    profile = load_profile("visa_credit")
    app = profile.applications[0]
    with card_session(vpcd_card, EmvCard(profile)) as (_, transport):
        driver = ContactDriver(transport)
        result = driver.read_application(app.aid, terminal_data())
        _, atc, arqc, _ = split_ac_response(result.ac_answer)
        auth = issuer_auth_data(app, arqc, atc)
        if not arpc_ok:
            auth = bytes(b ^ 0xFF for b in auth[:8]) + auth[8:]
        source = {**terminal_data(), **result.card_data, 0x91: auth, 0x8A: b"00"}
        answer, sw = driver.send(apdu("80AE4000", dol.build(app.cdol2, source)))
        assert sw == SW.OK
        cid, *_ = split_ac_response(answer)
        assert cid == (0x40 if arpc_ok else 0x00)  # TC when the ARPC checks, else AAC
