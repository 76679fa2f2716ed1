"""The background-work framework on its own, over an in-memory queue: bounded concurrency,
a slot freed only once its outcome settled, batched settles retried, unfinished jobs handed
back at shutdown, and an idle loop's next look at the source's next due time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from payoutsvc.db.signals import IDLE_LOOK_MAX_SECONDS, Signals
from payoutsvc.work_loop import WorkLimits, WorkLoop
from tests.helpers import ManualTimer, eventually, let_time_pass

POLL = 0.05
WAKE = "test-work"


class Queue:
    """A WorkSource over a list: jobs are ints, an outcome is the job doubled."""

    def __init__(self, jobs: int, *, until_due: float | None = None) -> None:
        self.waiting = list(range(jobs))
        self.until_due = until_due
        self.gate = asyncio.Event()  # attempts wait for it
        self.gate.set()
        self.running = 0
        self.most_running = 0
        self.settled: list[int] = []
        self.batches: list[int] = []
        self.released: list[int] = []
        self.fail_settles = 0
        self.claims = 0
        self.attempted = 0
        self.settle_gate = asyncio.Event()  # settles wait for it
        self.settle_gate.set()

    async def claim(self, limit: int) -> Sequence[int]:
        self.claims += 1
        taken, self.waiting = self.waiting[:limit], self.waiting[limit:]
        return taken

    async def attempt(self, job: int) -> int:
        self.attempted += 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        return job * 2

    async def settle(self, outcomes: Sequence[int]) -> None:
        await self.settle_gate.wait()
        if self.fail_settles:
            self.fail_settles -= 1
            raise RuntimeError("deadlock detected")
        self.batches.append(len(outcomes))
        self.settled.extend(outcomes)

    async def release(self, jobs: Sequence[int]) -> int:
        self.released.extend(jobs)
        return len(jobs)

    async def seconds_until_due(self) -> float | None:
        return self.until_due


class ListeningSignals(Signals):
    """Signals that count as reliable (as PostgreSQL's are while the listener is up)."""

    @property
    def reliable(self) -> bool:
        return True


@pytest.fixture
async def engine() -> AsyncIterator[AsyncEngine]:
    sqlite = create_async_engine("sqlite+aiosqlite://")
    try:
        yield sqlite
    finally:
        await sqlite.dispose()


@pytest.fixture
def signals(engine: AsyncEngine) -> Signals:
    """This process's wake-ups only (SQLite): not reliable, as on SQLite."""
    return Signals(engine)


def _limits(
    concurrency: int = 4, batch_size: int = 4, grace: float = 5.0, backlog: int = 0
) -> WorkLimits:
    return WorkLimits(
        name="test",
        concurrency=concurrency,
        batch_size=batch_size,
        poll_interval=POLL,
        claim_threshold=max(1, batch_size // 2),
        grace_seconds=grace,
        settle_backlog=backlog,
    )


async def test_jobs_run_within_the_concurrency_and_each_settles_once(signals: Signals) -> None:
    queue = Queue(30)
    queue.gate.clear()
    loop = WorkLoop(queue, _limits(concurrency=4, batch_size=3), signals=signals, wake_on=WAKE)
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stopping))
    # A batch of three, then one more for the slot left free: never over the concurrency.
    await eventually(lambda: loop.in_flight == 4, what="every slot taken")
    queue.gate.set()
    await eventually(lambda: len(queue.settled) == 30, what="every job settled")
    stopping.set()
    await task
    assert queue.most_running <= 4
    assert sorted(queue.settled) == [job * 2 for job in range(30)]
    assert queue.released == []


@pytest.mark.parametrize("backlog", [0, 2])
async def test_while_a_settle_is_slow_attempts_go_on_only_up_to_the_backlog(
    signals: Signals, backlog: int
) -> None:
    queue = Queue(8)
    queue.settle_gate.clear()
    limits = _limits(concurrency=2, batch_size=2, backlog=backlog)
    timer = ManualTimer()
    loop = WorkLoop(queue, limits, signals=signals, wake_on=WAKE, timer=timer)
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stopping))
    await eventually(lambda: queue.attempted == 2 + backlog, what="the attempts allowed")
    await eventually(lambda: queue.running == 0, what="those attempts finished")
    # Five timed looks pass while nothing settles: no claim more.
    await let_time_pass(timer, 5 * POLL)
    assert queue.attempted == 2 + backlog
    assert loop.in_flight == 2 + backlog
    queue.settle_gate.set()
    await eventually(lambda: len(queue.settled) == 8, what="every job settled")
    stopping.set()
    await task


async def test_a_failed_settle_is_retried_and_a_slot_waits_for_it(signals: Signals) -> None:
    queue = Queue(2)
    queue.fail_settles = 2
    loop = WorkLoop(queue, _limits(), signals=signals, wake_on=WAKE)
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stopping))
    await eventually(lambda: len(queue.settled) == 2, what="the settle on its third try")
    await eventually(lambda: loop.in_flight == 0, what="the slots freed")
    stopping.set()
    await task
    assert sorted(queue.settled) == [0, 2]


async def test_jobs_unfinished_after_the_grace_period_are_released(signals: Signals) -> None:
    queue = Queue(3)
    queue.gate.clear()  # they never finish
    loop = WorkLoop(queue, _limits(grace=0.05), signals=signals, wake_on=WAKE)
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stopping))
    await eventually(lambda: queue.running == 3, what="all three running")
    stopping.set()
    await task
    assert sorted(queue.released) == [0, 1, 2]
    assert queue.settled == []
    assert loop.in_flight == 0


@pytest.mark.parametrize(
    ("until_due", "expected"),
    [(0.7, 0.7), (None, IDLE_LOOK_MAX_SECONDS), (-3.0, POLL), (3600.0, IDLE_LOOK_MAX_SECONDS)],
)
async def test_an_idle_loop_looks_again_when_work_falls_due(
    engine: AsyncEngine, until_due: float | None, expected: float
) -> None:
    """Wake-ups can arrive (reliable signals): the next look is at the source's next due
    time, at least a poll interval and at most IDLE_LOOK_MAX_SECONDS away."""
    listening = ListeningSignals(engine)
    queue = Queue(0, until_due=until_due)
    timer = ManualTimer()
    loop = WorkLoop(queue, _limits(), signals=listening, wake_on=WAKE, timer=timer)
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stopping))
    try:
        await eventually(lambda: timer.asleep and loop.idle, what="the loop to go idle")
        assert timer.requested[-1] == pytest.approx(expected)
        assert queue.claims == 1
        # A wake-up alone (the timer stands still) makes it look again.
        queue.waiting.append(7)
        listening.fire([WAKE])
        await eventually(lambda: queue.settled == [14], what="the woken loop's job")
        assert queue.claims == 2
    finally:
        stopping.set()
        await task


async def test_while_wake_ups_cannot_arrive_an_idle_loop_looks_every_poll_interval(
    signals: Signals,
) -> None:
    queue = Queue(0, until_due=None)
    timer = ManualTimer()
    loop = WorkLoop(queue, _limits(), signals=signals, wake_on=WAKE, timer=timer)
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stopping))
    try:
        for looks in range(1, 6):
            await eventually(lambda: timer.asleep and loop.idle, what="the loop to go idle")
            assert queue.claims == looks
            assert timer.requested[-1] == POLL
            timer.advance_to(timer.next_deadline)
    finally:
        stopping.set()
        await task
