"""The terminal CA (RFC 5280 profiles), its index, CRLs, rotation and CLI, without a broker."""

from __future__ import annotations

import io
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_bridge.fleet.broker_config import BrokerDeployment, render_acl, render_mosquitto_conf
from gateway_bridge.fleet.ca import (
    CaError,
    CaLocked,
    CsrRejected,
    NameInUse,
    TerminalCA,
    UnknownCertificate,
    build_csr,
    check_csr,
    new_ec_key,
)
from gateway_bridge.fleet.cli import ca_main

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _crls(pem: bytes) -> list[x509.CertificateRevocationList]:
    marker = b"-----END X509 CRL-----"
    return [
        x509.load_pem_x509_crl(chunk + marker + b"\n")
        for chunk in pem.split(marker)
        if chunk.strip()
    ]


def _csr(cn: str) -> bytes:
    return build_csr(new_ec_key(), cn).public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def ca(tmp_path: Path) -> TerminalCA:
    return TerminalCA.create(tmp_path / "ca", passphrase=b"pw", now=NOW)


def test_ca_certificate_profile_and_key_at_rest(ca: TerminalCA) -> None:
    cert = ca.ca_certificate()
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    key_file = ca.directory / "gen-1" / "ca-key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED" in key_file.read_bytes()
    with pytest.raises(CaLocked):
        TerminalCA(ca.directory, passphrase=b"wrong").issue_terminal(_csr("T1"), now=NOW)
    with pytest.raises(CaLocked):
        TerminalCA(ca.directory, passphrase=None).issue_terminal(_csr("T1"), now=NOW)


def test_terminal_certificate_profile(ca: TerminalCA) -> None:
    issued = ca.issue_terminal(_csr("T-0001"), terminal_id="T-0001", now=NOW)
    cert = issued.certificate
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["T-0001"] and len(list(cert.subject)) == 1
    assert cert.not_valid_after_utc - NOW == timedelta(days=90)
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    cert.verify_directly_issued_by(ca.ca_certificate())
    assert 0 < cert.serial_number < 2**159
    other = ca.issue_terminal(_csr("T-0002"), now=NOW)
    assert other.certificate.serial_number != cert.serial_number
    rows = {r.name: r for r in ca.records()}
    assert rows["T-0001"].serial == f"{cert.serial_number:x}"
    assert rows["T-0001"].revoked_at is None


def test_bad_requests_are_refused(ca: TerminalCA) -> None:
    with pytest.raises(CsrRejected):
        ca.issue_terminal(_csr("T-1"), terminal_id="T-2", now=NOW)
    for bad in ("a/b", "+", "#", "", "x" * 40, "-lead"):
        with pytest.raises(CsrRejected):
            ca.issue_terminal(_csr(bad) if bad else _csr("ok").replace(b"A", b"B"), now=NOW)
    ca.issue_client("bridge", new_ec_key().public_key(), "bridge-1", now=NOW)
    with pytest.raises(NameInUse):
        ca.issue_terminal(_csr("bridge-1"), now=NOW)


def test_server_certificate_names(ca: TerminalCA) -> None:
    import ipaddress

    issued = ca.issue_server(
        new_ec_key().public_key(), ["broker.example"], [ipaddress.ip_address("10.0.0.5")], now=NOW
    )
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["broker.example"]
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]


