from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from payoutsvc.db.base import Base, UtcDateTime


class Integration(Base):
    """One connected helpdesk or console; every payout, endpoint and delivery belongs to one."""

    __tablename__ = "integrations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ApiKey(Base):
    """An API key, stored as the SHA-256 of its secret (keys are 256-bit random, so a fast
    hash is enough: there is nothing to brute-force)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    integration_id: Mapped[str] = mapped_column(ForeignKey("integrations.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hint: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # Set: the key acts only as this operator (separation of duties, API.md "Operator-bound
    # keys"); None: an integration key, which may name operators only where the policy allows.
    operator_id: Mapped[str | None] = mapped_column(
        ForeignKey("operators.id"), index=True, default=None
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
