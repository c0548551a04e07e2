"""The issuer's side of EMV card authentication: ARQC verification and the ARPC.

Standards: EMV 4.4 Book 2 section 8.1 (application cryptogram generation), 8.2 (issuer
authentication, ARPC methods 1 and 2), Annex A1.3 (session key derivation: the EMV
common session key, CSK) and A1.4 (ICC master key derivation, options A and B); the
scheme cryptogram versions (CVN) as publicly described and as implemented by pyemv's
``pyemv.cvn`` classes. The arithmetic is pyemv's (``pyemv.kd``, ``pyemv.ac``); what
this module adds is the table that says, per CVN, which pieces to put together.

====  ================  =========  ===============  =======  ======================  ======
CVN   scheme            ICC MK     AC session key   padding  data after 9F36         ARPC
====  ================  =========  ===============  =======  ======================  ======
10    Visa VIS 1.4      option A   none (ICC MK)    Visa     CVR = 9F10[3:7]         1, MK
18    Visa VIS 1.5      option B   CSK, ATC||0      EMV      whole 9F10              2, SK
16    M/Chip 4          option A   MC SKD, ATC||UN  EMV      CVR = 9F10[2:8]         1, MK
17    M/Chip 4          option A   MC SKD, ATC||UN  EMV      CVR + counters [10:18]  1, MK
20    M/Chip Advance    option A   CSK, ATC||0      EMV      CVR = 9F10[2:8]         1, SK
21    M/Chip Advance    option A   CSK, ATC||0      EMV      CVR + counters [10:18]  1, SK
====  ================  =========  ===============  =======  ======================  ======

The cryptogram input is always the CDOL1 values the terminal sent in DE55, in the fixed
order 9F02 9F03 9F1A 95 5F2A 9A 9C 9F37, then the AIP (82) and the ATC (9F36), then the
CVN's tail from the issuer application data (9F10). The CVN byte inside 9F10 (byte 2
for Visa, byte 1 for MasterCard; its value is the CVN number) must name the account's
CVN.

ARPC method 1: ``ARPC = TDES(key, ARQC xor (ARC || 00..00))``; tag 91 carries
``ARPC (8) || ARC (2)``. ARPC method 2: ``ARPC`` = the first 4 bytes of the ISO/IEC
9797-1 MAC algorithm 3 over ``ARQC || CSU``; tag 91 carries ``ARPC (4) || CSU (4)``.
The ARC is the response code in ASCII (``"00"`` is ``3030``); the CSU (Book 3 CCD /
VIS) sets byte 2 b8, "issuer approves online transaction", on approval only.

:func:`parse_icc_data` is total: any bytes in, an :class:`IccData` or an
:class:`IccDataError` (a :class:`paycore.errors.CodecError`) out, never a value in the
message.
"""

from __future__ import annotations

import hmac
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, Literal

from pyemv import ac as _ac
from pyemv import kd as _kd

from paycore import tlv as _tlv
from paycore.errors import CodecError

__all__ = [
    "CVNS",
    "REQUIRED_TAGS",
    "CvnSpec",
    "IccData",
    "IccDataError",
    "IccKeys",
    "arpc",
    "arpc_method_1",
    "arpc_method_2",
    "card_status_update",
    "derive_icc_keys",
    "generate_ac",
    "issuer_authentication_data",
    "parse_icc_data",
    "verify_arqc",
]

MasterKeyOption = Literal["A", "B"]
SessionKeyMethod = Literal["none", "emv_csk", "mastercard_skd"]
AcTail = Literal["visa_cvr", "whole_iad", "mc_cvr", "mc_cvr_counters"]


@dataclass(frozen=True, slots=True)
class CvnSpec:
    """How one cryptogram version builds its ARQC and ARPC (one row of the table above)."""

    cvn: int
    scheme: str
    master_key_option: MasterKeyOption
    session_key: SessionKeyMethod
    padding: Literal["visa", "emv"]
    ac_tail: AcTail
    arpc_method: Literal[1, 2]
    #: Method 1 only: the ICC master key itself, or the AC session key.
    arpc_key: Literal["icc_mk", "session"]
    #: Where the CVN byte sits in 9F10, and the shortest 9F10 this CVN accepts.
    iad_cvn_index: int
    iad_min_length: int


CVNS: Final[Mapping[int, CvnSpec]] = {
    10: CvnSpec(10, "Visa VIS 1.4", "A", "none", "visa", "visa_cvr", 1, "icc_mk", 2, 7),
    18: CvnSpec(18, "Visa VIS 1.5", "B", "emv_csk", "emv", "whole_iad", 2, "session", 2, 7),
    16: CvnSpec(16, "M/Chip 4", "A", "mastercard_skd", "emv", "mc_cvr", 1, "icc_mk", 1, 8),
    17: CvnSpec(
        17, "M/Chip 4", "A", "mastercard_skd", "emv", "mc_cvr_counters", 1, "icc_mk", 1, 18
    ),
    20: CvnSpec(20, "M/Chip Advance", "A", "emv_csk", "emv", "mc_cvr", 1, "session", 1, 8),
    21: CvnSpec(
        21, "M/Chip Advance", "A", "emv_csk", "emv", "mc_cvr_counters", 1, "session", 1, 18
    ),
}
"""The cryptogram versions the simulator verifies, by CVN number."""

