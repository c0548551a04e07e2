"""The wire contract: message models, the envelope, topics."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from paycore.dukpt import aes_initial_key, aes_working_key
from paycore.errors import CodecError, EnvelopeError
from paycore.pan import Pan
from paycore.wire import (
    REVEAL,
    Aead,
    AuthorizationRequest,
    AuthorizationResponse,
    BatchCloseRequest,
    BatchCloseResponse,
    BatchTotal,
    EncryptedPinBlock,
    Envelope,
    EnvelopeExpired,
    HealthCheck,
    MessageError,
    ReversalRequest,
    TerminalStatus,
    decode_envelope,
    decode_json,
    open_envelope,
    seal,
    topics,
    working_key,
)

PAN = "4761739001010010"
TRACK2 = "4761739001010010D22122011143804400000F"
PIN_BLOCK = "A912150391AB65A67E52883D81CE2D15"
KEY = bytes(range(16))
NOW = 1_790_000_000_000
KSN = bytes.fromhex("123456789012345600000001")


def request(**changes: Any) -> AuthorizationRequest:
    fields: dict[str, Any] = {
        "transaction_type": "purchase",
        "amount": 1234,
        "currency": "EUR",
        "idempotency_key": "till-1:0001",
        "reference": "order 42",
        "stan": 1,
        "terminal_time": datetime(2026, 11, 28, 9, 0, tzinfo=UTC),
        "pan": Pan(PAN),
        "pan_sequence_number": "01",
        "expiry": "2812",
        "track2_equivalent": SecretStr(TRACK2),
        "emv_data": "9F2608A1B2C3D4E5F60718",
        "cvm": "online_pin",
        "pin_block": EncryptedPinBlock(
            format=4, ksn="123456789012345600000001", block=SecretStr(PIN_BLOCK)
        ),
    }
    fields.update(changes)
    return AuthorizationRequest(**fields)


def sealed(body: Any = None, *, key: bytes | Aead = KEY, **changes: Any) -> Envelope:
    args: dict[str, Any] = {
        "key": key,
        "terminal_id": "T0001",
        "ksn": KSN,
        "message_id": "0" * 31 + "1",
        "sent_at": NOW,
        "ttl_ms": 15_000,
    }
    args.update(changes)
    return seal(request() if body is None else body, **args)


# --- models -------------------------------------------------------------------------


def test_card_data_is_masked_in_repr_str_and_default_dumps() -> None:
    req = request()
    for text in (
        repr(req),
        str(req),
        req.model_dump_json(),
        json.dumps(req.model_dump(mode="json")),
        str(req.model_dump()),
    ):
        assert PAN not in text
        assert TRACK2 not in text
        assert PIN_BLOCK not in text
    assert "476173******0010" in req.model_dump_json()


def test_reveal_context_shows_card_data_for_sealing_only() -> None:
    dumped = request().model_dump_json(context=REVEAL)
    assert PAN in dumped and TRACK2 in dumped and PIN_BLOCK in dumped
    again = AuthorizationRequest.model_validate_json(dumped)
    assert again == request()


def test_validation_errors_name_fields_never_values() -> None:
    bad = request().model_dump(mode="json", context=REVEAL)
    bad["amount"] = -5
    bad["track2_equivalent"] = "4761739001010010=2212"  # '=' is the magstripe form, not EMV 57
    with pytest.raises(MessageError) as info:
        decode_json(json.dumps(bad), AuthorizationRequest)
    assert "amount" in str(info.value)
    assert PAN not in str(info.value) and "4761739001010010" not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", 0),
        ("amount", -1),
        ("amount", 10**12),
        ("amount", "12"),  # strict: no coercion from strings
        ("currency", "XXX"),
        ("currency", "eur"),
        ("idempotency_key", ""),
        ("idempotency_key", "a/b"),
        ("expiry", "2813"),
        ("stan", 0),
        ("emv_data", "9f26"),  # lower-case hex
        ("emv_data", "ABC"),  # odd length
        ("cvm", "signature"),  # a PIN block without online PIN
    ],
)
def test_request_rejects_bad_fields(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        request(**{field: value})


def test_request_rules_between_fields() -> None:
    with pytest.raises(ValidationError, match="PIN block"):
        request(pin_block=None)
    with pytest.raises(ValidationError, match="void"):
        request(transaction_type="void")
    assert request(transaction_type="void", original_message_id="a" * 32).transaction_type == "void"
    assert request(cvm="signature", pin_block=None).pin_block is None


def test_models_are_frozen_and_forbid_extra_fields() -> None:
    req = request()
    with pytest.raises(ValidationError):
        req.amount = 1
    with pytest.raises(MessageError):
        decode_json(b'{"terminal_id": "T1", "state": "online", "extra": 1}', TerminalStatus)


def test_pin_block_shape_follows_format() -> None:
    with pytest.raises(ValidationError):
        EncryptedPinBlock(format=0, ksn="FFFF9876543210E00001", block=SecretStr(PIN_BLOCK))
    ok = EncryptedPinBlock(
        format=0, ksn="FFFF9876543210E00001", block=SecretStr("1B9C1845EB993A7A")
    )
    assert ok.format == 0


# --- envelope -------------------------------------------------------------------------


def test_seal_open_round_trip_and_header() -> None:
    env = sealed()
    assert env.kind == "auth_request" and env.usage == "data_encrypt"
    assert env.expires_at == NOW + 15_000
    wire = env.to_json()
    for secret in (PAN, TRACK2, PIN_BLOCK, "order 42"):
        assert secret.encode() not in wire
    body = open_envelope(decode_envelope(wire), key=KEY, now=NOW + 1)
    assert body == request()


def test_response_round_trip_uses_data_decrypt_usage() -> None:
    body = AuthorizationResponse(response_code="00", approved=True, authorization_code="A1B2C3")
    env = sealed(body, correlation_id="0" * 31 + "1")
    assert env.kind == "auth_response" and env.usage == "data_decrypt"
    assert open_envelope(env, key=KEY, now=NOW) == body


def test_wrong_key_and_other_usage_are_refused() -> None:
    initial = aes_initial_key(bytes(16), bytes(8))
    env = sealed(key=aes_working_key(initial, KSN, "data_encrypt", "AES128"))
    assert working_key(initial, env) == aes_working_key(initial, KSN, "data_encrypt", "AES128")
    with pytest.raises(EnvelopeError):
        open_envelope(env, key=aes_working_key(initial, KSN, "data_decrypt", "AES128"), now=NOW)
    with pytest.raises(EnvelopeError):
        open_envelope(env, key=bytes(32), now=NOW)
    assert open_envelope(env, key=working_key(initial, env), now=NOW) == request()


def _flip(b64: str, bit: int) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[bit // 8] ^= 1 << (bit % 8)
    return base64.b64encode(bytes(raw)).decode()


@given(st.data())
def test_any_single_bit_flip_of_ciphertext_or_nonce_is_refused(data: st.DataObject) -> None:
    env = sealed()
    field = data.draw(st.sampled_from(["ciphertext", "nonce"]))
    size = len(base64.b64decode(getattr(env, field))) * 8
    bit = data.draw(st.integers(0, size - 1))
    tampered = env.model_copy(update={field: _flip(getattr(env, field), bit)})
    with pytest.raises(EnvelopeError):
        open_envelope(tampered, key=KEY, now=NOW)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("terminal_id", "T0002"),
        ("message_id", "f" * 32),
        ("correlation_id", "e" * 32),
        ("ksn", "123456789012345600000002"),
        ("sent_at", NOW - 1),
        ("expires_at", NOW + 3_600_000),
        ("kind", "reversal_request"),
    ],
)
def test_changing_any_header_field_is_refused(field: str, value: object) -> None:
    tampered = sealed().model_copy(update={field: value})
    with pytest.raises(EnvelopeError):
        open_envelope(tampered, key=KEY, now=NOW)


def test_ciphertext_moved_under_another_header_is_refused() -> None:
    first, second = sealed(), sealed(message_id="b" * 32)
    swapped = second.model_copy(update={"ciphertext": first.ciphertext, "nonce": first.nonce})
    with pytest.raises(EnvelopeError):
        open_envelope(swapped, key=KEY, now=NOW)


@given(st.integers(min_value=0, max_value=60))
def test_truncated_ciphertext_is_refused(cut: int) -> None:
    env = sealed()
    raw = base64.b64decode(env.ciphertext)
    short = env.model_copy(
        update={"ciphertext": base64.b64encode(raw[: len(raw) - 1 - cut]).decode()}
    )
    with pytest.raises(EnvelopeError):
        open_envelope(short, key=KEY, now=NOW)


def test_expired_and_future_envelopes_are_refused() -> None:
    env = sealed()
    with pytest.raises(EnvelopeExpired):
        open_envelope(env, key=KEY, now=NOW + 15_001)
    with pytest.raises(EnvelopeExpired):
        open_envelope(env, key=KEY, now=NOW - 300_001)
    assert open_envelope(env, key=KEY, now=NOW + 15_000) == request()


def test_reversal_round_trip() -> None:
    body = ReversalRequest(
        original_message_id="c" * 32,
        idempotency_key="rev:c",
        reason="host_timeout",
        amount=1234,
        currency="EUR",
    )
    assert open_envelope(sealed(body), key=KEY, now=NOW) == body


def test_batch_close_round_trip_and_status_health() -> None:
    totals = (
        BatchTotal(transaction_type="purchase", currency="GBP", count=2, amount=2050),
        BatchTotal(transaction_type="refund", currency="GBP", count=1, amount=300),
    )
    close = BatchCloseRequest(
        batch_id=7,
        idempotency_key="batch-7-00ff",
        closed_at=datetime(2026, 11, 28, 22, 0, tzinfo=UTC),
        totals=totals,
    )
    assert open_envelope(sealed(close), key=KEY, now=NOW) == close
    answer = BatchCloseResponse(
        host_batch_id="T0001-20261128T220000Z-abcdef",
        status="out_of_balance",
        totals=totals[:1],
        differences=("refund GBP: terminal 1 for 3.00 GBP, bridge 0 for 0.00 GBP",),
    )
    assert open_envelope(sealed(answer), key=KEY, now=NOW) == answer
    status = TerminalStatus(
        terminal_id="T0001",
        state="online",
        health=(HealthCheck(name="certificate", status="warn", found="expires in 9 days"),),
    )
    assert decode_json(status.model_dump_json(), TerminalStatus) == status
    with pytest.raises(MessageError):
        decode_json('{"terminal_id": "T0001", "state": "online", "health": [{}]}', TerminalStatus)


@given(
    st.sampled_from(["batch_request", "batch_response"]),
    st.dictionaries(
        st.sampled_from(["batch_id", "idempotency_key", "closed_at", "totals", "host_batch_id",
                         "status", "differences", "x"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.integers())),
    ),
)  # fmt: skip
def test_authentic_but_malformed_batch_bodies_raise_only_envelope_error(
    kind: str, body: dict[str, Any]
) -> None:
    """A key holder sending nonsense in a batch kind: refused as not openable, nothing
    else escapes."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    env = sealed()
    view = env.model_copy(update={"kind": kind})
    nonce = base64.b64decode(env.nonce)
    ciphertext = AESGCM(KEY).encrypt(nonce, json.dumps(body).encode(), view.associated_data())
    forged = view.model_copy(update={"ciphertext": base64.b64encode(ciphertext).decode()})
    with contextlib.suppress(EnvelopeError):
        open_envelope(forged, key=KEY, now=NOW)


