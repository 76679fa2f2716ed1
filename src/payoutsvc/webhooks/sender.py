"""The webhook sender: claims due deliveries, signs and posts them, records what happened.

One sender runs in each process with the worker enabled (``payoutsvc serve`` by default,
``payoutsvc worker``); any number may share one PostgreSQL database.

* **Claim** (one transaction): lease due deliveries (see ``WebhookRepository.claim_due`` for
  the ordering rule and how several senders stay out of each other's way) and count the
  attempt. A sender that dies mid-flight loses its lease and another sends again: delivery
  is at-least-once, and receivers de-duplicate on ``webhook-id`` (the event id).
* **Attempt** (no transaction open): sign with the endpoint's secrets, then
  ``ssrf.deliver``, which checks the URL and its DNS answer again and connects only to the
  address it checked.
* **Record** (one transaction per batch of finished attempts): the outcome on each delivery,
  an attempt log row, the endpoint's health; 410 Gone or five days of nothing but failures
  disables the endpoint and cancels what it still had pending.

``run`` pipelines these steps so one slow receiver never holds up the others; ``run_once``
does one claim-send-record round, for tests and tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from payoutsvc.background import BackgroundLoops
from payoutsvc.db.base import utcnow
from payoutsvc.db.signals import IDLE_LOOK_MAX_SECONDS, REAL_TIME, LoopTimer
from payoutsvc.metrics import (
    WEBHOOK_ATTEMPT_LATENCY,
    WEBHOOK_DELIVERIES,
    WEBHOOK_IN_FLIGHT,
    WEBHOOK_OLDEST_PENDING_AGE,
    WEBHOOK_PENDING,
)
from payoutsvc.retry import next_delay, retry_after_seconds
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.models import DeliveryStatus
from payoutsvc.webhooks.repository import DELIVERIES_DUE, WebhookRepository
from payoutsvc.webhooks.service import unseal_secret
from payoutsvc.webhooks.signing import build_headers
from payoutsvc.webhooks.ssrf import MAX_ADDRESS_ATTEMPTS, DeliveryResult, Resolver, deliver
from payoutsvc.webhooks.transport import PinnedHttp11Client, make_webhook_client

log = structlog.get_logger(__name__)

DEFAULT_CONCURRENCY = 100
DEFAULT_BATCH_SIZE = 100
# A lease outlives the longest attempt by this much before another sender may take the
# delivery over. An attempt is at most one DNS lookup and MAX_ADDRESS_ATTEMPTS connections,
# each bounded by the timeout.
LEASE_MARGIN_SECONDS = 60.0
DISABLE_AFTER_FAILING_FOR = timedelta(days=5)
RETENTION = timedelta(days=30)
PURGE_BATCH_SIZE = 1000
# Wait this long for more attempts to finish before recording, so a busy sender writes
# results in batches rather than one transaction per delivery.
RECORD_COALESCE_SECONDS = 0.005
RETRY_AFTER_STATUSES = frozenset({429, 503})
STOP_GRACE_SECONDS = 5.0
_SECRET_CACHE_LIMIT = 4096

GONE_REASON = "the receiver answered 410 Gone"
FAILING_REASON = (
    "every delivery attempt failed for 5 days (see failing_since); fix the receiver, then "
    "enable the endpoint and re-send"
)


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: str
    endpoint_id: str
    event_id: str
    payout_id: str
    sequence: int
    event_type: str
    body: bytes
    attempts: int  # including the attempt it was claimed for
    token: str


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to send: the endpoint as it was when the delivery was claimed."""

    endpoint_id: str
    url: str
    enabled: bool
    secrets: tuple[str, ...] = ()  # current first, then the previous one during a rotation
    secret_error: str | None = None
    failing_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    delivery: ClaimedDelivery
    started_at: datetime
    status: DeliveryStatus
    next_attempt_at: datetime | None
    result: DeliveryResult | None  # None: no request was made
    error: str | None
    disable_reason: str | None = None
    # The endpoint's failing streak as the claim saw it: lets a batch of healthy attempts
    # to a healthy endpoint skip the bookkeeping statements.
    endpoint_failing_since: datetime | None = None

    @property
    def metric_outcome(self) -> str:
        if self.status is DeliveryStatus.PENDING:
            return "retry_scheduled"
        return self.status.value


