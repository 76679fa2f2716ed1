"""Helpdesk connectors and the inbound deliveries they have handled."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from payoutsvc.db.base import Base, UtcDateTime


class HelpdeskConnector(Base):
    """One integration tied to one helpdesk account. Its write-back target is the
    ``webhook_endpoints`` row with the same id (``target_kind`` = ``kind``), which holds the
    base URL and the encrypted credentials: one place for what the sender uses."""

    __tablename__ = "helpdesk_connectors"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    integration_id: Mapped[str] = mapped_column(ForeignKey("integrations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(140))
    locale: Mapped[str] = mapped_column(String(8))
    trust_actor: Mapped[bool] = mapped_column(Boolean, default=False)
    write_back: Mapped[dict[str, object]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class HelpdeskInboundEvent(Base):
    """One inbound trigger handled, keyed by the helpdesk's ``event_id``: written in the
    transaction of its action, so a redelivery finds it and replays the stored answer."""

    __tablename__ = "helpdesk_inbound_events"

    connector_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    action: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    response_status: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[str] = mapped_column(Text)
