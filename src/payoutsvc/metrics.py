"""Prometheus metrics of this process (GET /metrics)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "payoutsvc_http_requests_total", "HTTP requests handled", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "payoutsvc_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PAYOUTS_CREATED = Counter(
    "payoutsvc_payouts_created_total", "Payouts created, by their first status", ["status"]
)
ANOMALIES_DETECTED = Counter(
    "payoutsvc_anomalies_detected_total", "Anomalies the periodic review opened, by kind", ["kind"]
)

# -- executor and gateways -------------------------------------------------------------------
EXECUTOR_QUEUE_DEPTH = Gauge(
    "payoutsvc_executor_queue_depth",
    "Payouts waiting for or owned by the executor (approved, processing), and needs_review",
    ["status"],
)
EXECUTOR_DUE = Gauge(
    "payoutsvc_executor_due_payouts", "Payouts the executor could work on right now"
)
EXECUTOR_OLDEST_DUE_AGE = Gauge(
    "payoutsvc_executor_oldest_due_age_seconds",
    "How long the oldest due payout has been waiting (0 when none is due)",
)
EXECUTOR_IN_FLIGHT = Gauge(
    "payoutsvc_executor_in_flight", "Payouts this process has claimed and not yet finished"
)
EXECUTOR_FINISHED = Counter(
    "payoutsvc_executor_payouts_finished_total",
    "Executor steps by what they left the payout in",
    ["status"],
)
GATEWAY_ATTEMPTS = Counter(
    "payoutsvc_gateway_attempts_total",
    "Gateway calls by gateway, operation and outcome",
    ["gateway", "operation", "outcome"],
)
GATEWAY_LATENCY = Histogram(
    "payoutsvc_gateway_latency_seconds",
    "Gateway call latency",
    ["gateway", "operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
GATEWAY_BREAKER_STATE = Gauge(
    "payoutsvc_gateway_breaker_state",
    "Circuit breaker per gateway: 0 closed, 1 half-open, 2 open",
    ["gateway"],
)
GATEWAY_CALLBACKS = Counter(
    "payoutsvc_gateway_callbacks_total", "Gateway callbacks by result", ["gateway", "result"]
)

GATEWAY_CALLBACK_CONTRADICTIONS = Counter(
    "payoutsvc_gateway_callback_contradictions_total",
    "Verified gateway notices whose final result contradicts a payout's final status "
    "(e.g. paid at the provider, failed here): each one needs a person",
    ["gateway"],
)

RECONCILIATION_FINDINGS = Counter(
    "payoutsvc_reconciliation_findings_total",
    "What completed reconciliations found, by kind (status_mismatch, amount_mismatch, "
    "missing_at_gateway, unknown_to_us; unknown: no certain answer) and gateway",
    ["kind", "gateway"],
)

# -- webhook sender ----------------------------------------------------------------------------
WEBHOOK_DELIVERIES = Counter(
    "payoutsvc_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: delivered, retry_scheduled, failed (given up or "
    "410 Gone), canceled (endpoint disabled or deleted)",
    ["outcome"],
)
WEBHOOK_ATTEMPT_LATENCY = Histogram(
    "payoutsvc_webhook_attempt_duration_seconds",
    "Duration of one webhook HTTP attempt, DNS check included",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
WEBHOOK_IN_FLIGHT = Gauge(
    "payoutsvc_webhook_in_flight", "Webhook attempts this process has started and not finished"
)
WEBHOOK_PENDING = Gauge(
    "payoutsvc_webhook_pending_deliveries", "Webhook deliveries not yet delivered or given up"
)
WEBHOOK_OLDEST_PENDING_AGE = Gauge(
    "payoutsvc_webhook_oldest_pending_age_seconds",
    "Age of the oldest pending webhook delivery (0 when none is pending)",
)


class ThrottledRefresh:
    """Runs ``refresh`` (the queue gauges' database reads) at most once per ``interval``
    seconds however often /metrics is scraped: N scrapers, or one scraping every second,
    cost the database one read per interval. Concurrent scrapes wait for the same read."""

    def __init__(
        self,
        refresh: Callable[[], Awaitable[None]],
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._refresh = refresh
        self._interval = interval
        self._clock = clock
        self._lock = asyncio.Lock()
        self._next_at: float | None = None

    async def __call__(self) -> None:
        if self._fresh():
            return
        async with self._lock:
            if self._fresh():  # another scrape refreshed while this one waited
                return
            try:
                await self._refresh()
            finally:
                # Also after a failure: a database that is down is asked again only after
                # the interval, not by every scrape.
                self._next_at = self._clock() + self._interval

    def _fresh(self) -> bool:
        return self._next_at is not None and self._clock() < self._next_at
