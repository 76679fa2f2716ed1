"""The harness itself, driven with the sandbox: if this fails, every provider test would."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.executor.conftest import AppFactory
from tests.executor.support import transfers_by_payout
from tests.gateways.harness import (
    approved_payout_to,
    assert_paid_exactly_once,
    drain_all,
    provider_app,
    serve_asgi,
)


async def test_serve_asgi_answers_over_a_real_socket() -> None:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"body": (await request.body()).decode()})

    app = Starlette(routes=[Route("/echo", echo, methods=["POST"])])
    async with serve_asgi(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/echo", content=b"hi")
    assert response.json() == {"body": "hi"}


async def test_drain_and_exactly_once_checks_with_the_sandbox(make_app: AppFactory) -> None:
    app, client = await provider_app(make_app, gateway="sandbox", recipient_type="alipay")
    runtime = app.state.runtime
    recipient = {"type": "alipay", "account": "13900001111", "name": "张三"}
    for amount in ("12.34", "9.99", "9.98"):
        await approved_payout_to(client, runtime, recipient, amount, "CNY")
    final = await drain_all(runtime)
    ledger = await transfers_by_payout(runtime.db)
    booked = {t.idempotency_key: [t.status] for ts in ledger.values() for t in ts}
    assert await assert_paid_exactly_once(runtime, booked) == final
    assert sorted(final.values()) == ["failed", "succeeded", "succeeded"]
    # The check catches a double booking.
    key = next(iter(booked))
    booked[key] = [*booked[key], "succeeded"]
    try:
        await assert_paid_exactly_once(runtime, booked)
    except AssertionError:
        return
    raise AssertionError("a double booking went unnoticed")
