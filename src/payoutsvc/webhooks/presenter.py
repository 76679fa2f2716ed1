"""Webhook endpoints and deliveries as API clients see them (secrets never included here)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from payoutsvc.timestamps import rfc3339
from payoutsvc.webhooks.models import WebhookAttempt, WebhookDelivery


def _time(value: datetime | None) -> str | None:
    return None if value is None else rfc3339(value)


def endpoint_json(endpoint: Any) -> dict[str, Any]:
    """``endpoint`` is an ORM object or a RETURNING row with the webhook_endpoints columns."""
    return {
        "id": endpoint.id,
        "integration_id": endpoint.integration_id,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "description": endpoint.description,
        "enabled": bool(endpoint.enabled),
        "disabled_reason": endpoint.disabled_reason,
        "disabled_at": _time(endpoint.disabled_at),
        "failing_since": _time(endpoint.failing_since),
        "previous_secret_expires_at": _time(endpoint.previous_secret_expires_at),
        "created_at": rfc3339(endpoint.created_at),
        "updated_at": rfc3339(endpoint.updated_at),
    }


def delivery_json(delivery: Any) -> dict[str, Any]:
    """``delivery`` is an ORM object or a RETURNING row with the webhook_deliveries columns."""
    return {
        "id": delivery.id,
        "endpoint_id": delivery.endpoint_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "payout_id": delivery.payout_id,
        "sequence": delivery.sequence,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": _time(delivery.next_attempt_at),
        "last_attempt_at": _time(delivery.last_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_latency_ms": delivery.last_latency_ms,
        "last_error": delivery.last_error,
        "last_response_excerpt": delivery.last_response_excerpt,
        "created_at": rfc3339(delivery.created_at),
        "delivered_at": _time(delivery.delivered_at),
    }


def attempt_json(attempt: WebhookAttempt) -> dict[str, Any]:
    return {
        "attempt": attempt.attempt,
        "at": rfc3339(attempt.at),
        "status_code": attempt.status_code,
        "latency_ms": attempt.latency_ms,
        "error": attempt.error,
        "response_excerpt": attempt.response_excerpt,
    }


def delivery_detail_json(
    delivery: WebhookDelivery, attempts: list[WebhookAttempt]
) -> dict[str, Any]:
    return {
        **delivery_json(delivery),
        "payload": json.loads(delivery.payload),
        "attempt_history": [attempt_json(a) for a in attempts],
    }
