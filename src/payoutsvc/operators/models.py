from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, String
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


class OperatorHelpdeskUser(Base):
    """A helpdesk user (agent) of one connector who is this operator: how an inbound
    trigger's ``actor`` becomes an operator. One helpdesk user is one operator."""

    __tablename__ = "operator_helpdesk_users"
    __table_args__ = (Index("ix_operator_helpdesk_users_operator_id", "operator_id"),)

    connector_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    operator_id: Mapped[str] = mapped_column(ForeignKey("operators.id"))
