from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from payoutsvc.db.base import Base, UtcDateTime


class PayoutBatch(Base):
    """A batch: which payouts one ``POST /v1/payout-batches`` created, under which item keys.

    Its payouts point back at it (``payouts.batch_id``); their statuses, not a copy here, are
    what the batch's counts are computed from, so the two can never disagree."""

    __tablename__ = "payout_batches"
    __table_args__ = (
        Index("ix_payout_batches_integration_id_id", "integration_id", "id"),
        # A batch's Idempotency-Key is never reused: its answer is kept with the batch.
        UniqueConstraint("integration_id", "idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    integration_id: Mapped[str] = mapped_column(ForeignKey("integrations.id"))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    # sha256 of the request's items; a replay with another body is 422 idempotency_key_reused.
    request_hash: Mapped[str] = mapped_column(String(64))
    # The 201 answer, returned again (Idempotent-Replayed: true) to a replay.
    response_body: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    # "json" or "csv": how the items came in.
    source: Mapped[str] = mapped_column(String(8))
    item_count: Mapped[int] = mapped_column(Integer)
    # [{"item_key": ..., "payout_id": ...}] in the order the request listed them.
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