#: DE55 tags the ARQC check needs, with their fixed lengths (None: variable, 9F10).
REQUIRED_TAGS: Final[Mapping[int, int | None]] = {
    0x9F26: 8,  # application cryptogram
    0x9F27: 1,  # cryptogram information data
    0x9F10: None,  # issuer application data
    0x9F36: 2,  # ATC
    0x9F37: 4,  # unpredictable number
    0x9F02: 6,  # amount, authorised
    0x9F1A: 2,  # terminal country code
    0x95: 5,  # TVR
    0x5F2A: 2,  # transaction currency code
    0x9A: 3,  # transaction date
    0x9C: 1,  # transaction type
    0x82: 2,  # AIP
}
_AMOUNT_OTHER = 0x9F03  # optional: absent means zero, as terminals without cashback send
_MAX_IAD = 32  # EMV Book 3 Annex A: 9F10 is at most 32 bytes

#: Cryptogram information data b8-b7 (Book 3 Table 14).
CryptogramType = Literal["AAC", "TC", "ARQC", "RFU"]
_CID_TYPES: Final[dict[int, CryptogramType]] = {0x00: "AAC", 0x40: "TC", 0x80: "ARQC", 0xC0: "RFU"}


class IccDataError(CodecError):
    """DE55 that does not carry what the cryptogram check needs (names the tag, not values)."""


@dataclass(frozen=True, slots=True, repr=False)
class IccData:
    """The DE55 values the issuer's cryptogram check uses (binary, as on the card)."""

    arqc: bytes
    cid: bytes
    iad: bytes
    atc: bytes
    unpredictable_number: bytes
    amount_authorised: bytes
    amount_other: bytes
    terminal_country: bytes
    tvr: bytes
    currency: bytes
    date: bytes
    transaction_type: bytes
    aip: bytes

    @property
    def cryptogram_type(self) -> CryptogramType:
        """ARQC, TC, AAC (or RFU) from the cryptogram information data."""
        return _CID_TYPES[self.cid[0] & 0xC0]

    def amount_minor(self) -> int | None:
        """9F02 as an integer (n 12 BCD), or None when it is not valid BCD."""
        digits = self.amount_authorised.hex()
        return int(digits) if digits.isdigit() else None

    def currency_numeric(self) -> str | None:
        """5F2A as three ISO 4217 digits, or None when it is not valid BCD."""
        digits = self.currency.hex()
        return digits[1:] if digits.isdigit() and digits[0] == "0" else None

    def __repr__(self) -> str:
        return f"IccData(cid={self.cid.hex().upper()}, atc={self.atc.hex().upper()})"


def parse_icc_data(data: bytes) -> IccData:
    """The cryptogram fields of DE55 (BER-TLV, EMV Book 3 Annex B).

    Raises :class:`IccDataError` when the bytes are not BER-TLV, a required tag is missing
    or has the wrong length, or 9F10 is empty or longer than 32 bytes. Duplicated tags:
    the first one (depth first) counts, as in :func:`paycore.tlv.flatten`.
    """
    try:
        values = _tlv.flatten(_tlv.decode(bytes(data)))
    except _tlv.DecodeError as exc:
        raise IccDataError("DE55 is not BER-TLV", offset=exc.offset, field=exc.field) from None
    for tag, length in REQUIRED_TAGS.items():
        value = values.get(tag)
        if value is None:
            raise IccDataError("DE55 lacks a tag the cryptogram needs", field=f"tag {tag:X}")
        if length is not None and len(value) != length:
            raise IccDataError("DE55 tag has the wrong length", field=f"tag {tag:X}")
    iad = values[0x9F10]
    if not 1 <= len(iad) <= _MAX_IAD:
        raise IccDataError("issuer application data must be 1 to 32 bytes", field="tag 9F10")
    other = values.get(_AMOUNT_OTHER, bytes(6))
    if len(other) != 6:
        raise IccDataError("DE55 tag has the wrong length", field=f"tag {_AMOUNT_OTHER:X}")
    return IccData(
        arqc=values[0x9F26],
        cid=values[0x9F27],
        iad=iad,
        atc=values[0x9F36],
        unpredictable_number=values[0x9F37],
        amount_authorised=values[0x9F02],
        amount_other=other,
        terminal_country=values[0x9F1A],
        tvr=values[0x95],
        currency=values[0x5F2A],
        date=values[0x9A],
        transaction_type=values[0x9C],
        aip=values[0x82],
    )


@contextmanager
def _quiet_des() -> Iterator[None]:
    """pyemv runs the single-DES steps of MAC algorithm 3 as 8-byte TripleDES keys, which
    cryptography flags as deprecated; the algorithm is what EMV specifies."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Single-key TripleDES", module=r"pyemv\.")
        yield


@dataclass(frozen=True, slots=True, repr=False)
class IccKeys:
    """An account's ICC master key for application cryptograms (derived once, at load)."""

    spec: CvnSpec
    icc_mk_ac: bytes

    def __repr__(self) -> str:
        return f"IccKeys(cvn={self.spec.cvn})"


