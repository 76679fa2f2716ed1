"""helpdesk connectors: connectors, handled inbound events, operators' helpdesk users

Revision ID: 0015
Revises: 0010

A connector's write-back target is a ``webhook_endpoints`` row with ``target_kind`` set, so
its notes go through the webhook outbox, sender, retries, SSRF guard and delivery log.
Existing endpoints keep ``target_kind`` NULL (Standard Webhooks).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.add_column(sa.Column("target_kind", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("target_options", sa.JSON(), nullable=True))
    op.create_table(
        "helpdesk_connectors",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("integration_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=140), nullable=False),
        sa.Column("locale", sa.String(length=8), nullable=False),
        sa.Column("trust_actor", sa.Boolean(), nullable=False),
        sa.Column("write_back", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["integration_id"], ["integrations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_helpdesk_connectors_integration_id", "helpdesk_connectors", ["integration_id"]
    )
    op.create_table(
        "helpdesk_inbound_events",
        sa.Column("connector_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("connector_id", "event_id"),
    )
    op.create_table(
        "operator_helpdesk_users",
        sa.Column("connector_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("operator_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["operator_id"], ["operators.id"]),
        sa.PrimaryKeyConstraint("connector_id", "user_id"),
    )
    op.create_index(
        "ix_operator_helpdesk_users_operator_id", "operator_helpdesk_users", ["operator_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_operator_helpdesk_users_operator_id", "operator_helpdesk_users")
    op.drop_table("operator_helpdesk_users")
    op.drop_table("helpdesk_inbound_events")
    op.drop_index("ix_helpdesk_connectors_integration_id", "helpdesk_connectors")
    op.drop_table("helpdesk_connectors")
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.drop_column("target_options")
        batch.drop_column("target_kind")
