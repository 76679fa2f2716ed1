"""Which background work a process runs: always housekeeping; the executor and webhook
sender when the worker is enabled (``payoutsvc serve`` by default, ``payoutsvc worker``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from payoutsvc.audit import checkpoint_if_due
from payoutsvc.background import BackgroundLoops
from payoutsvc.connectors.kinds import RENDERERS
from payoutsvc.connectors.service import ConnectorService
from payoutsvc.db.base import utcnow
from payoutsvc.executor.loop import start_executor
from payoutsvc.executor.metrics import refresh_executor_gauges
from payoutsvc.gateways.registry import registry_for
from payoutsvc.metrics import ThrottledRefresh
from payoutsvc.payouts.repository import PayoutRepository
from payoutsvc.reconciliation.runner import ReconciliationRunner
from payoutsvc.reconciliation.service import ReconciliationService
from payoutsvc.review.scanner import PacedScan
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.sender import refresh_webhook_gauges, start_webhook_sender

IDEMPOTENCY_PURGE_INTERVAL_SECONDS = 3600.0
# How long a helpdesk's redelivered trigger is recognised by its event_id.
INBOUND_EVENT_RETENTION = timedelta(days=30)


def start_background_work(
    runtime: Runtime, loops: BackgroundLoops, run_worker: bool
) -> Callable[[], Awaitable[None]]:
    """Start the loops; returns the coroutine function that refreshes /metrics gauges (at
    most every PAYOUTSVC_METRICS_REFRESH_SECONDS)."""

    async def purge_idempotency() -> None:
        async with runtime.db.transaction() as session:
            await PayoutRepository(session).purge_idempotency(utcnow())

    async def purge_inbound_events() -> None:
        async with runtime.db.transaction() as session:
            await ConnectorService(session, runtime).purge_inbound_events(
                utcnow() - INBOUND_EVENT_RETENTION
            )

    loops.every("idempotency-purge", IDEMPOTENCY_PURGE_INTERVAL_SECONDS, purge_idempotency)
    loops.every("inbound-event-purge", IDEMPOTENCY_PURGE_INTERVAL_SECONDS, purge_inbound_events)
    if run_worker:
        start_executor(runtime, loops)
        start_webhook_sender(runtime, loops, RENDERERS)

        async def audit_checkpoint() -> None:
            async with runtime.db.transaction() as session:
                await checkpoint_if_due(
                    session,
                    runtime.audit_key,
                    utcnow(),
                    runtime.settings.audit_checkpoint_interval_seconds,
                )

        # Checked hourly at most, recorded when the latest checkpoint is older than the
        # interval (daily by default): restarts and several workers do not multiply them.
        loops.every(
            "audit-checkpoint",
            min(runtime.settings.audit_checkpoint_interval_seconds, 3600.0),
            audit_checkpoint,
        )

        start_reconciliations(runtime, loops)

        async def review_scan() -> None:
            interval = runtime.settings.review_interval
            await PacedScan(runtime).run(utcnow(), min_interval=timedelta(seconds=interval * 0.9))

        # Like the checkpoint: every worker checks, the watermark's lock and its scan time
        # make it one scan per interval across all of them (review/scanner.py).
        loops.every("review-scan", runtime.settings.review_interval, review_scan)

    async def refresh_gauges() -> None:
        await refresh_executor_gauges(runtime)
        await refresh_webhook_gauges(runtime)

    return ThrottledRefresh(refresh_gauges, runtime.settings.metrics_refresh_seconds)


def start_reconciliations(runtime: Runtime, loops: BackgroundLoops) -> None:
    """Every PAYOUTSVC_RECONCILE_POLL_SECONDS: record the daily run once it is due (the
    audit checkpoint's way: a periodic look that records only what is missing, so several
    workers and restarts record one per day), then run what is waiting, one at a time."""
    runner = ReconciliationRunner(runtime, registry_for(runtime))

    async def reconcile() -> None:
        async with runtime.db.transaction() as session:
            await ReconciliationService(session, runtime).schedule_daily(utcnow())
        while not loops.stopping.is_set() and await runner.run_once() is not None:
            pass

    loops.every("reconciliation", runtime.settings.reconcile_poll_seconds, reconcile)
