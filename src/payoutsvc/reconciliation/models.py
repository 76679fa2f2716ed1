"""Reconciliation runs (each also the worker's job: ``status``/``locked_until``) and the
differences they found."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from payoutsvc.db.base import Base, UtcDateTime


class RunStatus(StrEnum):
    RUNNING = "running"  # waiting for a worker or being run under a lease
    COMPLETED = "completed"
    FAILED = "failed"  # could not be run at all (e.g. the gateway is not configured)


class ItemKind(StrEnum):
    """What one comparison found. ``matched`` is only counted, never stored as a row: a
    day of a busy gateway is mostly matches, and nobody needs to look at them."""

    MATCHED = "matched"
    STATUS_MISMATCH = "status_mismatch"
    AMOUNT_MISMATCH = "amount_mismatch"
    MISSING_AT_GATEWAY = "missing_at_gateway"
    UNKNOWN_TO_US = "unknown_to_us"
    # The gateway gave no certain answer (timeout, 5xx, not configured): no verdict at all.
    UNKNOWN = "unknown"


# The kinds stored as rows, in the order a summary lists them.
FINDINGS: tuple[ItemKind, ...] = (
    ItemKind.STATUS_MISMATCH,
    ItemKind.AMOUNT_MISMATCH,
    ItemKind.MISSING_AT_GATEWAY,
    ItemKind.UNKNOWN_TO_US,
    ItemKind.UNKNOWN,
)


class Reconciliation(Base):
    __tablename__ = "reconciliations"
    __table_args__ = (Index("ix_reconciliations_status_locked_until", "status", "locked_until"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    gateway: Mapped[str] = mapped_column(String(32))
    period_from: Mapped[datetime] = mapped_column(UtcDateTime())
    period_to: Mapped[datetime] = mapped_column(UtcDateTime())
    # "gateway" (status queries and the gateway's own list) or "statement" (an uploaded CSV)
    source: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    requested_by: Mapped[str] = mapped_column(String(64))
    # The worker's daily run sets "<gateway>:<YYYY-MM-DD>": unique, so several workers
    # (and restarts) record one run per gateway and day.
    daily_key: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    # The uploaded statement's rows (reference, amount_minor, currency, status, date).
    statement: Mapped[list[dict[str, Any]] | None] = mapped_column(
        JSON(none_as_null=True), default=None
    )
    summary: Mapped[dict[str, int] | None] = mapped_column(JSON(none_as_null=True), default=None)
    payouts_checked: Mapped[int] = mapped_column(Integer, default=0)
    gateway_calls: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    locked_by: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class ReconciliationItem(Base):
    """One difference (or one question without a certain answer) a reconciliation found."""

    __tablename__ = "reconciliation_items"
    __table_args__ = (
        Index("ix_reconciliation_items_reconciliation_id_id", "reconciliation_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    reconciliation_id: Mapped[str] = mapped_column(
        ForeignKey("reconciliations.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(32))
    payout_id: Mapped[str | None] = mapped_column(String(40), default=None)
    gateway_reference: Mapped[str | None] = mapped_column(String(128), default=None)
    ours_status: Mapped[str | None] = mapped_column(String(20), default=None)
    theirs_status: Mapped[str | None] = mapped_column(String(64), default=None)
    ours_amount_minor: Mapped[int | None] = mapped_column(BigInteger, default=None)
    theirs_amount_minor: Mapped[int | None] = mapped_column(BigInteger, default=None)
    ours_currency: Mapped[str | None] = mapped_column(String(3), default=None)
    theirs_currency: Mapped[str | None] = mapped_column(String(3), default=None)
    detail: Mapped[str | None] = mapped_column(Text, default=None)
