"""paycore.enrolment: codes, pins, the ECDH-agreed KBPK, the signed transcript, decoders."""

from __future__ import annotations

import contextlib
import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore import enrolment as proto


def test_codes_are_100_bits_in_groups_and_read_forgivingly() -> None:
    code = proto.new_code(secrets.token_bytes)
    groups = code.split("-")
    assert [len(g) for g in groups] == [5, 5, 5, 5]
    assert set("".join(groups)) <= set(proto.CODE_ALPHABET)
    assert proto.new_code(lambda n: bytes(n)) == "00000-00000-00000-00000"
    assert proto.new_code(lambda n: b"\xff" * n) == "ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ"
    # Typed in lower case, with O for 0 and I / L for 1, spaces instead of dashes.
    assert proto.normalise_code("oil11 2345a bcdef ghjkm") == "01111" + "2345A" + "BCDEF" + "GHJKM"
    for bad in ("", "ABCDE", "U" * 20, "ABCDE-ABCDE-ABCDE-ABCD!"):
        with pytest.raises(proto.EnrolmentError):
            proto.normalise_code(bad)


def test_the_code_digest_binds_the_terminal() -> None:
    code = proto.new_code(secrets.token_bytes)
    digest = proto.code_digest("T-1", code)
    assert len(digest) == 32
    assert proto.code_digest("T-1", code.lower().replace("-", " ")) == digest
    assert proto.code_digest("T-2", code) != digest
    assert proto.code_digest("T-1", proto.new_code(secrets.token_bytes)) != digest


def _ca(now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    public: ec.EllipticCurvePublicKey,
    name: str,
    usage: x509.ObjectIdentifier,
    now: datetime,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca[0].subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca[1], hashes.SHA256())
    )


def test_pins_select_the_trusted_ca() -> None:
    now = datetime.now(UTC)
    ca, _ = _ca(now)
    other, _ = _ca(now)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (other, ca))
    assert proto.trusted_bundle(pem, proto.ca_pin(ca).upper()) == [other, ca]
    with pytest.raises(proto.EnrolmentRefused):
        proto.trusted_bundle(other.public_bytes(serialization.Encoding.PEM), proto.ca_pin(ca))
    with pytest.raises(proto.EnrolmentError):
        proto.trusted_bundle(pem, "sha1:abcd")
    with pytest.raises(proto.EnrolmentError):
        proto.trusted_bundle(b"not pem", proto.ca_pin(ca))


