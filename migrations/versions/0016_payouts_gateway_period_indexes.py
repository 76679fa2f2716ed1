"""payouts: indexes for a reconciliation's period query

Revision ID: 0016
Revises: 0015

A reconciliation reads the payouts of one gateway created or last changed in its period
(reconciliation/repository.py ``payouts_of_period``): without an index that is a scan of
every payout, run daily. ``(gateway, created_at)`` and ``(gateway, updated_at)`` serve the
two halves of its OR (PostgreSQL combines them with a BitmapOr).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_payouts_gateway_created_at", "payouts", ["gateway", "created_at"])
    op.create_index("ix_payouts_gateway_updated_at", "payouts", ["gateway", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_payouts_gateway_updated_at", table_name="payouts")
    op.drop_index("ix_payouts_gateway_created_at", table_name="payouts")
