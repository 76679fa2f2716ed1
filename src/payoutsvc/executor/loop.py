"""The executor as a long-running component of `payoutsvc serve` / `payoutsvc worker`: the
:class:`~payoutsvc.executor.service.Executor` run by a :class:`~payoutsvc.work_loop.WorkLoop`.

``executor_concurrency`` payouts in flight at most; a claim once half a batch is free
(fewer, fuller claims); an idle executor looks again when payouts get approved (any process:
``PAYOUTS_DUE``) or the next retry or lease end falls due. On shutdown the leases of payouts
still unfinished after the grace period are released, so another worker picks them up at
once instead of after the lease.
"""

from __future__ import annotations

import asyncio

import structlog

from payoutsvc.background import BackgroundLoops
from payoutsvc.executor.attempt import Outcome
from payoutsvc.executor.claim import Job
from payoutsvc.executor.service import Executor
from payoutsvc.metrics import EXECUTOR_IN_FLIGHT
from payoutsvc.payouts.repository import PAYOUTS_DUE
from payoutsvc.runtime import Runtime
from payoutsvc.work_loop import REAL_TIME, LoopTimer, WorkLimits, WorkLoop

log = structlog.get_logger(__name__)

GRACE_SECONDS = 5.0  # below BackgroundLoops.stop's default, so leases get released in time


class ExecutorLoop(WorkLoop[Job, Outcome]):
    def __init__(
        self,
        executor: Executor,
        *,
        concurrency: int | None = None,
        batch_size: int | None = None,
        poll_interval: float | None = None,
        grace_seconds: float = GRACE_SECONDS,
        timer: LoopTimer = REAL_TIME,
    ) -> None:
        settings = executor.settings
        concurrency = concurrency or settings.executor_concurrency
        batch_size = min(batch_size or settings.executor_batch_size, concurrency)
        limits = WorkLimits(
            name="executor",
            concurrency=concurrency,
            batch_size=batch_size,
            poll_interval=poll_interval or settings.worker_poll_interval,
            claim_threshold=max(1, batch_size // 2),
            grace_seconds=grace_seconds,
        )
        super().__init__(
            executor,
            limits,
            signals=executor.runtime.db.signals,
            wake_on=PAYOUTS_DUE,  # a commit approved payouts
            timer=timer,
            in_flight_gauge=EXECUTOR_IN_FLIGHT,
        )
        self.executor = executor

    async def run(self, stopping: asyncio.Event) -> None:
        limits = self.limits
        log.info(
            "executor.started",
            worker=self.executor.worker_id,
            concurrency=limits.concurrency,
            batch_size=limits.batch_size,
        )
        try:
            await super().run(stopping)
        finally:
            log.info("executor.stopped", worker=self.executor.worker_id)


def start_executor(runtime: Runtime, loops: BackgroundLoops) -> ExecutorLoop:
    """Run the executor as one of the process's background loops (serve with the worker on,
    or `payoutsvc worker`); its gateways are closed when it stops."""
    executor_loop = ExecutorLoop(Executor(runtime))

    async def run(stopping: asyncio.Event) -> None:
        try:
            await executor_loop.run(stopping)
        finally:
            await executor_loop.executor.gateways.aclose()

    loops.start("executor", run)
    return executor_loop
