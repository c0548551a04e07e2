"""The card's cryptography: application cryptograms, ARPC checks and issuer application data.

Per cryptogram version (CVN) the ICC master keys, session keys, cryptogram and ARPC come
from pyemv's CVN classes (EMV 4.4 Book 2 Annex A1.4 master key derivation, A1.3 session
keys, 8.1 application cryptogram, 8.2 issuer authentication):

====  =================  ==========================  ==============  ====================
CVN   scheme             AC session key              AC data tail    ARPC
====  =================  ==========================  ==============  ====================
10    Visa (VIS 1.4)     none (ICC MK AC)            CVR (4 bytes)   method 1, ICC MK
18    Visa (VIS 1.5)     EMV common, R = ATC||0      whole 9F10      method 2, session key
16    M/Chip 4           MasterCard SKD (ATC, UN)    CVR (6 bytes)   method 1, ICC MK
17    M/Chip 4           MasterCard SKD (ATC, UN)    CVR + counters  method 1, ICC MK
20    M/Chip Advance     EMV common, R = ATC||0      CVR (6 bytes)   method 1, session key
21    M/Chip Advance     EMV common, R = ATC||0      CVR + counters  method 1, session key
====  =================  ==========================  ==============  ====================

The ICC master keys derive with option A (``pyemv.kd.derive_icc_mk_a``); pyemv derives
CVN 18 keys with option B, which is option A for PANs of up to 16 digits.

Issuer application data (9F10) layouts, after the scheme formats as publicly described:

* Visa: ``06 || DKI || CVN || CVR`` with a 4-byte CVR whose first byte is its length (03);
* MasterCard: ``DKI || CVN || CVR (6) || DAC/IDN (2) || counters (8)``, the counters being
  the cumulative offline amount (6, BCD), the consecutive offline count (1) and ``FF``.

:class:`Cvr` is the card's view of a transaction's verification results; the encoders
place its flags at the bit positions of the two CVR layouts. Bits the emulator does not
model stay zero.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Protocol

from pyemv import cvn as _cvn

__all__ = [
    "AcType",
    "CryptogramEngine",
    "Cvr",
    "engine_for",
]


class AcType(IntEnum):
    """Cryptogram types, valued as in the cryptogram information data (9F27 b8-b7)."""

    AAC = 0x00
    TC = 0x40
    ARQC = 0x80


@dataclass(frozen=True, slots=True)
class Cvr:
    """Card verification results of one GENERATE AC (scheme-neutral flags)."""

    first_ac: AcType
    second_ac: AcType | None = None
    offline_pin_performed: bool = False
    offline_pin_failed: bool = False
    pin_try_limit_exceeded: bool = False
    pin_try_counter: int = 0
    issuer_auth_performed: bool = False
    issuer_auth_failed: bool = False
    issuer_auth_not_performed_after_online: bool = False
    last_online_not_completed: bool = False
    issuer_auth_failed_last_online: bool = False
    new_card: bool = False
    velocity_exceeded: bool = False
    unable_to_go_online: bool = False
    international: bool = False

    @property
    def go_online(self) -> bool:
        """Card risk management's verdict: a TC request must become an ARQC."""
        return (
            self.new_card
            or self.last_online_not_completed
            or self.issuer_auth_failed_last_online
            or self.pin_try_limit_exceeded
            or self.velocity_exceeded
            or self.offline_pin_failed
        )

    def visa(self) -> bytes:
        """The 4-byte Visa CVR (byte 1 is the length, 03)."""
        b2 = _second_bits(self.second_ac) | _first_bits(self.first_ac)
        b2 |= 0x08 if self.issuer_auth_failed else 0
        b2 |= 0x04 if self.offline_pin_performed else 0
        b2 |= 0x02 if self.offline_pin_failed else 0
        b2 |= 0x01 if self.unable_to_go_online else 0
        b3 = 0x80 if self.last_online_not_completed else 0
        b3 |= 0x40 if self.pin_try_limit_exceeded else 0
        b3 |= 0x20 if self.velocity_exceeded else 0
        b3 |= 0x10 if self.new_card else 0
        b3 |= 0x08 if self.issuer_auth_failed_last_online else 0
        b3 |= 0x04 if self.issuer_auth_not_performed_after_online else 0
        return bytes((0x03, b2, b3, 0x00))

    def mastercard(self) -> bytes:
        """The 6-byte M/Chip CVR."""
        b1 = _second_bits(self.second_ac) | _first_bits(self.first_ac)
        b1 |= 0x04 if self.offline_pin_performed else 0
        b1 |= 0x01 if self.offline_pin_performed and not self.offline_pin_failed else 0
        b2 = 0x10 if self.issuer_auth_performed else 0
        b3 = self.pin_try_counter & 0x0F
        b4 = 0x80 if self.last_online_not_completed else 0
        b4 |= 0x40 if self.unable_to_go_online else 0
        b4 |= 0x20 if not self.offline_pin_performed else 0
        b4 |= 0x10 if self.offline_pin_failed else 0
        b4 |= 0x08 if self.pin_try_limit_exceeded else 0
        b4 |= 0x04 if self.international else 0x02
        b5 = 0x80 if self.velocity_exceeded else 0
        b5 |= 0x08 if self.issuer_auth_failed_last_online else 0
        b5 |= 0x04 if self.issuer_auth_failed else 0
        return bytes((b1, b2, b3, b4, b5, 0x00))


