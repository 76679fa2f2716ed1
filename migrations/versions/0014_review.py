"""periodic review: anomalies, their keyed history, the scan watermark

Revision ID: 0014
Revises: 0010

Adds ``anomalies``, ``anomaly_events`` and ``review_watermark`` (new tables only) and an
index on ``payout_approvals (operator_id, at)`` for the approver_concentration detector.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = sa.text("status = 'open'")


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "anomalies",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("open_key", sa.String(64), nullable=True),
        sa.Column("subjects", sa.JSON(), nullable=False),
        sa.Column("subject_requester", sa.String(64), nullable=True),
        sa.Column("subject_recipient", sa.String(64), nullable=True),
        sa.Column("subject_approver", sa.String(64), nullable=True),
        sa.Column("payout_ids", sa.JSON(), nullable=False),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.Column("window_start", _utc(), nullable=False),
        sa.Column("window_end", _utc(), nullable=False),
        sa.Column("detected_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("reviewed_by", sa.String(64), nullable=True),
        sa.Column("reviewed_at", _utc(), nullable=True),
        sa.Column("review_comment", sa.Text(), nullable=True),
        sa.Column("last_event_sequence", sa.Integer(), nullable=False),
        sa.Column("last_event_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_anomalies"),
        sa.UniqueConstraint("open_key", name="uq_anomalies_open_key"),
    )
    op.create_index(
        "ix_anomalies_open_requester",
        "anomalies",
        ["subject_requester"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_index(
        "ix_anomalies_open_recipient",
        "anomalies",
        ["subject_recipient"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_index("ix_anomalies_status_id", "anomalies", ["status", "id"])
    op.create_table(
        "anomaly_events",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("anomaly_id", sa.String(40), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("at", _utc(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("hash_scheme", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_anomaly_events"),
        sa.UniqueConstraint("anomaly_id", "sequence", name="uq_anomaly_events_anomaly_id_sequence"),
    )
    op.create_table(
        "review_watermark",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_payout_id", sa.String(40), nullable=False),
        sa.Column("last_approval_id", sa.Integer(), nullable=False),
        sa.Column("scanned_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_review_watermark"),
    )
    op.create_index("ix_payout_approvals_operator_id_at", "payout_approvals", ["operator_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_payout_approvals_operator_id_at", table_name="payout_approvals")
    op.drop_table("review_watermark")
    op.drop_table("anomaly_events")
    op.drop_index("ix_anomalies_status_id", table_name="anomalies")
    op.drop_index("ix_anomalies_open_recipient", table_name="anomalies")
    op.drop_index("ix_anomalies_open_requester", table_name="anomalies")
    op.drop_table("anomalies")
