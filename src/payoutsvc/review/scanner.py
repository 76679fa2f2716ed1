"""The worker's review scan, paced: it reads what is new in chunks, each one short
transaction (ReviewService.scan with a size), and sleeps between chunks so that it is busy
at most PAYOUTSVC_REVIEW_MAX_DUTY of the time and payout creation beside it keeps its pace.

Between chunks no transaction is open and the watermark's lock is released; every chunk takes
the lock again, reads from the watermark the previous chunk committed and moves it past what
it read. So a crash mid-scan loses nothing (the next scan starts where the last committed
chunk stopped) and duplicates nothing (an anomaly found again updates the open one); a second
worker that looks in between finds the watermark's scan time fresh and does not start another
scan (and would only take chunks in turn if it did)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from payoutsvc.review.service import ReviewService, ScanResult
from payoutsvc.runtime import Runtime

# A chunk reads this many times more approvals than payouts: approvals are fewer, and every
# chunk that has any counts its approvers' whole approver_concentration window, a cost that
# does not shrink with the chunk, so they come in fewer, larger chunks.
APPROVALS_PER_PAYOUT_CHUNK = 10


class PacedScan:
    def __init__(
        self,
        runtime: Runtime,
        *,
        max_duty: float | None = None,
        chunk_payouts: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.max_duty = settings.review_max_duty if max_duty is None else max_duty
        self.chunk = settings.review_chunk_payouts if chunk_payouts is None else chunk_payouts
        self.sleep = sleep
        self.clock = clock

    def pause_after(self, busy_seconds: float) -> float:
        """How long to sleep after a chunk that took ``busy_seconds`` so the scan's share of
        the time stays at ``max_duty``."""
        return busy_seconds * (1 - self.max_duty) / self.max_duty

    async def run(self, now: datetime, *, min_interval: timedelta | None = None) -> ScanResult:
        """One scan up to ``now`` (less the scan lag), chunk by chunk; ``min_interval``: skip
        it when another scan moved the watermark more recently. The totals of its chunks."""
        totals = ScanResult(0, 0, 0, 0)
        first = True
        while True:
            began = self.clock()
            async with self.runtime.db.transaction() as session:
                chunk = await ReviewService(session, self.runtime).scan(
                    now,
                    min_interval=min_interval if first else None,
                    max_payouts=self.chunk,
                    max_approvals=self.chunk * APPROVALS_PER_PAYOUT_CHUNK,
                )
            busy = self.clock() - began
            first = False
            totals = ScanResult(
                totals.new_payouts + chunk.new_payouts,
                totals.new_approvals + chunk.new_approvals,
                totals.detected + chunk.detected,
                totals.updated + chunk.updated,
            )
            if chunk.complete:
                return totals
            await self.sleep(self.pause_after(busy))