@given(st.binary(max_size=2048))
def test_decode_envelope_of_arbitrary_bytes_raises_only_message_error(payload: bytes) -> None:
    with contextlib.suppress(MessageError):
        decode_envelope(payload)


@given(
    st.dictionaries(
        st.sampled_from(list(Envelope.model_fields)),
        st.one_of(st.none(), st.integers(), st.text(max_size=40), st.booleans()),
    )
)
def test_decode_envelope_of_arbitrary_json_raises_only_message_error(obj: dict[str, Any]) -> None:
    with contextlib.suppress(MessageError):
        decode_envelope(json.dumps(obj).encode())


def test_oversized_payload_is_refused_before_parsing() -> None:
    with pytest.raises(MessageError, match="too large"):
        decode_envelope(b" " * (64 * 1024 + 1))


# --- topics ---------------------------------------------------------------------------


def test_topics_follow_the_design() -> None:
    assert topics.request_topic("T0001") == "pos/v1/t/T0001/req"
    assert topics.response_topic("T0001") == "pos/v1/t/T0001/resp"
    assert topics.status_topic("T0001") == "pos/v1/t/T0001/status"
    assert topics.config_topic("T0001") == "pos/v1/t/T0001/config"
    assert topics.SHARED_REQUEST_SUBSCRIPTION == "$share/bridges/pos/v1/t/+/req"
    assert topics.BRIDGE_STATUS == "pos/v1/bridge/status"
    assert topics.parse_terminal_topic("pos/v1/t/T0001/req") == ("T0001", "req")