@dataclass
class _Pipeline:
    """What the claiming loop and the recording task of ``WebhookSender.run`` share."""

    in_flight: set[asyncio.Task[Outcome]] = field(default_factory=set)
    finished: list[Outcome] = field(default_factory=list)
    recording: int = 0  # outcomes in the record() under way
    closing: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # claimer: look again
    has_finished: asyncio.Event = field(default_factory=asyncio.Event)  # recorder: work
    recorded: asyncio.Event = field(default_factory=asyncio.Event)  # a batch was recorded


class WebhookSender:
    def __init__(
        self,
        runtime: Runtime,
        *,
        client: PinnedHttp11Client | None = None,
        resolver: Resolver | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        batch_size: int = DEFAULT_BATCH_SIZE,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utcnow,
        timer: LoopTimer = REAL_TIME,
    ) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.resolver = resolver
        self.concurrency = concurrency
        self.batch_size = min(batch_size, concurrency)
        self.rng = rng
        self.clock = clock
        # When the claiming loop's timed looks happen (tests: only when they move time on).
        self._timer = timer
        self._client = client
        self._owns_client = client is None
        self._secrets: dict[tuple[str, bytes], str] = {}
        # After a claim that found nothing, look (read-only) before claiming again.
        self._idle = True

    @property
    def client(self) -> PinnedHttp11Client:
        if self._client is None:
            self._client = make_webhook_client()
        return self._client

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()  # closes its idle keep-alive connections
            self._client = None

    # -- claim ---------------------------------------------------------------------------------
    async def claim(self, limit: int) -> list[tuple[ClaimedDelivery, Target | None]]:
        if limit <= 0:
            return []
        now = self.clock()
        token = uuid.uuid4().hex
        longest_attempt = self.settings.webhook_timeout_seconds * (1 + MAX_ADDRESS_ATTEMPTS)
        lease_until = now + timedelta(seconds=longest_attempt + LEASE_MARGIN_SECONDS)
        if self._idle:
            async with self.runtime.db.transaction(write=False) as session:
                if not await WebhookRepository(session).any_due(now):
                    return []
        async with self.runtime.db.transaction() as session:
            repo = WebhookRepository(session)
            await repo.skip_commit_flush()
            rows = await repo.claim_due(now, limit, lease_until, token)
            self._idle = not rows
            if not rows:
                return []
            endpoint_rows = await repo.targets(r.endpoint_id for r in rows)
        targets = {row.id: self._target(row, now) for row in endpoint_rows}
        return [
            (
                ClaimedDelivery(
                    id=r.id,
                    endpoint_id=r.endpoint_id,
                    event_id=r.event_id,
                    payout_id=r.payout_id,
                    sequence=r.sequence,
                    event_type=r.event_type,
                    body=r.payload.encode(),
                    attempts=r.attempts,
                    token=token,
                ),
                targets.get(r.endpoint_id),
            )
            for r in rows
        ]

    def _target(self, row: Any, now: datetime) -> Target:
        blobs = [row.secret_encrypted]
        if (
            row.previous_secret_encrypted is not None
            and row.previous_secret_expires_at is not None
            and row.previous_secret_expires_at > now
        ):
            blobs.append(row.previous_secret_encrypted)
        try:
            secrets = tuple(self._secret(row.id, blob) for blob in blobs)
        except Exception as exc:  # noqa: BLE001  (a wrong key must not stop other endpoints)
            log.error(  # noqa: TRY400  (no traceback: it could quote key material)
                "webhook.secret_unreadable", endpoint_id=row.id, error=type(exc).__name__
            )
            return Target(
                row.id,
                row.url,
                bool(row.enabled),
                (),
                "cannot decrypt the endpoint secret",
                row.failing_since,
            )
        return Target(row.id, row.url, bool(row.enabled), secrets, None, row.failing_since)

    def _secret(self, endpoint_id: str, blob: bytes) -> str:
        # Keyed by the ciphertext itself, so a rotated secret can never be served stale.
        key = (endpoint_id, bytes(blob))
        secret = self._secrets.get(key)
        if secret is None:
            if len(self._secrets) >= _SECRET_CACHE_LIMIT:
                self._secrets.clear()
            secret = unseal_secret(self.runtime.cipher, endpoint_id, key[1])
            self._secrets[key] = secret
        return secret

    # -- attempt -------------------------------------------------------------------------------
    async def attempt(self, delivery: ClaimedDelivery, target: Target | None) -> Outcome:
        """Make one attempt and decide what comes next; never raises."""
        started = self.clock()
        if target is None or not target.enabled:
            return Outcome(
                delivery,
                started,
                DeliveryStatus.CANCELED,
                None,
                None,
                "canceled: endpoint disabled or deleted",
            )
        try:
            if target.secret_error is not None:
                result = DeliveryResult(None, 0.0, target.secret_error, error_code="internal")
            else:
                headers = build_headers(target.secrets, delivery.event_id, started, delivery.body)
                result = await deliver(
                    target.url,
                    headers,
                    delivery.body,
                    allow_private=self.settings.webhook_allow_private,
                    timeout=self.settings.webhook_timeout_seconds,
                    client=self.client,
                    resolver=self.resolver,
                    # Only our own transport keys reused connections by hostname *and*
                    # address; a client handed in from outside gets one per attempt.
                    keep_alive=self._owns_client,
                )
        except Exception as exc:  # one broken delivery must not take the batch down
            log.exception("webhook.attempt_crashed", delivery_id=delivery.id)
            result = DeliveryResult(
                None, 0.0, f"internal error: {type(exc).__name__}", error_code="internal"
            )
        return replace(
            self.decide(delivery, started, result), endpoint_failing_since=target.failing_since
        )

    def decide(
        self, delivery: ClaimedDelivery, started: datetime, result: DeliveryResult
    ) -> Outcome:
        """2xx: delivered. 410: failed, and the endpoint gets disabled. Anything else: retried
        after the schedule's (jittered) delay, or after Retry-After on 429/503, until the
        schedule is used up."""
        if result.ok:
            return Outcome(delivery, started, DeliveryStatus.DELIVERED, None, result, None)
        if result.status_code == 410:
            return Outcome(
                delivery, started, DeliveryStatus.FAILED, None, result, result.error, GONE_REASON
            )
        finished = self.clock()
        schedule = self.settings.webhook_retry_schedule
        delay = next_delay(schedule, delivery.attempts, self.rng)
        if delay is not None and result.status_code in RETRY_AFTER_STATUSES:
            asked = retry_after_seconds(result.retry_after, finished)
            if asked is not None:
                delay = asked
        if delay is None:
            return Outcome(delivery, started, DeliveryStatus.FAILED, None, result, result.error)
        return Outcome(
            delivery,
            started,
            DeliveryStatus.PENDING,
            finished + timedelta(seconds=delay),
            result,
            result.error,
        )

    # -- record --------------------------------------------------------------------------------
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
            disabled = await self._update_endpoint_health(repo, outcomes, now)
            if disabled:
                await repo.cancel_pending(
                    disabled, "canceled: the endpoint was disabled (see disabled_reason)", now
                )
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
        self, repo: WebhookRepository, outcomes: Sequence[Outcome], now: datetime
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

    # -- loops ---------------------------------------------------------------------------------
    async def run_once(self, limit: int | None = None) -> int:
        """Claim what is due (up to ``limit``), attempt it all concurrently, record; returns
        how many deliveries were handled."""
        claimed = await self.claim(min(limit or self.batch_size, self.concurrency))
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self.attempt(d, t) for d, t in claimed))
        await self.record(outcomes)
        return len(outcomes)

    async def run(self, stopping: asyncio.Event) -> None:
        """Until ``stopping`` is set: keep up to ``concurrency`` attempts in flight, claiming as
        slots free up, while a second task records finished attempts in batches (so neither a
        slow receiver nor a slow commit holds the others up)."""
        state = _Pipeline()
        recorder = asyncio.create_task(self._record_loop(state), name="webhook-recorder")
        stop_watch = asyncio.create_task(_set_when(stopping, state.wake))
        poll = self.settings.worker_poll_interval
        signals = self.runtime.db.signals
        signals.start()
        due = signals.subscribe(DELIVERIES_DUE)
        idle_wait = poll  # grows while looks keep finding nothing
        # Claim in batches rather than one slot at a time, unless the queue ran dry.
        min_claim = max(1, self.batch_size // 4)
        try:
            while not stopping.is_set():
                state.wake.clear()
                free = self.concurrency - len(state.in_flight)
                backlog = len(state.finished) + state.recording
                if free < min_claim or backlog >= self.concurrency:
                    await self._timer.wait_any((state.wake,), poll)
                    continue
                # A commit announced, or an outcome recorded, from here on triggers the next look.
                due.clear()
                state.recorded.clear()
                try:
                    want = min(free, self.batch_size)
                    claimed = await self.claim(want)
                except Exception:  # the sender must outlive a database hiccup
                    log.exception("webhook.sender_claim_failed")
                    await self._timer.wait_any((state.wake,), poll)
                    continue
                for delivery, target in claimed:
                    self._launch(state, delivery, target)
                WEBHOOK_IN_FLIGHT.set(len(state.in_flight))
                if claimed:
                    idle_wait = poll
                if len(claimed) < want:
                    # Nothing more is due now. Look again when a commit makes deliveries due
                    # (any process: db/signals.py), when a recorded outcome lets a payout's
                    # next event go, or on our own: retries and expired leases fall due with
                    # nobody writing. An idle queue is looked at ever less often, down to
                    # every IDLE_LOOK_MAX_SECONDS, unless other processes' wake-ups cannot
                    # arrive (SQLite, or the listener is down); then at the poll interval.
                    if self._client is not None:
                        self._client.sweep_idle()
                    wait = idle_wait if signals.reliable else poll
                    await self._timer.wait_any((state.recorded, stopping, due), wait)
                    if not claimed:
                        idle_wait = min(idle_wait * 2, max(poll, IDLE_LOOK_MAX_SECONDS))
        finally:
            signals.unsubscribe(DELIVERIES_DUE, due)
            stop_watch.cancel()
            if state.in_flight:
                await asyncio.wait(state.in_flight, timeout=STOP_GRACE_SECONDS)
            for task in list(state.in_flight):
                task.cancel()  # its lease runs out and another sender sends it again
            state.closing = True
            state.has_finished.set()
            with contextlib.suppress(Exception):
                await recorder
            WEBHOOK_IN_FLIGHT.set(0)
            await self.aclose()

    def _launch(self, state: _Pipeline, delivery: ClaimedDelivery, target: Target | None) -> None:
        task = asyncio.create_task(self.attempt(delivery, target), name=f"webhook:{delivery.id}")
        state.in_flight.add(task)

        def finished(done: asyncio.Task[Outcome]) -> None:
            state.in_flight.discard(done)
            if not done.cancelled():
                state.finished.append(done.result())
                state.has_finished.set()
            state.wake.set()

        task.add_done_callback(finished)

    async def _record_loop(self, state: _Pipeline) -> None:
        poll = self.settings.worker_poll_interval
        while True:
            if not state.finished:
                if state.closing:
                    return
                state.has_finished.clear()
                await _wait(state.has_finished, poll)
                continue
            if state.in_flight and len(state.finished) < self.batch_size // 4 and not state.closing:
                # Let a few more attempts finish: one transaction per batch, not per delivery.
                await asyncio.sleep(RECORD_COALESCE_SECONDS)
            batch, state.finished = state.finished, []
            state.recording = len(batch)
            try:
                await self.record(batch)
            except Exception:  # lost outcomes are sent again once their leases run out
                log.exception("webhook.sender_record_failed", count=len(batch))
            finally:
                state.recording = 0
            state.recorded.set()
            state.wake.set()

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


def _outcome_row(o: Outcome) -> dict[str, Any]:
    result = o.result
    return {
        "id": o.delivery.id,
        "token": o.delivery.token,
        "status": o.status.value,
        "next_attempt_at": o.next_attempt_at,
        "at": o.started_at,
        "status_code": result.status_code if result else None,
        "latency_ms": result.latency_ms if result else None,
        "error": o.error,
        "response_excerpt": result.response_excerpt if result else None,
        "delivered_at": o.started_at if o.status is DeliveryStatus.DELIVERED else None,
    }


def _attempt_row(o: Outcome) -> dict[str, Any]:
    assert o.result is not None
    return {
        "delivery_id": o.delivery.id,
        "attempt": o.delivery.attempts,
        "at": o.started_at,
        "status_code": o.result.status_code,
        "latency_ms": o.result.latency_ms,
        "error": o.result.error,
        "response_excerpt": o.result.response_excerpt or None,
    }


async def _set_when(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


async def _wait(event: asyncio.Event, timeout: float) -> None:  # noqa: ASYNC109
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


# -- wiring (workers.py) -----------------------------------------------------------------------
PURGE_INTERVAL_SECONDS = 3600.0


def start_webhook_sender(runtime: Runtime, loops: BackgroundLoops) -> WebhookSender:
    """Start the sender and the retention purge in a worker process."""
    sender = WebhookSender(runtime)
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
