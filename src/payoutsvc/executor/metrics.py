"""Queue gauges for /metrics, read from the database (any process can serve them)."""

from __future__ import annotations

from payoutsvc.db.base import utcnow
from payoutsvc.executor.repository import ExecutorRepository
from payoutsvc.metrics import EXECUTOR_DUE, EXECUTOR_OLDEST_DUE_AGE, EXECUTOR_QUEUE_DEPTH
from payoutsvc.payouts.status import PayoutStatus
from payoutsvc.runtime import Runtime

_TRACKED = (PayoutStatus.APPROVED, PayoutStatus.PROCESSING, PayoutStatus.NEEDS_REVIEW)


async def refresh_executor_gauges(runtime: Runtime) -> None:
    now = utcnow()
    async with runtime.db.transaction(write=False) as session:
        stats = await ExecutorRepository(session).queue_stats(now)
    for status in _TRACKED:
        EXECUTOR_QUEUE_DEPTH.labels(status=status.value).set(stats["depth"].get(status.value, 0))
    EXECUTOR_DUE.set(stats["due"])
    oldest = stats["oldest_due_since"]
    EXECUTOR_OLDEST_DUE_AGE.set(max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
