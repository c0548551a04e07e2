"""The acquirer host simulator: its PIN service, its answers, its CLI, and the real issuer."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from psec import des as psec_des

from gateway_bridge.acquirer_sim import (
    AcquirerSimSettings,
    AcquirerSimulator,
    ZonePinService,
    main,
)
from gateway_bridge.connectors.base import Connector, Reversal
from gateway_bridge.connectors.iso8583 import (
    BINARY,
    FrameDecoder,
    Framing,
    Iso8583Connector,
    Iso8583Settings,
    decode_message,
    encode_message,
)
from gateway_bridge.connectors.issuer_sim import IssuerSimulator, load_catalogue, repo_catalogue_dir
from gateway_bridge.connectors.issuer_sim.cryptogram import generate_ac, parse_icc_data
from paycore import pinblock, tlv
from paycore.wire import EncryptedPinBlock, ReversalRequest
from tests.gateway_bridge.connectors.test_iso8583_support import (
    PAN,
    PIN,
    ZONE_KEY,
    LedgerIssuer,
    authorization,
    make_request,
    pin_block,
    running,
)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 15))


# -- the zone PIN service ------------------------------------------------------------------------


def _zone_block(fmt: int, pin: str, key: bytes) -> EncryptedPinBlock:
    if fmt == 4:
        block = pinblock.encipher_format4(key, pin, PAN, random=os.urandom)
    else:
        block = bytes(psec_des.encrypt_tdes_ecb(key, pinblock.encode_format0(pin, PAN)))
    return EncryptedPinBlock.model_validate(
        {"format": fmt, "ksn": "0" * 20, "block": block.hex().upper()}
    )


@pytest.mark.parametrize("fmt", [0, 4])
def test_zone_pin_service_verifies_under_the_zone_key(fmt: Any) -> None:
    service = ZonePinService(ZONE_KEY[fmt], fmt)
    seen: list[bytes] = []

    def check(digits: bytearray) -> bool:
        seen.append(bytes(digits))
        return bytes(digits) == PIN.encode()

    assert service.verify(_zone_block(fmt, PIN, ZONE_KEY[fmt]), PAN, check)
    assert not service.verify(_zone_block(fmt, "4321", ZONE_KEY[fmt]), PAN, check)
    assert seen == [PIN.encode(), b"4321"]
    other_key = bytes(16) if fmt == 4 else bytes.fromhex("11" * 16)
    # under another key the block does not decipher to a valid block (or to another PIN)
    assert not service.verify(_zone_block(fmt, PIN, other_key), PAN, check)
    assert "key" not in repr(service).lower()
    with pytest.raises(NotImplementedError):
        service.translate(_zone_block(fmt, PIN, ZONE_KEY[fmt]), PAN, "zpk", fmt)


def test_zone_pin_service_key_lengths() -> None:
    with pytest.raises(ValueError, match="length"):
        ZonePinService(bytes(8), 0)
    with pytest.raises(ValueError, match="length"):
        ZonePinService(bytes(20), 4)


# -- answers to what the connector would not send ----------------------------------------------


async def _raw_exchange(sim: AcquirerSimulator, fields: dict[str, str]) -> dict[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    framing = Framing("2byte")
    writer.write(framing.encode(encode_message(BINARY.spec, fields)))
    decoder = FrameDecoder(framing)
    try:
        while True:
            data = await asyncio.wait_for(reader.read(4096), 2)
            assert data, "connection closed without an answer"
            frames = decoder.feed(data)
            if frames:
                return decode_message(BINARY.spec, frames[0].message)
    finally:
        writer.close()


def test_format_errors_and_unknown_originals() -> None:
    async def scenario() -> None:
        sim = AcquirerSimulator(AcquirerSimSettings(), LedgerIssuer(), ZONE_KEY[0])
        await sim.start()
        try:
            base = {"t": "0200", "11": "000001", "41": "TERM0001", "4": "000000000100"}
            answer = await _raw_exchange(sim, base | {"3": "990000"})
            assert (answer["t"], answer["39"], answer["11"]) == ("0210", "30", "000001")
            answer = await _raw_exchange(sim, base | {"3": "000000"})  # no PAN, no date
            assert answer["39"] == "30"
            void = base | {"t": "0400", "90": "0200" + "000009" + "0" * 32}
            assert (await _raw_exchange(sim, void))["39"] == "25"
            advice = base | {"t": "0420", "49": "840", "90": "0200" + "000009" + "0" * 32}
            answer = await _raw_exchange(sim, advice)
            assert (answer["t"], answer["39"]) == ("0430", "25")
            sign_off = await _raw_exchange(sim, {"t": "0800", "11": "000002", "70": "002"})
            assert (sign_off["t"], sign_off["39"], sign_off["70"]) == ("0810", "00", "002")
        finally:
            await sim.close()

    run(scenario)


def test_issuer_failure_answers_91() -> None:
    class DownIssuer(LedgerIssuer):
        async def authorize(self, auth: Any) -> Any:
            from gateway_bridge.connectors.base import ConnectorUnavailable

            raise ConnectorUnavailable("issuer down")

    async def scenario() -> None:
        async with running(issuer=DownIssuer()) as h:
            response = await h.connector.authorize(authorization())
            assert (response.approved, response.response_code) == (False, "91")
            assert response.display_text == "ISSUER UNAVAILABLE"

    run(scenario)


# -- end to end through the issuer simulator ------------------------------------------------


def _visa_icc(issuer: IssuerSimulator, amount: int) -> str:
    """DE55 for the catalogue's Visa credit card (CVN 18) with the ARQC the card would make."""
    account = next(a for a in issuer.accounts() if a.pan.digits == PAN)
    objects = [
        tlv.Tlv.primitive(0x9F26, bytes(8)),
        tlv.Tlv.primitive(0x9F27, b"\x80"),
        tlv.Tlv.primitive(0x9F10, bytes.fromhex("06011203A00000")),
        tlv.Tlv.primitive(0x9F36, b"\x00\x01"),
        tlv.Tlv.primitive(0x9F37, bytes.fromhex("CAFEBABE")),
        tlv.Tlv.primitive(0x9F02, bytes.fromhex(f"{amount:012d}")),
        tlv.Tlv.primitive(0x9F03, bytes(6)),
        tlv.Tlv.primitive(0x9F1A, bytes.fromhex("0826")),
        tlv.Tlv.primitive(0x95, bytes(5)),
        tlv.Tlv.primitive(0x5F2A, bytes.fromhex("0826")),
        tlv.Tlv.primitive(0x9A, bytes.fromhex("250704")),
        tlv.Tlv.primitive(0x9C, b"\x00"),
        tlv.Tlv.primitive(0x82, bytes.fromhex("1800")),
    ]
    arqc = generate_ac(account.keys, parse_icc_data(tlv.encode(objects)))
    objects[0] = tlv.Tlv.primitive(0x9F26, arqc)
    return tlv.encode(objects).hex().upper()


