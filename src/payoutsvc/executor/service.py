"""The executor: claim, attempt, settle, for a batch of payouts.

- **claim** (``executor/claim.py``, one transaction): take due payouts under a lease;
  ``approved`` ones move to ``processing`` with their ``payout.processing`` event and
  outbox rows.
- **attempt** (``executor/attempt.py``, no transaction): call the payout's gateway under
  the payout's own idempotency key, after the pre-gateway checks.
- **settle** (``executor/settle.py``, one transaction for many payouts): record every
  gateway call, then write each payout's result, event and outbox rows, but only for
  payouts this claim still owns.

Calls are recorded (payout_attempts) when their step settles; a call cut short by a crash
leaves no row of its own, and the next worker's status query records what the gateway had.

:class:`Executor` is the :class:`~payoutsvc.work_loop.WorkSource` that
:class:`payoutsvc.executor.loop.ExecutorLoop` runs continuously; tests and tools drive its
steps one at a time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta

from payoutsvc.db.base import utcnow
from payoutsvc.executor.attempt import Attempter, Outcome
from payoutsvc.executor.breaker import BreakerConfig, CircuitBreaker
from payoutsvc.executor.claim import Claimer, Job, default_worker_id
from payoutsvc.executor.repository import ExecutorRepository
from payoutsvc.executor.settle import Settler
from payoutsvc.gateways.registry import GatewayRegistry, registry_for
from payoutsvc.runtime import Runtime

__all__ = ["Executor", "Job", "Outcome"]


class Executor:
    def __init__(
        self,
        runtime: Runtime,
        gateways: GatewayRegistry | None = None,
        *,
        worker_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        breaker_config: BreakerConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings = runtime.settings
        self.gateways = gateways or registry_for(runtime)
        self.worker_id = worker_id or default_worker_id()
        self.clock = clock
        self.lease = timedelta(seconds=settings.executor_lease_seconds)
        self.schedule = settings.executor_retry_schedule
        self.claimer = Claimer(runtime, worker_id=self.worker_id, clock=clock, lease=self.lease)
        self.attempter = Attempter(
            runtime,
            self.gateways,
            clock=clock,
            # A call must end well inside the lease, or another worker could take the payout
            # over while this one still waits for the gateway.
            call_timeout=min(30.0, settings.executor_lease_seconds / 3),
            breaker_config=breaker_config,
        )
        self.settler = Settler(
            runtime,
            clock=clock,
            schedule=self.schedule,
            hold_check_seconds=settings.executor_hold_check_seconds,
            rng=rng or random.Random(),  # noqa: S311  (jitter, not security)
        )

    # -- breakers ---------------------------------------------------------------------------
    def breaker(self, gateway: str) -> CircuitBreaker:
        return self.attempter.breaker(gateway)

    def paused_gateways(self) -> list[str]:
        return self.attempter.paused_gateways()

    # -- the three steps --------------------------------------------------------------------
    async def claim(self, limit: int) -> list[Job]:
        """Claim up to ``limit`` due payouts; gateways whose breaker is open are left alone."""
        return await self.claimer.claim(limit, self.paused_gateways())

    async def execute(self, job: Job) -> Outcome:
        return await self.attempter.execute(job)

    async def finish(self, outcomes: Sequence[Outcome]) -> set[str]:
        """Returns the ids whose result was written (the rest were no longer ours)."""
        return await self.settler.finish(outcomes)

    async def release(self, jobs: Collection[Job]) -> int:
        return await self.settler.release(jobs)

    async def next_due_at(self) -> datetime | None:
        async with self.runtime.db.transaction(write=False) as session:
            return await ExecutorRepository(session).next_due_at()

    # -- as a WorkSource (executor/loop.py) -------------------------------------------------
    async def attempt(self, job: Job) -> Outcome:
        return await self.execute(job)

    async def settle(self, outcomes: Sequence[Outcome]) -> None:
        await self.finish(outcomes)

    async def seconds_until_due(self) -> float | None:
        next_due = await self.next_due_at()
        return None if next_due is None else (next_due - self.clock()).total_seconds()

    async def run_once(self, limit: int | None = None) -> int:
        """Claim one batch, execute it concurrently and finish it; returns how many payouts
        were worked on. For tests and tools: the service runs ExecutorLoop."""
        jobs = await self.claim(limit or self.settings.executor_batch_size)
        if jobs:
            outcomes = await asyncio.gather(*(self.execute(job) for job in jobs))
            await self.finish(outcomes)
        return len(jobs)
