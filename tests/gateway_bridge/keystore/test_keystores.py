"""One suite, run against both key stores (software and PKCS#11 on SoftHSM2).

Where the PKCS#11 store cannot do a thing (TDES keys: TDES DUKPT does not run inside the
token), the test asserts the clear refusal instead; everything else must behave alike.
"""

from __future__ import annotations

import base64
import secrets

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_bridge.keystore.base import (
    KeyBlockRefused,
    KeyStoreError,
    UnknownKey,
)
from paycore import dukpt, pinblock, tr31
from paycore.errors import EnvelopeError
from paycore.pinblock import PinBlockError
from paycore.wire import open_envelope, seal
from tests.gateway_bridge.keystore.conftest import Kit
from tests.gateway_bridge.keystore.helpers import (
    ALL_KEYS,
    DATA_BDK,
    IKID,
    KBPK,
    NOW,
    PAN,
    PIN_BDK,
    TDES_PIN_BDK,
    ZONE_AES,
    ZONE_TDES,
    components,
    format0_block,
    format4_block,
    ksn,
    load,
    load_standard,
    request_envelope,
    response_body,
    tr31_block,
)


def test_create_list_and_kcvs(kit: Kit) -> None:
    store = kit.store
    data = store.create_bdk("data-1", "AES128", "data")
    pin = store.create_bdk("pin-1", "AES256", "pin")
    kbpk = store.create_bdk("kbpk-1", "AES128", "kbpk")
    listed = store.list_keys()
    assert [info.key_id for info in listed] == ["data-1", "kbpk-1", "pin-1"]
    assert listed == [data, kbpk, pin]
    assert [(i.algorithm, i.purpose) for i in listed] == [
        ("AES128", "data"),
        ("AES128", "kbpk"),
        ("AES256", "pin"),
    ]
    assert all(len(i.kcv) == 6 and int(i.kcv, 16) >= 0 for i in listed)
    assert len({i.kcv for i in listed}) == 3
    assert all(i.created_at.tzinfo is not None for i in listed)
    with pytest.raises(KeyStoreError, match="already exists"):
        store.create_bdk("data-1", "AES128", "data")
    with pytest.raises(KeyStoreError, match="key id"):
        store.create_bdk("bad id!", "AES128", "data")


def test_imported_key_kcv_is_the_cmac_kcv(kit: Kit) -> None:
    info = load(kit.store, "data-bdk", "AES128", "data", DATA_BDK)
    assert info.kcv == tr31.kcv_aes_cmac(DATA_BDK)
    three = kit.store.import_components("pin3", "AES256", "pin", components(PIN_BDK, "AES256", 3))
    assert three.kcv == tr31.kcv_aes_cmac(PIN_BDK)


def test_components_with_a_bad_kcv_or_count_are_refused(kit: Kit) -> None:
    parts = components(DATA_BDK, "AES128")
    bad = [parts[0], (parts[1][0], "000000" if parts[1][1] != "000000" else "111111")]
    with pytest.raises(KeyBlockRefused, match="component 2 does not match its KCV"):
        kit.store.import_components("x", "AES128", "data", bad)
    with pytest.raises(KeyBlockRefused, match="2 or 3"):
        kit.store.import_components("x", "AES128", "data", parts[:1])
    with pytest.raises(KeyBlockRefused, match="16 bytes"):
        kit.store.import_components("x", "AES128", "data", components(PIN_BDK, "AES256"))
    assert kit.store.list_keys() == []


def test_envelope_opens_as_paycore_opens_it(kit: Kit) -> None:
    load_standard(kit.store)
    # Consecutive counters, a jump, and a step back: the cached path must follow each.
    for counter in (1, 2, 3, 4, 0x100, 0x101, 5, 0xFFFF0000):
        envelope = request_envelope(counter)
        key = dukpt.aes_working_key(
            dukpt.aes_initial_key(DATA_BDK, IKID), ksn(counter), "data_encrypt", "AES128"
        )
        aead = kit.store.envelope_aead("data-bdk", envelope)
        assert open_envelope(envelope, key=aead, now=NOW) == open_envelope(
            envelope, key=key, now=NOW
        )


