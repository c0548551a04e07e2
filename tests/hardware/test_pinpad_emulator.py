"""The emulated PIN pad over a real pty, driven with pyserial (docs/pinpad-protocol.md)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator

import pytest

from hardware.pinpad import AesDukptKey, EmulatedPinpad, Faults, PinScript, TdesDukptKey
from hardware.pinpad.fixtures import PinpadFactory
from paycore import dukpt, pinblock, tr31
from paycore.pinpad import (
    BeepRequest,
    BeepResponse,
    CancelRequest,
    CancelResponse,
    Command,
    DisplayRequest,
    DisplayResponse,
    Frame,
    FrameType,
    GetPinRequest,
    GetPinResponse,
    IdentifyRequest,
    IdentifyResponse,
    Key,
    KeyPressedEvent,
    KeyStatusRequest,
    KeyStatusResponse,
    KeyType,
    LinkTimings,
    LoadKeyRequest,
    LoadKeyResponse,
    PinBlockFormat,
    Status,
    StatusResponse,
    encode_frame,
)
from tests.hardware.pinpad_client import (
    Answer,
    PinpadClient,
    PinpadDisconnectedError,
    PinpadTimeoutError,
)
from tests.vectors import load

FAST = LinkTimings(inter_byte=0.02, ack_timeout=0.1, max_retries=3, response_timeout=1.0)

AES = load("dukpt_aes_x9_24_3")["aes128_bdk"]
AES_BDK = bytes.fromhex(AES["bdk"])
AES_IKID = bytes.fromhex(AES["initial_key_id"])
TDES = load("dukpt_tdes_x9_24_1")["inputs"]
TDES_BDK = bytes.fromhex(TDES["bdk"])
TDES_INITIAL_KSN = bytes.fromhex(TDES["initial_ksn"])
PAN = load("luhn_test_pans")["test_pans"][2]["pan"]
KBPK = bytes.fromhex("88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6")

Connect = Callable[[EmulatedPinpad], PinpadClient]


def aes_slot() -> AesDukptKey:
    return AesDukptKey(dukpt.aes_initial_key(AES_BDK, AES_IKID), AES_IKID)


def tdes_slot() -> TdesDukptKey:
    return TdesDukptKey(dukpt.tdes_ipek(TDES_BDK, TDES_INITIAL_KSN), TDES_INITIAL_KSN)


def shown(pad: EmulatedPinpad) -> tuple[str, ...]:
    return pad.display


def get_pin(
    block_format: PinBlockFormat = PinBlockFormat.ISO4_AES_DUKPT,
    *,
    slot: int = 0,
    timeout_ms: int = 2000,
    bypass: bool = False,
) -> GetPinRequest:
    return GetPinRequest(
        amount=1234,
        currency=978,
        pan=PAN,
        format=block_format,
        key_slot=slot,
        timeout_ms=timeout_ms,
        min_length=4,
        max_length=12,
        bypass_allowed=bypass,
    )


def pin_of(answer: Answer) -> str:
    """The host side (the bridge's key store): decipher with keys derived from the BDK."""
    assert isinstance(answer, GetPinResponse), answer
    if answer.format is PinBlockFormat.ISO4_AES_DUKPT:
        initial_key = dukpt.aes_initial_key(AES_BDK, answer.ksn[:8])
        return pinblock.decipher_format4_dukpt(initial_key, answer.ksn, answer.pin_block, PAN)
    ipek = dukpt.tdes_ipek(TDES_BDK, answer.ksn)
    return pinblock.decipher_format0_tdes_dukpt(ipek, answer.ksn, answer.pin_block, PAN)


@pytest.fixture
def connect() -> Iterator[Connect]:
    clients: list[PinpadClient] = []

    def open_client(pad: EmulatedPinpad) -> PinpadClient:
        port = pad.port
        assert port is not None
        client = PinpadClient(port, pad.timings, seq=len(clients) * 50)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


def test_every_command_round_trips(pinpad: PinpadFactory, connect: Connect) -> None:
    pad = pinpad(kbpk=KBPK, slots={0: aes_slot()}, timings=FAST)
    host = connect(pad)
    identity = host.call(IdentifyRequest())
    assert isinstance(identity, IdentifyResponse)
    assert identity.key_slots == 4
    assert identity.kbpk_kcv.hex().upper() == tr31.kcv_aes_cmac(KBPK, 5)

    assert host.call(DisplayRequest(("TOTAL", "EUR 12.34"), 0)) == DisplayResponse()
    assert pad.display == ("TOTAL", "EUR 12.34")
    assert host.call(DisplayRequest(("x" * 21,), 0)) == StatusResponse(
        Command.DISPLAY, Status.BAD_VALUE
    )
    assert host.call(DisplayRequest(("APPROVED",), 100)) == DisplayResponse()
    assert shown(pad) == ("APPROVED",)
    time.sleep(0.25)
    assert shown(pad) == ()

    assert host.call(BeepRequest(3, 50)) == BeepResponse()
    assert pad.beeps == 3
    assert host.call(CancelRequest()) == CancelResponse()

    status = host.call(KeyStatusRequest(0))
    assert status == KeyStatusResponse(0, KeyType.AES128_DUKPT, AES_IKID, 0, status.keys_left)  # type: ignore[union-attr]
    assert isinstance(status, KeyStatusResponse)
    assert status.keys_left == dukpt.AesOriginator(bytes(16), AES_IKID).keys_left
    assert host.call(KeyStatusRequest(1)) == KeyStatusResponse(1, KeyType.EMPTY, b"", 0, 0)
    assert host.call(KeyStatusRequest(9)) == StatusResponse(Command.KEY_STATUS, Status.BAD_SLOT)

    pad.queue_pin(PinScript.entered("2468"))
    assert pin_of(host.call(get_pin())) == "2468"

    # Protocol errors answered with a status, never a crash.
    host.send_frame(Frame(host.next_frame(IdentifyRequest()).seq, FrameType.REQUEST, 0x7E))
    assert host.wait_response(0x7E) == StatusResponse(0x7E, Status.UNKNOWN_COMMAND)
    host.send_frame(Frame(host.next_frame(IdentifyRequest()).seq, FrameType.REQUEST, 5, b"\x01"))
    assert host.wait_response(Command.BEEP) == StatusResponse(Command.BEEP, Status.BAD_LENGTH)
    assert pad.beeps == 3


def test_aes_format4_pin_blocks_decipher_from_the_bdk(
    pinpad: PinpadFactory, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(1)
    pins = ["97531", "0000", "123456789012"]
    pad = pinpad(slots={0: aes_slot()}, timings=FAST, scripts=[PinScript.entered(p) for p in pins])
    host = connect(pad)
    for counter, pin in enumerate(pins, start=1):
        answer = host.call(get_pin())
        assert isinstance(answer, GetPinResponse)
        assert answer.ksn == AES_IKID + counter.to_bytes(4, "big")
        assert len(answer.pin_block) == 16
        assert pin_of(answer) == pin
    status = host.call(KeyStatusRequest(0))
    assert isinstance(status, KeyStatusResponse)
    assert status.counter == 3
    text = " ".join(r.getMessage() for r in caplog.records) + repr(pad) + repr(pad.keypad)
    assert "97531" not in text
    assert AES_BDK.hex() not in text.lower()


def test_tdes_format0_pin_block_for_a_legacy_pad(pinpad: PinpadFactory, connect: Connect) -> None:
    pad = pinpad(slots={1: tdes_slot()}, timings=FAST, scripts=[PinScript.entered("4321")] * 2)
    host = connect(pad)
    first = host.call(get_pin(PinBlockFormat.ISO0_TDES_DUKPT, slot=1))
    assert isinstance(first, GetPinResponse)
    assert first.ksn == bytes.fromhex("FFFF9876543210E00001")
    assert len(first.pin_block) == 8
    assert pin_of(first) == "4321"
    second = host.call(get_pin(PinBlockFormat.ISO0_TDES_DUKPT, slot=1))
    assert isinstance(second, GetPinResponse)
    assert second.ksn == bytes.fromhex("FFFF9876543210E00002")
    assert second.pin_block != first.pin_block
    assert pin_of(second) == "4321"
    # A format 4 request on a TDES slot, or from an empty slot, is refused before the prompt.
    assert host.call(get_pin(slot=1)) == StatusResponse(Command.GET_PIN, Status.WRONG_KEY_TYPE)
    assert host.call(get_pin(slot=0)) == StatusResponse(Command.GET_PIN, Status.NO_KEY)


def test_pin_entry_outcomes(pinpad: PinpadFactory, connect: Connect) -> None:
    pad = pinpad(slots={0: aes_slot()}, timings=FAST)
    host = connect(pad)

    def outcome(script: PinScript, **kwargs: int | bool) -> Answer:
        pad.queue_pin(script)
        return host.call(get_pin(**kwargs))  # type: ignore[arg-type]

    assert outcome(PinScript.cancelled("12")) == StatusResponse(Command.GET_PIN, Status.CANCELLED)
    started = time.monotonic()
    assert outcome(PinScript.timeout("12"), timeout_ms=200) == StatusResponse(
        Command.GET_PIN, Status.TIMEOUT
    )
    assert 0.2 <= time.monotonic() - started < 1.0
    assert outcome(PinScript.bypassed(), bypass=True) == StatusResponse(
        Command.GET_PIN, Status.BYPASSED
    )
    # Bypass not allowed: ENTER alone and a too-short PIN are ignored; CLEAR starts over.
    keys = PinScript(
        PinScript.keys(Key.ENTER, Key.DIGIT_1, Key.DIGIT_2, Key.ENTER, Key.CLEAR).steps
        + PinScript.entered("5678").steps
    )
    assert pin_of(outcome(keys)) == "5678"
    status = host.call(KeyStatusRequest(0))
    assert isinstance(status, KeyStatusResponse)
    assert status.counter == 1  # cancel, timeout and bypass used no counter

    # Host cancel while the cardholder is slow; other commands are BUSY meanwhile.
    pad.queue_pin(PinScript.entered("1111", delay=5.0))
    host.send(get_pin(timeout_ms=10_000))
    assert host.call(BeepRequest(1, 10)) == StatusResponse(Command.BEEP, Status.BUSY)
    assert host.call(CancelRequest()) == CancelResponse()
    assert host.wait_response(Command.GET_PIN) == StatusResponse(Command.GET_PIN, Status.CANCELLED)
    assert host.call(BeepRequest(1, 10)) == BeepResponse()

    for bad in (
        GetPinRequest(1, 978, PAN, PinBlockFormat.ISO4_AES_DUKPT, 0, 1000, 6, 4, False),
        GetPinRequest(1, 978, "12345", PinBlockFormat.ISO4_AES_DUKPT, 0, 1000, 4, 6, False),
    ):
        assert host.call(bad) == StatusResponse(Command.GET_PIN, Status.BAD_VALUE)


def test_key_presses_are_events_but_never_during_pin_entry(
    pinpad: PinpadFactory, connect: Connect
) -> None:
    pad = pinpad(slots={0: aes_slot()}, timings=FAST)
    host = connect(pad)
    assert host.call(DisplayRequest(("1 VISA", "2 MAESTRO"), 0)) == DisplayResponse()
    pad.press(Key.DIGIT_2)
    assert host.wait_event(1.0) == KeyPressedEvent(Key.DIGIT_2)
    pad.press(Key.CANCEL)
    assert host.wait_event(1.0) == KeyPressedEvent(Key.CANCEL)

    pad.queue_pin(PinScript.entered("8642", delay=0.1))
    host.send(get_pin())
    pad.press(Key.DIGIT_9)
    assert pin_of(host.wait_response(Command.GET_PIN)) == "8642"
    assert host.events == []


def test_noise_and_dropped_bytes_are_recovered(pinpad: PinpadFactory, connect: Connect) -> None:
    timings = LinkTimings(inter_byte=0.02, ack_timeout=0.1, max_retries=12, response_timeout=2.0)
    faults = Faults(noise=0.3, drop=0.2, noise_inbound=0.2, drop_inbound=0.2, seed=7)
    pad = pinpad(slots={0: aes_slot()}, timings=timings, faults=faults)
    host = connect(pad)
    calls = 25
    for _ in range(calls):
        assert isinstance(host.call(IdentifyRequest()), IdentifyResponse)
    pad.queue_pin(PinScript.entered("13579"))
    assert pin_of(host.call(get_pin())) == "13579"
    # Every command ran exactly once, although frames were lost and retransmitted.
    assert pad.stats.executed[Command.IDENTIFY] == calls
    assert pad.stats.executed[Command.GET_PIN] == 1
    assert host.stats.retransmissions > 0 and pad.stats.retransmissions > 0
    assert host.stats.naks_sent > 0 and pad.stats.naks_sent > 0
    assert host.reassembler.skipped > 0  # noise was skipped
    assert pad.stats.gave_up == 0


def test_duplicate_request_is_acked_but_not_executed_twice(
    pinpad: PinpadFactory, connect: Connect
) -> None:
    pad = pinpad(timings=FAST)
    host = connect(pad)
    frame = host.next_frame(BeepRequest(1, 20))
    host.send_frame(frame)
    host.send_frame(frame)  # retransmission after a lost ACK: must be ACKed again
    assert host.wait_response(Command.BEEP) == BeepResponse()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        host.pump(deadline - time.monotonic())
    assert host.pending_responses(Command.BEEP) == 0
    assert pad.beeps == 1
    assert pad.stats.executed[Command.BEEP] == 1
    assert pad.stats.duplicates == 1
    # The same sequence number with other content is a new frame.
    host.send_frame(Frame(frame.seq, FrameType.REQUEST, Command.BEEP, b"\x02\x00\x14"))
    assert host.wait_response(Command.BEEP) == BeepResponse()
    assert pad.beeps == 3


def _key_block(header: tr31.KeyBlockHeader, key: bytes) -> str:
    return tr31.wrap(KBPK, header, key, random=os.urandom)


def test_key_loading(pinpad: PinpadFactory, connect: Connect) -> None:
    pad = pinpad(kbpk=KBPK, timings=FAST, scripts=[PinScript.entered("2580")] * 2)
    host = connect(pad)
    initial_key = dukpt.aes_initial_key(AES_BDK, AES_IKID)
    aes_header = tr31.KeyBlockHeader("D", "B1", "A", "X", optional_blocks=(("IK", AES_IKID.hex()),))
    block = _key_block(aes_header, initial_key)
    answer = host.call(LoadKeyRequest(2, block))
    assert answer == LoadKeyResponse(
        KeyType.AES128_DUKPT, bytes.fromhex(tr31.kcv_aes_cmac(initial_key, 5))
    )
    reply = host.call(get_pin(slot=2))
    assert isinstance(reply, GetPinResponse)
    assert reply.ksn == AES_IKID + b"\x00\x00\x00\x01"
    assert pin_of(reply) == "2580"

    ipek = dukpt.tdes_ipek(TDES_BDK, TDES_INITIAL_KSN)
    tdes_header = tr31.KeyBlockHeader(
        "D", "B1", "T", "X", optional_blocks=(("KS", TDES_INITIAL_KSN.hex().upper()),)
    )
    answer = host.call(LoadKeyRequest(3, _key_block(tdes_header, ipek)))
    assert answer == LoadKeyResponse(KeyType.TDES_DUKPT, bytes.fromhex(tr31.kcv_tdes(ipek, 3)))
    assert pin_of(host.call(get_pin(PinBlockFormat.ISO0_TDES_DUKPT, slot=3))) == "2580"

    # Tampered: one hex digit of the encrypted key changed. Refused, slot untouched.
    at = len(block) - 40
    tampered = block[:at] + ("0" if block[at] != "0" else "1") + block[at + 1 :]
    refused = StatusResponse(Command.LOAD_KEY, Status.KEY_BLOCK_TAMPERED)
    assert host.call(LoadKeyRequest(2, tampered)) == refused
    assert host.call(LoadKeyRequest(2, "not a key block")) == refused
    assert host.call(LoadKeyRequest(2, block[:-2])) == refused
    status = host.call(KeyStatusRequest(2))
    assert isinstance(status, KeyStatusResponse)
    assert status.counter == 1

    # Authentic but not a DUKPT initial key (a PIN key; no IK block): refused.
    wrong = (
        tr31.KeyBlockHeader("D", "P0", "A", "E"),
        tr31.KeyBlockHeader("D", "B1", "A", "X"),
    )
    for header in wrong:
        assert host.call(LoadKeyRequest(1, _key_block(header, initial_key))) == StatusResponse(
            Command.LOAD_KEY, Status.KEY_BLOCK_REFUSED
        )
    assert host.call(LoadKeyRequest(7, block)) == StatusResponse(Command.LOAD_KEY, Status.BAD_SLOT)


def test_published_bdk_block_is_refused(pinpad: PinpadFactory, connect: Connect) -> None:
    """TR-31:2018 A.7.3.1 wraps a BDK (usage B0): authentic, but a pad must never take it."""
    example = next(
        e for e in load("tr31_keyblock")["examples"] if e["name"].startswith("TR-31:2018 A.7.3.1")
    )
    pad = pinpad(kbpk=bytes.fromhex(example["kbpk"]), kbpk_algorithm="T", timings=FAST)
    host = connect(pad)
    identity = host.call(IdentifyRequest())
    assert isinstance(identity, IdentifyResponse)
    assert identity.kbpk_kcv.hex().upper() == tr31.kcv_tdes(bytes.fromhex(example["kbpk"]))
    assert host.call(LoadKeyRequest(0, example["key_block"])) == StatusResponse(
        Command.LOAD_KEY, Status.KEY_BLOCK_REFUSED
    )
    tampered = example["key_block"][:-1] + ("0" if example["key_block"][-1] != "0" else "1")
    assert host.call(LoadKeyRequest(0, tampered)) == StatusResponse(
        Command.LOAD_KEY, Status.KEY_BLOCK_TAMPERED
    )


def test_silent_pad_times_out_the_host(pinpad: PinpadFactory, connect: Connect) -> None:
    pad = pinpad(timings=FAST)
    host = connect(pad)
    pad.faults.silent = True
    started = time.monotonic()
    with pytest.raises(PinpadTimeoutError):
        host.call(IdentifyRequest())
    elapsed = time.monotonic() - started
    attempts = FAST.max_retries + 1
    assert attempts * FAST.ack_timeout <= elapsed < attempts * FAST.ack_timeout + 0.5
    assert host.stats.retransmissions == FAST.max_retries
    assert pad.stats.executed[Command.IDENTIFY] == 0
    pad.faults.silent = False
    assert isinstance(host.call(IdentifyRequest()), IdentifyResponse)


def test_unplug_and_replug(pinpad: PinpadFactory, connect: Connect) -> None:
    pad = pinpad(slots={0: aes_slot()}, timings=FAST, scripts=[PinScript.entered("1470")] * 2)
    host = connect(pad)
    assert pin_of(host.call(get_pin())) == "1470"
    first_port = pad.port
    assert pad.link_path is not None
    assert os.path.realpath(pad.link_path) == first_port

    pad.unplug()
    assert pad.port is None
    with pytest.raises(PinpadDisconnectedError):
        host.call(IdentifyRequest())

    new_port = pad.replug()
    assert os.path.realpath(pad.link_path) == new_port
    again = PinpadClient(str(pad.link_path), FAST)  # the stable name, as udev gives
    try:
        assert isinstance(again.call(IdentifyRequest()), IdentifyResponse)
        answer = again.call(get_pin())
        assert isinstance(answer, GetPinResponse)
        assert answer.ksn[-4:] == b"\x00\x00\x00\x02"  # the counter survived the unplug
        assert pin_of(answer) == "1470"
    finally:
        again.close()


def test_pin_script_repr_hides_digits() -> None:
    script = PinScript.entered("97531")
    assert "9" not in repr(script)
    assert "5 digits" not in repr(script) and "6 keys" in repr(script)
    with pytest.raises(ValueError, match="digits"):
        PinScript.entered("12a4")


def test_stop_is_clean() -> None:
    pad = EmulatedPinpad(kbpk=KBPK, timings=FAST).start()
    port = pad.port
    assert port is not None
    client = PinpadClient(port, FAST)
    assert isinstance(client.call(IdentifyRequest()), IdentifyResponse)
    client.write_raw(encode_frame(client.next_frame(IdentifyRequest()))[:5])  # left pending
    pad.stop()
    pad.stop()
    client.close()
    logging.getLogger(__name__).debug("stopped")
