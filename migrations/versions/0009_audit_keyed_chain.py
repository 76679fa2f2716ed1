"""audit keyed chain: hash_scheme per event (old rows plain SHA-256), signed checkpoints

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every existing row was hashed with plain SHA-256 and stays verifiable as it was; the
    # application writes "hmac-sha256" explicitly for every new row.
    with op.batch_alter_table("payout_events") as batch:
        batch.add_column(
            sa.Column("hash_scheme", sa.String(16), nullable=False, server_default="sha256")
        )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payouts", sa.Integer(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("keyed_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heads", sa.JSON(), nullable=False),
        sa.Column("signature", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("payout_events") as batch:
        batch.drop_column("hash_scheme")
