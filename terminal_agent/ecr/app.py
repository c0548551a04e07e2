"""The ECR integration API over HTTP: JSON for cash registers (docs/ecr-api.md).

:func:`create_app` builds the ASGI application (FastAPI) around one
:class:`~terminal_agent.transaction.PaymentTerminal`; the CLI serves it with uvicorn on
``[ecr] host``/``port``. Every route needs ``Authorization: Bearer <token>`` (RFC 6750),
compared in constant time; a missing or wrong token is 401 with ``WWW-Authenticate``.
Errors are one JSON shape (:class:`~terminal_agent.ecr.models.Problem`) that names the
offending fields and never repeats what was sent.
"""

import contextlib
import datetime as dt
import hmac
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from terminal_agent.ecr.models import (
    BatchList,
    BatchOut,
    Payment,
    PaymentCreate,
    PaymentList,
    Printed,
    Problem,
    Totals,
)
from terminal_agent.ecr.service import EcrError, EcrService
from terminal_agent.ecr.settings import EcrSettings, read_token
from terminal_agent.journal import JournalTransientError
from terminal_agent.receipts import Copy, MerchantSettings, PrinterSettings, render_html
from terminal_agent.transaction import PaymentTerminal

PaymentId = Annotated[int, Path(ge=1, le=2**62, description="The payment's id")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong bearer token"},
    422: {"model": Problem, "description": "Invalid input: the fields are named"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No such id"}}
_CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": Problem, "description": "Conflict"}}
_CHALLENGE = 'Bearer realm="ecr"'
_RECEIPT_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


def _problem(status: int, error: str, message: str, fields: list[str] | None = None) -> Response:
    body = Problem(error=error, message=message, fields=fields or [])
    headers = (
        {"WWW-Authenticate": _CHALLENGE + ', error="invalid_token"'} if status == 401 else None
    )
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _token_ok(authorization: bytes, secret: bytes) -> bool:
    scheme, _, given = authorization.partition(b" ")
    # Constant time over the token; the scheme is case-insensitive (RFC 7235 2.1).
    same = hmac.compare_digest(given.strip(), secret)
    return scheme.lower() == b"bearer" and same


class BearerGuard:
    """ASGI middleware: ``/v1/`` needs the bearer token, checked before the body is read
    (so nobody without it learns anything from validation answers)."""

    def __init__(self, app: ASGIApp, secret: bytes) -> None:
        self.app = app
        self.secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope["path"]).startswith("/v1/"):
            headers = dict(scope["headers"])
            if not _token_ok(headers.get(b"authorization", b""), self.secret):
                response = _problem(401, "unauthorized", "missing or wrong bearer token")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    terminal: PaymentTerminal,
    settings: EcrSettings,
    *,
    token: SecretStr | None = None,
    merchant: MerchantSettings | None = None,
    printer: PrinterSettings | None = None,
) -> FastAPI:
    """The ASGI app for ``terminal``; the token is read from ``settings.token_file``
    unless given (:class:`~terminal_agent.config.ConfigError` if that file is unsafe).

    ``merchant`` (the ``[receipts]`` section) is needed for receipts, ``printer`` for
    printing them; without them those routes answer 409.
    """
    secret = (token or read_token(settings.token_file)).get_secret_value().encode()
    service = EcrService(
        terminal, scan_limit=settings.scan_limit, start_timeout_s=settings.start_timeout_s
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        del app
        try:
            yield
        finally:
            await service.aclose()

    app = FastAPI(
        title="POS terminal ECR API",
        version="1",
        description="Payments on this terminal for a cash register (docs/ecr-api.md).",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.state.ecr = service
    app.add_middleware(BearerGuard, secret=secret)
    bearer = HTTPBearer(auto_error=False, description="The token from [ecr] token_file")

    async def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        # BearerGuard has checked already; this declares the scheme in the OpenAPI document.
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, secret):
            raise HTTPException(401, "missing or wrong bearer token")

    @app.exception_handler(EcrError)
    async def ecr_error(request: Request, exc: EcrError) -> Response:
        del request
        return _problem(exc.status, exc.code, str(exc))

    @app.exception_handler(JournalTransientError)
    async def journal_busy(request: Request, exc: JournalTransientError) -> Response:
        del request, exc
        return _problem(503, "unavailable", "the journal cannot be used now: try again")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        del request
        codes = {400: "bad_request", 401: "unauthorized", 404: "not_found",
                 405: "method_not_allowed"}  # fmt: skip
        return _problem(exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        del request
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _problem(400, "bad_json", "the body is not valid JSON", ["body"])
        fields = sorted({_field(tuple(e.get("loc", ()))) for e in errors})
        # The pydantic messages describe the rule, not the value sent: safe to return.
        text = "; ".join(f"{_field(tuple(e.get('loc', ())))}: {e.get('msg', '')}" for e in errors)
        return _problem(422, "invalid", text, fields)

    auth = [Depends(authorised)]

    @app.post(
        "/v1/payments",
        status_code=202,
        response_model=Payment,
        dependencies=auth,
        responses=_CONFLICT,
        summary="Start a payment (runs in the background; poll it)",
    )
    async def create_payment(body: PaymentCreate, response: Response) -> Payment:
        payment, replayed = await service.create(body)
        response.headers["Idempotent-Replayed"] = "true" if replayed else "false"
        response.headers["Location"] = f"/v1/payments/{payment.id}"
        return payment

    @app.get(
        "/v1/payments",
        response_model=PaymentList,
        dependencies=auth,
        summary="Payments with a register reference",
    )
    async def list_payments(
        reference: Annotated[str, Query(max_length=64, description="The register's reference")],
    ) -> PaymentList:
        return PaymentList(payments=await service.by_reference(reference))

    @app.get(
        "/v1/payments/recent",
        response_model=PaymentList,
        dependencies=auth,
        summary="The newest payments first (masked PANs only)",
    )
    async def recent_payments(
        limit: Annotated[int, Query(ge=1, le=200, description="How many, 1 to 200")] = 20,
    ) -> PaymentList:
        return PaymentList(payments=await service.recent(limit))

    @app.get(
        "/v1/payments/{payment_id}",
        response_model=Payment,
        dependencies=auth,
        responses=_NOT_FOUND,
        summary="One payment",
    )
    async def get_payment(payment_id: PaymentId) -> Payment:
        return await service.get(payment_id)

    @app.post(
        "/v1/payments/{payment_id}/cancel",
        response_model=Payment,
        dependencies=auth,
        responses={**_NOT_FOUND, **_CONFLICT},
        summary="Cancel while the card or PIN is awaited",
    )
    async def cancel_payment(payment_id: PaymentId) -> Payment:
        return await service.cancel(payment_id)

    @app.post(
        "/v1/payments/{payment_id}/void",
        response_model=Payment,
        dependencies=auth,
        responses={**_NOT_FOUND, **_CONFLICT},
        summary="Void the last approved purchase (returns the void)",
    )
    async def void_payment(payment_id: PaymentId) -> Payment:
        return await service.void(payment_id)

    @app.get(
        "/v1/payments/{payment_id}/receipt",
        dependencies=auth,
        responses={**_NOT_FOUND, **_CONFLICT, 200: {"content": {"text/html": {}}}},
        response_class=HTMLResponse,
        summary="One copy of a finished payment's receipt, as an escaped HTML snippet",
    )
    async def receipt_html(
        payment_id: PaymentId,
        copy: Annotated[Copy, Query(description="customer or merchant")] = "customer",
    ) -> Response:
        receipt = await service.receipt(payment_id, copy, merchant)
        return HTMLResponse(render_html(receipt), headers=_RECEIPT_HEADERS)

    @app.post(
        "/v1/payments/{payment_id}/receipt/print",
        response_model=Printed,
        dependencies=auth,
        responses={**_NOT_FOUND, **_CONFLICT, 503: {"model": Problem}},
        summary="Print the customer and merchant copies again",
    )
    async def print_receipt_again(payment_id: PaymentId) -> Printed:
        sent = await service.print_receipts(payment_id, merchant, printer)
        return Printed(copies=["customer", "merchant"], bytes=sent)

    @app.post(
        "/v1/batches/close",
        response_model=BatchOut,
        dependencies=auth,
        summary="Close the terminal batch (end of day) and settle it with the host",
    )
    async def close_batch(
        idempotency_key: Annotated[
            str | None,
            Header(
                pattern=r"^[\x21-\x7E]{1,64}$",
                description="A repeat returns the same batch and retries its settlement",
            ),
        ] = None,
    ) -> BatchOut:
        return await service.close_batch(idempotency_key)

    @app.get("/v1/batches", response_model=BatchList, dependencies=auth, summary="Closed batches")
    async def list_batches(
        limit: Annotated[int, Query(ge=1, le=200, description="How many, 1 to 200")] = 20,
    ) -> BatchList:
        return BatchList(batches=await service.batches(limit))

    @app.get("/v1/totals", response_model=Totals, dependencies=auth, summary="A day's totals")
    async def totals(
        date: Annotated[dt.date | None, Query(description="UTC day, default today")] = None,
    ) -> Totals:
        return await service.totals(date or dt.datetime.now(dt.UTC).date())

    return app
