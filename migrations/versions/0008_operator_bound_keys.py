"""operator-bound API keys: a key may act only as one operator

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: existing keys stay unbound (integration keys), as they were issued.
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("operator_id", sa.String(64), nullable=True))
        batch.create_foreign_key(
            "fk_api_keys_operator_id_operators", "operators", ["operator_id"], ["id"]
        )
        batch.create_index("ix_api_keys_operator_id", ["operator_id"])


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_operator_id")
        batch.drop_constraint("fk_api_keys_operator_id_operators", type_="foreignkey")
        batch.drop_column("operator_id")