def _catalogue_issuer() -> IssuerSimulator:
    directory = repo_catalogue_dir()
    assert directory is not None
    return IssuerSimulator(load_catalogue(directory))


@pytest.mark.parametrize(("dialect", "zone"), [("binary", 0), ("ascii", 4)])
def test_end_to_end_with_the_issuer_simulator(dialect: Any, zone: Any) -> None:
    async def scenario() -> None:
        issuer = _catalogue_issuer()
        account = next(a for a in issuer.accounts() if a.pan.digits == PAN)
        start = issuer.snapshot(account.pan).balance
        async with running(dialect=dialect, zone_format=zone, issuer=issuer) as h:
            request = make_request(
                amount=1500,
                currency="GBP",
                expiry=account.expiry,
                pan_sequence_number=account.psn,
                emv_data=_visa_icc(issuer, 1500),
            )
            response = await h.connector.authorize(authorization(request))
            assert (response.approved, response.response_code) == (True, "00")
            assert response.authorization_code is not None
            # CVN 18: tag 91 is ARPC (4 bytes) || CSU (4 bytes)
            assert response.issuer_authentication_data is not None
            assert len(response.issuer_authentication_data) == 16
            assert issuer.snapshot(account.pan).balance == start - 1500

            wrong = make_request(
                stan=124,
                amount=1500,
                currency="GBP",
                expiry=account.expiry,
                pan_sequence_number=account.psn,
                emv_data=_visa_icc(issuer, 1500),
                pin_block=pin_block("9876", counter=2),
            )
            declined = await h.connector.authorize(authorization(wrong, message_id="c" * 32))
            assert (declined.approved, declined.response_code) == (False, "55")

            reversal = Reversal(
                terminal_id="TERM0001",
                merchant_id="MERCHANT0000001",
                message_id="b" * 32,
                request=ReversalRequest(
                    original_message_id="a" * 32,
                    idempotency_key="rev-1",
                    reason="host_timeout",
                    amount=1500,
                    currency="GBP",
                ),
                original=request,
                original_response=response,
            )
            assert await h.connector.reverse(reversal) == "reversed"
            assert await h.connector.reverse(reversal) == "already_reversed"
            assert issuer.snapshot(account.pan).balance == start
            assert [m["t"] for m in h.simulator.received if m["t"].startswith("042")] == [
                "0420",
                "0421",
            ]

    run(scenario)


# -- the CLI -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_main_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--listen", "nowhere", "--zone-key", "00" * 16]) == 2
    assert main(["--dialect", "binary"]) == 2  # no zone key
    assert main(["--zone-key", "00" * 5], issuer_factory=lambda _paths: LedgerIssuer()) == 2
    assert "gateway-bridge acquirer-sim" in capsys.readouterr().err


def test_main_serves_a_connector(capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    factories: list[list[Path]] = []

    def factory(paths: list[Path]) -> Connector:
        factories.append(paths)
        return LedgerIssuer()

    argv = [
        "--listen", f"127.0.0.1:{port}", "--dialect", "ascii", "--header", "4ascii",
        "--tpdu", "6000010002", "--zone-key", ZONE_KEY[0].hex(), "--catalogue", "/nonexistent",
        "--run-for", "1.5",
    ]  # fmt: skip
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(main(argv, issuer_factory=factory)))
    thread.start()

    async def scenario() -> None:
        connector = Iso8583Connector(
            Iso8583Settings(
                port=port,
                dialect="ascii",
                header="4ascii",
                tpdu="6000010002",
                start_wait=2.0,
                reconnect_initial=0.05,
                reconnect_max=0.1,
            )
        )
        await connector.start()
        try:
            assert connector.ready
            response = await connector.authorize(authorization())
            assert response.approved
        finally:
            await connector.close()

    try:
        run(scenario)
    finally:
        thread.join(10)
    assert codes == [0]
    assert factories == [[Path("/nonexistent")]]
    assert f"listening on port {port}" in capsys.readouterr().out


def test_main_default_issuer_is_the_issuer_simulator(caplog: pytest.LogCaptureFixture) -> None:
    port = _free_port()
    argv = ["--listen", f"127.0.0.1:{port}", "--zone-key", ZONE_KEY[0].hex(), "--run-for", "0.1"]
    caplog.set_level(logging.INFO)
    assert main(argv) == 0
    assert "issuer simulator ready with" in caplog.text
    assert main([*argv[:4], "--catalogue", "/nonexistent/catalogue"]) == 2
