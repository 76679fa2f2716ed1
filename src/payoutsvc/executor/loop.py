"""The executor as a long-running component of `payoutsvc serve` / `payoutsvc worker`.

Claims batches while it has free slots (``executor_concurrency`` payouts in flight at
most), runs each payout's gateway step as its own task, and hands finished steps to a group
commit that writes many of them per transaction. A slot is freed only once its payout's
result has committed, so a lease is never given up before its outcome is durable.

Shutdown (SIGTERM, or the API's lifespan ending): stop claiming, let in-flight calls finish
for up to ``grace_seconds``, write their results, and release the leases of anything still
unfinished so another worker picks it up at once instead of after the lease.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from payoutsvc.background import BackgroundLoops
from payoutsvc.batching import GroupCommit
from payoutsvc.db.signals import IDLE_LOOK_MAX_SECONDS, REAL_TIME, LoopTimer
from payoutsvc.executor.service import Executor, Job, Outcome
from payoutsvc.metrics import EXECUTOR_IN_FLIGHT
from payoutsvc.payouts.repository import PAYOUTS_DUE
from payoutsvc.runtime import Runtime

log = structlog.get_logger(__name__)

GRACE_SECONDS = 5.0  # below BackgroundLoops.stop's default, so leases get released in time
FINISH_RETRIES = 3


class ExecutorLoop:
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
        self.executor = executor
        self.concurrency = concurrency or settings.executor_concurrency
        self.batch_size = min(batch_size or settings.executor_batch_size, self.concurrency)
        self.poll_interval = poll_interval or settings.worker_poll_interval
        self.grace_seconds = grace_seconds
        self._timer = timer  # decides when a timed look happens (tests: only when told)
        # Claim again once half a batch is free: fewer, fuller claims.
        self._claim_threshold = max(1, self.batch_size // 2)
        self._jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        # One claim and one finishing write in flight per worker: on PostgreSQL a second
        # overlapping claim mostly skips rows the first one holds, and two concurrent flushes
        # halve each other's batches; on a 2-core machine each cost 5-15 % CPU per payout
        # (bench/executor_drain.py). Throughput comes from batch size, not overlap.
        self._claim: asyncio.Task[None] | None = None
        self._reserved = 0  # slots promised to the claim still running
        self._idle_until = 0.0  # after a claim found the queue empty, the next look
        self._signals = executor.runtime.db.signals
        self._due = self._signals.subscribe(PAYOUTS_DUE)  # a commit approved payouts
        self._finisher: GroupCommit[Outcome, None] = GroupCommit(
            "executor-finish", self._write, max_batch=max(self.batch_size, 100)
        )

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    @property
    def idle(self) -> bool:
        """No claim and no payout in flight: only a wake-up or a timed look starts work."""
        return self._claim is None and not self._jobs

    async def run(self, stopping: asyncio.Event) -> None:
        log.info(
            "executor.started",
            worker=self.executor.worker_id,
            concurrency=self.concurrency,
            batch_size=self.batch_size,
        )
        self._signals.start()
        try:
            while not stopping.is_set():
                free = self.concurrency - len(self._jobs) - self._reserved
                now = self._timer.now()
                if self._due.is_set():
                    self._idle_until = 0.0  # payouts were approved since the last claim
                if (
                    self._claim is None
                    and now >= self._idle_until
                    and free > 0
                    and (free >= self._claim_threshold or not self._jobs)
                ):
                    self._due.clear()  # an approval from here on triggers the next look
                    self._spawn_claim(min(self.batch_size, free))
                    continue
                waits = [stopping]
                timeout = self.poll_interval
                if now < self._idle_until and self._claim is None:
                    # The queue was empty: look again when payouts get approved, or when the
                    # next retry or lease end falls due.
                    timeout = self._idle_until - now
                    waits.append(self._due)
                else:
                    # Wait for a finished payout to free a slot, or a claim to come back.
                    self._slot_freed.clear()
                    waits.append(self._slot_freed)
                await self._timer.wait_any(waits, timeout)
        finally:
            self._signals.unsubscribe(PAYOUTS_DUE, self._due)
            if self._claim is not None:
                await asyncio.gather(self._claim, return_exceptions=True)
            await self._shutdown()

    def _spawn_claim(self, wanted: int) -> None:
        self._reserved += wanted
        self._claim = asyncio.create_task(self._claim_and_start(wanted))

    async def _claim_and_start(self, wanted: int) -> None:
        """One claim; its payouts start at once. After a short claim it also decides when
        to look again, still counting as the claim in flight so no other one starts."""
        try:
            try:
                jobs = await self.executor.claim(wanted)
            except Exception:  # database hiccup: try again after a poll interval
                log.exception("executor.claim_failed")
                jobs = []
            finally:
                self._reserved -= wanted
            for job in jobs:
                self._start(job)
            if len(jobs) < wanted:
                wait = await self._idle_wait()
                self._idle_until = self._timer.now() + wait
        finally:
            self._claim = None
            self._slot_freed.set()

    async def _idle_wait(self) -> float:
        """How long to wait before looking again after a claim found too little: until the
        next retry or lease end is due (approvals wake the loop at once), at least a poll
        interval and at most IDLE_LOOK_MAX_SECONDS. While approvals in other processes
        cannot reach this one (PostgreSQL listener down), simply the poll interval."""
        if not self._signals.reliable:
            return self.poll_interval
        try:
            next_due = await self.executor.next_due_at()
        except Exception:  # noqa: BLE001  (a database hiccup: the claim will tell)
            return self.poll_interval
        if next_due is None:
            return max(self.poll_interval, IDLE_LOOK_MAX_SECONDS)
        until_due = (next_due - self.executor.clock()).total_seconds()
        return min(
            max(until_due, self.poll_interval), max(self.poll_interval, IDLE_LOOK_MAX_SECONDS)
        )

    def _start(self, job: Job) -> None:
        self._jobs[job.id] = job
        EXECUTOR_IN_FLIGHT.set(len(self._jobs))
        task = asyncio.create_task(self._run_job(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_job(self, job: Job) -> None:
        cancelled = False
        try:
            outcome = await self.executor.execute(job)
            await self._finisher.submit(outcome)
        except asyncio.CancelledError:
            cancelled = True  # shutdown: stays listed so its lease gets released
            raise
        except Exception:  # its lease runs out; the next claimer resolves it
            log.exception("executor.job_failed", payout_id=job.id)
        finally:
            if not cancelled:
                self._jobs.pop(job.id, None)
            EXECUTOR_IN_FLIGHT.set(len(self._jobs))
            self._slot_freed.set()

    async def _write(self, outcomes: list[Outcome]) -> list[BaseException | None]:
        for attempt in range(1, FINISH_RETRIES + 1):
            try:
                await self.executor.finish(outcomes)
                return [None] * len(outcomes)
            except Exception:
                if attempt == FINISH_RETRIES:
                    raise
                log.warning("executor.finish_retry", attempt=attempt, exc_info=True)
                await asyncio.sleep(0.1 * attempt)
        raise AssertionError("unreachable")

    async def _shutdown(self) -> None:
        if self._tasks:
            log.info("executor.draining", in_flight=len(self._tasks), grace=self.grace_seconds)
            _, late = await asyncio.wait(set(self._tasks), timeout=self.grace_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._finisher.aclose()
        unfinished = list(self._jobs.values())
        if unfinished:
            try:
                released = await self.executor.release(unfinished)
                log.info("executor.leases_released", count=released)
            except Exception:  # the leases then simply expire
                log.exception("executor.release_failed", count=len(unfinished))
        self._jobs.clear()
        EXECUTOR_IN_FLIGHT.set(0)
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
