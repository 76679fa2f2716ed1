"""An idle executor sleeps instead of polling, yet an approval (in any process) starts its
payout at once, and a scheduled retry runs on time rather than at the next idle look.

The loops run on a ManualTimer: their timed looks happen only when a test moves it, so
"at once" means "with no timed look in between" (only the wake-up can have done it), and
"rarely" is counted in looks per stretch of the loop's own time, not wall-clock seconds."""

from __future__ import annotations

import asyncio
import math
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
from tests.helpers import ManualTimer, eventually, let_time_pass

POLL = 0.02


@pytest.fixture
async def other_process_db(database_url: str) -> AsyncIterator[Database]:
    """A second Database on the same data, standing in for a worker process."""
    db = Database.connect(database_url)
    try:
        yield db
    finally:
        await db.dispose()


class RunningLoop:
    """An ExecutorLoop running in the background on a manual timer, counting its looks."""

    def __init__(self, runtime: Runtime, timer: ManualTimer) -> None:
        self.timer = timer
        self.gateways = GatewayRegistry(runtime)
        self.executor = Executor(runtime, self.gateways, clock=timer.utcnow)
        self.looks = 0
        original = self.executor.claim

        async def claim(limit: int) -> Any:
            self.looks += 1
            return await original(limit)

        self.executor.claim = claim  # type: ignore[method-assign]
        self.loop = ExecutorLoop(self.executor, timer=timer)
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(self.loop.run(self.stopping))

    def asleep(self) -> bool:
        """Nothing in flight; waiting for a wake-up or the next timed look."""
        return self.loop.idle and self.timer.asleep

    async def stop(self) -> None:
        self.stopping.set()
        await self.task
        await self.gateways.aclose()


async def _status(db: Database, payout_id: str) -> str | None:
    return (await statuses(db)).get(payout_id)


async def test_an_idle_executor_looks_rarely_yet_a_wake_up_alone_pays_a_new_approval(
    backend: str, make_app: AppFactory, other_process_db: Database
) -> None:
    """On PostgreSQL the executor runs on another Database, as a separate worker would, and
    sleeps between looks; on SQLite (where another process's commits go unannounced) it
    looks every poll interval, and the API's approvals beside it still wake it."""
    app, client = await make_app(worker_poll_interval=POLL)
    runtime: Runtime = app.state.runtime
    await setup_operators(client)
    worker_db = other_process_db if backend == "postgres" else runtime.db
    timer = ManualTimer()
    running = RunningLoop(
        Runtime(settings=runtime.settings, db=worker_db, cipher=runtime.cipher), timer
    )
    try:
        if backend == "postgres":
            await eventually(lambda: worker_db.signals.reliable, what="the listener")
            await eventually(running.asleep, what="the executor to go idle")
            idle_from = running.looks
            await let_time_pass(timer, 3.5, settled=lambda: running.loop.idle)
            # At its 0.02 s poll interval it would have looked 175 times.
            looks = running.looks - idle_from
            most = math.ceil(3.5 / IDLE_LOOK_MAX_SECONDS) + 1
            assert looks <= most, f"an idle executor looked {looks} times in 3.5 s"
        else:
            await eventually(running.asleep, what="the executor to go idle")
            idle_from = running.looks
            await let_time_pass(timer, 10 * POLL, settled=lambda: running.loop.idle)
            looks = running.looks - idle_from
            assert 9 <= looks <= 10, f"{looks} looks in 10 poll intervals"
        # The timer stands still from here on: the executor's next timed look never comes,
        # so only the approval's wake-up can start the payout.
        await eventually(running.asleep, what="the executor to go idle")
        payout = await approved_payout(client, runtime)

        async def paid() -> bool:
            return await _status(runtime.db, payout["id"]) == "succeeded"

        await eventually(paid, what="the payout paid without a timed look")
    finally:
        await running.stop()
    await assert_exactly_once(runtime.db)


async def test_only_one_claim_is_in_flight_while_the_loop_decides_when_to_look_again(
    backend: str, make_app: AppFactory
) -> None:
    """A claim is held up while ten poll intervals pass: on PostgreSQL in the look-up of when
    to look again (the tail of a claim that found too little), on SQLite (which looks every
    poll interval without that look-up) in the claim itself."""
    app, client = await make_app(worker_poll_interval=POLL)
    runtime: Runtime = app.state.runtime
    await setup_operators(client)
    timer = ManualTimer()
    running = RunningLoop(runtime, timer)
    in_flight = 0
    most = 0
    holding = asyncio.Event()
    released = asyncio.Event()
    claim, next_due_at = running.executor.claim, running.executor.next_due_at

    async def hold() -> None:
        holding.set()
        await released.wait()

    async def counted_claim(limit: int) -> Any:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            jobs = await claim(limit)
            if backend == "sqlite" and jobs:
                await hold()
            return jobs
        finally:
            in_flight -= 1

    async def held_next_due_at() -> Any:
        nonlocal in_flight, most
        in_flight += 1  # still part of the claim: no other one may start meanwhile
        most = max(most, in_flight)
        try:
            await hold()
            return await next_due_at()
        finally:
            in_flight -= 1

    running.executor.claim = counted_claim  # type: ignore[method-assign]
    running.executor.next_due_at = held_next_due_at  # type: ignore[method-assign]
    try:
        payouts = [await approved_payout(client, runtime) for _ in range(3)]
        await eventually(holding.is_set, what="a claim being held up")
        # Ten poll intervals pass while that claim is in flight: the loop wakes for each of
        # them (it waits for a slot at the poll interval) and must start no other claim.
        for _ in range(10):
            await eventually(lambda: timer.asleep, what="the loop to wait")
            timer.advance_to(timer.next_deadline)
        released.set()

        async def all_paid() -> bool:
            found = await statuses(runtime.db)
            return all(found[p["id"]] == "succeeded" for p in payouts)

        await eventually(all_paid, what="the payouts paid")
    finally:
        await running.stop()
    assert most == 1, f"{most} claims overlapped"


async def test_a_scheduled_retry_runs_on_time_while_the_executor_is_idle(
    make_app: AppFactory,
) -> None:
    # The sandbox answers 5xx twice for this amount, then succeeds: two retries, 0.3 s apart.
    app, client = await make_app(worker_poll_interval=POLL, executor_retry_schedule="0.3,0.3,0.3")
    runtime: Runtime = app.state.runtime
    await setup_operators(client)
    timer = ManualTimer()
    running = RunningLoop(runtime, timer)
    try:
        await eventually(running.asleep, what="the executor to go idle")
        payout = await approved_payout(client, runtime, FLAKY_5XX)
        approved_at = timer.now()
        # Move the executor's time on one timed look at a time until the payout succeeds.
        while await _status(runtime.db, payout["id"]) != "succeeded":
            await eventually(running.asleep, what="the executor to go idle")
            if await _status(runtime.db, payout["id"]) == "succeeded":
                break
            timer.advance_to(timer.next_deadline)
            # Two retries at ~0.3 s (with jitter). Had each waited for the next idle look
            # of its own, this would take over 2 * IDLE_LOOK_MAX_SECONDS.
            took = timer.now() - approved_at
            assert took < IDLE_LOOK_MAX_SECONDS, f"not succeeded {took:.2f} s after approval"
    finally:
        await running.stop()
    await assert_exactly_once(runtime.db)
