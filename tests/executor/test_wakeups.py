"""An idle executor sleeps instead of polling, yet an approval (in any process) starts its
payout at once, and a scheduled retry runs on time rather than at the next idle look."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from payoutsvc.db.engine import Database
from payoutsvc.db.signals import IDLE_LOOK_MAX_SECONDS
from payoutsvc.executor.loop import ExecutorLoop
from payoutsvc.executor.service import Executor
from payoutsvc.gateways.registry import GatewayRegistry
from payoutsvc.runtime import Runtime
from tests.executor.conftest import AppFactory
from tests.executor.support import (
    FLAKY_5XX,
    approved_payout,
    assert_exactly_once,
    setup_operators,
    statuses,
)


@pytest.fixture
async def other_process_db(database_url: str) -> AsyncIterator[Database]:
    """A second Database on the same data, standing in for a worker process."""
    db = Database.connect(database_url)
    try:
        yield db
    finally:
        await db.dispose()


class RunningLoop:
    """An ExecutorLoop running in the background that records when it claims."""

    def __init__(self, runtime: Runtime) -> None:
        self.gateways = GatewayRegistry(runtime)
        self.executor = Executor(runtime, self.gateways)
        self.claims: list[float] = []
        original = self.executor.claim

        async def claim(limit: int) -> Any:
            self.claims.append(time.monotonic())
            return await original(limit)

        self.executor.claim = claim  # type: ignore[method-assign]
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(ExecutorLoop(self.executor).run(self.stopping))

    async def stop(self) -> None:
        self.stopping.set()
        await self.task
        await self.gateways.aclose()


async def _until_status(db: Database, payout_id: str, status: str, timeout: float) -> float:
    """Seconds until the payout reached ``status``."""
    started = time.monotonic()
    while (await statuses(db)).get(payout_id) != status:
        assert time.monotonic() - started < timeout, f"{payout_id} not {status} in {timeout}s"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_an_idle_executor_looks_rarely_yet_pays_a_new_approval_at_once(
    backend: str, make_app: AppFactory, other_process_db: Database
) -> None:
    """On PostgreSQL the executor runs on another Database, as a separate worker would, and
    sleeps between looks; on SQLite (where another process's commits go unannounced) it
    looks every poll interval, and the API's approvals beside it still wake it."""
    app, client = await make_app(worker_poll_interval=0.02)
    runtime: Runtime = app.state.runtime
    await setup_operators(client)
    worker_db = other_process_db if backend == "postgres" else runtime.db
    running = RunningLoop(Runtime(settings=runtime.settings, db=worker_db, cipher=runtime.cipher))
    try:
        if backend == "postgres":
            deadline = time.monotonic() + 5
            while not worker_db.signals.reliable:
                assert time.monotonic() < deadline, "the listener did not start"
                await asyncio.sleep(0.01)
            idle_from = len(running.claims)
            await asyncio.sleep(3.5)
            # At its 0.02 s poll interval it would have looked ~175 times.
            looks = len(running.claims) - idle_from
            assert looks <= 10, f"an idle executor looked {looks} times in 3.5 s"
            # Right after one of its own looks (the next is up to IDLE_LOOK_MAX_SECONDS
            # away), an approval still gets its payout paid at once.
            seen = len(running.claims)
            deadline = time.monotonic() + IDLE_LOOK_MAX_SECONDS + 1
            while len(running.claims) == seen:
                assert time.monotonic() < deadline, "the idle executor stopped looking"
                await asyncio.sleep(0.01)
        else:
            await asyncio.sleep(0.5)
        payout = await approved_payout(client, runtime)
        took = await _until_status(runtime.db, payout["id"], "succeeded", timeout=10)
        assert took < IDLE_LOOK_MAX_SECONDS / 2, f"paid {took:.2f} s after approval"
    finally:
        await running.stop()
    await assert_exactly_once(runtime.db)


async def test_only_one_claim_is_in_flight_while_the_loop_decides_when_to_look_again(
    make_app: AppFactory,
) -> None:
    app, client = await make_app(worker_poll_interval=0.02)
    runtime: Runtime = app.state.runtime
    await setup_operators(client)
    running = RunningLoop(runtime)
    in_flight = 0
    most = 0
    claim, next_due_at = running.executor.claim, running.executor.next_due_at

    async def counted_claim(limit: int) -> Any:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await claim(limit)
        finally:
            in_flight -= 1

    async def slow_next_due_at() -> Any:
        nonlocal in_flight, most
        in_flight += 1  # still part of the claim: no other one may start meanwhile
        most = max(most, in_flight)
        try:
            await asyncio.sleep(0.2)  # several poll intervals
            return await next_due_at()
        finally:
            in_flight -= 1

    running.executor.claim = counted_claim  # type: ignore[method-assign]
    running.executor.next_due_at = slow_next_due_at  # type: ignore[method-assign]
    try:
        for _ in range(3):
            await approved_payout(client, runtime)
        await asyncio.sleep(1.0)
    finally:
        await running.stop()
    assert most == 1, f"{most} claims overlapped"
    assert set((await statuses(runtime.db)).values()) == {"succeeded"}


async def test_a_scheduled_retry_runs_on_time_while_the_executor_is_idle(
    make_app: AppFactory,
) -> None:
    # The sandbox answers 5xx twice for this amount, then succeeds: two retries, 0.3 s apart.
    app, client = await make_app(worker_poll_interval=0.02, executor_retry_schedule="0.3,0.3,0.3")
    runtime: Runtime = app.state.runtime
    await setup_operators(client)
    running = RunningLoop(runtime)
    try:
        await asyncio.sleep(1.0)  # idle: looks are already far apart
        payout = await approved_payout(client, runtime, FLAKY_5XX)
        took = await _until_status(runtime.db, payout["id"], "succeeded", timeout=15)
        # Two retries at ~0.3 s (with jitter). Had each waited for the next idle look of
        # its own, this would take over 2 * IDLE_LOOK_MAX_SECONDS.
        assert took < IDLE_LOOK_MAX_SECONDS, f"succeeded {took:.2f} s after approval"
    finally:
        await running.stop()
    await assert_exactly_once(runtime.db)
