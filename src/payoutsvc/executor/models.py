"""Executor tables: one row per gateway call."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from payoutsvc.db.base import Base, UtcDateTime


class PayoutAttempt(Base):
    """One call to a gateway for one payout (submit, status query) or one callback received.

    ``request`` is a summary without the account number; ``attempt`` is the payout's
    executor step the call belonged to (a step may query status and then re-submit).
    """

    __tablename__ = "payout_attempts"
    __table_args__ = (Index("ix_payout_attempts_payout_id_started_at", "payout_id", "started_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payout_id: Mapped[str] = mapped_column(ForeignKey("payouts.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    operation: Mapped[str] = mapped_column(String(16))  # submit | status | callback
    gateway: Mapped[str] = mapped_column(String(32))
    worker: Mapped[str | None] = mapped_column(String(64), default=None)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    # succeeded | pending | failed | not_found | rejected | not_done | unknown
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, default=None)
    gateway_status: Mapped[str | None] = mapped_column(String(64), default=None)
    gateway_reference: Mapped[str | None] = mapped_column(String(128), default=None)
    latency_ms: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
