"""limit counters: running totals per requester-day, ticket and recipient-day

Revision ID: 0010
Revises: 0009

Creates ``limit_counters`` and ``payouts.limit_day`` and fills both from the existing payouts:
each payout's day is its policy day under the newest policy's timezone (the day the facts
query used until now), and the counters are a recount of the counted payouts. Stop old
processes before upgrading: one still summing payouts would not add to the counters.
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the application's rules as of this revision (migrations never import it).
NOT_COUNTED = "('rejected', 'canceled', 'failed')"
RECOUNT = f"""
INSERT INTO limit_counters (scope, subject, day, currency, payouts, amount_minor)
SELECT 'requester', requested_by, limit_day, currency, COUNT(*), SUM(amount_minor)
  FROM payouts WHERE status NOT IN {NOT_COUNTED} GROUP BY requested_by, limit_day, currency
UNION ALL
SELECT 'ticket', ticket_system || ':' || ticket_id, 0, currency, COUNT(*), SUM(amount_minor)
  FROM payouts WHERE status NOT IN {NOT_COUNTED} GROUP BY ticket_system, ticket_id, currency
UNION ALL
SELECT 'recipient', recipient_fingerprint, limit_day, currency, COUNT(*), SUM(amount_minor)
  FROM payouts WHERE status NOT IN {NOT_COUNTED}
  GROUP BY recipient_fingerprint, limit_day, currency
UNION ALL
SELECT 'recipient', recipient_fingerprint, limit_day, '*', COUNT(*), 0
  FROM payouts WHERE status NOT IN {NOT_COUNTED} GROUP BY recipient_fingerprint, limit_day
"""  # noqa: S608  (constant text)


def _policy_timezone(connection: sa.Connection) -> str:
    document = connection.execute(
        sa.text("SELECT document FROM policy_versions ORDER BY version DESC LIMIT 1")
    ).scalar_one_or_none()
    if isinstance(document, str):  # SQLite returns the JSON text
        document = json.loads(document)
    if not isinstance(document, dict):
        return "UTC"
    return str(document.get("timezone") or "UTC")


def _day_start(created_at: datetime, zone: ZoneInfo) -> int:
    """As payoutsvc.policy.engine.policy_day_bounds: local midnight, in UTC epoch seconds."""
    if created_at.tzinfo is None:  # SQLite stores naive UTC
        created_at = created_at.replace(tzinfo=UTC)
    local_day = created_at.astimezone(zone).date()
    return int(datetime.combine(local_day, time(0), tzinfo=zone).timestamp())


def _stamp_days_sqlite(connection: sa.Connection, zone: ZoneInfo) -> None:
    rows = connection.execute(sa.text("SELECT id, created_at FROM payouts")).all()
    stamped = []
    for payout_id, created_at in rows:
        at = created_at if isinstance(created_at, datetime) else datetime.fromisoformat(created_at)
        stamped.append({"id": payout_id, "day": _day_start(at, zone)})
    if stamped:
        connection.execute(sa.text("UPDATE payouts SET limit_day = :day WHERE id = :id"), stamped)


def upgrade() -> None:
    op.create_table(
        "limit_counters",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("day", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("payouts", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "scope", "subject", "day", "currency", name=op.f("pk_limit_counters")
        ),
    )
    with op.batch_alter_table("payouts") as batch:
        batch.add_column(
            sa.Column("limit_day", sa.BigInteger(), nullable=False, server_default="0")
        )
    connection = op.get_bind()
    timezone = _policy_timezone(connection)
    if connection.dialect.name == "postgresql":
        # Local midnight of each payout's day in the policy zone, back to an instant.
        connection.execute(
            sa.text(
                "UPDATE payouts SET limit_day = EXTRACT(EPOCH FROM"
                " (date_trunc('day', created_at AT TIME ZONE :tz) AT TIME ZONE :tz))::bigint"
            ),
            {"tz": timezone},
        )
    else:
        _stamp_days_sqlite(connection, ZoneInfo(timezone))
    connection.execute(sa.text(RECOUNT))


def downgrade() -> None:
    with op.batch_alter_table("payouts") as batch:
        batch.drop_column("limit_day")
    op.drop_table("limit_counters")
