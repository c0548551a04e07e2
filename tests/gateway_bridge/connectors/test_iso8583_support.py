"""Helpers for the ISO 8583 tests (no tests here): a terminal, a key store, an issuer.

- :func:`make_request` builds what a terminal sends (AES DUKPT format 4 PIN block).
- :class:`TestKeyStorePins` is the bridge key store's PIN translation: it deciphers the
  terminal's DUKPT block and re-enciphers it under the acquirer zone key (format 0, TDES;
  or format 4, AES), with paycore's ISO 9564 functions.
- :class:`LedgerIssuer` is a small honest issuer (implements ``Connector``): PIN through
  ``auth.pins.verify``, balances, voids and reversals, idempotent.
- :func:`running` starts an acquirer simulator and a connector against it on a free port.
"""

from __future__ import annotations

import contextlib
import hmac
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from psec import des as psec_des

from gateway_bridge.acquirer_sim import AcquirerSimSettings, AcquirerSimulator, Faults
from gateway_bridge.connectors.base import (
    Authorization,
    Connector,
    PinService,
    Reversal,
    ReversalOutcome,
)
from gateway_bridge.connectors.iso8583 import Iso8583Connector, Iso8583Settings
from paycore import pinblock
from paycore.dukpt import aes_initial_key
from paycore.wire import AuthorizationRequest, AuthorizationResponse, EncryptedPinBlock

