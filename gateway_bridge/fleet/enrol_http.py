"""The enrolment service over HTTPS (docs/provisioning.md).

Three routes and nothing else::

    GET  /v1/ca              the CA bundle (PEM); the terminal keeps it only if it matches
                             the pin typed with the code
    POST /v1/enrol           paycore.enrolment.EnrolRequest -> EnrolResponse
    POST /v1/enrol/confirm   paycore.enrolment.ConfirmRequest -> 204

Errors are ``{"error": reason, "message": text for the technician}`` with a 4xx status.
Requests are limited per client address (``rate_per_minute``, wrong codes included) and
in size; bodies are decoded by :mod:`paycore.enrolment` alone, so a malformed body gets
the same clear 400 as any other bad request.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from gateway_bridge.fleet.enrolment import EnrolmentDenied, EnrolmentService
from paycore import enrolment as proto

MAX_BODY = 64 * 1024


class RateLimiter:
    """At most ``per_minute`` requests per key in any sliding minute."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: defaultdict[str, deque[float]] = defaultdict(deque)

    def allow(self, key: str, now: float) -> float:
        """0 if allowed (and counted), else the seconds until it would be."""
        window = self._seen[key]
        while window and now - window[0] >= 60.0:
            window.popleft()
        if len(window) >= self.per_minute:
            return 60.0 - (now - window[0])
        window.append(now)
        if len(self._seen) > 10_000:  # forget quiet addresses
            for other in [k for k, v in self._seen.items() if not v or now - v[-1] >= 60.0]:
                del self._seen[other]
        return 0.0


def _error(
    status: int, reason: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse({"error": reason, "message": message}, status_code=status, headers=headers)


def create_enrolment_app(service: EnrolmentService) -> FastAPI:
    app = FastAPI(title="POS enrolment", docs_url=None, redoc_url=None, openapi_url=None)
    limiter = RateLimiter(service.settings.rate_per_minute)

    async def body_of(request: Request) -> bytes | Response:
        peer = request.client.host if request.client else "unknown"
        wait = limiter.allow(peer, time.monotonic())
        if wait:
            service.audit.record("rate_limited", peer=peer, path=request.url.path)
            return _error(
                429,
                "rate_limited",
                "too many requests from this address: wait a minute",
                {"Retry-After": str(int(wait) + 1)},
            )
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            return _error(413, "too_large", "the request is too large")
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error(413, "too_large", "the request is too large")
        return body

    @app.get("/v1/ca")
    async def ca_bundle() -> Response:
        return PlainTextResponse(service.ca_bundle(), media_type="application/x-pem-file")

    @app.post("/v1/enrol")
    async def enrol(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        peer = request.client.host if request.client else "unknown"
        try:
            message = proto.decode_request(body)
            answer = await service.enrol(message, peer)
        except proto.EnrolmentError as exc:
            return _error(400, "request", str(exc))
        except EnrolmentDenied as exc:
            return _error(exc.status, exc.reason, str(exc))
        return Response(answer.model_dump_json(), media_type="application/json")

    @app.post("/v1/enrol/confirm")
    async def confirm(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        peer = request.client.host if request.client else "unknown"
        try:
            await service.confirm(proto.decode_confirm(body), peer)
        except proto.EnrolmentError as exc:
            return _error(400, "request", str(exc))
        except EnrolmentDenied as exc:
            return _error(exc.status, exc.reason, str(exc))
        return Response(status_code=204)

    return app
