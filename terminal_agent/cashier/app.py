"""The cashier screen: one page for a touchscreen in kiosk mode (issue 7, docs/cashier-screen.md).

:func:`add_cashier_routes` adds to the ECR app (:func:`terminal_agent.ecr.create_app`):

- ``GET /cashier``: the page, server-rendered, with the ECR bearer token in a ``<meta>``;
- ``GET /cashier/static/{name}``: its script and style sheet (no build step, no CDN);
- ``GET /cashier/events``: server-sent events (WHATWG HTML "Server-sent events"):
  ``prompt`` for every :class:`~terminal_agent.display.Prompt`, ``health`` for the banners;
- ``GET /v1/cashier/last-purchase``: the id of the last approved purchase (for "Void last"),
  behind the bearer token like every ``/v1/`` route.

The page's actions (pay, refund, cancel, void) are the ECR API's own ``/v1/`` routes with
the bearer token: nothing is duplicated. ``/cashier*`` is answered only to a loopback
client that also names a loopback host (``Host: localhost``/``127.0.0.1``/``[::1]``, so a
DNS-rebinding page cannot read the token); anything else is 403. Every answer forbids
caching and framing and allows scripts from this origin only (CSP).
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import SecretStr

from terminal_agent.cashier.feed import (
    DEFAULT_KEY_THRESHOLD,
    Banner,
    CashierFeed,
    KeyWatch,
    banners_json,
    health,
    prompt_json,
    sse_event,
)
from terminal_agent.ecr import EcrSettings, create_app
from terminal_agent.pinpad import PinpadDriver
from terminal_agent.receipts import MerchantSettings, PrinterSettings
from terminal_agent.transaction import PaymentTerminal

__all__ = ["DEFAULT_CURRENCIES", "add_cashier_routes", "create_cashier_app"]

STATIC: Final = Path(__file__).parent / "static"
#: ISO 4217 codes offered on the page, with their minor-unit exponent.
DEFAULT_CURRENCIES: Final[Mapping[str, int]] = {"GBP": 2, "EUR": 2, "USD": 2}
_STATIC_TYPES: Final = {"cashier.js": "text/javascript", "cashier.css": "text/css"}
_LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
_FORBIDDEN: Final = "The cashier screen is served on this terminal's own screen only."


def is_local(request: Request) -> bool:
    """True for a loopback peer that asked for a loopback host name."""
    peer = request.client.host if request.client is not None else ""
    try:
        loopback = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False
    host = request.headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return loopback and name.lower() in _LOOPBACK_NAMES


def render_page(token: str, currencies: Mapping[str, int]) -> str:
    """The page's HTML; the token and currencies go in ``<meta>`` (no inline script)."""
    codes = ",".join(f"{code}:{exp}" for code, exp in currencies.items())
    options = "".join(
        f'<option value="{html.escape(c)}">{html.escape(c)}</option>' for c in currencies
    )
    return _PAGE.format(token=html.escape(token, quote=True), currencies=html.escape(codes),
                        options=options)  # fmt: skip


def add_cashier_routes(
    app: FastAPI,
    terminal: PaymentTerminal,
    feed: CashierFeed,
    *,
    token: SecretStr,
    pinpad: PinpadDriver | None = None,
    currencies: Mapping[str, int] = DEFAULT_CURRENCIES,
    health_interval_s: float = 0.5,
    key_threshold: int = DEFAULT_KEY_THRESHOLD,
    key_interval_s: float = 30.0,
) -> None:
    """Add the cashier routes to the ECR ``app`` built around the same ``terminal``.

    ``token`` is the ECR bearer token (the page sends it); ``pinpad`` defaults to the
    driver of the terminal's ``PadCardholder``. The keys-low banners show when the PIN
    pad's PIN key (the cardholder's ``pin_key_slot``) or the terminal's own DUKPT counter
    space has fewer than ``key_threshold`` keys left (checked every ``key_interval_s``).
    """
    if pinpad is None:
        found = getattr(terminal.cardholder, "pinpad", None)
        pinpad = found if isinstance(found, PinpadDriver) else None
    slot = getattr(terminal.cardholder, "pin_key_slot", 1)
    keys = KeyWatch(
        pinpad,
        terminal.journal,
        slot=slot if isinstance(slot, int) else 1,
        threshold=key_threshold,
        interval_s=key_interval_s,
    )
    page = render_page(token.get_secret_value(), currencies)

    async def banners() -> list[Banner]:
        return health(terminal.reader, pinpad, terminal.link) + await keys.banners()

    def forbidden() -> Response:
        return Response(_FORBIDDEN, status_code=403, media_type="text/plain", headers=_HEADERS)

    @app.get("/cashier", include_in_schema=False)
    async def cashier_page(request: Request) -> Response:
        if not is_local(request):
            return forbidden()
        return HTMLResponse(page, headers=_HEADERS)

    @app.get("/cashier/static/{name}", include_in_schema=False)
    async def cashier_static(name: str, request: Request) -> Response:
        if not is_local(request):
            return forbidden()
        media = _STATIC_TYPES.get(name)
        if media is None:  # a fixed list: no path from the request reaches the disk
            return Response("not found", status_code=404, headers=_HEADERS)
        return Response((STATIC / name).read_bytes(), media_type=media, headers=_HEADERS)

    @app.get("/cashier/events", include_in_schema=False)
    async def cashier_events(request: Request) -> Response:
        if not is_local(request):
            return forbidden()
        queue = feed.subscribe()

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 1000\n\n"
                yield sse_event("prompt", prompt_json(feed.last))
                shown = banners_json(await banners())
                yield sse_event("health", shown)
                while True:
                    try:
                        prompt = await asyncio.wait_for(queue.get(), health_interval_s)
                    except TimeoutError:
                        if await request.is_disconnected():
                            return
                    else:
                        if prompt is None:
                            return
                        yield sse_event("prompt", prompt_json(prompt))
                    now = banners_json(await banners())
                    if now != shown:
                        shown = now
                        yield sse_event("health", now)
            finally:
                feed.unsubscribe(queue)

        headers = dict(_HEADERS) | {"X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    @app.get("/v1/cashier/last-purchase", include_in_schema=False)
    async def last_purchase() -> Response:
        records = await terminal.journal.recent(50, state="completed")
        last = next((r for r in records if r.transaction_type == "purchase"), None)
        body = {"id": last.local_id if last is not None else None}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})


