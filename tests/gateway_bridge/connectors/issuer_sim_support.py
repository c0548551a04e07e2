"""The other side of the issuer simulator, for its tests: a card, a PIN pad, a key store.

Written independently of the simulator's code: the card computes its cryptograms with
pyemv's CVN classes from the issuer master keys in the catalogue profile (read here with
tomllib), lays out 9F10 as the scheme formats describe, and checks the ARPC the way the
card does. The PIN pad enciphers ISO 9564 format 4 blocks under an AES DUKPT PIN key
(paycore.pinblock); the key store deciphers them with the known BDK.
"""

from __future__ import annotations

import secrets
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pyemv import cvn as pyemv_cvn

from gateway_bridge.connectors.base import Authorization, PinService
from paycore import dukpt, pinblock
from paycore import tlv as ber
from paycore.currency import by_alpha
from paycore.wire import AuthorizationRequest, EncryptedPinBlock

CATALOGUE = Path(__file__).resolve().parents[3] / "hardware" / "cards" / "catalogue"

PIN_BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
PINPAD_IKID = bytes.fromhex("1234567890123456")
TRANSACTION_DATE = bytes.fromhex("260315")

CardEngine = (
    pyemv_cvn.VisaCVN10
    | pyemv_cvn.VisaCVN18
    | pyemv_cvn.MasterCardCVN16
    | pyemv_cvn.MasterCardCVN17
    | pyemv_cvn.MasterCardCVN20
    | pyemv_cvn.MasterCardCVN21
)


@dataclass
class Cryptogram:
    """What the card remembers of its last GENERATE AC."""

    arqc: bytes
    atc: bytes


@dataclass
class EmvCard:
    """An EMV card's cryptogram engine, personalised from issuer master keys."""

    pan: str
    psn: str
    expiry: str  # YYMM
    cvn: int
    pin: str
    imk_ac: bytes
    imk_smi: bytes
    imk_smc: bytes
    aip: bytes = bytes.fromhex("1C00")
    dki: int = 1
    atc: int = 16
    last: Cryptogram | None = None
    engine: CardEngine = field(init=False)

    def __post_init__(self) -> None:
        keys = (self.imk_ac, self.imk_smi, self.imk_smc)
        engines: dict[int, Callable[..., CardEngine]] = {
            10: pyemv_cvn.VisaCVN10,
            18: pyemv_cvn.VisaCVN18,
            16: pyemv_cvn.MasterCardCVN16,
            17: pyemv_cvn.MasterCardCVN17,
            20: pyemv_cvn.MasterCardCVN20,
            21: pyemv_cvn.MasterCardCVN21,
        }
        self.engine = engines[self.cvn](*keys, pan=self.pan, psn=self.psn)

    @property
    def visa(self) -> bool:
        return self.cvn in (10, 18)

    def iad(self) -> bytes:
        """9F10: Visa ``06 DKI CVN CVR(4)``; MasterCard ``DKI CVN CVR(6) DAC(2) counters(8)``."""
        if self.visa:
            return bytes((0x06, self.dki, self.cvn)) + bytes.fromhex("03A02000")
        counters = bytes.fromhex("000000000300") + b"\x01\xff"  # amount, count, FF
        return bytes((self.dki, self.cvn)) + bytes.fromhex("A00000220000") + bytes(2) + counters

    def generate_ac(
        self,
        amount: int,
        currency: str,
        *,
        cid: int = 0x80,
        transaction_type: int = 0x00,
        unpredictable_number: bytes | None = None,
        extra: dict[int, bytes] | None = None,
    ) -> str:
        """DE55 (hex) for a first GENERATE AC over these terminal data."""
        self.atc += 1
        atc = self.atc.to_bytes(2, "big")
        iad = self.iad()
        terminal = {
            "tag_9f02": bytes.fromhex(f"{amount:012d}"),
            "tag_9f03": bytes(6),
            "tag_9f1a": bytes.fromhex("0826"),
            "tag_95": bytes.fromhex("0000008000"),
            "tag_5f2a": bytes.fromhex("0" + by_alpha(currency).numeric),
            "tag_9a": TRANSACTION_DATE,
            "tag_9c": bytes((transaction_type,)),
            "tag_9f37": unpredictable_number or secrets.token_bytes(4),
        }
        engine = self.engine
        if isinstance(engine, pyemv_cvn.VisaCVN10):
            arqc = engine.generate_ac(**terminal, tag_82=self.aip, tag_9f36=atc, cvr=iad[3:7])
        elif isinstance(engine, pyemv_cvn.VisaCVN18):
            arqc = engine.generate_ac(**terminal, tag_82=self.aip, tag_9f36=atc, tag_9f10=iad)
        elif isinstance(engine, pyemv_cvn.MasterCardCVN17 | pyemv_cvn.MasterCardCVN21):
            arqc = engine.generate_ac(
                **terminal, tag_82=self.aip, tag_9f36=atc, cvr=iad[2:8], counters=iad[10:18]
            )
        else:
            arqc = engine.generate_ac(**terminal, tag_82=self.aip, tag_9f36=atc, cvr=iad[2:8])
        self.last = Cryptogram(arqc, atc)
        values = {
            0x9F26: arqc,
            0x9F27: bytes((cid,)),
            0x9F10: iad,
            0x9F36: atc,
            0x9F37: terminal["tag_9f37"],
            0x9F02: terminal["tag_9f02"],
            0x9F03: terminal["tag_9f03"],
            0x9F1A: terminal["tag_9f1a"],
            0x95: terminal["tag_95"],
            0x5F2A: terminal["tag_5f2a"],
            0x9A: terminal["tag_9a"],
            0x9C: terminal["tag_9c"],
            0x82: self.aip,
            0x84: bytes.fromhex("A0000000031010"),
            0x9F33: bytes.fromhex("E0F8C8"),
        }
        values.update(extra or {})
        return ber.encode(ber.Tlv(tag, value) for tag, value in values.items()).hex().upper()

    def arpc_ok(self, issuer_authentication_data: str) -> bool:
        """The card's check of tag 91 against its last ARQC (second GENERATE AC)."""
        assert self.last is not None
        data = bytes.fromhex(issuer_authentication_data)
        arqc, atc = self.last.arqc, self.last.atc
        engine = self.engine
        if isinstance(engine, pyemv_cvn.VisaCVN18):
            if len(data) != 8:
                return False
            return engine.generate_arpc(arqc, atc, data[4:8]) == data[:4]
        if len(data) != 10:
            return False
        arpc, arc = data[:8], data[8:]
        if isinstance(engine, pyemv_cvn.MasterCardCVN20 | pyemv_cvn.MasterCardCVN21):
            return engine.generate_arpc(arqc, atc, arc) == arpc
        return engine.generate_arpc(arqc, arc) == arpc


