"""The webhook sender: claims due deliveries, signs and posts them, records what happened.

One sender runs in each process with the worker enabled (``payoutsvc serve`` by default,
``payoutsvc worker``); any number may share one PostgreSQL database.

* **Claim** (``webhooks/claim.py``, one transaction): lease due deliveries and count the
  attempt.
* **Attempt** (``webhooks/attempt.py``, no transaction open): sign, SSRF-check and post over
  the sender's own pinned client; decide what comes next.
* **Record** (``webhooks/record.py``, one transaction per batch of finished attempts).

:class:`WebhookSender` is the :class:`~payoutsvc.work_loop.WorkSource` that ``run`` hands to
a :class:`~payoutsvc.work_loop.WorkLoop` (so one slow receiver never holds up the others,
and results are recorded in batches); ``run_once`` does one claim-send-record round, for
tests and tools.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import structlog

from payoutsvc.background import BackgroundLoops
from payoutsvc.db.base import utcnow
from payoutsvc.metrics import WEBHOOK_IN_FLIGHT, WEBHOOK_OLDEST_PENDING_AGE, WEBHOOK_PENDING
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.attempt import DeliveryAttempter, Outcome
from payoutsvc.webhooks.claim import ClaimedDelivery, DeliveryClaimer
from payoutsvc.webhooks.record import Recorder
from payoutsvc.webhooks.render import Renderers
from payoutsvc.webhooks.repository import DELIVERIES_DUE, WebhookRepository
from payoutsvc.webhooks.ssrf import DeliveryResult, Resolver
from payoutsvc.webhooks.transport import PinnedHttp11Client, make_webhook_client
from payoutsvc.work_loop import REAL_TIME, LoopTimer, WorkLimits, WorkLoop

log = structlog.get_logger(__name__)

DEFAULT_CONCURRENCY = 100
DEFAULT_BATCH_SIZE = 100
RETENTION = timedelta(days=30)
PURGE_BATCH_SIZE = 1000
STOP_GRACE_SECONDS = 5.0


class WebhookSender:
    def __init__(
        self,
        runtime: Runtime,
        *,
        resolver: Resolver | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        batch_size: int = DEFAULT_BATCH_SIZE,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utcnow,
        timer: LoopTimer = REAL_TIME,
        renderers: Renderers | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.concurrency = concurrency
        self.batch_size = min(batch_size, concurrency)
        self.clock = clock
        # When the loop's timed looks happen (tests: only when they move time on).
        self._timer = timer
        self._client: PinnedHttp11Client | None = None
        self.claimer = DeliveryClaimer(runtime, clock=clock)
        self.attempter = DeliveryAttempter(
            self.settings,
            lambda: self.client,
            resolver=resolver,
            rng=rng,
            clock=clock,
            renderers=renderers,
            tracing=runtime.tracing,
        )
        self.recorder = Recorder(runtime, clock=clock)
        self._loop: WorkLoop[ClaimedDelivery, Outcome] | None = None  # while run() runs

    @property
    def idle(self) -> bool:
        """Not running, or no claim and no delivery in flight."""
        return self._loop is None or self._loop.idle

    @property
    def client(self) -> PinnedHttp11Client:
        if self._client is None:
            self._client = make_webhook_client()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()  # closes its idle keep-alive connections
            self._client = None

    # -- the three steps, and the WorkSource around them ---------------------------------------
    async def claim(self, limit: int) -> list[ClaimedDelivery]:
        claimed = await self.claimer.claim(limit)
        if len(claimed) < limit and self._client is not None:
            self._client.sweep_idle()  # the queue ran dry: let idle connections go
        return claimed

    async def attempt(self, delivery: ClaimedDelivery) -> Outcome:
        return await self.attempter.attempt(delivery)

    def decide(
        self, delivery: ClaimedDelivery, started: datetime, result: DeliveryResult
    ) -> Outcome:
        return self.attempter.decide(delivery, started, result)

    async def record(self, outcomes: Sequence[Outcome]) -> None:
        await self.recorder.record(outcomes)

    async def settle(self, outcomes: Sequence[Outcome]) -> None:
        await self.record(outcomes)

    async def release(self, jobs: Sequence[ClaimedDelivery]) -> int:
        """Nothing is given back early: an attempt cut off at shutdown may have reached its
        receiver and was already counted, so it waits out its lease like a crashed one."""
        return 0

    async def seconds_until_due(self) -> float | None:
        now = self.clock()
        async with self.runtime.db.transaction(write=False) as session:
            next_retry = await WebhookRepository(session).next_retry_at(now)
        return None if next_retry is None else (next_retry - now).total_seconds()

    # -- loops ---------------------------------------------------------------------------------
    async def run_once(self, limit: int | None = None) -> int:
        """Claim what is due (up to ``limit``), attempt it all concurrently, record; returns
        how many deliveries were handled."""
        claimed = await self.claim(min(limit or self.batch_size, self.concurrency))
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self.attempt(d) for d in claimed))
        await self.record(outcomes)
        return len(outcomes)

    async def run(self, stopping: asyncio.Event) -> None:
        """Until ``stopping`` is set: keep up to ``concurrency`` attempts in flight, claiming
        in batches (a quarter of a batch free is worth a claim), recording finished attempts
        in batches; an idle sender looks again on a wake-up (any process's commit that made
        deliveries due, or a recorded delivery that lets its payout's next event go) or when
        the next retry falls due."""
        limits = WorkLimits(
            name="webhook.sender",
            concurrency=self.concurrency,
            batch_size=self.batch_size,
            poll_interval=self.settings.worker_poll_interval,
            claim_threshold=max(1, self.batch_size // 4),
            # Attempts go on while a batch is being recorded: a slow commit must not
            # hold up sending (one more concurrency's worth may wait for it).
            settle_backlog=self.concurrency,
            grace_seconds=STOP_GRACE_SECONDS,
        )
        self._loop = loop = WorkLoop(
            self,
            limits,
            signals=self.runtime.db.signals,
            wake_on=DELIVERIES_DUE,
            timer=self._timer,
            in_flight_gauge=WEBHOOK_IN_FLIGHT,
        )
        try:
            await loop.run(stopping)
        finally:
            self._loop = None
            await self.aclose()

    # -- retention -----------------------------------------------------------------------------
    async def purge(self, now: datetime | None = None) -> int:
        """Delete finished deliveries (and their attempts) older than the retention period."""
        cutoff = (now or self.clock()) - RETENTION
        total = 0
        while True:
            async with self.runtime.db.transaction() as session:
                removed = await WebhookRepository(session).purge_finished(cutoff, PURGE_BATCH_SIZE)
            total += removed
            if removed < PURGE_BATCH_SIZE:
                break
        if total:
            log.info("webhook.deliveries_purged", count=total)
        return total


# -- wiring (workers.py) -----------------------------------------------------------------------
PURGE_INTERVAL_SECONDS = 3600.0


def start_webhook_sender(
    runtime: Runtime, loops: BackgroundLoops, renderers: Renderers | None = None
) -> WebhookSender:
    """Start the sender and the retention purge in a worker process; ``renderers`` render
    the requests of targets that are not Standard Webhooks endpoints (helpdesk connectors)."""
    sender = WebhookSender(runtime, renderers=renderers)
    loops.start("webhook-sender", sender.run)
    loops.every("webhook-purge", PURGE_INTERVAL_SECONDS, sender.purge)
    return sender


async def refresh_webhook_gauges(runtime: Runtime) -> None:
    """Pending deliveries and the age of the oldest, for /metrics."""
    async with runtime.db.transaction(write=False) as session:
        count, oldest = await WebhookRepository(session).pending_summary()
    WEBHOOK_PENDING.set(count)
    age = 0.0 if oldest is None else max((utcnow() - oldest).total_seconds(), 0.0)
    WEBHOOK_OLDEST_PENDING_AGE.set(age)
