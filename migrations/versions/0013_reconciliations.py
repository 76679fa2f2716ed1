"""reconciliations: runs comparing our payouts with a gateway's records, and what they found

Revision ID: 0013
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reconciliations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("gateway", sa.String(length=32), nullable=False),
        sa.Column("period_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_to", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("daily_key", sa.String(length=64), nullable=True),
        sa.Column("statement", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("summary", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("payouts_checked", sa.Integer(), nullable=False),
        sa.Column("gateway_calls", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliations")),
        sa.UniqueConstraint("daily_key", name=op.f("uq_reconciliations_daily_key")),
    )
    op.create_index(
        "ix_reconciliations_status_locked_until",
        "reconciliations",
        ["status", "locked_until"],
        unique=False,
    )
    op.create_table(
        "reconciliation_items",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("reconciliation_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("payout_id", sa.String(length=40), nullable=True),
        sa.Column("gateway_reference", sa.String(length=128), nullable=True),
        sa.Column("ours_status", sa.String(length=20), nullable=True),
        sa.Column("theirs_status", sa.String(length=64), nullable=True),
        sa.Column("ours_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("theirs_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("ours_currency", sa.String(length=3), nullable=True),
        sa.Column("theirs_currency", sa.String(length=3), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["reconciliation_id"],
            ["reconciliations.id"],
            name=op.f("fk_reconciliation_items_reconciliation_id_reconciliations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_items")),
    )
    op.create_index(
        "ix_reconciliation_items_reconciliation_id_id",
        "reconciliation_items",
        ["reconciliation_id", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_reconciliation_items_reconciliation_id_id", "reconciliation_items")
    op.drop_table("reconciliation_items")
    op.drop_index("ix_reconciliations_status_locked_until", "reconciliations")
    op.drop_table("reconciliations")
