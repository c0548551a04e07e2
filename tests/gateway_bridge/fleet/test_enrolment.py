"""Enrolment end to end over HTTPS: the operator's code, the technician's provision run
against an emulated PIN pad on a pty, and every refusal the issue names (issue 8).

The terminal side is :func:`terminal_agent.provision.provision`, in this process; the
bridge side is the real service behind uvicorn with TLS; the journal, the key store and
the CA are the real ones in a temporary directory.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway_bridge.app import open_journal
from gateway_bridge.fleet.audit import AuditLog
from gateway_bridge.fleet.enrol_http import RateLimiter, create_enrolment_app
from gateway_bridge.fleet.enrolment import EnrolmentDenied, EnrolmentService
from hardware.pinpad import EmulatedPinpad
from paycore import enrolment as proto
from paycore import tr31
from terminal_agent.config import data_initial_key, load_settings
from terminal_agent.provision import ProvisionOptions, provision
from terminal_agent.provision.steps import ProvisionError, csr_pem, open_response
from tests.gateway_bridge.fleet.enrol_rig import (
    TERMINAL_ID,
    EnrolRig,
    make_enrol_rig,
    serving,
)


@pytest.fixture
def rig(tmp_path: Path) -> EnrolRig:
    return make_enrol_rig(tmp_path / "bridge", terminals=(TERMINAL_ID, "T-ENROL-2"))


@pytest.fixture
def pad(rig: EnrolRig, tmp_path: Path) -> Iterator[EmulatedPinpad]:
    with EmulatedPinpad(kbpk=rig.pad_kbpk, link_path=tmp_path / "pos-pinpad") as pad:
        yield pad


def options(
    rig: EnrolRig, pad: EmulatedPinpad, folder: Path, code: str, pin: str
) -> ProvisionOptions:
    return ProvisionOptions(
        url=rig.url,
        terminal_id=TERMINAL_ID,
        code=code,
        ca_pin=pin,
        technician="tech-bob",
        config_dir=folder / "etc",
        state_dir=folder / "var",
        pinpad_port=str(pad.link_path),
        udev_dir=folder / "udev",
        systemd_dir=folder / "systemd",
        self_test=False,
        timeout_s=10,
    )


async def run(opts: ProvisionOptions) -> tuple[int, str]:
    out = io.StringIO()
    code = await provision(opts, out)
    return code, out.getvalue()


def bridge_audit(rig: EnrolRig) -> list[dict[str, object]]:
    enrol = rig.settings.enrolment
    assert enrol is not None
    return AuditLog(enrol.audit_log).entries()


def test_a_terminal_enrols_and_its_keys_and_files_check_out(
    rig: EnrolRig, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    code, pin = rig.issue_code()
    assert pin == proto.ca_pin(rig.ca.ca_certificate())
    term = tmp_path / "terminal"

    async def body() -> tuple[int, str]:
        async with serving(rig):
            return await run(options(rig, pad, term, code, pin))

    status, text = asyncio.run(body())
    assert status == 0, text
    for step in ("CA", "PIN pad", "key", "enrol", "verify", "PIN key", "files", "confirm"):
        assert f" {step} " in text, text

    # The agent's configuration loads and names the delivered key.
    settings = load_settings(term / "etc" / "agent.toml")
    assert settings.terminal_id == TERMINAL_ID
    assert settings.broker.tls is not None and settings.broker.tls.cert_file is not None
    key, ikid = data_initial_key(settings.keys)
    for secret in ("tls/terminal-key.pem", "keys/kbpk.hex", "keys/data-key.tr31", "journal.key"):
        assert (term / "etc" / secret).stat().st_mode & 0o777 == 0o600, secret

    # The registry got a fresh Initial Key ID, and the key is the BDK's for it.
    async def registry() -> tuple[str, int | None]:
        journal = await open_journal(rig.settings)
        try:
            record = await journal.get_terminal(TERMINAL_ID)
            assert record is not None
            return record.data_initial_key_id, record.last_counter
        finally:
            await journal.close()

    registered, counter = asyncio.run(registry())
    assert registered == ikid.hex().upper() and counter is None
    reference_kbpk = secrets.token_bytes(32)
    _, expected = tr31.unwrap(
        reference_kbpk,
        rig.store().export_initial_key_tr31_under("data-bdk", ikid, reference_kbpk)[0],
    )
    assert key == expected

    # The certificate is this terminal's, for the key that stayed on the device.
    cert = x509.load_pem_x509_certificate((term / "etc" / "tls" / "terminal-cert.pem").read_bytes())
    assert cert.subject.rfc4514_string() == f"CN={TERMINAL_ID}"
    live = [r for r in rig.ca.records() if r.name == TERMINAL_ID]
    assert [r.serial_number for r in live] == [cert.serial_number]

    # The pad holds the PIN pad initial key the bridge announced.
    status_ = pad.keys.status(1)
    entries = bridge_audit(rig)
    enrolled = next(e for e in entries if e["event"] == "enrolled")
    assert status_.key_id.hex().upper() == enrolled["pin_initial_key_id"]
    assert enrolled["technician"] == "tech-bob" and enrolled["pinpad_serial"] == pad.serial
    assert [e["event"] for e in entries] == [
        "code_issued",
        "code_redeemed",
        "enrolled",
        "keys_confirmed",
    ]

    # udev (the CCID rule; a pty has no USB serial) and the unit are installed.
    assert (term / "udev" / "72-pos-ccid.rules").exists()
    assert not (term / "udev" / "70-pos-pinpad.rules").exists()
    assert "ExecStart=" in (term / "systemd" / "pos-terminal-agent.service").read_text()

    # Neither audit log holds the code, a key or the KBPK.
    kbpk = (term / "etc" / "keys" / "kbpk.hex").read_text().strip()
    terminal_audit = (term / "var" / "provision-audit.jsonl").read_text()
    bridge_text = json.dumps(entries)
    for secret in (code, code.replace("-", ""), kbpk, kbpk.upper(), key.hex(), key.hex().upper()):
        assert secret not in terminal_audit and secret not in bridge_text
    assert '"event": "PIN key"' in terminal_audit and str(enrolled["pin_kcv"]) in terminal_audit


def test_a_code_is_single_use_and_a_refused_run_writes_nothing(
    rig: EnrolRig, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    code, pin = rig.issue_code()

    async def body() -> list[tuple[int, str]]:
        async with serving(rig):
            first = await run(options(rig, pad, tmp_path / "first", code, pin))
            again = await run(options(rig, pad, tmp_path / "again", code, pin))
            return [first, again]

    (first, _), (status, text) = asyncio.run(body())
    assert first == 0
    assert status == 2 and "used already" in text, text
    assert not (tmp_path / "again" / "etc").exists()


def test_wrong_codes_burn_the_code(rig: EnrolRig, pad: EmulatedPinpad, tmp_path: Path) -> None:
    code, pin = rig.issue_code()
    wrong = proto.new_code(secrets.token_bytes)

    async def body() -> list[tuple[int, str]]:
        async with serving(rig):
            results = [
                await run(options(rig, pad, tmp_path / f"w{i}", wrong, pin)) for i in range(3)
            ]
            results.append(await run(options(rig, pad, tmp_path / "right", code, pin)))
            return results

    results = asyncio.run(body())
    assert all(status == 2 for status, _ in results)
    assert "2 tries left" in results[0][1] and "1 tries left" in results[1][1]
    assert "burned" in results[2][1] and "burned" in results[3][1], results[3][1]
    refused = [e for e in bridge_audit(rig) if e["event"] == "enrol_refused"]
    assert [e["reason"] for e in refused] == ["wrong", "wrong", "locked", "locked"]


def test_an_expired_code_is_refused(rig: EnrolRig, tmp_path: Path) -> None:
    async def body() -> EnrolmentDenied:
        async with serving(rig) as service:
            past = EnrolmentService(
                journal=service.journal,
                keystore=service.keystore,
                ca=service.ca,
                settings=service.settings,
                signer_key=service._signer_key,
                signer_certificate_pem=service._signer_pem,
                audit=service.audit,
                clock=lambda: datetime.now(UTC) - timedelta(days=3),
            )
            issued = await past.issue_code(TERMINAL_ID, "operator-ann")
            request = terminal_request(issued.code)[0]
            with pytest.raises(EnrolmentDenied) as caught:
                await service.enrol(request, "127.0.0.1")
            return caught.value

    denied = asyncio.run(body())
    assert denied.reason == "expired" and denied.status == 403


def test_a_mistyped_pin_stops_before_the_code_is_sent(
    rig: EnrolRig, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    code, pin = rig.issue_code()
    other = "sha256:" + ("0" if pin[7] != "0" else "1") + pin[8:]

    async def body() -> tuple[int, str]:
        async with serving(rig) as service:
            result = await run(options(rig, pad, tmp_path / "t", code, other))
            record = await service.journal.get_enrolment_code(TERMINAL_ID)
            assert record is not None and record.used_at is None and record.failed_attempts == 0
            return result

    status, text = asyncio.run(body())
    assert status == 2 and "matches the pin" in text, text


def test_a_pad_from_another_estate_is_refused_before_the_code_is_used(
    rig: EnrolRig, tmp_path: Path
) -> None:
    code, pin = rig.issue_code()
    with EmulatedPinpad(kbpk=secrets.token_bytes(32), link_path=tmp_path / "pad2") as stranger:

        async def body() -> tuple[int, str]:
            async with serving(rig) as service:
                result = await run(options(rig, stranger, tmp_path / "t", code, pin))
                record = await service.journal.get_enrolment_code(TERMINAL_ID)
                assert record is not None and record.used_at is None
                return result

        status, text = asyncio.run(body())
    assert status == 2 and "not one the bridge holds" in text, text


def test_a_pin_pad_kcv_mismatch_stops_provisioning(
    rig: EnrolRig, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    code, pin = rig.issue_code()
    pad.faults.wrong_kcv = True

    async def body() -> tuple[int, str]:
        async with serving(rig):
            return await run(options(rig, pad, tmp_path / "t", code, pin))

    status, text = asyncio.run(body())
    assert status == 2 and "do not use this pad" in text, text
    assert not (tmp_path / "t" / "etc" / "agent.toml").exists()
    failed = [e for e in bridge_audit(rig) if e["event"] == "keys_failed"]
    assert len(failed) == 1 and failed[0]["detail"] == "KCV mismatch"


def terminal_request(
    code: str, terminal_id: str = TERMINAL_ID, pad_kcv: str | None = None
) -> tuple[proto.EnrolRequest, ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    nonce = secrets.token_bytes(32)
    pad = None if pad_kcv is None else proto.PinpadIdentity(model="M", serial="S", kbpk_kcv=pad_kcv)
    request = proto.EnrolRequest(
        terminal_id=terminal_id,
        code=code,
        csr_pem=csr_pem(key, terminal_id),
        nonce=proto.b64(nonce),
        pinpad=pad,
        technician="tech-bob",
    )
    return request, key, nonce


def test_tampered_replayed_and_wrongly_signed_answers_are_refused(rig: EnrolRig) -> None:
    async def body() -> None:
        async with serving(rig) as service:
            issued = await service.issue_code(TERMINAL_ID, "operator-ann")
            request, key, nonce = terminal_request(issued.code)
            response = await service.enrol(request, "127.0.0.1")
            trusted = x509.load_pem_x509_certificates(service.ca_bundle())
            open_response(response, request, key, nonce, trusted)  # the genuine one opens

            block = response.data_key.key_block
            flipped = block[:-1] + ("0" if block[-1] != "0" else "1")
            tampered = response.model_copy(
                update={"data_key": response.data_key.model_copy(update={"key_block": flipped})}
            )
            with pytest.raises(ProvisionError, match="signature"):
                open_response(tampered, request, key, nonce, trusted)

            # Replayed to a later attempt (its own nonce): the signature covers the nonce.
            later = request.model_copy(update={"nonce": proto.b64(secrets.token_bytes(32))})
            with pytest.raises(ProvisionError, match="signature"):
                open_response(response, later, key, proto._b64(later.nonce, "n"), trusted)

            # Signed by a key the CA certified, but not for enrolment (a bridge client).
            bridge_key = ec.generate_private_key(ec.SECP256R1())
            bridge = rig.ca.issue_client(
                "bridge", bridge_key.public_key(), "bridge-x", now=datetime.now(UTC)
            )
            forged = response.model_copy(update={"signer_certificate_pem": bridge.pem.decode()})
            forged = forged.model_copy(
                update={
                    "signature": proto.sign(
                        bridge_key, proto.response_transcript(forged, nonce, key.public_key())
                    )
                }
            )
            with pytest.raises(ProvisionError, match="not for enrolment signing"):
                open_response(forged, request, key, nonce, trusted)

            # A validly signed block of the wrong usage (a PIN key, not B1) is refused.
            kbpk = proto.derive_kbpk(
                key, proto.load_point(response.ephemeral_public_key), nonce, TERMINAL_ID
            )
            header = tr31.KeyBlockHeader(
                version_id="D", key_usage="P0", algorithm="A", mode_of_use="E",
                optional_blocks=(("IK", response.data_key.initial_key_id),),
            )  # fmt: skip
            wrong = tr31.wrap(kbpk, header, secrets.token_bytes(16), random=secrets.token_bytes)
            odd = response.model_copy(
                update={"data_key": response.data_key.model_copy(update={"key_block": wrong})}
            )
            odd = odd.model_copy(
                update={
                    "signature": proto.sign(
                        service._signer_key,
                        proto.response_transcript(odd, nonce, key.public_key()),
                    )
                }
            )
            with pytest.raises(ProvisionError, match="usage P0"):
                open_response(odd, request, key, nonce, trusted)

    asyncio.run(body())


def test_a_csr_for_another_terminal_is_refused_without_using_the_code(rig: EnrolRig) -> None:
    async def body() -> None:
        async with serving(rig) as service:
            issued = await service.issue_code(TERMINAL_ID, "operator-ann")
            request, _, _ = terminal_request(issued.code)
            other, _, _ = terminal_request(issued.code, terminal_id="T-ENROL-2")
            mixed = request.model_copy(update={"csr_pem": other.csr_pem})
            with pytest.raises(EnrolmentDenied, match="another terminal"):
                await service.enrol(mixed, "127.0.0.1")
            record = await service.journal.get_enrolment_code(TERMINAL_ID)
            assert record is not None and record.used_at is None
            # A code is bound to its terminal: T-ENROL-2 cannot use T-ENROL-1's.
            await service.issue_code("T-ENROL-2", "operator-ann")
            with pytest.raises(EnrolmentDenied) as caught:
                await service.enrol(other, "127.0.0.1")
            assert caught.value.reason == "wrong"

    asyncio.run(body())


def test_reenrolment_supersedes_then_revoke_takes_the_terminal_out(rig: EnrolRig) -> None:
    async def body() -> list[str]:
        async with serving(rig) as service:
            ikids = []
            for _ in range(2):
                issued = await service.issue_code(TERMINAL_ID, "operator-ann")
                request, _, _ = terminal_request(issued.code)
                response = await service.enrol(request, "127.0.0.1")
                ikids.append(response.data_key.initial_key_id)
            return ikids

    first, second = asyncio.run(body())
    assert first != second  # never the same DUKPT counter space twice
    records = [r for r in rig.ca.records() if r.name == TERMINAL_ID]
    assert [r.revocation_reason for r in records] == ["superseded", None]
    crl = x509.load_pem_x509_crl(rig.ca.crl_path.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(records[0].serial_number) is not None

    status, text = rig.cli("terminals", "revoke", "--config", str(rig.config), "--id", TERMINAL_ID)
    assert status == 0 and "registry status revoked" in text, text
    crl = x509.load_pem_x509_crl(rig.ca.crl_path.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(records[1].serial_number) is not None
    status, text = rig.cli("terminals", "show", "--config", str(rig.config), "--id", TERMINAL_ID)
    assert status == 0 and "status       revoked" in text and "cessation_of_operation" in text
    status, text = rig.cli(
        "terminals", "show", "--config", str(rig.config), "--id", TERMINAL_ID, "--json"
    )
    shown = json.loads(text)
    assert shown["status"] == "revoked" and shown["enrolment_code"] is None
    assert [e["event"] for e in bridge_audit(rig)][-1] == "terminal_revoked"
    # A revoked terminal gets a code only when the operator says it returns to service.
    status, text = rig.cli(
        "terminals", "enrol-code", "--config", str(rig.config), "--id", TERMINAL_ID
    )
    assert status == 2 and text == ""
    status, text = rig.cli(
        "terminals", "enrol-code", "--config", str(rig.config), "--id", TERMINAL_ID,
        "--recommission",
    )  # fmt: skip
    assert status == 0 and f"enrolment code for {TERMINAL_ID}: " in text
    assert bridge_audit(rig)[-1]["recommission"] is True


def test_the_rate_limit_and_malformed_bodies_over_http(rig: EnrolRig) -> None:
    limiter = RateLimiter(2)
    assert limiter.allow("a", 0.0) == 0 and limiter.allow("a", 1.0) == 0
    assert limiter.allow("a", 2.0) == pytest.approx(58.0)
    assert limiter.allow("b", 2.0) == 0 and limiter.allow("a", 60.5) == 0

    async def body() -> None:
        async with serving(rig) as service:
            strict = replace_settings(service, rate_per_minute=3)
            app = create_enrolment_app(strict)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="https://bridge") as client:
                bad = await client.post("/v1/enrol", content=b"{not json")
                assert bad.status_code == 400 and bad.json()["error"] == "request"
                missing = await client.post("/v1/enrol", json={"terminal_id": TERMINAL_ID})
                assert missing.status_code == 400 and "csr_pem" in missing.json()["message"]
                bundle = await client.get("/v1/ca")
                assert bundle.status_code == 200 and b"BEGIN CERTIFICATE" in bundle.content
                empty = await client.post("/v1/enrol/confirm", content=b"{}")
                assert empty.status_code == 400  # the third request in the minute
                limited = await client.post("/v1/enrol", content=b"{}")
                assert limited.status_code == 429 and "Retry-After" in limited.headers
                big = await client.post("/v1/enrol/confirm", content=b"x" * 70_000)
                assert big.status_code in (413, 429)

    asyncio.run(body())


def replace_settings(service: EnrolmentService, **changes: object) -> EnrolmentService:
    return EnrolmentService(
        journal=service.journal,
        keystore=service.keystore,
        ca=service.ca,
        settings=service.settings.model_copy(update=changes),
        signer_key=service._signer_key,
        signer_certificate_pem=service._signer_pem,
        audit=service.audit,
    )
