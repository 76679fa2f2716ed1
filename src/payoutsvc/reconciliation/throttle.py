"""How fast a reconciliation may ask a gateway, so it cannot starve the payouts.

A moving window of ``PAYOUTSVC_RECONCILE_CALLS_PER_SECOND`` calls per second per gateway,
counted by the `limits` library (as the API's request budgets, ratelimit.py) in this
process's memory. The executor's own calls are not counted here: whatever the gateway
allows, a reconciliation takes at most this share of it, however many payouts it covers.
"""

from __future__ import annotations

import asyncio
import time

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

_NAMESPACE = "reconcile"


class CallBudget:
    def __init__(self, calls_per_second: int) -> None:
        self.item = RateLimitItemPerSecond(calls_per_second, 1)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def acquire(self, gateway: str) -> None:
        """Wait until one more call to ``gateway`` fits in the budget, and count it."""
        while not await self._limiter.hit(self.item, _NAMESPACE, gateway):
            stats = await self._limiter.get_window_stats(self.item, _NAMESPACE, gateway)
            await asyncio.sleep(max(0.01, stats.reset_time - time.time()))
