"""The sender's second step: one attempt at one claimed delivery (no transaction open).

Sign with the endpoint's secrets, then ``ssrf.deliver``, which checks the URL and its DNS
answer again and connects only to the address it checked, over the sender's own pinned
keep-alive client. Then decide what comes next: delivered, failed (410 Gone, or the retry
schedule is used up) or pending again after the schedule's delay (or the receiver's
Retry-After on 429/503).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import structlog

from payoutsvc.config import Settings
from payoutsvc.retry import next_delay, retry_after_seconds
from payoutsvc.tracing import Tracing
from payoutsvc.webhooks.claim import ClaimedDelivery, Target
from payoutsvc.webhooks.models import DeliveryStatus
from payoutsvc.webhooks.render import RenderedRequest, Renderers
from payoutsvc.webhooks.signing import build_headers
from payoutsvc.webhooks.ssrf import DeliveryResult, Resolver, deliver
from payoutsvc.webhooks.transport import PinnedHttp11Client

log = structlog.get_logger(__name__)

RETRY_AFTER_STATUSES = frozenset({429, 503})
GONE_REASON = "the receiver answered 410 Gone"
_CREDENTIALS_CACHE_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    delivery: ClaimedDelivery
    started_at: datetime
    status: DeliveryStatus
    next_attempt_at: datetime | None
    result: DeliveryResult | None  # None: no request was made
    error: str | None
    disable_reason: str | None = None

    @property
    def endpoint_failing_since(self) -> datetime | None:
        """The endpoint's failing streak as the claim saw it: lets a batch of healthy
        attempts to a healthy endpoint skip the bookkeeping statements."""
        target = self.delivery.target
        return None if target is None else target.failing_since

    @property
    def metric_outcome(self) -> str:
        if self.status is DeliveryStatus.PENDING:
            return "retry_scheduled"
        return self.status.value


class DeliveryAttempter:
    def __init__(
        self,
        settings: Settings,
        client: Callable[[], PinnedHttp11Client],
        *,
        resolver: Resolver | None,
        rng: random.Random | None,
        clock: Callable[[], datetime],
        renderers: Renderers | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.renderers: Renderers = renderers or {}
        self.tracing = tracing
        # Parsed credentials of connector targets, by their (decrypted) JSON text.
        self._credentials: dict[str, dict[str, str]] = {}
        self._client = client  # opened on first use (and again after the sender closed it)
        self.resolver = resolver
        self.rng = rng
        self.clock = clock

    async def attempt(self, delivery: ClaimedDelivery) -> Outcome:
        """Make one attempt and decide what comes next; never raises."""
        started = self.clock()
        target = delivery.target
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
            result = await self._post(delivery, target, started)
        except Exception as exc:  # one broken delivery must not take the batch down
            log.exception("webhook.attempt_crashed", delivery_id=delivery.id)
            result = DeliveryResult(
                None, 0.0, f"internal error: {type(exc).__name__}", error_code="internal"
            )
        return self.decide(delivery, started, result)

    async def _post(
        self, delivery: ClaimedDelivery, target: Target, started: datetime
    ) -> DeliveryResult:
        if target.secret_error is not None:
            return DeliveryResult(None, 0.0, target.secret_error, error_code="internal")
        if target.kind is not None:
            rendered = self._render(target, delivery)
            if rendered is None:
                error = f"no renderer for target kind {target.kind!r} in this process"
                return DeliveryResult(None, 0.0, error, error_code="internal")
        else:
            headers = build_headers(target.secrets, delivery.event_id, started, delivery.body)
            rendered = RenderedRequest("POST", target.url, headers, delivery.body)
        if self.tracing is None:
            return await self._deliver(rendered)
        with self.tracing.payout_span(
            "webhook.deliver",
            delivery.payout_id,
            client=True,
            **{"webhook.delivery_id": delivery.id, "webhook.event_type": delivery.event_type},
        ) as span:
            self.tracing.inject(rendered.headers)
            result = await self._deliver(rendered)
            if result.status_code is not None:
                span.set_attribute("http.response.status_code", result.status_code)
            return result

    async def _deliver(self, rendered: RenderedRequest) -> DeliveryResult:
        result = await self._request(rendered)
        if rendered.then is None or not result.ok:
            return result
        try:
            write = rendered.then(result.response_body)
        except ValueError as exc:
            error = f"cannot build the write from the read's answer: {exc}"
            return replace(result, error=error, error_code="protocol_error")
        written = await self._request(write)
        return replace(written, latency_ms=round(result.latency_ms + written.latency_ms, 3))

    async def _request(self, rendered: RenderedRequest) -> DeliveryResult:
        return await deliver(
            rendered.url,
            rendered.headers,
            rendered.body,
            method=rendered.method,
            allow_private=self.settings.webhook_allow_private,
            timeout=self.settings.webhook_timeout_seconds,
            client=self._client(),
            resolver=self.resolver,
            # The sender's own client keys reused connections by hostname *and* address.
            keep_alive=True,
        )

    def _render(self, target: Target, delivery: ClaimedDelivery) -> RenderedRequest | None:
        """A connector target's request (its credentials are the secret, as JSON)."""
        renderer = self.renderers.get(target.kind or "")
        if renderer is None:
            return None
        text = target.secrets[0]
        credentials = self._credentials.get(text)
        if credentials is None:
            if len(self._credentials) >= _CREDENTIALS_CACHE_LIMIT:
                self._credentials.clear()
            credentials = self._credentials[text] = json.loads(text)
        return renderer(target.url, credentials, target.options or {}, delivery.body)

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