class Exchange:
    """One enrolment exchange built the way the service builds it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)
        self.ca = _ca(self.now)
        self.signer = ec.generate_private_key(ec.SECP256R1())
        self.terminal = ec.generate_private_key(ec.SECP256R1())
        self.ephemeral = ec.generate_private_key(ec.SECP256R1())
        self.nonce = secrets.token_bytes(32)
        signer_cert = _leaf(
            self.ca, self.signer.public_key(), "enrol", proto.ENROLMENT_SIGNING_EKU, self.now
        )
        terminal_cert = _leaf(
            self.ca,
            self.terminal.public_key(),
            "T-1",
            x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
            self.now,
        )
        pem = serialization.Encoding.PEM
        self.request = proto.EnrolRequest(
            terminal_id="T-1", code="X", csr_pem="-", nonce=proto.b64(self.nonce)
        )
        delivery = proto.KeyDelivery(
            initial_key_id="00" * 8, key_block="D0000B1AX00N0000" + "0" * 32, kcv="ABCDEF"
        )
        unsigned = proto.EnrolResponse(
            terminal_id="T-1",
            certificate_pem=terminal_cert.public_bytes(pem).decode(),
            ca_bundle_pem=self.ca[0].public_bytes(pem).decode(),
            broker_host="broker.example",
            broker_port=8883,
            data_key=delivery,
            pin_key=delivery.model_copy(update={"kcv": "123456"}),
            ephemeral_public_key=proto.b64(proto.public_point(self.ephemeral.public_key())),
            signer_certificate_pem=signer_cert.public_bytes(pem).decode(),
        )
        transcript = proto.response_transcript(unsigned, self.nonce, self.terminal.public_key())
        self.response = unsigned.model_copy(
            update={"signature": proto.sign(self.signer, transcript)}
        )

    def verify(self, response: proto.EnrolResponse) -> x509.Certificate:
        return proto.verify_response(
            response,
            request=self.request,
            terminal_key=self.terminal.public_key(),
            trusted=[self.ca[0]],
            now=self.now,
        )


def test_both_sides_agree_the_kbpk_and_nobody_else_does() -> None:
    ex = Exchange()
    bridge = proto.derive_kbpk(ex.ephemeral, ex.terminal.public_key(), ex.nonce, "T-1")
    terminal = proto.derive_kbpk(
        ex.terminal, proto.load_point(ex.response.ephemeral_public_key), ex.nonce, "T-1"
    )
    assert bridge == terminal and len(bridge) == 32
    assert proto.derive_kbpk(ex.terminal, ex.ephemeral.public_key(), bytes(32), "T-1") != bridge
    assert proto.derive_kbpk(ex.terminal, ex.ephemeral.public_key(), ex.nonce, "T-2") != bridge
    stranger = ec.generate_private_key(ec.SECP256R1())
    assert proto.derive_kbpk(stranger, ex.ephemeral.public_key(), ex.nonce, "T-1") != bridge


def test_a_genuine_answer_verifies_and_every_field_is_covered() -> None:
    ex = Exchange()
    assert ex.verify(ex.response).subject.rfc4514_string() == "CN=T-1"
    changes: dict[str, object] = {
        "broker_host": "evil.example",
        "broker_port": 1883,
        "ca_bundle_pem": ex.response.ca_bundle_pem + "\n",
        "data_key": ex.response.data_key.model_copy(update={"kcv": "000000"}),
        "pin_key": None,
        "ephemeral_public_key": proto.b64(
            proto.public_point(ec.generate_private_key(ec.SECP256R1()).public_key())
        ),
    }
    for field, value in changes.items():
        with pytest.raises(proto.EnrolmentRefused, match="signature"):
            ex.verify(ex.response.model_copy(update={field: value}))
    other_nonce = ex.request.model_copy(update={"nonce": proto.b64(secrets.token_bytes(32))})
    with pytest.raises(proto.EnrolmentRefused, match="signature"):
        proto.verify_response(
            ex.response,
            request=other_nonce,
            terminal_key=ex.terminal.public_key(),
            trusted=[ex.ca[0]],
            now=ex.now,
        )


def test_untrusted_or_stale_signers_and_foreign_certificates_are_refused() -> None:
    ex = Exchange()
    with pytest.raises(proto.EnrolmentRefused, match="pinned CA"):
        proto.verify_response(
            ex.response,
            request=ex.request,
            terminal_key=ex.terminal.public_key(),
            trusted=[_ca(ex.now)[0]],
            now=ex.now,
        )
    with pytest.raises(proto.EnrolmentRefused, match="not valid"):
        proto.verify_response(
            ex.response,
            request=ex.request,
            terminal_key=ex.terminal.public_key(),
            trusted=[ex.ca[0]],
            now=ex.now + timedelta(days=2),
        )
    # The right signature over a certificate for someone else's key.
    stranger = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(proto.EnrolmentRefused, match="this terminal's key"):
        proto.verify_response(
            ex.response.model_copy(
                update={
                    "signature": proto.sign(
                        ex.signer,
                        proto.response_transcript(ex.response, ex.nonce, stranger.public_key()),
                    )
                }
            ),
            request=ex.request,
            terminal_key=stranger.public_key(),
            trusted=[ex.ca[0]],
            now=ex.now,
        )


def test_confirmations_are_signed_by_the_terminal() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    confirm = proto.ConfirmRequest(
        terminal_id="T-1", nonce=proto.b64(bytes(32)), data_kcv="ABCDEF", outcome="loaded"
    )
    signature = proto.sign(key, proto.confirm_transcript(confirm))
    proto.check_signature(key.public_key(), signature, proto.confirm_transcript(confirm))
    changed = confirm.model_copy(update={"outcome": "failed"})
    with pytest.raises(proto.EnrolmentRefused):
        proto.check_signature(key.public_key(), signature, proto.confirm_transcript(changed))
    with pytest.raises(proto.EnrolmentRefused):
        proto.check_signature(key.public_key(), "!!", proto.confirm_transcript(confirm))


def test_requests_never_show_the_code() -> None:
    request = proto.EnrolRequest(
        terminal_id="T-1", code="ABCDE-FGHJK-MNPQR-STVWX", csr_pem="-", nonce="AA=="
    )
    assert "ABCDE" not in repr(request) and "ABCDE" not in str(request)


def test_audit_lines_refuse_secret_fields() -> None:
    line = proto.audit_line("enrolled", datetime(2026, 1, 2, tzinfo=UTC), {"kcv": "ABC"})
    assert line.endswith(b"\n") and b'"event": "enrolled"' in line
    for field in ("code", "key", "kbpk", "pin"):
        with pytest.raises(ValueError, match="secrets"):
            proto.audit_line("x", datetime.now(UTC), {field: "1"})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_decoders_raise_only_their_own_error(data: bytes) -> None:
    for decode in (proto.decode_request, proto.decode_response, proto.decode_confirm):
        with contextlib.suppress(proto.EnrolmentError):
            decode(data)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["version", "terminal_id", "code", "csr_pem", "nonce", "pinpad", "technician", "x"]
        ),
        st.one_of(
            st.none(), st.integers(), st.text(max_size=40), st.lists(st.integers(), max_size=3)
        ),
    )
)
def test_json_objects_of_any_shape_are_refused_cleanly(raw: dict[str, object]) -> None:
    try:
        request = proto.decode_request(json.dumps(raw))
    except proto.EnrolmentError as exc:
        error: proto.EnrolmentError | None = exc
    else:
        error = None
        assert request.terminal_id == raw["terminal_id"]
    assert error is None or error.field is not None
