"""Request and response bodies of /v1/webhook-endpoints and /v1/webhook-deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

from payoutsvc.schemas_common import URL_PATTERN, StrictModel, not_nullable
from payoutsvc.webhooks.filters import (
    EVENT_FILTERS_SCHEMA,
    KNOWN_EVENT_TYPES,
    validate_event_filters,
)

DEFAULT_ROTATION_GRACE_SECONDS = 24 * 3600
MAX_ROTATION_GRACE_SECONDS = 7 * 24 * 3600

DeliveryStatusName = Literal["pending", "delivered", "failed", "canceled"]
GivenUpStatus = Literal["failed", "canceled"]
ALL_GIVEN_UP: tuple[GivenUpStatus, ...] = ("failed", "canceled")

_EVENTS_DESCRIPTION = (
    "Event types to receive: exact names ("
    + ", ".join(f"`{e}`" for e in KNOWN_EVENT_TYPES)
    + "), `payout.*`, or `*`."
)


def _check_filters(value: list[str]) -> list[str]:
    try:
        return validate_event_filters(value)
    except ValueError as exc:
        raise PydanticCustomError("invalid_event_filter", str(exc)) from None


class WebhookEndpointCreate(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://helpdesk.example.com/hooks/payoutsvc",
                    "events": ["payout.*"],
                    "description": "Zendesk production",
                }
            ]
        },
    )

    url: str = Field(
        min_length=1,
        max_length=2048,
        examples=["https://helpdesk.example.com/hooks/payoutsvc"],
        description="https URL that resolves only to public addresses (http and private "
        "addresses only with `PAYOUTSVC_WEBHOOK_ALLOW_PRIVATE=true`).",
        json_schema_extra={"pattern": URL_PATTERN},
    )
    events: list[str] = Field(
        default_factory=lambda: ["payout.*"],
        min_length=1,
        max_length=64,
        examples=[["payout.*"]],
        description=_EVENTS_DESCRIPTION,
        json_schema_extra=EVENT_FILTERS_SCHEMA,
    )
    description: str | None = Field(default=None, max_length=500, examples=["Zendesk production"])
    integration_id: str | None = Field(
        default=None,
        max_length=40,
        description="Only for `admin` keys: register the endpoint for another integration. "
        "Defaults to the key's own integration.",
    )

    @field_validator("events")
    @classmethod
    def _events_known(cls, value: list[str]) -> list[str]:
        return _check_filters(value)


def _patch_url_schema(schema: dict[str, Any]) -> None:
    not_nullable(schema)
    schema["pattern"] = URL_PATTERN


def _patch_events_schema(schema: dict[str, Any]) -> None:
    not_nullable(schema)
    schema.update(EVENT_FILTERS_SCHEMA)


class WebhookEndpointUpdate(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"events": ["payout.succeeded", "payout.failed"]}]},
    )

    url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        json_schema_extra=_patch_url_schema,
    )
    events: list[str] | None = Field(
        default=None, min_length=1, max_length=64, json_schema_extra=_patch_events_schema
    )
    description: str | None = Field(default=None, max_length=500)
    enabled: StrictBool | None = Field(
        default=None,
        json_schema_extra=not_nullable,
        description="`false` stops deliveries (pending ones are canceled); `true` re-enables "
        "an endpoint, also one the service disabled, and clears `disabled_reason`.",
    )

    @field_validator("events")
    @classmethod
    def _events_known(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_filters(value)


class RotateSecret(StrictModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"grace_period_seconds": 86400}]}
    )

    grace_period_seconds: int = Field(
        default=DEFAULT_ROTATION_GRACE_SECONDS,
        ge=0,
        le=MAX_ROTATION_GRACE_SECONDS,
        description="How long the old secret keeps signing beside the new one (default 24 h).",
    )


class ResendDeliveries(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"since": "2026-11-26T00:00:00Z", "statuses": ["failed", "canceled"]}]
        },
    )

    since: datetime = Field(
        description="RFC 3339; deliveries created at or after this time are re-sent."
    )
    statuses: list[GivenUpStatus] = Field(
        default_factory=lambda: list(ALL_GIVEN_UP),
        min_length=1,
        description="Which given-up deliveries to re-send.",
    )


class WebhookEndpointOut(BaseModel):
    id: str = Field(examples=["we_01jd5x0z3q8m4k2n7p9r6s5t4v"])
    integration_id: str
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(
        description="Why the endpoint is disabled, e.g. it answered 410 or failed for 5 days."
    )
    disabled_at: datetime | None
    failing_since: datetime | None = Field(
        description="Start of the current run of failed attempts; null when healthy."
    )
    previous_secret_expires_at: datetime | None = Field(
        description="While set and in the future, deliveries are also signed with the "
        "previous secret."
    )
    created_at: datetime
    updated_at: datetime


class WebhookEndpointWithSecret(WebhookEndpointOut):
    secret: str = Field(
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        description="The signing secret. Shown only in this response; store it now.",
    )


class ResendResult(BaseModel):
    requeued: int = Field(description="How many deliveries were made due again.")


class WebhookAttemptOut(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None
    response_excerpt: str | None


class WebhookDeliveryOut(BaseModel):
    id: str = Field(examples=["wd_01jd5x0z3q8m4k2n7p9r6s5t4v"])
    endpoint_id: str
    event_id: str = Field(description="The `webhook-id` header of every attempt.")
    event_type: str
    payout_id: str
    sequence: int
    status: DeliveryStatusName
    attempts: int = Field(description="Attempts made (since the last manual re-send).")
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_latency_ms: float | None
    last_error: str | None
    last_response_excerpt: str | None = Field(description="At most 4 KB of the last response.")
    created_at: datetime
    delivered_at: datetime | None


class WebhookDeliveryDetail(WebhookDeliveryOut):
    payload: dict[str, Any] = Field(description="The exact body sent.")
    attempt_history: list[WebhookAttemptOut] = Field(description="Every attempt, oldest first.")
