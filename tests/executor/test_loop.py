"""The executor as it runs in the service: continuous loop, graceful stop, metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from payoutsvc.db.base import utcnow
from payoutsvc.executor.loop import ExecutorLoop
from payoutsvc.executor.service import Executor
from payoutsvc.gateways.registry import GatewayRegistry
from payoutsvc.runtime import Runtime
from tests.executor.conftest import AppFactory
from tests.executor.support import (
    DECLINE_ACCOUNT,
    FLAKY_5XX,
    PENDING_THEN_SUCCESS,
    SUCCEED,
    TIMEOUT_AFTER_BOOKING,
    active_count,
    approved_payout,
    assert_exactly_once,
    payout_rows,
    setup_operators,
    statuses,
)
from tests.helpers import eventually

FAST = {"executor_retry_schedule": "0.05,0.05,0.05,0.05,0.05", "worker_poll_interval": 0.02}


async def test_loop_drains_a_mixed_queue_exactly_once(make_app: AppFactory) -> None:
    app, client = await make_app(sandbox_latency_ms=10, **FAST)
    runtime: Runtime = app.state.runtime
    await setup_operators(client)
    amounts = [SUCCEED, DECLINE_ACCOUNT, TIMEOUT_AFTER_BOOKING, PENDING_THEN_SUCCESS, FLAKY_5XX]
    for amount in amounts * 6:
        await approved_payout(client, runtime, amount)

    stopping = asyncio.Event()
    gateways = GatewayRegistry(runtime)
    loop = ExecutorLoop(Executor(runtime, gateways), concurrency=8, batch_size=4)
    task = asyncio.create_task(loop.run(stopping))

    async def drained() -> bool:
        return await active_count(runtime.db) == 0

    await eventually(drained, timeout=20, what="the queue drained")
    stopping.set()
    await task
    await gateways.aclose()
    final = await assert_exactly_once(runtime.db)
    assert sorted(final.values()).count("succeeded") == 24
    assert sorted(final.values()).count("failed") == 6


async def test_stop_finishes_in_flight_calls_within_the_grace_period(
    make_app: AppFactory,
) -> None:
    app, client = await make_app(sandbox_latency_ms=300, **FAST)
    runtime: Runtime = app.state.runtime
    await setup_operators(client)
    payouts = [await approved_payout(client, runtime) for _ in range(5)]
    stopping = asyncio.Event()
    gateways = GatewayRegistry(runtime)
    loop = ExecutorLoop(Executor(runtime, gateways), grace_seconds=5)
    task = asyncio.create_task(loop.run(stopping))

    await eventually(lambda: loop.in_flight == 5, what="all five in flight")
    stopping.set()
    await task
    await gateways.aclose()
    assert {(await statuses(runtime.db))[p["id"]] for p in payouts} == {"succeeded"}


async def test_stop_after_the_grace_period_releases_leases_for_the_next_worker(
    make_app: AppFactory,
) -> None:
    app, client = await make_app(sandbox_latency_ms=5000, executor_lease_seconds=600, **FAST)
    runtime: Runtime = app.state.runtime
    await setup_operators(client)
    payouts = [await approved_payout(client, runtime) for _ in range(3)]
    stopping = asyncio.Event()
    gateways = GatewayRegistry(runtime)
    loop = ExecutorLoop(Executor(runtime, gateways), grace_seconds=0.2)
    task = asyncio.create_task(loop.run(stopping))

    await eventually(lambda: loop.in_flight == 3, what="all three in flight")
    stopping.set()
    await task
    await gateways.aclose()
    # Each call takes 5 s: had the stop waited for them rather than 0.2 s, they would have
    # succeeded; still processing with no owner is what a cut-off call leaves behind.
    rows = await payout_rows(runtime.db)
    for payout in payouts:
        row = rows[payout["id"]]
        # Released: no owner, due now, instead of waiting out a 10-minute lease.
        assert (row.status, row.locked_by, row.locked_until) == ("processing", None, None)
        assert row.next_attempt_at is not None
        assert row.next_attempt_at <= utcnow()


async def test_metrics_show_queue_depth_and_gateway_calls(make_app: AppFactory) -> None:
    app, client = await make_app(**FAST)
    runtime: Runtime = app.state.runtime
    await setup_operators(client)
    await approved_payout(client, runtime)
    await approved_payout(client, runtime)
    text = (await client.get("/metrics")).text
    assert 'payoutsvc_executor_queue_depth{status="approved"} 2.0' in text
    assert "payoutsvc_executor_due_payouts 2.0" in text
    assert "payoutsvc_executor_oldest_due_age_seconds" in text

    executor = Executor(runtime, GatewayRegistry(runtime))
    await executor.run_once()
    await executor.gateways.aclose()
    text = (await client.get("/metrics")).text
    assert 'payoutsvc_executor_queue_depth{status="approved"} 0.0' in text
    assert (
        'payoutsvc_gateway_attempts_total{gateway="sandbox",operation="submit",outcome="succeeded"}'
        in text
    )
    assert 'payoutsvc_gateway_latency_seconds_count{gateway="sandbox",operation="submit"}' in text
    assert 'payoutsvc_gateway_breaker_state{gateway="sandbox"} 0.0' in text


async def test_sandbox_ledger_is_hidden_when_the_sandbox_is_not_configured(
    make_app: AppFactory,
) -> None:
    _, client = await make_app(gateway="stripe")
    assert (await client.get("/v1/sandbox/transfers")).status_code == 404
    assert (await client.post("/v1/gateway-callbacks/sandbox", content=b"{}")).status_code == 404


async def test_serve_with_the_worker_on_pays_approved_payouts(make_app: AppFactory) -> None:
    """The executor starts with the app when run_worker is on (as `payoutsvc serve`)."""
    app, client = await make_app(run_worker=True, **FAST)
    runtime: Runtime = app.state.runtime
    await setup_operators(client)
    payout = await approved_payout(client, runtime)

    async def paid() -> bool:
        got: dict[str, Any] = (await client.get(f"/v1/payouts/{payout['id']}")).json()
        return got["status"] == "succeeded"

    await eventually(paid, timeout=20, what="the payout paid")
    await assert_exactly_once(runtime.db)
