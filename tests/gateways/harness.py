"""What every provider adapter's tests share: a real HTTP server on loopback for the fake
provider, an app routed to the adapter, approved payouts, and the exactly-once checks.

Each fake provider is an ASGI app (Starlette) served here by uvicorn on 127.0.0.1 with a
free port, in the test's own event loop, so the adapter talks to it over a real socket.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn

from payoutsvc.executor.service import Executor
from payoutsvc.gateways.registry import GatewayRegistry
from payoutsvc.payouts.status import PayoutStatus
from payoutsvc.runtime import Runtime
from tests.executor.conftest import AppFactory
from tests.executor.support import (
    REQUESTER,
    FakeClock,
    approve_if_pending,
    drain,
    events_by_payout,
    payout_rows,
    setup_operators,
    walk_is_allowed,
)
from tests.helpers import eventually, payout_body

# Retries come quickly so a fault-injection scenario drains in well under a second of
# (fake-clock) waiting; the real schedule is configuration.
FAST_SCHEDULE = {"executor_retry_schedule": "1,1,1,1,1,1"}

_unique = itertools.count(int.from_bytes(os.urandom(3), "big"))


def unique_ticket() -> dict[str, str]:
    return {"system": "zendesk", "id": f"gw-{next(_unique) % 10**9}"}


@asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) until the block ends; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))

    def started() -> bool:
        if task.done():
            task.result()  # surfaces the startup error
        return bool(server.started)

    await eventually(started, interval=0.005, what="the server to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def provider_app(
    make_app: AppFactory, *, gateway: str, recipient_type: str, **overrides: Any
) -> tuple[Any, httpx.AsyncClient]:
    """The service with ``recipient_type`` routed to ``gateway`` (the adapter reads its
    credentials from the environment: set them with monkeypatch before calling)."""
    settings: dict[str, Any] = {
        **FAST_SCHEDULE,
        "gateway_routes": f"{recipient_type}={gateway}",
        **overrides,
    }
    app, client = await make_app(**settings)
    await setup_operators(client)
    return app, client


async def approved_payout_to(
    client: httpx.AsyncClient,
    runtime: Runtime,
    recipient: Mapping[str, Any],
    amount: str,
    currency: str,
) -> dict[str, Any]:
    """A payout to ``recipient`` created through the API and approved."""
    body = payout_body(
        amount=amount,
        currency=currency,
        ticket=unique_ticket(),
        recipient=dict(recipient),
        requested_by=REQUESTER,
    )
    created = await client.post(
        "/v1/payouts", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    assert created.status_code == 201, created.text
    payout = await approve_if_pending(runtime, created.json())
    assert payout["status"] == PayoutStatus.APPROVED.value, payout
    return payout


def executor_for(runtime: Runtime) -> tuple[Executor, FakeClock, GatewayRegistry]:
    """An executor on the app's runtime with a fake clock (drain moves it past each wait)."""
    clock = FakeClock()
    gateways = GatewayRegistry(runtime)
    return Executor(runtime, gateways, clock=clock, worker_id="gw-test"), clock, gateways


async def drain_all(runtime: Runtime, *, max_rounds: int = 200) -> dict[str, str]:
    """Run the executor until no payout is active; returns every payout's final status."""
    executor, clock, gateways = executor_for(runtime)
    try:
        await drain(executor, clock, max_rounds=max_rounds)
    finally:
        await gateways.aclose()
    return {pid: row.status for pid, row in (await payout_rows(runtime.db)).items()}


async def assert_paid_exactly_once(
    runtime: Runtime, booked: Mapping[str, Sequence[str]]
) -> dict[str, str]:
    """The exactly-once invariants against a fake provider's own ledger.

    ``booked`` maps each payout idempotency key (as the fake saw it in the provider's own
    idempotency field) to the final states of the transfers the fake booked under it
    ('succeeded', 'failed' or 'pending'). Checks: at most one transfer per payout; each
    succeeded payout has exactly one, succeeded; no failed or canceled payout has a
    succeeded transfer; every payout's events walk only along allowed arrows, entering
    each status at most once. Returns the final statuses.
    """
    payouts = await payout_rows(runtime.db)
    events = await events_by_payout(runtime.db)
    for pid, payout in payouts.items():
        transfers = list(booked.get(payout.gateway_idempotency_key, []))
        assert len(transfers) <= 1, f"{pid} booked {len(transfers)} times: {transfers}"
        if payout.status == PayoutStatus.SUCCEEDED.value:
            assert transfers == ["succeeded"], (pid, transfers)
        if payout.status in (PayoutStatus.FAILED.value, PayoutStatus.CANCELED.value):
            assert "succeeded" not in transfers, (pid, transfers)
        walk = [status for status, _ in itertools.groupby(e.data["status"] for e in events[pid])]
        assert walk_is_allowed(walk), (pid, walk)
        assert walk[-1] == payout.status, (pid, walk, payout.status)
        executor_steps = [e.type for e in events[pid] if e.actor == "executor"]
        assert len(executor_steps) == len(set(executor_steps)), (pid, executor_steps)
    unknown = set(booked) - {p.gateway_idempotency_key for p in payouts.values()}
    assert not unknown, f"the provider booked keys no payout has: {unknown}"
    return {pid: p.status for pid, p in payouts.items()}