PAN = "4761739001010010"
OTHER_PAN = "5413330089020011"
PIN = "1234"
PIN_BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
IKID = bytes.fromhex("1234567890123456")
ZONE_KEY = {0: bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"), 4: bytes(range(16))}
ICC = "9F2608A1B2C3D4E5F607089F2701809F360200019F3704CAFEBABE820218009F1A0208409A03250704"
TIME = datetime(2025, 7, 4, 12, 34, 56, tzinfo=UTC)


def pin_block(pin: str = PIN, pan: str = PAN, counter: int = 1) -> EncryptedPinBlock:
    """What the PIN pad makes: format 4 under the AES DUKPT PIN key of (IKID, counter)."""
    ksn = IKID + counter.to_bytes(4, "big")
    initial = aes_initial_key(PIN_BDK, IKID)
    block = pinblock.encipher_format4_dukpt(initial, ksn, pin, pan, random=os.urandom)
    return EncryptedPinBlock.model_validate(
        {"format": 4, "ksn": ksn.hex().upper(), "block": block.hex().upper()}
    )


def make_request(**changes: Any) -> AuthorizationRequest:
    values: dict[str, Any] = {
        "transaction_type": "purchase",
        "amount": 1000,
        "currency": "USD",
        "idempotency_key": "idem-1",
        "stan": 123,
        "terminal_time": TIME,
        "pan": PAN,
        "pan_sequence_number": "01",
        "expiry": "2512",
        "track2_equivalent": f"{PAN}D25122010000000000F",
        "emv_data": ICC,
        "cvm": "online_pin",
        "pin_block": None,
    }
    values.update(changes)
    if values["cvm"] == "online_pin" and values["pin_block"] is None:
        values["pin_block"] = pin_block(pan=values["pan"])
    return AuthorizationRequest.model_validate(values)


class TestKeyStorePins:
    """The key store's PIN side for tests: DUKPT format 4 in, zone key block out."""

    __test__ = False

    def __init__(self, zone_key_id: str = "acquirer-zpk") -> None:
        self.zone_key_id = zone_key_id
        self.translations = 0

    def verify(
        self, pin_block: EncryptedPinBlock, pan: str, check: Callable[[bytearray], bool]
    ) -> bool:
        raise NotImplementedError("the connector never verifies PINs")

    def translate(
        self, pin_block: EncryptedPinBlock, pan: str, zone_key_id: str, zone_format: Literal[0, 4]
    ) -> bytes:
        if zone_key_id != self.zone_key_id:
            raise KeyError("unknown zone key")
        ksn = bytes.fromhex(pin_block.ksn)
        initial = aes_initial_key(PIN_BDK, ksn[:8])
        block = bytes.fromhex(pin_block.block.get_secret_value())
        pin = pinblock.decipher_format4_dukpt(initial, ksn, block, pan)
        self.translations += 1
        key = ZONE_KEY[zone_format]
        if zone_format == 4:
            return pinblock.encipher_format4(key, pin, pan, random=os.urandom)
        return bytes(psec_des.encrypt_tdes_ecb(key, pinblock.encode_format0(pin, pan)))


def authorization(
    request: AuthorizationRequest | None = None,
    *,
    message_id: str = "a" * 32,
    terminal_id: str = "TERM0001",
    pins: PinService | None = None,
    original: AuthorizationRequest | None = None,
    original_host_reference: str | None = None,
) -> Authorization:
    return Authorization(
        terminal_id=terminal_id,
        merchant_id="MERCHANT0000001",
        message_id=message_id,
        request=request or make_request(),
        pins=pins or TestKeyStorePins(),
        original=original,
        original_host_reference=original_host_reference,
    )


@dataclass
class _Account:
    pin: str
    balance: int


@dataclass
class LedgerIssuer:
    """An issuer host in a few lines: PIN, funds, voids and reversals (implements Connector)."""

    accounts: dict[str, _Account] = field(
        default_factory=lambda: {PAN: _Account(PIN, 100_000), OTHER_PAN: _Account("9999", 0)}
    )
    name: str = "ledger-issuer"
    seen: list[Authorization] = field(default_factory=list)
    reversals: list[Reversal] = field(default_factory=list)
    approved: dict[str, tuple[str, int]] = field(default_factory=dict)
    reversed: set[str] = field(default_factory=set)
    pin_checks: list[bool] = field(default_factory=list)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def authorize(self, auth: Authorization) -> AuthorizationResponse:
        self.seen.append(auth)
        request = auth.request
        account = self.accounts.get(request.pan.digits)
        if account is None:
            return AuthorizationResponse(response_code="14", approved=False)
        if request.transaction_type == "void":
            original = request.original_message_id
            if original is None or original not in self.approved or original in self.reversed:
                return AuthorizationResponse(response_code="25", approved=False)
            self.reversed.add(original)
            account.balance += self.approved[original][1]
            return AuthorizationResponse(response_code="00", approved=True)
        if request.cvm == "online_pin":
            assert request.pin_block is not None
            expected = account.pin.encode()
            right = auth.pins.verify(
                request.pin_block,
                request.pan.digits,
                lambda digits: hmac.compare_digest(bytes(digits), expected),
            )
            self.pin_checks.append(right)
            if not right:
                return AuthorizationResponse(response_code="55", approved=False)
        sign = -1 if request.transaction_type == "purchase" else 1
        if sign < 0 and request.amount > account.balance:
            return AuthorizationResponse(response_code="51", approved=False)
        account.balance += sign * request.amount
        self.approved[auth.message_id] = (request.pan.digits, request.amount)
        return AuthorizationResponse(
            response_code="00",
            approved=True,
            authorization_code=f"A{len(self.approved):05d}",
            issuer_authentication_data="1122334455667788" + "3030",
            issuer_scripts="720A9F180400000001860100" if request.amount == 4242 else None,
        )

    async def reverse(self, reversal: Reversal) -> ReversalOutcome:
        self.reversals.append(reversal)
        original = reversal.request.original_message_id
        if original not in self.approved:
            return "unknown_original"
        if original in self.reversed:
            return "already_reversed"
        self.reversed.add(original)
        pan, amount = self.approved[original]
        self.accounts[pan].balance += amount
        return "reversed"


@dataclass
class Harness:
    simulator: AcquirerSimulator
    connector: Iso8583Connector
    issuer: Connector


@contextlib.asynccontextmanager
async def running(
    *,
    dialect: Literal["binary", "ascii"] = "binary",
    header: Literal["2byte", "4ascii", "none"] = "2byte",
    tpdu: str | None = None,
    zone_format: Literal[0, 4] = 0,
    issuer: Connector | None = None,
    faults: Faults | None = None,
    start: bool = True,
    **settings: Any,
) -> AsyncIterator[Harness]:
    """A simulator on a free loopback port and a connector signed on to it."""
    sim = AcquirerSimulator(
        AcquirerSimSettings(
            dialect=dialect, header=header, tpdu=tpdu is not None, pin_zone_format=zone_format
        ),
        issuer or LedgerIssuer(),
        ZONE_KEY[zone_format],
        faults=faults,
    )
    await sim.start()
    options: dict[str, Any] = {
        "port": sim.port,
        "dialect": dialect,
        "header": header,
        "tpdu": tpdu,
        "pin_zone_format": zone_format,
        "request_timeout": 2.0,
        "reconnect_initial": 0.05,
        "reconnect_max": 0.2,
        "echo_interval": 0,
        "start_wait": 2.0,
    }
    options.update(settings)
    connector = Iso8583Connector(Iso8583Settings.model_validate(options))
    try:
        if start:
            await connector.start()
        yield Harness(sim, connector, sim.issuer)
    finally:
        await connector.close()
        await sim.close()