def _first_bits(ac: AcType) -> int:
    return {AcType.AAC: 0x00, AcType.TC: 0x10, AcType.ARQC: 0x20}[ac]


def _second_bits(ac: AcType | None) -> int:
    if ac is None:
        return 0x80  # second GENERATE AC not requested (yet)
    return {AcType.AAC: 0x00, AcType.TC: 0x40, AcType.ARQC: 0x80}[ac]


class CryptogramEngine(Protocol):
    """The ICC's keys for one application and what it computes with them."""

    cvn: int

    def issuer_application_data(self, cvr: Cvr, counters: bytes) -> bytes:
        """Tag 9F10 for this transaction (``counters``: 8 bytes, MasterCard only)."""
        ...

    def generate_ac(
        self, terminal: Mapping[int, bytes], aip: bytes, atc: bytes, iad: bytes
    ) -> bytes:
        """The 8-byte application cryptogram over the CVN's data."""
        ...

    def arpc_ok(self, arqc: bytes, atc: bytes, issuer_auth_data: bytes) -> bool:
        """True when ``issuer_auth_data`` (tag 91) carries the right ARPC for ``arqc``."""
        ...


def _terminal_args(terminal: Mapping[int, bytes]) -> dict[str, bytes]:
    return {
        "tag_9f02": terminal[0x9F02],
        "tag_9f03": terminal[0x9F03],
        "tag_9f1a": terminal[0x9F1A],
        "tag_95": terminal[0x95],
        "tag_5f2a": terminal[0x5F2A],
        "tag_9a": terminal[0x9A],
        "tag_9c": terminal[0x9C],
        "tag_9f37": terminal[0x9F37],
    }


class _VisaCvn10:
    cvn = 10

    def __init__(self, dki: int, keys: tuple[bytes, bytes, bytes], pan: str, psn: str) -> None:
        self._dki = dki
        self._impl = _cvn.VisaCVN10(*keys, pan=pan, psn=psn)

    def issuer_application_data(self, cvr: Cvr, counters: bytes) -> bytes:
        return bytes((0x06, self._dki, 0x0A)) + cvr.visa()

    def generate_ac(
        self, terminal: Mapping[int, bytes], aip: bytes, atc: bytes, iad: bytes
    ) -> bytes:
        return self._impl.generate_ac(
            **_terminal_args(terminal), tag_82=aip, tag_9f36=atc, cvr=iad[3:7]
        )

    def arpc_ok(self, arqc: bytes, atc: bytes, issuer_auth_data: bytes) -> bool:
        if len(issuer_auth_data) != 10:
            return False
        arpc, arc = issuer_auth_data[:8], issuer_auth_data[8:]
        return hmac.compare_digest(self._impl.generate_arpc(arqc, arc), arpc)


