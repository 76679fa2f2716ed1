"""manual release: a payout that waits in ``approved`` for a person's release

``release_required`` is the policy's decision when the payout was created (its ``release``
section); ``released_by`` / ``released_at`` record the release. Existing payouts were decided
under a policy without a release section: they need none (server default false).

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN on both backends (a batch would rebuild the SQLite table, whose rows
    # other tables reference).
    op.add_column(
        "payouts",
        sa.Column("release_required", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("payouts", sa.Column("released_by", sa.String(64), nullable=True))
    op.add_column("payouts", sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payouts") as batch:
        batch.drop_column("released_at")
        batch.drop_column("released_by")
        batch.drop_column("release_required")
