"""one queue index: approved payouts are found through (status, next_attempt_at) too

Every approved payout carries the time it became due in ``next_attempt_at`` (set on
creation or approval), so the claim of approved payouts, oldest first, walks the same
(status, next_attempt_at) index as retries. ``ix_payouts_status_id`` only cost an index
write on every status change.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    payouts = sa.table(
        "payouts",
        sa.column("status", sa.String),
        sa.column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    # Rows approved before next_attempt_at was always set: due since their last change.
    op.execute(
        payouts.update()
        .where(payouts.c.status == "approved", payouts.c.next_attempt_at.is_(None))
        .values(next_attempt_at=payouts.c.updated_at)
    )
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.drop_index("ix_payouts_status_id")


def downgrade() -> None:
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.create_index("ix_payouts_status_id", ["status", "id"], unique=False)