def test_working_key_matches_paycore_in_both_directions(kit: Kit) -> None:
    """The token key cannot be read: compare AES-GCM outputs under the same nonce."""
    load_standard(kit.store)
    initial = dukpt.aes_initial_key(DATA_BDK, IKID)
    envelope = request_envelope(9)
    response = seal(
        response_body(),
        key=dukpt.aes_working_key(initial, ksn(9), "data_decrypt", "AES128"),
        terminal_id="T0001",
        ksn=ksn(9),
        message_id="f" * 32,
        correlation_id=envelope.message_id,
        sent_at=NOW,
        ttl_ms=1000,
    )
    for header, usage in ((envelope, "data_encrypt"), (response, "data_decrypt")):
        aead = kit.store.envelope_aead("data-bdk", header)
        reference = AESGCM(dukpt.aes_working_key(initial, ksn(9), usage, "AES128"))
        nonce = secrets.token_bytes(12)
        sealed = aead.encrypt(nonce, b"payload", b"header")
        assert sealed == reference.encrypt(nonce, b"payload", b"header")
        assert aead.decrypt(nonce, sealed, b"header") == b"payload"
        with pytest.raises(InvalidTag):
            aead.decrypt(nonce, sealed, b"other header")


def test_aes256_envelopes_under_an_aes256_bdk(kit: Kit) -> None:
    load(kit.store, "big", "AES256", "data", PIN_BDK)
    envelope = request_envelope(3, bdk=PIN_BDK, alg="A256GCM")
    body = open_envelope(envelope, key=kit.store.envelope_aead("big", envelope), now=NOW)
    assert body.model_dump()["idempotency_key"] == "sale-1"
    load_standard(kit.store)
    # An AES-128 BDK cannot derive an AES-256 working key (X9.24-3 6.2).
    stronger = request_envelope(3, bdk=DATA_BDK, alg="A128GCM").model_copy(
        update={"alg": "A256GCM"}
    )
    with pytest.raises(EnvelopeError):
        kit.store.envelope_aead("data-bdk", stronger)


def test_wrong_ksn_or_tampering_is_an_envelope_error(kit: Kit) -> None:
    load_standard(kit.store)
    envelope = request_envelope(6)
    moved = envelope.model_copy(update={"ksn": ksn(7).hex().upper()})
    with pytest.raises(EnvelopeError):
        open_envelope(moved, key=kit.store.envelope_aead("data-bdk", moved), now=NOW)
    raw = bytearray(base64.b64decode(envelope.ciphertext))
    raw[0] ^= 1
    tampered = envelope.model_copy(update={"ciphertext": base64.b64encode(raw).decode()})
    with pytest.raises(EnvelopeError):
        open_envelope(tampered, key=kit.store.envelope_aead("data-bdk", tampered), now=NOW)
    other_terminal = envelope.model_copy(update={"ksn": "FEDCBA9876543210" + "00000006"})
    with pytest.raises(EnvelopeError):
        open_envelope(
            other_terminal, key=kit.store.envelope_aead("data-bdk", other_terminal), now=NOW
        )
    for bad_counter in ("00000000", "FFFFFFFF"):
        unusable = envelope.model_copy(update={"ksn": IKID.hex().upper() + bad_counter})
        with pytest.raises(EnvelopeError):
            kit.store.envelope_aead("data-bdk", unusable)


def test_keys_are_used_only_for_their_purpose(kit: Kit) -> None:
    load_standard(kit.store)
    envelope = request_envelope(1)
    with pytest.raises(UnknownKey):
        kit.store.envelope_aead("nope", envelope)
    with pytest.raises(KeyStoreError, match="not a data bdk"):
        kit.store.envelope_aead("pin-bdk", envelope)
    with pytest.raises(KeyStoreError, match="not a pin bdk"):
        kit.store.verify_pin("data-bdk", format4_block("1234"), PAN, lambda _: True)
    with pytest.raises(KeyStoreError, match="not a pin zpk"):
        kit.store.translate_pin_block("pin-bdk", format4_block("1234"), PAN, "pin-bdk", 4)


def test_verify_pin_format4_right_and_wrong(kit: Kit) -> None:
    load_standard(kit.store)
    seen: list[bytearray] = []

    def check(pin: bytearray) -> bool:
        seen.append(pin)
        return bytes(pin) == b"4321"

    assert kit.store.verify_pin("pin-bdk", format4_block("4321"), PAN, check) is True
    assert kit.store.verify_pin("pin-bdk", format4_block("43210", counter=8), PAN, check) is False
    assert [len(pin) for pin in seen] == [4, 5]
    assert all(pin == bytearray(len(pin)) for pin in seen)  # zeroed after check


