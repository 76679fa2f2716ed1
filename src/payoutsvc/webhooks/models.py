"""Webhook endpoints, their deliveries (the sender's job queue) and each attempt's record."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from payoutsvc.db.base import Base, UtcDateTime


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its (next) attempt, or being attempted under a lease
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # retries used up, or the receiver answered 410 Gone
    CANCELED = "canceled"  # its endpoint was disabled or deleted before it got through


# Statuses after which a delivery no longer holds back later events of its payout.
GIVEN_UP: frozenset[DeliveryStatus] = frozenset({DeliveryStatus.FAILED, DeliveryStatus.CANCELED})


class WebhookEndpoint(Base):
    """A helpdesk URL that receives signed payout events of one integration."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        Index("ix_webhook_endpoints_integration_id_enabled", "integration_id", "enabled"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    integration_id: Mapped[str] = mapped_column(ForeignKey("integrations.id"))
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text, default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # ``whsec_…`` secrets exist only encrypted, bound to the endpoint id, so a blob copied to
    # another endpoint's row does not decrypt.
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    # After a rotation the old secret keeps signing (beside the new one) until it expires,
    # so receivers can switch over without dropping a message.
    previous_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # Start of the current run of failed attempts (None after a success); five days of it
    # disables the endpoint.
    failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # None: a Standard Webhooks endpoint. Otherwise the kind of helpdesk connector this target
    # belongs to (connectors/): the sender renders its requests with that kind's renderer
    # (method, path, auth, body), the secret holds the helpdesk credentials (JSON) and
    # ``target_options`` how notes are written (locale, tags). Its deliveries, retries, SSRF
    # checks and log are the same as any endpoint's.
    target_kind: Mapped[str | None] = mapped_column(String(40), default=None)
    target_options: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class WebhookDelivery(Base):
    """One event for one endpoint, and through ``status``/``next_attempt_at``/``locked_until``
    the sender's job. ``payload`` is the exact body sent on every attempt."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # One delivery per event and endpoint, whatever retries the outbox sees.
        UniqueConstraint("endpoint_id", "event_id"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        # The ordering rule looks up earlier events of the same payout for the same endpoint.
        Index("ix_webhook_deliveries_order", "endpoint_id", "payout_id", "sequence"),
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    integration_id: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(40))
    payout_id: Mapped[str] = mapped_column(String(40))
    sequence: Mapped[int] = mapped_column(Integer)
    event_type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # Token of the claim holding the lease: a sender whose lease ran out cannot overwrite
    # the result of the sender that claimed the delivery after it.
    locked_by: Mapped[str | None] = mapped_column(String(64), default=None)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_latency_ms: Mapped[float | None] = mapped_column(Float, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    last_response_excerpt: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery, for the delivery log."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery_id_id", "delivery_id", "id"),)

    # 64-bit on PostgreSQL (one row per HTTP attempt adds up); SQLite needs INTEGER for rowid.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    latency_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    response_excerpt: Mapped[str | None] = mapped_column(Text, default=None)
