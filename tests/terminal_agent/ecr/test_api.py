"""The ECR API against the real agent: payments, idempotency, busy, cancel, void,
lookups, totals, the bearer token and input validation."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from hardware.cards import EmvCard, load_profile
from hardware.pcsc.pcscd import PcscdService
from hardware.pcsc.slot import CardSlot
from hardware.pinpad import EmulatedPinpad, PinScript
from tests.gateway_bridge.rig import Rig, running_bridge
from tests.terminal_agent.ecr.harness import AUTH, TOKEN, ecr_api
from tests.terminal_agent.test_payment import PAN, issuer


def test_approved_payment_idempotency_lookup_totals_and_void(
    rig: Rig, pcscd_vpcd: PcscdService, vpcd_card: CardSlot, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    sim = issuer()
    before = sim.snapshot(PAN).balance
    vpcd_card(EmvCard(load_profile("visa_credit")))
    pad.queue_pin(PinScript.entered("1234"))

    async def body() -> dict[str, Any]:
        async with running_bridge(rig, sim), ecr_api(rig, pcscd_vpcd, tmp_path, pad) as api:
            created = await api.create(idempotency_key="till1-0001")
            assert created.status_code == 202, created.text
            first = created.json()
            assert first["status"] == "pending" and first["amount"] == 1250
            assert created.headers["Idempotent-Replayed"] == "false"
            assert created.headers["Location"] == f"/v1/payments/{first['id']}"
            done = await api.settled(first["id"])

            again = await api.create(idempotency_key="till1-0001")
            assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
            assert again.json()["id"] == first["id"] and again.json()["status"] == "approved"
            clash = await api.create(idempotency_key="till1-0001", amount=999)
            assert clash.status_code == 409 and clash.json()["error"] == "idempotency_conflict"

            found = await api.get("/v1/payments", reference="till1/42")
            assert [p["id"] for p in found.json()["payments"]] == [first["id"]]
            nothing = await api.get("/v1/payments", reference="till9/1")
            assert nothing.json() == {"payments": []}

            totals = (await api.get("/v1/totals")).json()
            assert totals["date"] == dt.datetime.now(dt.UTC).date().isoformat()
            assert totals["lines"] == [
                {"type": "purchase", "status": "approved", "currency": "GBP", "count": 1,
                 "amount": 1250}
            ]  # fmt: skip
            yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
            old = await api.get("/v1/totals", date=yesterday.isoformat())
            assert old.json()["lines"] == []

            voided = await api.post(f"/v1/payments/{first['id']}/void")
            assert voided.status_code == 200, voided.text
            void = voided.json()
            assert void["type"] == "void" and void["status"] == "approved"
            assert void["id"] != first["id"] and void["amount"] == 1250
            twice = await api.post(f"/v1/payments/{first['id']}/void")
            assert twice.json()["id"] == void["id"]  # the first void's result, not a second
            lines = (await api.get("/v1/totals")).json()["lines"]
            assert {(x["type"], x["count"]) for x in lines} == {("purchase", 1), ("void", 1)}
            missing = await api.post("/v1/payments/9999/void")
            assert missing.status_code == 404
            return done

    done = asyncio.run(body())
    assert done["status"] == "approved", done["message"]
    assert done["response_code"] == "00" and done["authorization_code"]
    assert done["masked_pan"] == "476173******0010" and done["cryptogram"]
    assert sim.snapshot(PAN).balance == before  # taken, then given back by the void


def test_busy_then_cancel_while_waiting_for_the_card(
    rig: Rig, pcscd_vpcd: PcscdService, vpcd_card: CardSlot, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    del vpcd_card  # the reader stays empty: the terminal waits for a card

    async def body() -> None:
        async with ecr_api(rig, pcscd_vpcd, tmp_path, pad) as api:
            first = (await api.create(idempotency_key="till1-0100")).json()
            await api.pending(first["id"])
            assert (await api.get(f"/v1/payments/{first['id']}")).json()["cancellable"] is True
            busy = await api.create(idempotency_key="till1-0101", reference="till1/43")
            assert busy.status_code == 409
            assert (
                busy.json()["error"] == "busy" and "one payment at a time" in busy.json()["message"]
            )
            same = await api.create(idempotency_key="till1-0100")  # a retry is not "busy"
            assert same.status_code == 202 and same.json()["id"] == first["id"]

            cancelled = await api.post(f"/v1/payments/{first['id']}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            payment = cancelled.json()
            assert payment["status"] == "not_completed"
            assert payment["message"] == "Not completed: cancelled by the register"
            record = await api.agent.journal.get(first["id"])
            assert record is not None and record.state == "not_completed"
            assert api.agent.display.kinds()[-2:] == ["not_completed", "remove_card"]
            again = await api.post(f"/v1/payments/{first['id']}/cancel")
            assert again.status_code == 409 and again.json()["error"] == "not_cancellable"
            assert (await api.post("/v1/payments/777/cancel")).status_code == 404
            unvoidable = await api.post(f"/v1/payments/{first['id']}/void")
            assert unvoidable.status_code == 409 and unvoidable.json()["error"] == "not_voidable"

            # The reader is free again: the next payment starts, and is cancelled too.
            second = await api.create(idempotency_key="till1-0101", reference="till1/43")
            assert second.status_code == 202 and second.json()["id"] != first["id"]
            await api.pending(second.json()["id"])
            done = await api.post(f"/v1/payments/{second.json()['id']}/cancel")
            assert done.json()["status"] == "not_completed"
            totals = (await api.get("/v1/totals")).json()["lines"]
            assert totals == [
                {"type": "purchase", "status": "not_completed", "currency": "GBP", "count": 2,
                 "amount": 2500}
            ]  # fmt: skip

    async def after_restart() -> None:
        async with ecr_api(rig, pcscd_vpcd, tmp_path, pad) as api:
            again = await api.create(idempotency_key="till1-0100")
            assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
            assert again.json()["id"] == 1 and again.json()["status"] == "not_completed"
            assert len(await api.agent.journal.recent()) == 2  # no third payment

    asyncio.run(body())
    pad.stop()  # the whole agent restarts, the PIN pad is plugged in again
    pad.start()
    asyncio.run(after_restart())  # the same journal file, a new agent and app


def test_cancel_during_pin_entry(
    rig: Rig, pcscd_vpcd: PcscdService, vpcd_card: CardSlot, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    vpcd_card(EmvCard(load_profile("visa_credit")))  # no PIN queued: the pad waits

    async def body() -> None:
        async with ecr_api(rig, pcscd_vpcd, tmp_path, pad) as api:
            payment = (await api.create(idempotency_key="till1-0300")).json()
            async with asyncio.timeout(10):
                while "enter_pin" not in api.agent.display.kinds():
                    await asyncio.sleep(0.02)
            cancelled = await api.post(f"/v1/payments/{payment['id']}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json()["status"] == "not_completed"
            assert "cancelled by the register" in cancelled.json()["message"]
            record = await api.agent.journal.get(payment["id"])
            assert record is not None and record.state == "not_completed"
            assert not record.message_ids  # nothing went to the host

    asyncio.run(body())


PROTECTED = [
    ("GET", "/v1/payments/1"),
    ("GET", "/v1/payments?reference=x"),
    ("GET", "/v1/totals"),
    ("POST", "/v1/payments"),
    ("POST", "/v1/payments/1/cancel"),
    ("POST", "/v1/payments/1/void"),
]
BAD_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("string amount", {"amount": "1250"}, "amount"),
    ("float amount", {"amount": 12.5}, "amount"),
    ("zero amount", {"amount": 0}, "amount"),
    ("negative amount", {"amount": -5}, "amount"),
    ("huge amount", {"amount": 10**12}, "amount"),
    ("bool amount", {"amount": True}, "amount"),
    ("unknown currency", {"currency": "XYZ"}, "currency"),
    ("lower-case currency", {"currency": "gbp"}, "currency"),
    ("numeric currency", {"currency": "826"}, "currency"),
    ("bad type", {"type": "void"}, "type"),
    ("extra field", {"pan": "4761739001010010"}, "pan"),
    ("key with a space", {"idempotency_key": "a b"}, "idempotency_key"),
    ("long key", {"idempotency_key": "k" * 65}, "idempotency_key"),
    ("long reference", {"reference": "r" * 65}, "reference"),
    ("control in reference", {"reference": "a\nb"}, "reference"),
]


def test_token_and_input_validation(
    rig: Rig, pcscd_vpcd: PcscdService, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    async def body() -> None:
        async with ecr_api(rig, pcscd_vpcd, tmp_path, pad) as api:
            client = api.client
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": f"Basic {TOKEN}"},
                            {"Authorization": f"Bearer {TOKEN}x"}):  # fmt: skip
                for method, path in PROTECTED:
                    refused = await client.request(method, path, headers=headers, json={})
                    assert refused.status_code == 401, (headers, path)
                    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
                    assert refused.json()["error"] == "unauthorized"
            base = {"amount": 1250, "currency": "GBP", "idempotency_key": "till1-0200"}
            for name, change, field in BAD_BODIES:
                response = await client.post("/v1/payments", json=base | change, headers=AUTH)
                assert response.status_code == 422, name
                problem = response.json()
                assert problem["fields"] == [field], name
                assert field in problem["message"], name
                assert "4761739001010010" not in response.text  # never echoed
            missing = await client.post("/v1/payments", json={"amount": 5}, headers=AUTH)
            assert missing.status_code == 422
            assert missing.json()["fields"] == ["currency", "idempotency_key"]
            broken = await client.post(
                "/v1/payments",
                content=b'{"amount": 12',
                headers=AUTH | {"Content-Type": "application/json"},
            )
            assert broken.status_code == 400 and broken.json()["error"] == "bad_json"
            for path in ("/v1/payments/0", "/v1/payments/abc", f"/v1/payments/{2**63}"):
                assert (await client.get(path, headers=AUTH)).status_code == 422, path
            no_ref = await client.get("/v1/payments", headers=AUTH)
            assert no_ref.status_code == 422 and no_ref.json()["fields"] == ["reference"]
            bad_day = await client.get("/v1/totals", params={"date": "yesterday"}, headers=AUTH)
            assert bad_day.status_code == 422 and bad_day.json()["fields"] == ["date"]
            assert await api.agent.journal.recent() == []  # nothing reached the terminal

    asyncio.run(body())


def test_openapi_is_served_with_the_bearer_scheme(
    rig: Rig, pcscd_vpcd: PcscdService, pad: EmulatedPinpad, tmp_path: Path
) -> None:
    async def body() -> dict[str, Any]:
        async with ecr_api(rig, pcscd_vpcd, tmp_path, pad) as api:
            response = await api.client.get("/openapi.json")
            assert response.status_code == 200
            schema: dict[str, Any] = response.json()
            return schema

    schema = asyncio.run(body())
    assert set(schema["paths"]) == {
        "/v1/payments", "/v1/payments/{payment_id}", "/v1/payments/{payment_id}/cancel",
        "/v1/payments/{payment_id}/void", "/v1/totals", "/v1/payments/recent",
        "/v1/payments/{payment_id}/receipt", "/v1/payments/{payment_id}/receipt/print",
        "/v1/batches/close", "/v1/batches",
    }  # fmt: skip
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    create = schema["components"]["schemas"]["PaymentCreate"]
    assert create["additionalProperties"] is False