class _VisaCvn18:
    cvn = 18

    def __init__(self, dki: int, keys: tuple[bytes, bytes, bytes], pan: str, psn: str) -> None:
        self._dki = dki
        self._impl = _cvn.VisaCVN18(*keys, pan=pan, psn=psn)

    def issuer_application_data(self, cvr: Cvr, counters: bytes) -> bytes:
        return bytes((0x06, self._dki, 0x12)) + cvr.visa()

    def generate_ac(
        self, terminal: Mapping[int, bytes], aip: bytes, atc: bytes, iad: bytes
    ) -> bytes:
        return self._impl.generate_ac(
            **_terminal_args(terminal), tag_82=aip, tag_9f36=atc, tag_9f10=iad
        )

    def arpc_ok(self, arqc: bytes, atc: bytes, issuer_auth_data: bytes) -> bool:
        if not 8 <= len(issuer_auth_data) <= 16:
            return False
        arpc, csu, pad = issuer_auth_data[:4], issuer_auth_data[4:8], issuer_auth_data[8:]
        expected = self._impl.generate_arpc(arqc, atc, csu, pad or None)
        return hmac.compare_digest(expected, arpc)


class _MasterCard:
    """M/Chip CVN 16, 17 (MasterCard SKD) and 20, 21 (EMV common session key)."""

    _CVN_BYTE: ClassVar[dict[int, int]] = {16: 0x10, 17: 0x11, 20: 0x14, 21: 0x15}

    def __init__(
        self, cvn: int, dki: int, keys: tuple[bytes, bytes, bytes], pan: str, psn: str
    ) -> None:
        self.cvn = cvn
        self._dki = dki
        self._impl: (
            _cvn.MasterCardCVN16
            | _cvn.MasterCardCVN17
            | _cvn.MasterCardCVN20
            | _cvn.MasterCardCVN21
        )
        if cvn == 16:
            self._impl = _cvn.MasterCardCVN16(*keys, pan=pan, psn=psn)
        elif cvn == 17:
            self._impl = _cvn.MasterCardCVN17(*keys, pan=pan, psn=psn)
        elif cvn == 20:
            self._impl = _cvn.MasterCardCVN20(*keys, pan=pan, psn=psn)
        else:
            self._impl = _cvn.MasterCardCVN21(*keys, pan=pan, psn=psn)

    def issuer_application_data(self, cvr: Cvr, counters: bytes) -> bytes:
        return bytes((self._dki, self._CVN_BYTE[self.cvn])) + cvr.mastercard() + bytes(2) + counters

    def generate_ac(
        self, terminal: Mapping[int, bytes], aip: bytes, atc: bytes, iad: bytes
    ) -> bytes:
        args = _terminal_args(terminal)
        impl = self._impl
        if isinstance(impl, _cvn.MasterCardCVN17 | _cvn.MasterCardCVN21):
            return impl.generate_ac(
                **args, tag_82=aip, tag_9f36=atc, cvr=iad[2:8], counters=iad[10:18]
            )
        return impl.generate_ac(**args, tag_82=aip, tag_9f36=atc, cvr=iad[2:8])

    def arpc_ok(self, arqc: bytes, atc: bytes, issuer_auth_data: bytes) -> bool:
        if len(issuer_auth_data) != 10:
            return False
        arpc, arc = issuer_auth_data[:8], issuer_auth_data[8:]
        impl = self._impl
        if isinstance(impl, _cvn.MasterCardCVN20 | _cvn.MasterCardCVN21):
            expected = impl.generate_arpc(arqc, atc, arc)
        else:
            expected = impl.generate_arpc(arqc, arc)
        return hmac.compare_digest(expected, arpc)


def engine_for(
    cvn: int,
    *,
    dki: int,
    iss_mk_ac: bytes,
    iss_mk_smi: bytes,
    iss_mk_smc: bytes,
    pan: str,
    psn: str,
) -> CryptogramEngine:
    """Personalise the ICC keys for ``cvn`` from the issuer master keys (option A)."""
    keys = (iss_mk_ac, iss_mk_smi, iss_mk_smc)
    if cvn == 10:
        return _VisaCvn10(dki, keys, pan, psn)
    if cvn == 18:
        return _VisaCvn18(dki, keys, pan, psn)
    if cvn in (16, 17, 20, 21):
        return _MasterCard(cvn, dki, keys, pan, psn)
    raise ValueError(f"unsupported cryptogram version {cvn}")
