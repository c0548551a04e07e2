"""A test terminal for the bridge's tests: a real card read, real keys, real envelopes.

Not the terminal agent (that is terminal_agent/): just enough of one to produce what the
bridge receives from the field. The card is an emulated catalogue card read through the
in-process transport with the catalogue tests' contact driver; the ARQC is the card's
own; the PIN block comes from an AES DUKPT PIN key as the PIN pad would make it; the
envelope is sealed under the terminal's AES DUKPT data key.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from typing import Literal

from pydantic import SecretStr

from hardware.cards import EmvCard, InProcessTransport, load_profile
from paycore import dukpt, pinblock, tlv
from paycore.currency import by_alpha
from paycore.pan import Pan
from paycore.wire import (
    AuthorizationRequest,
    EncryptedPinBlock,
    Envelope,
    ReversalRequest,
    decode_envelope,
    open_envelope,
    seal,
)
from paycore.wire.messages import Body
from tests.hardware.test_card_catalogue import ContactDriver, split_ac_response, terminal_data

#: DE55 content, in the order terminals usually send it.
DE55_TAGS = (
    0x9F26, 0x9F27, 0x9F10, 0x9F37, 0x9F36, 0x95, 0x9A, 0x9C, 0x9F02, 0x5F2A,
    0x82, 0x9F1A, 0x9F03, 0x9F34, 0x9F35, 0x84, 0x5F34,
)  # fmt: skip


@dataclass
class CardRead:
    """What a terminal knows after the first GENERATE AC."""

    pan: str = field(repr=False)
    psn: str | None
    expiry: str
    track2: str = field(repr=False)
    emv_data: str
    arqc: bytes
    atc: bytes


def read_card(
    profile_name: str, amount: int, currency: str, *, transaction_type: int = 0x00
) -> CardRead:
    """Run the contact flow against the emulated card up to the first GENERATE AC."""
    profile = load_profile(profile_name)
    app = next(a for a in profile.applications if not a.blocked)
    numeric = by_alpha(currency).numeric
    source = terminal_data(
        t9F02=bytes.fromhex(f"{amount:012d}"),
        t5F2A=bytes.fromhex(f"{int(numeric):04d}"),
        t9A=bytes.fromhex(dt.date.today().strftime("%y%m%d")),
        t9C=bytes((transaction_type,)),
        t9F37=secrets.token_bytes(4),
    )
    driver = ContactDriver(InProcessTransport(EmvCard(profile)))
    result = driver.read_application(app.aid, source)
    cid, atc, arqc, iad = split_ac_response(result.ac_answer)
    values = {**source, **result.card_data, 0x9F26: arqc, 0x9F27: bytes((cid,)), 0x9F36: atc,
              0x9F10: iad, 0x84: app.aid}  # fmt: skip
    emv = tlv.encode([tlv.Tlv(tag, values[tag]) for tag in DE55_TAGS if tag in values])
    track2 = result.card_data[0x57].hex().upper().rstrip("F")
    expiry = result.card_data[0x5F24].hex()[:4]
    psn = result.card_data.get(0x5F34)
    return CardRead(
        pan=app.pan.digits,
        psn=None if psn is None else psn.hex(),
        expiry=expiry,
        track2=track2,
        emv_data=emv.hex().upper(),
        arqc=arqc,
        atc=atc,
    )


class TestTerminal:
    """One terminal's keys and counters; builds, seals and opens messages."""

    __test__ = False  # not a test class

    def __init__(
        self,
        terminal_id: str,
        *,
        data_initial_key: bytes,
        data_ikid: bytes,
        pin_initial_key: bytes,
        pin_ikid: bytes,
        next_counter: int = 1,
    ) -> None:
        self.terminal_id = terminal_id
        self.data_initial_key = data_initial_key
        self.data = dukpt.AesOriginator(data_initial_key, data_ikid, next_counter=next_counter)
        self.pin_pad = dukpt.AesOriginator(pin_initial_key, pin_ikid)
        self.stan = 0

    def pin_block(self, pin: str, pan: str) -> EncryptedPinBlock:
        tx = self.pin_pad.next_transaction()
        block = pinblock.encipher_format4(
            tx.working_key("pin", "AES128"), pin, pan, random=secrets.token_bytes
        )
        return EncryptedPinBlock(
            format=4, ksn=tx.ksn.hex().upper(), block=SecretStr(block.hex().upper())
        )

    def authorization(
        self,
        profile: str = "visa_credit",
        amount: int = 1234,
        currency: str = "GBP",
        *,
        pin: str | None = "1234",
        transaction_type: Literal["purchase", "refund", "void"] = "purchase",
        idempotency_key: str | None = None,
        original_message_id: str | None = None,
    ) -> AuthorizationRequest:
        kind = 0x20 if transaction_type == "refund" else 0x00
        card = read_card(profile, amount, currency, transaction_type=kind)
        self.stan += 1
        return AuthorizationRequest(
            transaction_type=transaction_type,
            amount=amount,
            currency=currency,
            idempotency_key=idempotency_key or f"{self.terminal_id}:{secrets.token_hex(8)}",
            stan=self.stan,
            terminal_time=dt.datetime.now(dt.UTC),
            pan=Pan(card.pan),
            pan_sequence_number=card.psn,
            expiry=card.expiry,
            track2_equivalent=SecretStr(card.track2),
            emv_data=card.emv_data,
            cvm="online_pin" if pin is not None else "signature",
            pin_block=None if pin is None else self.pin_block(pin, card.pan),
            original_message_id=original_message_id,
        )

    def reversal(self, original: Envelope, request: AuthorizationRequest) -> ReversalRequest:
        return ReversalRequest(
            original_message_id=original.message_id,
            idempotency_key=f"rev:{original.message_id}",
            reason="host_timeout",
            amount=request.amount,
            currency=request.currency,
        )

    def seal(self, body: Body, *, now_ms: int, ttl_ms: int = 15_000) -> Envelope:
        tx = self.data.next_transaction()
        return seal(
            body,
            key=tx.working_key("data_encrypt", "AES128"),
            terminal_id=self.terminal_id,
            ksn=tx.ksn,
            message_id=secrets.token_hex(16),
            sent_at=now_ms,
            ttl_ms=ttl_ms,
        )

    def open(self, payload: bytes, *, now_ms: int) -> tuple[Envelope, Body]:
        envelope = decode_envelope(payload)
        key = dukpt.aes_working_key(
            self.data_initial_key, envelope.ksn_bytes, "data_decrypt", "AES128"
        )
        return envelope, open_envelope(envelope, key=key, now=now_ms)
