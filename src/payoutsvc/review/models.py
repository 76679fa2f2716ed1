"""Anomalies the periodic review found, their audit history and the scan's watermark."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from payoutsvc.db.base import Base, UtcDateTime


class AnomalyStatus(StrEnum):
    OPEN = "open"
    DISMISSED = "dismissed"
    CONFIRMED = "confirmed"


# An anomaly's id is new_id(ANOMALY_ID_PREFIX): "an_…", never mistaken for a payout's "po_…"
# (audit checkpoints keep both kinds of chain head in one map).
ANOMALY_ID_PREFIX = "an"


class Anomaly(Base):
    """One finding of a detector (review/detectors.py).

    ``open_key`` (kind, subjects and window) is unique while the anomaly is open and NULL
    once reviewed: a later scan that finds the same thing again updates the open anomaly
    instead of adding another; after a review a new finding opens a new one. The subject
    columns serve the create path's hold lookup (payouts/limits.py ``open_anomaly``).
    """

    __tablename__ = "anomalies"
    __table_args__ = (
        Index(
            "ix_anomalies_open_requester",
            "subject_requester",
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
        Index(
            "ix_anomalies_open_recipient",
            "subject_recipient",
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
        Index("ix_anomalies_status_id", "status", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    open_key: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    # {"requester", "approver", "recipient_masked", ...}: what the API shows.
    subjects: Mapped[dict[str, Any]] = mapped_column(JSON)
    subject_requester: Mapped[str | None] = mapped_column(String(64), default=None)
    subject_recipient: Mapped[str | None] = mapped_column(String(64), default=None)  # fingerprint
    subject_approver: Mapped[str | None] = mapped_column(String(64), default=None)
    payout_ids: Mapped[list[str]] = mapped_column(JSON)
    explanation: Mapped[str] = mapped_column(Text)
    window_start: Mapped[datetime] = mapped_column(UtcDateTime())
    window_end: Mapped[datetime] = mapped_column(UtcDateTime())
    detected_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    reviewed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    reviewed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    review_comment: Mapped[str | None] = mapped_column(Text, default=None)
    last_event_sequence: Mapped[int] = mapped_column(Integer, default=0)
    last_event_hash: Mapped[str] = mapped_column(String(64))


class AnomalyEvent(Base):
    """An anomaly's append-only history (detected, updated, reviewed), each row keyed-hashed
    and chained to the previous one exactly like ``payout_events`` (payouts/events.py
    ``event_hash`` under the audit key, with the anomaly id in the payout id's place)."""

    __tablename__ = "anomaly_events"
    __table_args__ = (UniqueConstraint("anomaly_id", "sequence"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    anomaly_id: Mapped[str] = mapped_column(String(40))
    sequence: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    hash_scheme: Mapped[str] = mapped_column(String(16))


class ReviewWatermark(Base):
    """How far the scan has read (one row, ``id = 1``): the last payout id and approval id
    it saw. A scan locks this row for its whole transaction, so one runs at a time across
    workers and the next reads only what was created since."""

    __tablename__ = "review_watermark"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_payout_id: Mapped[str] = mapped_column(String(40))
    last_approval_id: Mapped[int] = mapped_column(Integer)
    scanned_at: Mapped[datetime] = mapped_column(UtcDateTime())
