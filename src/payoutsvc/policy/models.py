from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from payoutsvc.db.base import Base, UtcDateTime


class PolicyVersion(Base):
    """Every PUT /v1/policy is a new immutable row; payouts record the version they met."""

    __tablename__ = "policy_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class LimitCounter(Base):
    """What the policy's caps count, kept as running totals so a check reads one row per cap
    however many payouts the day already holds.

    Rows: ``("requester", operator id, day, currency)``, ``("ticket", "system:id", 0,
    currency)``, ``("recipient", fingerprint, day, currency)`` and ``("recipient",
    fingerprint, day, "*")`` (the recipient's count across currencies; its amount stays 0).
    ``day`` is the policy day's start in UTC epoch seconds under the policy timezone in force
    when the payout was created (``payouts.limit_day``). A payout adds to its rows in the
    transaction that creates it and subtracts when it leaves the counted statuses (rejected,
    canceled, failed), so the rows equal a recount of the payouts (see
    PolicyRepository.recount_limit_counters).
    """

    __tablename__ = "limit_counters"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    payouts: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_minor: Mapped[int] = mapped_column(BigInteger, default=0)
