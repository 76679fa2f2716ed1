"""executor: gateway call records, the sandbox gateway's ledger, the claim index

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payout_attempts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("payout_id", sa.String(length=40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("operation", sa.String(length=16), nullable=False),
        sa.Column("gateway", sa.String(length=32), nullable=False),
        sa.Column("worker", sa.String(length=64), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("gateway_status", sa.String(length=64), nullable=True),
        sa.Column("gateway_reference", sa.String(length=128), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payout_id"], ["payouts.id"], name=op.f("fk_payout_attempts_payout_id_payouts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payout_attempts")),
    )
    with op.batch_alter_table("payout_attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payout_attempts_payout_id_started_at", ["payout_id", "started_at"], unique=False
        )

    op.create_table(
        "sandbox_transfers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("payout_id", sa.String(length=40), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("recipient_type", sa.String(length=32), nullable=False),
        sa.Column("account_masked", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_checks", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_transfers")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_sandbox_transfers_idempotency_key")),
    )
    with op.batch_alter_table("sandbox_transfers", schema=None) as batch_op:
        batch_op.create_index("ix_sandbox_transfers_payout_id", ["payout_id"], unique=False)

    op.create_table(
        "sandbox_call_counters",
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("submits", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key", name=op.f("pk_sandbox_call_counters")),
    )
    op.create_table(
        "sandbox_secrets",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sandbox_secrets")),
    )
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.create_index("ix_payouts_status_id", ["status", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.drop_index("ix_payouts_status_id")
    op.drop_table("sandbox_secrets")
    op.drop_table("sandbox_call_counters")
    with op.batch_alter_table("sandbox_transfers", schema=None) as batch_op:
        batch_op.drop_index("ix_sandbox_transfers_payout_id")
    op.drop_table("sandbox_transfers")
    with op.batch_alter_table("payout_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_payout_attempts_payout_id_started_at")
    op.drop_table("payout_attempts")
