"""The recipient blocklist: accounts no payout may go to."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from payoutsvc.db.base import Base, UtcDateTime


class RecipientBlock(Base):
    """A refused recipient, keyed by the fingerprint of its normalized account."""

    __tablename__ = "recipient_blocks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    recipient_type: Mapped[str] = mapped_column(String(32))
    account_masked: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
