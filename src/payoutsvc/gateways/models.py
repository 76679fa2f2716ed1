"""The sandbox gateway's ledger. It lives in the service's database so it survives restarts
and every worker process sees the same transfers, as a real provider's would."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from payoutsvc.db.base import Base, UtcDateTime


class SandboxTransfer(Base):
    """A transfer the sandbox booked. At most one per idempotency key, ever."""

    __tablename__ = "sandbox_transfers"
    __table_args__ = (Index("ix_sandbox_transfers_payout_id", "payout_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    # The merchant reference the caller sent; no foreign key: the sandbox stands for a
    # system outside the service and must not depend on its tables.
    payout_id: Mapped[str] = mapped_column(String(40))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    recipient_type: Mapped[str] = mapped_column(String(32))
    account_masked: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # pending | succeeded
    status_checks: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class SandboxCallCounter(Base):
    """How often each key was submitted: drives the behaviours that change on a retry
    (5xx twice then success; accepted-then-timeout on the first submit only)."""

    __tablename__ = "sandbox_call_counters"

    idempotency_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    submits: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class SandboxSecret(Base):
    """The sandbox's callback signing secret, made once and shared by every process."""

    __tablename__ = "sandbox_secrets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
