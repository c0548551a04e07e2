"""The typed state of one EMV transaction, and what goes in and out of the kernel.

:class:`TransactionContext` is the record every step of EMV 4.4 Book 3 chapter 10 reads
and writes: the candidate list (Book 1 12), the ICC and terminal data objects, the TVR
and TSI bit fields (Annex C5, C6), the CVM results (9F34, Annex A), the records kept for
offline data authentication and the cryptograms. Its ``repr`` shows no card data.

:class:`Transaction` is the sale the cashier asked for; :class:`OnlineRequest` the data
the authorisation request is built from; :class:`HostOutcome` the host's answer;
:class:`Outcome` the end of the transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from pydantic import SecretBytes

from paycore.pan import Pan

from .apdu import CardLink
from .bits import Tsi, Tvr
from .config import AidConfig, TerminalConfig

__all__ = [
    "AcResponse",
    "AcType",
    "Candidate",
    "Decision",
    "HostOutcome",
    "OnlineRequest",
    "Outcome",
    "Transaction",
    "TransactionContext",
]


class AcType(Enum):
    """Cryptogram types: the GENERATE AC P1 / CID b8-b7 coding (Book 3 6.5.5)."""

    AAC = 0x00
    TC = 0x40
    ARQC = 0x80


@dataclass(frozen=True, slots=True)
class Transaction:
    """The sale: amounts in minor units of ``currency_code`` (None: the terminal's)."""

    amount: int
    date: dt.date
    time: dt.time = dt.time(0, 0, 0)
    amount_other: int = 0
    transaction_type: int = 0x00  # 9C: 00 goods/services, 01 cash, 09 cashback, 20 refund
    currency_code: int | None = None
    purchase_of: Literal["goods", "services"] = "goods"
    force_online: bool = False  # merchant suspicious: TVR byte 4 bit 4
    sequence_counter: int | None = None  # 9F41

    def __post_init__(self) -> None:
        if not 0 <= self.amount < 10**12 or not 0 <= self.amount_other < 10**12:
            raise ValueError("amounts are 0 to 999999999999 minor units")
        if not 0 <= self.transaction_type <= 0x99:
            raise ValueError("transaction_type is one byte")

    @property
    def is_cash(self) -> bool:
        """9C 01: cash."""
        return self.transaction_type == 0x01

    @property
    def is_cashback(self) -> bool:
        """9C 09: purchase with cashback."""
        return self.transaction_type == 0x09


@dataclass(frozen=True, slots=True)
class Candidate:
    """One entry of the candidate list (Book 1 12.3)."""

    adf_name: bytes
    label: str
    aid_config: AidConfig
    priority: int | None = None  # 87
    preferred_name: str | None = None  # 9F12

    @property
    def confirmation_required(self) -> bool:
        """87 b8: the application may not be selected without cardholder confirmation."""
        return self.priority is not None and bool(self.priority & 0x80)

    @property
    def rank(self) -> int:
        """Sort key: priority 1 (highest) to 15; no priority (absent or 0) last."""
        order = (self.priority or 0) & 0x0F
        return order if order else 16


@dataclass(frozen=True, slots=True)
class AcResponse:
    """A GENERATE AC answer (Book 3 6.5.5.4): CID, ATC, cryptogram, IAD."""

    cid: int
    atc: bytes
    cryptogram: bytes
    iad: bytes

    @property
    def ac_type(self) -> AcType:
        """The cryptogram type in CID b8-b7."""
        return AcType(self.cid & 0xC0)


class Decision(Enum):
    """How the transaction ended."""

    APPROVED_OFFLINE = "approved offline"  # TC at the first GENERATE AC
    DECLINED_OFFLINE = "declined offline"  # AAC at the first GENERATE AC
    APPROVED_ONLINE = "approved"  # host approved, card TC
    DECLINED_ONLINE = "declined"  # host declined
    DECLINED_AFTER_APPROVAL = "declined by card after host approval"  # reverse it
    APPROVED_UNABLE_ONLINE = "approved offline, unable to go online"  # Y3
    DECLINED_UNABLE_ONLINE = "declined offline, unable to go online"  # Z3

    @property
    def approved(self) -> bool:
        """True when goods may leave the shop."""
        return self in (
            Decision.APPROVED_OFFLINE,
            Decision.APPROVED_ONLINE,
            Decision.APPROVED_UNABLE_ONLINE,
        )


@dataclass(frozen=True, slots=True)
class HostOutcome:
    """The host's answer to the online request, or its absence.

    ``arc`` is the authorisation response code (8A, two characters); ``issuer_auth_data``
    tag 91 as received. ``unable_to_go_online`` means no answer at all.
    """

    approved: bool
    arc: bytes = b"00"
    issuer_auth_data: bytes | None = None
    unable_to_go_online: bool = False

    def __post_init__(self) -> None:
        if len(self.arc) != 2:
            raise ValueError("the authorisation response code (8A) is 2 bytes")
        if self.issuer_auth_data is not None and not 8 <= len(self.issuer_auth_data) <= 16:
            raise ValueError("issuer authentication data (91) is 8 to 16 bytes")

    @classmethod
    def unable(cls) -> HostOutcome:
        """The host could not be reached (Book 3 10.7, terminal default action)."""
        return cls(approved=False, arc=b"Z3", unable_to_go_online=True)


@dataclass(frozen=True, slots=True, repr=False)
class OnlineRequest:
    """What the authorisation request is built from (DESIGN 3 step 5).

    ``de55`` is BER-TLV of the configured tags (never a sensitive one); the PAN, track 2
    equivalent and expiry travel in their own fields. ``pin_block`` is the PIN pad's
    opaque enciphered block, when online PIN was the CVM.
    """

    arqc: bytes
    de55: bytes
    pan: Pan
    psn: str | None
    expiry: str  # YYMM
    track2: SecretBytes | None
    cvm_results: bytes
    tvr: bytes
    tsi: bytes
    aid: bytes
    amount: int
    amount_other: int
    currency_code: int
    pin_block: object | None = None

    def __repr__(self) -> str:
        return (
            f"OnlineRequest(aid={self.aid.hex().upper()}, pan={self.pan.masked}, "
            f"tvr={self.tvr.hex().upper()}, cvm_results={self.cvm_results.hex().upper()}, "
            f"pin_block={'<PIN block>' if self.pin_block is not None else None})"
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of a transaction; ``reversal_required`` when the host had approved."""

    decision: Decision
    cryptogram: bytes
    cid: int
    atc: bytes
    tvr: bytes
    tsi: bytes
    cvm_results: bytes
    aid: bytes
    label: str
    arc: bytes | None = None
    signature_required: bool = False
    reversal_required: bool = False


@dataclass(repr=False)
class TransactionContext:
    """Everything one transaction knows, step by step (Book 3 chapter 10)."""

    config: TerminalConfig
    transaction: Transaction
    unpredictable_number: bytes
    candidates: list[Candidate] = field(default_factory=list)
    selected: Candidate | None = None
    card_data: dict[int, bytes] = field(default_factory=dict)
    terminal_data: dict[int, bytes] = field(default_factory=dict)
    tvr: Tvr = field(default_factory=lambda: Tvr(0))
    tsi: Tsi = field(default_factory=lambda: Tsi(0))
    cvm_results: bytes = bytes.fromhex("3F0000")
    oda_records: list[bytes] = field(default_factory=list)
    pin_block: object | None = None
    signature_required: bool = False
    requested_first: AcType | None = None
    first_ac: AcResponse | None = None
    second_ac: AcResponse | None = None
    online_pending: bool = False
    apdu_count: int = 0
    link: CardLink | None = None

    def __repr__(self) -> str:
        aid = self.selected.adf_name.hex().upper() if self.selected else None
        return (
            f"TransactionContext(aid={aid}, tvr={self.tvr.to_bytes().hex().upper()}, "
            f"tsi={self.tsi.to_bytes().hex().upper()}, "
            f"cvm_results={self.cvm_results.hex().upper()}, apdus={self.apdu_count})"
        )

    @property
    def currency_code(self) -> int:
        """The transaction currency (5F2A) as a number."""
        return self.transaction.currency_code or self.config.currency_code

    @property
    def aid_config(self) -> AidConfig:
        """The terminal's settings for the selected application."""
        if self.selected is None:
            raise LookupError("no application selected yet")
        return self.selected.aid_config

    def data(self) -> dict[int, bytes]:
        """Terminal and ICC data together, the source for a DOL (Book 3 5.4)."""
        return {**self.card_data, **self.terminal_data, **self._dynamic()}

    def _dynamic(self) -> dict[int, bytes]:
        return {
            0x95: self.tvr.to_bytes(),
            0x9B: self.tsi.to_bytes(),
            0x9F34: self.cvm_results,
        }