def test_pin_is_zeroed_even_when_check_raises(kit: Kit) -> None:
    load_standard(kit.store)
    seen: list[bytearray] = []

    def check(pin: bytearray) -> bool:
        seen.append(pin)
        raise RuntimeError("issuer down")

    with pytest.raises(RuntimeError):
        kit.store.verify_pin("pin-bdk", format4_block("987654"), PAN, check)
    assert seen == [bytearray(6)]


def test_pin_block_for_another_pan_does_not_verify(kit: Kit) -> None:
    load_standard(kit.store)
    block = format4_block("1234")
    try:
        result = kit.store.verify_pin("pin-bdk", block, "5555555555554444", lambda p: True)
    except PinBlockError:
        result = False
    assert result is False


def test_verify_pin_format0_tdes(kit: Kit) -> None:
    if kit.kind == "pkcs11":
        with pytest.raises(KeyStoreError, match="TDES DUKPT cannot run inside"):
            load(kit.store, "tdes-bdk", "TDES2", "pin", TDES_PIN_BDK)
        load_standard(kit.store)
        with pytest.raises(KeyStoreError, match="format 0 blocks need a TDES2"):
            kit.store.verify_pin("pin-bdk", format0_block("1234"), PAN, lambda _: True)
        return
    load(kit.store, "tdes-bdk", "TDES2", "pin", TDES_PIN_BDK)
    seen: list[bytearray] = []

    def check(pin: bytearray) -> bool:
        seen.append(pin)
        return bytes(pin) == b"1234"

    assert kit.store.verify_pin("tdes-bdk", format0_block("1234"), PAN, check) is True
    assert kit.store.verify_pin("tdes-bdk", format0_block("1235"), PAN, check) is False
    assert seen == [bytearray(4), bytearray(4)]


def test_translate_to_an_aes_zone_key(kit: Kit) -> None:
    load_standard(kit.store)
    zone = kit.store.import_tr31("zpk", "pin", "kbpk", tr31_block(ZONE_AES, "P0", mode="E"))
    assert zone.kcv == tr31.kcv_aes_cmac(ZONE_AES)
    out = kit.store.translate_pin_block("pin-bdk", format4_block("24680"), PAN, "zpk", 4)
    assert len(out) == 16
    assert pinblock.decipher_format4(ZONE_AES, out, PAN) == "24680"
    again = kit.store.translate_pin_block("pin-bdk", format4_block("24680"), PAN, "zpk", 4)
    assert again != out  # format 4 fill is random
    with pytest.raises(KeyStoreError, match="format 0 needs TDES2"):
        kit.store.translate_pin_block("pin-bdk", format4_block("24680"), PAN, "zpk", 0)


def test_translate_to_a_tdes_zone_key_format0(kit: Kit) -> None:
    load_standard(kit.store)
    block = tr31_block(ZONE_TDES, "P0", algorithm="T", mode="E")
    if kit.kind == "pkcs11":
        with pytest.raises(KeyStoreError, match="AES keys only"):
            kit.store.import_tr31("zpk0", "pin", "kbpk", block)
        return
    kit.store.import_tr31("zpk0", "pin", "kbpk", block)
    out = kit.store.translate_pin_block("pin-bdk", format4_block("1357"), PAN, "zpk0", 0)
    key = ZONE_TDES + ZONE_TDES[:8]
    clear = Cipher(TripleDES(key), modes.ECB()).decryptor().update(out)
    assert pinblock.decode_format0(clear, PAN) == "1357"


