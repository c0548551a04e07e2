"""The commands the kernel sends (EMV 4.4 Book 1 11, Book 3 6.5) and their answers.

:class:`CardLink` wraps a :class:`~terminal_agent.kernel.seams.CardChannel`: it builds
each command APDU, counts them, and logs them at TRACE (level 5) only as a command
name, a length and the answer through :func:`paycore.redact.redact_tlv` (house style
10), so no PAN or track 2 reaches a log. :func:`decode` turns a card answer that is not
BER-TLV into :class:`~terminal_agent.kernel.errors.CardDataError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from paycore import tlv as _tlv
from paycore.redact import redact_tlv

from .errors import CardDataError
from .seams import CardChannel

__all__ = ["SW_OK", "TRACE", "CardLink", "Response", "decode", "primitives"]

TRACE: Final = 5
SW_OK: Final = 0x9000
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Response:
    """A card's final answer: data and SW1 SW2 as one int."""

    data: bytes
    sw: int

    @property
    def ok(self) -> bool:
        """SW 9000."""
        return self.sw == SW_OK


class CardLink:
    """Sends the kernel's commands over a channel; counts them for the benchmark."""

    def __init__(self, channel: CardChannel) -> None:
        self.channel = channel
        self.count = 0

    async def _send(self, name: str, apdu: bytes) -> Response:
        self.count += 1
        logger.log(TRACE, "C-APDU %s: %d bytes", name, len(apdu))
        data, sw1, sw2 = await self.channel.transmit(apdu)
        response = Response(bytes(data), (sw1 & 0xFF) << 8 | (sw2 & 0xFF))
        if logger.isEnabledFor(TRACE):
            logger.log(TRACE, "R-APDU %s: SW %04X %s", name, response.sw, redact_tlv(response.data))
        return response

    async def transmit(self, apdu: bytes) -> tuple[bytes, int, int]:
        """CardChannel for the Cardholder seam (VERIFY): counted, logged by length only."""
        self.count += 1
        logger.log(TRACE, "C-APDU (cardholder): %d bytes", len(apdu))
        data, sw1, sw2 = await self.channel.transmit(apdu)
        logger.log(TRACE, "R-APDU (cardholder): SW %02X%02X", sw1 & 0xFF, sw2 & 0xFF)
        return data, sw1, sw2

    @staticmethod
    def _case4(header: bytes, data: bytes, *, step: str, name: str, le: bool = True) -> bytes:
        if not 1 <= len(data) <= 255:
            raise CardDataError("command data does not fit a short APDU", step=step, command=name)
        return header + bytes((len(data),)) + data + (b"\x00" if le else b"")

    async def select(self, name: bytes, *, next_occurrence: bool = False) -> Response:
        """SELECT by DF name, first or next occurrence (Book 1 11.3)."""
        p2 = 0x02 if next_occurrence else 0x00
        apdu = self._case4(bytes((0x00, 0xA4, 0x04, p2)), name, step="selection", name="SELECT")
        return await self._send("SELECT", apdu)

    async def read_record(self, sfi: int, number: int) -> Response:
        """READ RECORD ``number`` of short file ``sfi`` (Book 1 11.2)."""
        return await self._send(
            "READ RECORD", bytes((0x00, 0xB2, number & 0xFF, (sfi << 3 | 0x04) & 0xFF, 0x00))
        )

    async def get_processing_options(self, pdol_data: bytes) -> Response:
        """GET PROCESSING OPTIONS with the PDOL data in template 83 (Book 3 6.5.8)."""
        if len(pdol_data) > 250:
            raise CardDataError("PDOL asks for too much data", step="initiate", tag=0x9F38)
        body = _tlv.encode([_tlv.Tlv(0x83, pdol_data)])
        apdu = self._case4(b"\x80\xa8\x00\x00", body, step="initiate", name="GPO")
        return await self._send("GET PROCESSING OPTIONS", apdu)

    async def get_data(self, tag: int) -> Response:
        """GET DATA for a two-byte tag (Book 3 6.5.7)."""
        return await self._send("GET DATA", bytes((0x80, 0xCA, tag >> 8, tag & 0xFF, 0x00)))

    async def generate_ac(self, p1: int, cdol_data: bytes, *, step: str) -> Response:
        """GENERATE AC (Book 3 6.5.5); P1 b8-b7 the cryptogram type asked for."""
        apdu = self._case4(bytes((0x80, 0xAE, p1, 0x00)), cdol_data, step=step, name="GENERATE AC")
        return await self._send("GENERATE AC", apdu)

    async def external_authenticate(self, issuer_auth_data: bytes) -> Response:
        """EXTERNAL AUTHENTICATE with tag 91's value (Book 3 6.5.4)."""
        apdu = self._case4(
            b"\x00\x82\x00\x00",
            issuer_auth_data,
            step="completion",
            name="EXTERNAL AUTHENTICATE",
            le=False,
        )
        return await self._send("EXTERNAL AUTHENTICATE", apdu)


def decode(data: bytes, *, step: str, command: str) -> list[_tlv.Tlv]:
    """BER-TLV from the card, or CardDataError naming the step and command."""
    try:
        return _tlv.decode(data)
    except _tlv.DecodeError:
        raise CardDataError("answer is not valid BER-TLV", step=step, command=command) from None


def primitives(objects: list[_tlv.Tlv]) -> list[_tlv.Tlv]:
    """Every primitive data object inside ``objects``, depth first, duplicates kept."""
    return [obj for obj in _tlv.iter_tlvs(objects) if not obj.constructed]
