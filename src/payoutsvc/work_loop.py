"""The one shape of every background worker in a process: claim → attempt → settle → wait.

A :class:`WorkSource` knows its table-as-queue (the executor's payouts, the sender's webhook
deliveries); :class:`WorkLoop` knows how to keep it busy:

- **claim** a batch while slots are free (``WorkLimits.concurrency`` jobs attempting at
  most, ``settle_backlog`` more waiting for their settle), one claim at a time: on
  PostgreSQL a second overlapping claim mostly skips rows the first one holds, and on a
  2-core machine it costs CPU per job for nothing (throughput comes from batch size, not
  overlap);
- **attempt** each job as its own task (no transaction open: gateway calls, HTTP posts);
- **settle** finished jobs through a :class:`~payoutsvc.batching.GroupCommit`, many per
  transaction; a job stays in flight until its outcome has committed, so a lease is never
  given up before its outcome is durable;
- **wait**, when a claim found less than it asked for, for a wake-up (a commit that made
  work due, :mod:`payoutsvc.db.signals`) or the source's next due time, whichever comes
  first, but no longer than ``IDLE_LOOK_MAX_SECONDS``, and only a poll interval while other
  processes' wake-ups cannot reach this one.

Shutdown (the stop event): stop claiming, let in-flight jobs finish for up to
``grace_seconds``, settle what finished, and hand the rest back to the source
(``release``). Every wait goes through :class:`LoopTimer`, so tests decide when a timed
look happens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import structlog

from payoutsvc.batching import GroupCommit
from payoutsvc.db.signals import IDLE_LOOK_MAX_SECONDS, Signals

log = structlog.get_logger(__name__)

_CLOCK_SLACK = 1e-6  # seconds: timer arithmetic rounds

J = TypeVar("J")
O = TypeVar("O")  # noqa: E741  (job, outcome: the two type parameters of every source)


async def first_of(
    events: Sequence[asyncio.Event],
    timeout: float | None,  # noqa: ASYNC109  (a timed look is what a loop waits for)
) -> None:
    """Return once any of ``events`` is set, or after ``timeout`` seconds (None: never).
    The one wait helper of the background loops."""
    if any(event.is_set() for event in events):
        return
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class LoopTimer:
    """When a background loop's timed looks happen: the event loop's clock and a wait that
    ends at the first of some events or a timeout. Tests hand the loops a manual one, so a
    timed look happens only when the test moves time on and a wake-up alone must do the rest.
    """

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def wait_any(
        self,
        events: Sequence[asyncio.Event],
        timeout: float,  # noqa: ASYNC109  (a timed look is what the loop waits for)
    ) -> None:
        """Return once any of ``events`` is set or ``timeout`` seconds have passed."""
        await first_of(events, timeout)


REAL_TIME = LoopTimer()


class WorkSource(Protocol[J, O]):
    """A queue table seen by one worker. ``attempt`` never raises for the job's own trouble
    (it returns an outcome saying so); ``claim`` and ``settle`` are one transaction each."""

    async def claim(self, limit: int) -> Sequence[J]:
        """Lease up to ``limit`` due jobs (fewer, or none, when fewer are due)."""
        ...

    async def attempt(self, job: J) -> O:
        """Work on one claimed job outside any transaction."""
        ...

    async def settle(self, outcomes: Sequence[O]) -> None:
        """Write many outcomes in one transaction (only for jobs still leased to us)."""
        ...

    async def release(self, jobs: Sequence[J]) -> int:
        """Shutdown: give back jobs that never finished; returns how many were given back."""
        ...

    async def seconds_until_due(self) -> float | None:
        """How long until the earliest job falls due (<= 0: already), None: nothing queued."""
        ...


class _Gauge(Protocol):
    def set(self, value: float) -> None: ...


@dataclass(frozen=True, slots=True)
class WorkLimits:
    name: str  # log event prefix ("executor", "webhook.sender")
    concurrency: int  # jobs in flight (running or waiting for their settle) at most
    batch_size: int  # jobs per claim at most
    poll_interval: float  # a look of its own while wake-ups cannot arrive
    claim_threshold: int  # free slots worth a claim while jobs are still in flight
    # Finished jobs that may wait for their settle beyond ``concurrency``: 0 holds a job's
    # slot until its outcome committed; more keeps attempts going while a settle is slow.
    settle_backlog: int = 0
    grace_seconds: float = 5.0  # shutdown: how long in-flight jobs may still finish
    settle_retries: int = 3  # a settle that fails this often loses its batch to the leases

    @property
    def settle_batch(self) -> int:
        return max(self.batch_size, 100)


class WorkLoop(Generic[J, O]):
    def __init__(
        self,
        source: WorkSource[J, O],
        limits: WorkLimits,
        *,
        signals: Signals,
        wake_on: str,
        timer: LoopTimer = REAL_TIME,
        in_flight_gauge: _Gauge | None = None,
    ) -> None:
        self.source = source
        self.limits = limits
        self._signals = signals
        self._wake_on = wake_on  # the signal name of commits that make this queue's work due
        self._timer = timer
        self._gauge = in_flight_gauge
        self._jobs: dict[asyncio.Task[None], J] = {}  # attempting or waiting to settle
        self._attempting = 0
        self._slot_freed = asyncio.Event()
        self._claim: asyncio.Task[None] | None = None
        self._reserved = 0  # slots promised to the claim still running
        # After a claim found too little: look again at _idle_from + _idle_for (timer time).
        self._idle_from = 0.0
        self._idle_for = 0.0
        self._settler: GroupCommit[O, None] = GroupCommit(
            f"{limits.name}-settle", self._settle, max_batch=limits.settle_batch
        )

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    @property
    def idle(self) -> bool:
        """No claim and no job in flight: only a wake-up or a timed look starts work."""
        return self._claim is None and not self._jobs

    async def run(self, stopping: asyncio.Event) -> None:
        self._signals.start()
        due = self._signals.subscribe(self._wake_on)
        try:
            while not stopping.is_set():
                await self._step(stopping, due)
        finally:
            self._signals.unsubscribe(self._wake_on, due)
            if self._claim is not None:
                await asyncio.gather(self._claim, return_exceptions=True)
            await self._shutdown()

    async def _step(self, stopping: asyncio.Event, due: asyncio.Event) -> None:
        """Start a claim if one is worth it, else wait for what could make one worth it."""
        limits = self.limits
        free = self._free_slots()
        now = self._timer.now()
        if due.is_set():
            self._idle_for = 0.0  # work was made due since the last claim
        # (With slack: a timer moved on to exactly the look's deadline may land an ulp short
        # of it, and a wait of an ulp would return at once, forever.)
        looking = now - self._idle_from + _CLOCK_SLACK >= self._idle_for
        if (
            self._claim is None
            and looking
            and free > 0
            and (free >= limits.claim_threshold or not self._jobs)
        ):
            due.clear()  # a commit from here on triggers the next look
            self._spawn_claim(min(limits.batch_size, free))
            return
        if not looking and self._claim is None:
            # The queue had too little: look again on a wake-up or when work falls due.
            await self._timer.wait_any((stopping, due), self._idle_for - (now - self._idle_from))
            return
        # Wait for a settled job to free a slot, or the claim to come back.
        self._slot_freed.clear()
        await self._timer.wait_any((stopping, self._slot_freed), limits.poll_interval)

    def _free_slots(self) -> int:
        limits = self.limits
        in_flight = len(self._jobs) + self._reserved
        return min(
            limits.concurrency - self._attempting - self._reserved,
            limits.concurrency + limits.settle_backlog - in_flight,
        )

    def _spawn_claim(self, wanted: int) -> None:
        self._reserved += wanted
        self._claim = asyncio.create_task(self._claim_and_start(wanted))

    async def _claim_and_start(self, wanted: int) -> None:
        """One claim; its jobs start at once. After a short claim it also decides when to
        look again, still counting as the claim in flight so no other one starts."""
        try:
            try:
                jobs = await self.source.claim(wanted)
            except Exception:  # database hiccup: try again after a poll interval
                log.exception(f"{self.limits.name}.claim_failed")
                jobs = []
            finally:
                self._reserved -= wanted
            for job in jobs:
                self._start(job)
            if len(jobs) < wanted:
                wait = await self._idle_wait()
                self._idle_from, self._idle_for = self._timer.now(), wait
        finally:
            self._claim = None
            self._slot_freed.set()

    async def _idle_wait(self) -> float:
        """How long to wait before looking again after a claim found too little: until the
        next job falls due (wake-ups end the wait early), at least a poll interval and at most
        IDLE_LOOK_MAX_SECONDS. While other processes' commits cannot reach this one (SQLite,
        or the PostgreSQL listener is down), simply the poll interval."""
        poll = self.limits.poll_interval
        longest = max(poll, IDLE_LOOK_MAX_SECONDS)
        if not self._signals.reliable:
            return poll
        try:
            until_due = await self.source.seconds_until_due()
        except Exception:  # noqa: BLE001  (a database hiccup: the next claim will tell)
            return poll
        if until_due is None:
            return longest
        return min(max(until_due, poll), longest)

    def _start(self, job: J) -> None:
        task = asyncio.create_task(self._run_job(job))
        self._jobs[task] = job
        self._attempting += 1  # from now: a slot is taken before the task first runs
        self._count()

    async def _run_job(self, job: J) -> None:
        task = asyncio.current_task()
        cancelled = False
        try:
            try:
                outcome = await self.source.attempt(job)
            finally:
                self._attempting -= 1
                if self.limits.settle_backlog:
                    self._slot_freed.set()  # its attempt slot is free already
            await self._settler.submit(outcome)
        except asyncio.CancelledError:
            cancelled = True  # shutdown: stays listed so it gets released
            raise
        except Exception:  # its lease runs out; the next claimer takes it over
            log.exception(f"{self.limits.name}.job_failed")
        finally:
            if not cancelled and task is not None:
                self._jobs.pop(task, None)
            self._count()
            self._slot_freed.set()

    async def _settle(self, outcomes: list[O]) -> list[BaseException | None]:
        retries = self.limits.settle_retries
        for attempt in range(1, retries + 1):
            try:
                await self.source.settle(outcomes)
                return [None] * len(outcomes)
            except Exception:
                if attempt == retries:
                    raise
                log.warning(f"{self.limits.name}.settle_retry", attempt=attempt, exc_info=True)
                await asyncio.sleep(0.1 * attempt)  # back off: a deadlock or a failover
        raise AssertionError("unreachable")

    def _count(self) -> None:
        if self._gauge is not None:
            self._gauge.set(len(self._jobs))

    async def _shutdown(self) -> None:
        name = self.limits.name
        if self._jobs:
            grace = self.limits.grace_seconds
            log.info(f"{name}.draining", in_flight=len(self._jobs), grace=grace)
            _, late = await asyncio.wait(set(self._jobs), timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._settler.aclose()
        unfinished = list(self._jobs.values())
        if unfinished:
            try:
                released = await self.source.release(unfinished)
                log.info(f"{name}.leases_released", count=released)
            except Exception:  # the leases then simply expire
                log.exception(f"{name}.release_failed", count=len(unfinished))
        self._jobs.clear()
        self._attempting = 0
        self._count()