def test_revocation_and_crl(ca: TerminalCA) -> None:
    keep = ca.issue_terminal(_csr("T-1"), now=NOW)
    gone = ca.issue_terminal(_csr("T-2"), now=NOW)
    ca.revoke(name="T-2", reason="key_compromise", now=NOW + timedelta(hours=1))
    with pytest.raises(UnknownCertificate):
        ca.revoke(name="T-2", now=NOW)
    crls = _crls(ca.crl_path.read_bytes())
    assert len(crls) == 1
    crl = crls[0]
    assert crl.is_signature_valid(ca.ca_certificate().public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(gone.certificate.serial_number)
    assert crl.get_revoked_certificate_by_serial_number(keep.certificate.serial_number) is None
    assert crl.next_update_utc == NOW + timedelta(hours=1, days=7)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    ca.write_crl(NOW + timedelta(days=1))
    again = _crls(ca.crl_path.read_bytes())[0]
    assert again.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number + 1


def test_rotation_keeps_both_generations_until_retired(ca: TerminalCA) -> None:
    old = ca.issue_terminal(_csr("T-1"), now=NOW)
    ca.rotate(NOW)
    new = ca.issue_terminal(_csr("T-1"), now=NOW)
    bundle = x509.load_pem_x509_certificates(ca.bundle_path.read_bytes())
    assert len(bundle) == 2 and bundle[0].subject != bundle[1].subject
    old.certificate.verify_directly_issued_by(bundle[0])
    new.certificate.verify_directly_issued_by(bundle[1])
    crls = _crls(ca.crl_path.read_bytes())
    assert [c.issuer for c in crls] == [b.subject for b in bundle]
    ca.retire(1, NOW)
    assert len(x509.load_pem_x509_certificates(ca.bundle_path.read_bytes())) == 1
    assert len(_crls(ca.crl_path.read_bytes())) == 1


def test_acl_and_config_text() -> None:
    acl = render_acl(("bridge-1",)).splitlines()
    for line in (
        "pattern write pos/v1/t/%u/req",
        "pattern write pos/v1/t/%u/status",
        "pattern read pos/v1/t/%u/resp",
        "pattern read pos/v1/t/%u/config",
        "pattern read pos/v1/bridge/status",
        "user bridge-1",
        "topic read $share/bridges/pos/v1/t/+/req",
        "topic write pos/v1/t/+/resp",
    ):
        assert line in acl
    conf = render_mosquitto_conf(
        BrokerDeployment(bridges=("bridge-1",), install_dir=Path("/etc/mosquitto/pos"))
    ).splitlines()
    for line in (
        "allow_anonymous false",
        "require_certificate true",
        "use_identity_as_username true",
        "crlfile /etc/mosquitto/pos/crl.pem",
        "set_tcp_nodelay true",
        "tls_version tlsv1.2",
        "log_dest stderr",
    ):
        assert line in conf
    with pytest.raises(CaError, match="DESIGN 9"):
        BrokerDeployment(bridges=("bridge-1",), install_dir=Path("/x"), max_queued_messages=10)


def test_cli_init_needs_a_passphrase_decision_and_lists_json(tmp_path: Path) -> None:
    out = io.StringIO()
    ca_dir = str(tmp_path / "ca")
    assert ca_main(["init", "--dir", ca_dir], environ={}, out=out) == 2
    assert ca_main(["init", "--dir", ca_dir, "--no-passphrase"], environ={}, out=out) == 0
    csr = tmp_path / "t.csr"
    csr.write_bytes(_csr("T-9"))
    cert = tmp_path / "t.pem"
    argv = ["issue-terminal", "--dir", ca_dir, "--csr", str(csr), "--out", str(cert)]
    assert ca_main([*argv, "--days", "30"], environ={}, out=out, now=NOW) == 0
    listing = io.StringIO()
    assert ca_main(["list", "--dir", ca_dir, "--json"], environ={}, out=listing, now=NOW) == 0
    row = json.loads(listing.getvalue())
    assert (row["name"], row["kind"], row["revoked_at"]) == ("T-9", "terminal", None)
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    assert f"{loaded.serial_number:x}" == row["serial"]
    assert loaded.not_valid_after_utc == NOW + timedelta(days=30)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_check_csr_fuzz(data: bytes) -> None:
    wrapped = (
        b"-----BEGIN CERTIFICATE REQUEST-----\n" + data + b"\n-----END CERTIFICATE REQUEST-----\n"
    )
    for candidate in (data, wrapped):
        with pytest.raises(CsrRejected):
            check_csr(candidate)


def test_two_processes_on_one_ca_never_write_back_a_stale_index(tmp_path: Path) -> None:
    """The enrolment service keeps its CA object for as long as it runs while the operator
    revokes with another: the service's next issue must not drop the revocation (nor the
    CRL entry), and concurrent issues all land in the index."""
    now = datetime.now(UTC)
    TerminalCA.create(tmp_path / "ca", passphrase=None, now=now)
    service = TerminalCA(tmp_path / "ca", passphrase=None)
    operator = TerminalCA(tmp_path / "ca", passphrase=None)
    first = service.issue_terminal(_csr("T-1"), now=now)
    operator.revoke(name="T-1", reason="key_compromise", now=now)
    service.issue_terminal(_csr("T-2"), now=now)  # this object never saw the revocation
    records = {r.name: r for r in TerminalCA(tmp_path / "ca", passphrase=None).records()}
    assert records["T-1"].revocation_reason == "key_compromise" and "T-2" in records
    (crl,) = _crls(service.crl_path.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(first.record.serial_number) is not None
    assert [r.name for r in service.records()] == ["T-1", "T-2"]  # reads see the disk

    def issue(prefix: str) -> None:
        ca = TerminalCA(tmp_path / "ca", passphrase=None)
        for i in range(8):
            ca.issue_terminal(_csr(f"{prefix}-{i}"), now=now)

    threads = [threading.Thread(target=issue, args=(p,)) for p in ("A", "B", "C")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = {r.name for r in TerminalCA(tmp_path / "ca", passphrase=None).records()}
    assert names == {"T-1", "T-2"} | {f"{p}-{i}" for p in "ABC" for i in range(8)}
