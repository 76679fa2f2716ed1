from __future__ import annotations

from datetime import datetime
from typing import Any, NotRequired, TypedDict

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import false

from payoutsvc.db.base import Base, UtcDateTime


class Payout(Base):
    """A payout and, through ``status``/``next_attempt_at``/``locked_until``, its executor job."""

    __tablename__ = "payouts"
    __table_args__ = (
        Index("ix_payouts_integration_id_id", "integration_id", "id"),
        Index("ix_payouts_ticket", "ticket_system", "ticket_id"),
        Index("ix_payouts_requested_by_created_at", "requested_by", "created_at"),
        Index("ix_payouts_recipient_fingerprint_created_at", "recipient_fingerprint", "created_at"),
        Index("ix_payouts_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_payouts_batch_id", "batch_id"),
        # A reconciliation's period (reconciliation/repository.py payouts_of_period).
        Index("ix_payouts_gateway_created_at", "gateway", "created_at"),
        Index("ix_payouts_gateway_updated_at", "gateway", "updated_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    integration_id: Mapped[str] = mapped_column(ForeignKey("integrations.id"))
    status: Mapped[str] = mapped_column(String(20))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    ticket_system: Mapped[str] = mapped_column(String(64))
    ticket_id: Mapped[str] = mapped_column(String(128))
    ticket_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    reason: Mapped[str] = mapped_column(String(32))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    recipient_type: Mapped[str] = mapped_column(String(32))
    # The full recipient (account, name, bank details) exists only encrypted, bound to the id.
    recipient_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    recipient_public: Mapped[dict[str, Any]] = mapped_column(JSON)
    recipient_fingerprint: Mapped[str] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON)
    required_approvals: Mapped[int] = mapped_column(Integer, default=1)
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    policy_version: Mapped[int | None] = mapped_column(Integer, default=None)
    gateway: Mapped[str] = mapped_column(String(32))
    gateway_idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    gateway_reference: Mapped[str | None] = mapped_column(String(128), default=None)
    gateway_status: Mapped[str | None] = mapped_column(String(64), default=None)
    gateway_details: Mapped[dict[str, str] | None] = mapped_column(
        JSON(none_as_null=True), default=None
    )
    # Set while the provider holds the transfer pending for a reason of its own (a user who
    # must confirm, a receiver who must claim): its deadline. Until then the payout is
    # checked on the slow schedule instead of the unknown-outcome retry schedule.
    gateway_hold_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    failure_code: Mapped[str | None] = mapped_column(String(64), default=None)
    failure_message: Mapped[str | None] = mapped_column(Text, default=None)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    locked_by: Mapped[str | None] = mapped_column(String(64), default=None)
    last_event_sequence: Mapped[int] = mapped_column(Integer, default=0)
    last_event_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The policy day whose limit counters this payout is counted in (policy/models.py
    # LimitCounter.day): what a release (rejected, canceled, failed) subtracts from.
    limit_day: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # The policy's release section decided, at creation, that a person must release the
    # payout once approved: until then it waits in ``approved`` with no ``next_attempt_at``
    # (so the executor's claim never finds it). Sealed by its payout.created and
    # payout.approved events; the release by its payout.released event.
    release_required: Mapped[bool] = mapped_column(Boolean, server_default=false())
    released_by: Mapped[str | None] = mapped_column(String(64), default=None)
    released_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # The payout batch (batches/models.py) that created it; None for a single create. Set in
    # the create's own transaction; not sealed by the chain (payout_digest), as it says how
    # the payout was asked for, not what it pays.
    batch_id: Mapped[str | None] = mapped_column(String(40), nullable=True)


class PayoutColumns(TypedDict):
    """A payouts row by column name, as the create path inserts it: mypy checks every key
    and value type against this list (kept next to the model it mirrors)."""

    id: str
    integration_id: str
    status: str
    idempotency_key: str
    ticket_system: str
    ticket_id: str
    ticket_url: str | None
    reason: str
    amount_minor: int
    currency: str
    recipient_type: str
    recipient_encrypted: bytes
    recipient_public: dict[str, Any]
    recipient_fingerprint: str
    requested_by: str
    description: str | None
    metadata: dict[str, str]
    required_approvals: int
    policy: dict[str, Any] | None
    policy_version: int | None
    gateway: str
    gateway_idempotency_key: str
    gateway_reference: str | None
    gateway_status: str | None
    gateway_details: dict[str, str] | None
    gateway_hold_until: datetime | None
    attempts: int
    failure_code: str | None
    failure_message: str | None
    next_attempt_at: datetime | None
    locked_until: datetime | None
    locked_by: str | None
    created_at: datetime
    updated_at: datetime
    limit_day: int
    release_required: bool
    released_by: str | None
    released_at: datetime | None
    # Set by the batch that created the payout, after its create (batches/service.py).
    batch_id: NotRequired[str | None]
    # The chain head, set once the payout's first events are built.
    last_event_sequence: NotRequired[int]
    last_event_hash: NotRequired[str]


class PayoutApproval(Base):
    __tablename__ = "payout_approvals"
    __table_args__ = (
        UniqueConstraint("payout_id", "operator_id"),
        # The review's approver_concentration reads one approver's recent approvals.
        Index("ix_payout_approvals_operator_id_at", "operator_id", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    payout_id: Mapped[str] = mapped_column(ForeignKey("payouts.id"))
    operator_id: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text, default=None)
    at: Mapped[datetime] = mapped_column(UtcDateTime())


class PayoutEvent(Base):
    """Append-only history. Each row hashes its own content and chains to the previous
    event of the same payout, so `payoutsvc audit verify` can name an edited, removed or
    inserted row; the payout row holds the head of its chain."""

    __tablename__ = "payout_events"
    __table_args__ = (UniqueConstraint("payout_id", "sequence"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payout_id: Mapped[str] = mapped_column(ForeignKey("payouts.id"))
    integration_id: Mapped[str] = mapped_column(String(40))
    sequence: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # "sha256" (rows from before migration 0009) or "hmac-sha256" (keyed with the audit key);
    # every writer names it, so the default only describes the rows that predate it.
    hash_scheme: Mapped[str] = mapped_column(String(16), server_default="sha256")


class AuditCheckpoint(Base):
    """A signed record of every payout's and anomaly's chain head at one moment: what lets
    verify name payouts, anomalies and events deleted since (a chain cannot show its own
    missing tail)."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    payouts: Mapped[int] = mapped_column(Integer)
    events: Mapped[int] = mapped_column(Integer)
    # Plain-hash events dated at or after this are forgeries (see audit.py).
    keyed_since: Mapped[datetime] = mapped_column(UtcDateTime())
    # {payout or anomaly id: [last_event_sequence, last_event_hash]}
    heads: Mapped[dict[str, Any]] = mapped_column(JSON)
    signature: Mapped[str] = mapped_column(String(64))


class IdempotencyRecord(Base):
    """The stored answer to a POST /v1/payouts under one Idempotency-Key, kept >= 24 h."""

    __tablename__ = "idempotency_keys"

    integration_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