def test_tr31_import_valid_tampered_and_wrong_usage(kit: Kit) -> None:
    load_standard(kit.store)
    block = tr31_block(DATA_BDK, "B0")
    info = kit.store.import_tr31("imported", "data", "kbpk", block)
    assert (info.algorithm, info.purpose, info.kcv) == (
        "AES128",
        "data",
        tr31.kcv_aes_cmac(DATA_BDK),
    )
    # The imported BDK works: it opens what the components-loaded one opens.
    envelope = request_envelope(2)
    assert open_envelope(envelope, key=kit.store.envelope_aead("imported", envelope), now=NOW)
    for index in (len(block) - 40, len(block) - 1, 40):
        changed = "0" if block[index] != "0" else "1"
        tampered = block[:index] + changed + block[index + 1 :]
        with pytest.raises(KeyBlockRefused):
            kit.store.import_tr31("tampered", "data", "kbpk", tampered)
    with pytest.raises(KeyBlockRefused, match="usage M3"):
        kit.store.import_tr31("mac", "data", "kbpk", tr31_block(DATA_BDK, "M3", mode="C"))
    with pytest.raises(KeyBlockRefused, match="usage B1"):
        kit.store.import_tr31("ik", "data", "kbpk", tr31_block(DATA_BDK, "B1"))
    with pytest.raises(KeyBlockRefused, match="usage P0"):
        kit.store.import_tr31("zpk", "data", "kbpk", tr31_block(ZONE_AES, "P0", mode="E"))
    with pytest.raises(KeyBlockRefused, match="mode of use"):
        kit.store.import_tr31("bdk-e", "data", "kbpk", tr31_block(DATA_BDK, "B0", mode="E"))
    # Wrapped under another KBPK: the MAC fails.
    foreign = tr31.wrap(bytes(32), tr31.KeyBlockHeader("D", "B0", "A", "X"), DATA_BDK, random=None)
    with pytest.raises(KeyBlockRefused):
        kit.store.import_tr31("foreign", "data", "kbpk", foreign)
    with pytest.raises(KeyStoreError, match="not a kbpk"):
        kit.store.import_tr31("x", "data", "data-bdk", block)
    assert [i.key_id for i in kit.store.list_keys()] == ["data-bdk", "imported", "kbpk", "pin-bdk"]


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200) | st.binary(max_size=120).map(lambda b: "D" + b.hex().upper()))
def test_tr31_import_fuzz(text: str, kit_for_fuzz: Kit) -> None:
    with pytest.raises(KeyBlockRefused):
        kit_for_fuzz.store.import_tr31("fuzzed", "data", "kbpk", text)


@pytest.fixture
def kit_for_fuzz(kit: Kit) -> Kit:
    load(kit.store, "kbpk", "AES256", "kbpk", KBPK)
    return kit


def test_export_initial_key_as_tr31(kit: Kit) -> None:
    load_standard(kit.store)
    block = kit.store.export_initial_key_tr31("data-bdk", IKID, "kbpk")
    header, key = tr31.unwrap(KBPK, block)
    initial = dukpt.aes_initial_key(DATA_BDK, IKID)
    assert key == initial
    assert (header.version_id, header.key_usage, header.algorithm, header.mode_of_use) == (
        "D",
        "B1",
        "A",
        "X",
    )
    blocks = dict(header.optional_blocks)
    assert blocks["IK"] == IKID.hex().upper()
    assert blocks["KC"] == "01" + tr31.kcv_aes_cmac(initial)
    pin_block = kit.store.export_initial_key_tr31("pin-bdk", IKID, "kbpk")
    assert tr31.unwrap(KBPK, pin_block)[1] == dukpt.aes_initial_key(PIN_BDK, IKID)
    with pytest.raises(KeyStoreError):
        kit.store.export_initial_key_tr31("data-bdk", IKID[:7], "kbpk")
    with pytest.raises(KeyStoreError, match="not a kbpk"):
        kit.store.export_initial_key_tr31("data-bdk", IKID, "pin-bdk")


def test_no_key_in_any_repr_or_str(kit: Kit) -> None:
    load_standard(kit.store)
    kit.store.import_tr31("zpk", "pin", "kbpk", tr31_block(ZONE_AES, "P0", mode="E"))
    envelope = request_envelope(4)
    aead = kit.store.envelope_aead("data-bdk", envelope)
    initial = dukpt.aes_initial_key(DATA_BDK, IKID)
    secrets_hex = [k.hex() for k in (*ALL_KEYS, initial)]
    texts = [repr(kit.store), str(kit.store), repr(aead), str(aead)]
    texts += [repr(i) for i in kit.store.list_keys()] + [str(i) for i in kit.store.list_keys()]
    for text in texts:
        for value in secrets_hex:
            assert value not in text.lower()
    assert "data-bdk" in repr(kit.store.list_keys()[0])
