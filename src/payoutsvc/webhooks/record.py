"""The sender's third step: record a batch of finished attempts in one transaction.

The outcome on each delivery (only while the claim that made it still holds the lease), an
attempt log row, the endpoint's health; 410 Gone or five days of nothing but failures
disables the endpoint and cancels what it still had pending.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import structlog

from payoutsvc.db.signals import signal_on_commit
from payoutsvc.metrics import WEBHOOK_ATTEMPT_LATENCY, WEBHOOK_DELIVERIES
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.attempt import GONE_REASON, Outcome
from payoutsvc.webhooks.models import DeliveryStatus
from payoutsvc.webhooks.repository import (
    DELIVERIES_DUE,
    AttemptRow,
    OutcomeRow,
    WebhookRepository,
)

log = structlog.get_logger(__name__)

DISABLE_AFTER_FAILING_FOR = timedelta(days=5)
FAILING_REASON = (
    "every delivery attempt failed for 5 days (see failing_since); fix the receiver, then "
    "enable the endpoint and re-send"
)


class Recorder:
    def __init__(self, runtime: Runtime, *, clock: Callable[[], datetime]) -> None:
        self.runtime = runtime
        self.clock = clock

    async def record(self, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        now = self.clock()
        async with self.runtime.db.transaction() as session:
            repo = WebhookRepository(session)
            await repo.skip_commit_flush()
            existing = set(await repo.record_outcomes([_outcome_row(o) for o in outcomes]))
            await repo.insert_attempts(
                [
                    _attempt_row(o)
                    for o in outcomes
                    if o.result is not None and o.delivery.id in existing
                ]
            )
            disabled = await _update_endpoint_health(repo, outcomes, now)
            if disabled:
                await repo.cancel_pending(
                    disabled, "canceled: the endpoint was disabled (see disabled_reason)", now
                )
            if any(o.status is not DeliveryStatus.PENDING for o in outcomes):
                # A delivery that left pending lets its payout's next event to that endpoint
                # go (claim_due's ordering rule): idle senders look again once this commits.
                signal_on_commit(session, DELIVERIES_DUE)
        _count_and_log(outcomes, disabled)


def _count_and_log(outcomes: Sequence[Outcome], disabled: Sequence[str]) -> None:
    for o in outcomes:
        WEBHOOK_DELIVERIES.labels(outcome=o.metric_outcome).inc()
        if o.result is not None:
            WEBHOOK_ATTEMPT_LATENCY.observe(o.result.latency_ms / 1000.0)
        if o.status is DeliveryStatus.FAILED:
            log.warning(
                "webhook.delivery_failed",
                delivery_id=o.delivery.id,
                endpoint_id=o.delivery.endpoint_id,
                attempts=o.delivery.attempts,
                error=o.error,
            )
    for endpoint_id in disabled:
        log.warning("webhook.endpoint_disabled", endpoint_id=endpoint_id)


async def _update_endpoint_health(
    repo: WebhookRepository, outcomes: Sequence[Outcome], now: datetime
) -> list[str]:
    """Track each endpoint's run of failures by its latest attempt in this batch; returns
    the endpoints this batch disabled."""
    latest: dict[str, Outcome] = {}
    for o in sorted(outcomes, key=lambda o: o.started_at):
        if o.result is not None:
            latest[o.delivery.endpoint_id] = o
    # The statements are conditional, so acting on what the claim saw is safe: a streak
    # another sender started or ended meanwhile is set right by the next attempt.
    recovered = [
        e
        for e, o in latest.items()
        if o.result is not None and o.result.ok and o.endpoint_failing_since is not None
    ]
    failing = {e: o for e, o in latest.items() if o.result is None or not o.result.ok}
    newly_failing = [e for e, o in failing.items() if o.endpoint_failing_since is None]
    cutoff = now - DISABLE_AFTER_FAILING_FOR
    failing_too_long = [
        e
        for e, o in failing.items()
        if o.endpoint_failing_since is not None and o.endpoint_failing_since <= cutoff
    ]
    await repo.mark_endpoints_healthy(recovered)
    if newly_failing:
        first_failure = min(failing[e].started_at for e in newly_failing)
        await repo.mark_endpoints_failing(newly_failing, first_failure)
    disabled: list[str] = []
    gone = sorted({o.delivery.endpoint_id for o in outcomes if o.disable_reason == GONE_REASON})
    if gone:
        disabled += await repo.disable_endpoints(
            gone, f"{GONE_REASON} at {now.isoformat(timespec='seconds')}", now
        )
    if failing_too_long:
        disabled += await repo.disable_failing_endpoints(
            failing_too_long, cutoff, FAILING_REASON, now
        )
    return disabled


def _outcome_row(o: Outcome) -> OutcomeRow:
    result = o.result
    return OutcomeRow(
        id=o.delivery.id,
        token=o.delivery.token,
        status=o.status.value,
        next_attempt_at=o.next_attempt_at,
        at=o.started_at,
        status_code=result.status_code if result else None,
        latency_ms=result.latency_ms if result else None,
        error=o.error,
        response_excerpt=result.response_excerpt if result else None,
        delivered_at=o.started_at if o.status is DeliveryStatus.DELIVERED else None,
    )


def _attempt_row(o: Outcome) -> AttemptRow:
    assert o.result is not None
    return AttemptRow(
        delivery_id=o.delivery.id,
        attempt=o.delivery.attempts,
        at=o.started_at,
        status_code=o.result.status_code,
        latency_ms=o.result.latency_ms,
        error=o.result.error,
        response_excerpt=o.result.response_excerpt or None,
    )
