from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from payoutsvc.db.base import Base, UtcDateTime


class Operator(Base):
    """A person who requests or approves payouts; company-wide, identified by the helpdesk's id."""

    __tablename__ = "operators"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(40))
    display_name: Mapped[str | None] = mapped_column(String(140), default=None)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