@pytest.mark.parametrize("tid", ["", "+", "#", "a/b", "T 1", "x" * 33, "-lead"])
def test_terminal_ids_that_would_break_topics_are_refused(tid: str) -> None:
    with pytest.raises(CodecError):
        topics.request_topic(tid)


@pytest.mark.parametrize("topic", ["pos/v1/t/T1/other", "pos/v2/t/T1/req", "pos/v1/t/+/req"])
def test_parse_terminal_topic_refuses_other_topics(topic: str) -> None:
    with pytest.raises(CodecError):
        topics.parse_terminal_topic(topic)


class _CountingAead:
    """A key held 'elsewhere': the envelope must work through the Aead seam alone."""

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._inner = AESGCM(key)
        self.calls = 0

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        self.calls += 1
        return self._inner.encrypt(nonce, data, associated_data)

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        self.calls += 1
        return self._inner.decrypt(nonce, data, associated_data)


def test_keys_held_elsewhere_seal_and_open_through_the_aead_seam() -> None:
    aead = _CountingAead(KEY)
    env = sealed(key=aead, alg="A128GCM")
    assert open_envelope(env, key=KEY, now=NOW) == request()
    assert open_envelope(sealed(), key=aead, now=NOW) == request()
    assert aead.calls == 2
    with pytest.raises(EnvelopeError):
        open_envelope(sealed(key=bytes(16)), key=aead, now=NOW)
    with pytest.raises(ValueError, match="alg"):
        sealed(key=aead)
