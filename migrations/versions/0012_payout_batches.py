"""payout batches: ``payout_batches`` and ``payouts.batch_id``

Revision ID: 0012
Revises: 0011

A new table and a new nullable column: existing payouts keep every value and belong to no
batch.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payout_batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("integration_id", sa.String(length=40), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_payout_batches_integration_id_integrations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payout_batches")),
        sa.UniqueConstraint(
            "integration_id",
            "idempotency_key",
            name=op.f("uq_payout_batches_integration_id_idempotency_key"),
        ),
    )
    op.create_index(
        "ix_payout_batches_integration_id_id", "payout_batches", ["integration_id", "id"]
    )
    with op.batch_alter_table("payouts") as batch:
        batch.add_column(sa.Column("batch_id", sa.String(length=40), nullable=True))
        batch.create_index("ix_payouts_batch_id", ["batch_id"])


def downgrade() -> None:
    # Plain ALTER TABLE … DROP COLUMN (SQLite 3.35+): a batch "move and copy" would drop the
    # payouts table, which payout_events and payout_approvals reference.
    op.drop_index("ix_payouts_batch_id", table_name="payouts")
    op.drop_column("payouts", "batch_id")
    op.drop_index("ix_payout_batches_integration_id_id", table_name="payout_batches")
    op.drop_table("payout_batches")