def derive_icc_keys(cvn: int, iss_mk_ac: bytes, pan: str, psn: str) -> IccKeys:
    """The ICC master key AC for ``cvn`` (EMV Book 2 A1.4, option A or B per the CVN).

    Raises ValueError for an unsupported CVN or a key pyemv refuses.
    """
    spec = CVNS.get(cvn)
    if spec is None:
        raise ValueError(f"unsupported cryptogram version {cvn}")
    derive = _kd.derive_icc_mk_a if spec.master_key_option == "A" else _kd.derive_icc_mk_b
    return IccKeys(spec, derive(iss_mk_ac, pan, psn))


def _session_key(keys: IccKeys, icc: IccData) -> bytes:
    method = keys.spec.session_key
    if method == "none":
        return keys.icc_mk_ac
    if method == "emv_csk":
        return _kd.derive_common_sk(keys.icc_mk_ac, icc.atc + bytes(6))
    return _kd.derive_common_sk(keys.icc_mk_ac, icc.atc + bytes(2) + icc.unpredictable_number)


def _ac_tail(spec: CvnSpec, iad: bytes) -> bytes:
    if spec.ac_tail == "visa_cvr":
        return iad[3:7]
    if spec.ac_tail == "whole_iad":
        return iad
    if spec.ac_tail == "mc_cvr":
        return iad[2:8]
    return iad[2:8] + iad[10:18]


def generate_ac(keys: IccKeys, icc: IccData) -> bytes:
    """The 8-byte application cryptogram the card should have computed over ``icc``.

    Raises :class:`IccDataError` when 9F10 is too short for the CVN or names another CVN.
    """
    spec = keys.spec
    if len(icc.iad) < spec.iad_min_length:
        raise IccDataError(f"9F10 too short for CVN {spec.cvn}", field="tag 9F10")
    if icc.iad[spec.iad_cvn_index] != spec.cvn:
        raise IccDataError("9F10 names another cryptogram version", field="tag 9F10")
    data = (
        icc.amount_authorised
        + icc.amount_other
        + icc.terminal_country
        + icc.tvr
        + icc.currency
        + icc.date
        + icc.transaction_type
        + icc.unpredictable_number
        + icc.aip
        + icc.atc
        + _ac_tail(spec, icc.iad)
    )
    padding = _ac.PaddingType.VISA if spec.padding == "visa" else _ac.PaddingType.EMV
    with _quiet_des():
        return _ac.generate_ac(_session_key(keys, icc), data, padding, 8)


def verify_arqc(keys: IccKeys, icc: IccData) -> bool:
    """True when the cryptogram in ``icc`` is the one the card's keys give (constant time).

    A 9F10 that does not fit the CVN is a failed verification, not an error.
    """
    try:
        expected = generate_ac(keys, icc)
    except IccDataError:
        return False
    return hmac.compare_digest(expected, icc.arqc)


def arpc_method_1(key: bytes, arqc: bytes, arc: bytes) -> bytes:
    """EMV Book 2 8.2.1: ``TDES(key, ARQC xor (ARC || 000000000000))`` (8 bytes)."""
    return _ac.generate_arpc_1(key, arqc, arc)


def arpc_method_2(key: bytes, arqc: bytes, csu: bytes, proprietary: bytes = b"") -> bytes:
    """EMV Book 2 8.2.2: MAC algorithm 3 over ``ARQC || CSU || proprietary`` (4 bytes)."""
    with _quiet_des():
        return _ac.generate_arpc_2(key, arqc, csu, proprietary or None)


def card_status_update(approved: bool) -> bytes:
    """The 4-byte CSU of ARPC method 2: byte 2 b8 is "issuer approves online transaction"."""
    return bytes((0x00, 0x80 if approved else 0x00, 0x00, 0x00))


def arpc(keys: IccKeys, icc: IccData, arc_or_csu: bytes) -> bytes:
    """The ARPC for ``icc``'s cryptogram, by the CVN's method and key.

    ``arc_or_csu`` is the 2-byte ARC for method 1, the 4-byte CSU for method 2.
    """
    spec = keys.spec
    if spec.arpc_method == 2:
        return arpc_method_2(_session_key(keys, icc), icc.arqc, arc_or_csu)
    key = keys.icc_mk_ac if spec.arpc_key == "icc_mk" else _session_key(keys, icc)
    return arpc_method_1(key, icc.arqc, arc_or_csu)


def issuer_authentication_data(
    keys: IccKeys, icc: IccData, response_code: str, approved: bool
) -> bytes:
    """Tag 91's value for the answer: ``ARPC || ARC`` (method 1) or ``ARPC || CSU`` (2).

    ``response_code`` is the two-character ISO 8583 response code; its ASCII form is the
    ARC of method 1.
    """
    if keys.spec.arpc_method == 2:
        csu = card_status_update(approved)
        return arpc(keys, icc, csu) + csu
    arc = response_code.encode("ascii")
    return arpc(keys, icc, arc) + arc
