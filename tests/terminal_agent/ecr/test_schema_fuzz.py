"""Schema fuzz: schemathesis draws valid and invalid requests for every operation of the
app's own OpenAPI document and sends them to the app around the real agent (running in
an event loop thread, devices emulated); no answer may be a 5xx, and every error is the
documented JSON shape."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from hardware.pcsc.pcscd import PcscdService
from hardware.pinpad import EmulatedPinpad
from tests.gateway_bridge.rig import Rig
from tests.terminal_agent.ecr.harness import AUTH, Api, ecr_api


class Served:
    """The ECR app around the real agent, alive in an event loop on another thread."""

    def __init__(self, rig: Rig, pcscd: PcscdService, tmp_path: Path, pad: EmulatedPinpad) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ready: concurrent.futures.Future[Api] = concurrent.futures.Future()
        self.stop = asyncio.Event()

        async def hold() -> None:
            try:
                # No bridge runs: a batch close waits host_timeout for it, so keep it short.
                async with ecr_api(rig, pcscd, tmp_path, pad, host_timeout=0.3) as api:
                    self.ready.set_result(api)
                    await self.stop.wait()
            except Exception as exc:  # surfaced to the test through ``ready``
                if not self.ready.done():
                    self.ready.set_exception(exc)
                raise

        self.held = asyncio.run_coroutine_threadsafe(hold(), self.loop)
        self.api = self.ready.result(timeout=30)

    def request(self, **kwargs: Any) -> httpx.Response:
        call = self.api.client.request(**kwargs)
        return asyncio.run_coroutine_threadsafe(call, self.loop).result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.held.result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def served(
    rig: Rig, pcscd_vpcd: PcscdService, pad: EmulatedPinpad, tmp_path: Path
) -> Iterator[Served]:
    # httpx logs each URL at INFO; fuzzed ids are digit runs some of which pass Luhn and
    # would trip the suite's card-data guard. That is the test client's log, not the app's.
    quiet = logging.getLogger("httpx")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    server = Served(rig, pcscd_vpcd, tmp_path, pad)
    try:
        yield server
    finally:
        server.close()
        quiet.setLevel(level)


def test_no_request_makes_a_server_error(served: Served) -> None:
    document = served.request(method="GET", url="/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 11
    cases = st.one_of([op.as_strategy(mode) for op in operations for mode in GenerationMode])
    seen: set[int] = set()

    @settings(
        max_examples=250,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(case=cases, authorised=st.sampled_from([True, True, True, False]))
    def check(case: schemathesis.Case[Any], authorised: bool) -> None:
        kwargs = case.as_transport_kwargs()
        headers = {k: str(v) for k, v in dict(kwargs.get("headers") or {}).items()}
        if authorised:
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"} | AUTH
        kwargs["headers"] = headers
        kwargs.pop("cookies", None)
        if "data" in kwargs:
            kwargs["content"] = kwargs.pop("data")
        response = served.request(**kwargs)
        seen.add(response.status_code)
        assert response.status_code < 500, (case.method, case.path, response.text)
        if response.status_code >= 400:
            problem = response.json()
            assert set(problem) == {"error", "message", "fields"}, response.text
        if not authorised:
            assert response.status_code in (401, 422, 404, 405), response.text

    check()
    # The fuzz reached the handlers, not only the validation and the token check.
    assert {401, 422} <= seen and seen & {200, 202, 404, 409}, seen