def card_from_profile(name: str, index: int = 0) -> EmvCard:
    """The card of catalogue profile ``name`` (its ``index``-th application)."""
    with (CATALOGUE / f"{name}.toml").open("rb") as handle:
        profile = tomllib.load(handle)
    app = profile["applications"][index]
    expiry = app["expiry"]
    return EmvCard(
        pan=app["pan"],
        psn=f"{app.get('psn', 0):02d}",
        expiry=f"{expiry.year % 100:02d}{expiry.month:02d}",
        cvn=app["cvn"],
        pin=app["pin"],
        imk_ac=bytes.fromhex(app["keys"]["ac"]),
        imk_smi=bytes.fromhex(app["keys"]["smi"]),
        imk_smc=bytes.fromhex(app["keys"]["smc"]),
        aip=bytes.fromhex(app["aip"]),
        dki=app.get("dki", 1),
        atc=app.get("atc", 0),
    )


class PinPad:
    """An AES DUKPT PIN pad: ISO 9564 format 4 blocks under its PIN key."""

    def __init__(self) -> None:
        self.initial_key = dukpt.aes_initial_key(PIN_BDK, PINPAD_IKID)
        self._originator = dukpt.AesOriginator(self.initial_key, PINPAD_IKID)

    def pin_block(self, pin: str, pan: str) -> EncryptedPinBlock:
        transaction = self._originator.next_transaction()
        block = pinblock.encipher_format4_dukpt(
            self.initial_key, transaction.ksn, pin, pan, random=secrets.token_bytes
        )
        return EncryptedPinBlock(
            format=4, ksn=transaction.ksn.hex().upper(), block=SecretStr(block.hex().upper())
        )


class DukptPinService:
    """The key store's PIN verification, in the shape :class:`PinService` fixes."""

    def __init__(self, bdk: bytes = PIN_BDK) -> None:
        self._bdk = bdk
        self.calls = 0

    def verify(
        self, pin_block: EncryptedPinBlock, pan: str, check: Callable[[bytearray], bool]
    ) -> bool:
        self.calls += 1
        ksn = bytes.fromhex(pin_block.ksn)
        initial_key = dukpt.aes_initial_key(self._bdk, ksn[:8])
        pin = pinblock.decipher_format4_dukpt(
            initial_key, ksn, bytes.fromhex(pin_block.block.get_secret_value()), pan
        )
        clear = bytearray(pin.encode("ascii"))
        try:
            return check(clear)
        finally:
            clear[:] = bytes(len(clear))

    def translate(
        self, pin_block: EncryptedPinBlock, pan: str, zone_key_id: str, zone_format: Literal[0, 4]
    ) -> bytes:
        raise NotImplementedError("the issuer simulator never translates")


_stan = iter(range(1, 999_999))


def authorization(
    card: EmvCard,
    amount: int,
    *,
    pins: PinService,
    currency: str = "GBP",
    transaction_type: Literal["purchase", "refund", "void"] = "purchase",
    emv_data: str | None = None,
    pin_block: EncryptedPinBlock | None = None,
    expiry: str | None = None,
    pan: str | None = None,
    original_message_id: str | None = None,
    original_host_reference: str | None = None,
    terminal_id: str = "T0001",
) -> Authorization:
    """An authorisation as the bridge hands it to a connector (DE55 from the card)."""
    if emv_data is None:
        tx_type = 0x20 if transaction_type == "refund" else 0x00
        emv_data = card.generate_ac(amount, currency, transaction_type=tx_type)
    request = AuthorizationRequest(
        transaction_type=transaction_type,
        amount=amount,
        currency=currency,
        idempotency_key=uuid.uuid4().hex,
        stan=next(_stan),
        terminal_time=datetime(2026, 3, 15, 12, 0, tzinfo=UTC),
        pan=pan or card.pan,
        pan_sequence_number=card.psn,
        expiry=expiry or card.expiry,
        emv_data=emv_data,
        cvm="online_pin" if pin_block is not None else "no_cvm",
        pin_block=pin_block,
        original_message_id=original_message_id,
    )
    return Authorization(
        terminal_id=terminal_id,
        merchant_id="M000001",
        message_id=uuid.uuid4().hex,
        request=request,
        pins=pins,
        original_host_reference=original_host_reference,
    )


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