def create_cashier_app(
    terminal: PaymentTerminal,
    settings: EcrSettings,
    feed: CashierFeed,
    *,
    token: SecretStr,
    pinpad: PinpadDriver | None = None,
    currencies: Mapping[str, int] = DEFAULT_CURRENCIES,
    merchant: MerchantSettings | None = None,
    printer: PrinterSettings | None = None,
    key_threshold: int = DEFAULT_KEY_THRESHOLD,
    key_interval_s: float = 30.0,
) -> FastAPI:
    """The ECR app (:func:`terminal_agent.ecr.create_app`) with the cashier screen added.

    ``feed`` must be one of the displays the terminal and its cardholder seam show
    prompts on (put it in their ``FanOut``). Call ``feed.close()`` before stopping the
    server: it ends the open pages' event streams, which uvicorn otherwise waits for.
    ``merchant`` and ``printer`` (the agent's ``[receipts]`` and ``[printer]``) make the
    receipt view and reprint work; without them those answer 409.
    """
    app = create_app(terminal, settings, token=token, merchant=merchant, printer=printer)
    add_cashier_routes(
        app, terminal, feed, token=token, pinpad=pinpad, currencies=currencies,
        key_threshold=key_threshold, key_interval_s=key_interval_s,
    )  # fmt: skip
    return app


_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1, user-scalable=no">
<meta name="cashier-token" content="{token}">
<meta name="cashier-currencies" content="{currencies}">
<title>Cashier</title>
<link rel="stylesheet" href="/cashier/static/cashier.css">
<script src="/cashier/static/cashier.js" defer></script>
</head>
<body>
<div id="banners" role="alert" aria-live="assertive"></div>
<main>
  <section id="entry">
    <div id="amount-row">
      <select id="currency" aria-label="Currency">{options}</select>
      <output id="amount" aria-live="polite">0.00</output>
    </div>
    <div id="keypad">
      <button class="key" data-key="1">1</button><button class="key" data-key="2">2</button>
      <button class="key" data-key="3">3</button><button class="key" data-key="4">4</button>
      <button class="key" data-key="5">5</button><button class="key" data-key="6">6</button>
      <button class="key" data-key="7">7</button><button class="key" data-key="8">8</button>
      <button class="key" data-key="9">9</button><button class="key" data-key="clear"
        aria-label="Clear">C</button>
      <button class="key" data-key="0">0</button><button class="key" data-key="back"
        aria-label="Delete last digit">&#9003;</button>
    </div>
  </section>
  <section id="side">
    <div id="status" class="idle" aria-live="polite">
      <div id="headline">READY</div>
      <div id="detail">Enter the amount, then Pay</div>
      <div id="extra"></div>
    </div>
    <div id="actions">
      <button id="pay" class="action pay">Pay</button>
      <button id="refund" class="action refund">Refund</button>
      <button id="void" class="action void">Void last</button>
      <button id="cancel" class="action cancel" hidden>Cancel</button>
      <button id="show-history" class="action nav">History</button>
      <button id="show-totals" class="action nav">Totals</button>
    </div>
  </section>
</main>
<section id="history" class="view" hidden aria-label="History">
  <header><h2>History</h2><button class="close-view">Close</button></header>
  <ol id="history-list"></ol>
</section>
<section id="receipt" class="view" hidden aria-label="Receipt">
  <header><h2>Receipt</h2>
    <button id="receipt-customer">Customer</button><button id="receipt-merchant">Merchant</button>
    <button id="receipt-print">Print</button><button class="close-view">Close</button></header>
  <div id="receipt-message" aria-live="polite"></div>
  <div id="receipt-body"></div>
</section>
<section id="totals" class="view" hidden aria-label="Totals">
  <header><h2>Totals</h2><button id="close-batch">Close batch</button>
    <button class="close-view">Close</button></header>
  <h3>Today</h3><table id="totals-today"></table>
  <h3>Last batch</h3><div id="batch-info"></div>
  <div id="batch-settlement" aria-live="polite" hidden>
    <div id="settlement-verdict"></div>
    <ul id="settlement-differences"></ul>
    <button id="settle-again" hidden>Settle again</button>
  </div>
  <table id="totals-batch"></table>
</section>
</body>
</html>
"""
