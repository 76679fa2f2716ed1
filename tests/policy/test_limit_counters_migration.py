"""Migration 0010 on a database with payouts: every payout gets its policy day in the policy's
timezone, and the new limit counters equal a recount (rejected and failed payouts left out);
both backends."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, time, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from alembic import command
from sqlalchemy import Table, insert, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from payoutsvc.auth.models import Integration
from payoutsvc.db.engine import Database
from payoutsvc.db.migrate import alembic_config
from payoutsvc.ids import new_id
from payoutsvc.payouts.models import Payout
from payoutsvc.policy.repository import PolicyRepository
from tests.conftest import ENCRYPTION_KEY
from tests.executor.support import approved_rows

ZONE = ZoneInfo("Asia/Shanghai")
# Local midnight in Shanghai is 16:00 UTC the day before: these straddle it.
BEFORE = datetime(2026, 11, 30, 15, 59, 59, tzinfo=UTC)
AFTER = datetime(2026, 11, 30, 16, 0, 0, tzinfo=UTC)


def _day(at: datetime) -> int:
    return int(datetime.combine(at.astimezone(ZONE).date(), time(0), tzinfo=ZONE).timestamp())


async def _history(url: str) -> list[dict[str, Any]]:
    """Four payouts of one requester and recipient, written at revision 0009."""
    integration_id = new_id("int")
    key = base64.urlsafe_b64decode(ENCRYPTION_KEY)
    rows, _ = approved_rows(
        integration_id,
        key,
        [(1, 100_00), (1, 200_00), (1, 400_00), (1, 800_00)],
        actor="agent-1",
        ticket_system="zendesk",
    )
    for row, (at, status) in zip(
        rows,
        [(BEFORE, "approved"), (AFTER, "succeeded"), (AFTER, "rejected"), (AFTER, "failed")],
        strict=True,
    ):
        row.update(created_at=at, updated_at=at, status=status, ticket_id="T-1")
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.execute(
            insert(cast(Table, Integration.__table__)),
            [{"id": integration_id, "name": "default", "created_at": BEFORE}],
        )
        await connection.execute(
            text(
                "INSERT INTO policy_versions (version, document, created_by, created_at)"
                " VALUES (1, :document, 'test', :at)"
            ),
            {"document": '{"timezone": "Asia/Shanghai"}', "at": BEFORE - timedelta(days=1)},
        )
        await connection.execute(insert(cast(Table, Payout.__table__)), rows)
    await engine.dispose()
    return rows


async def test_the_migration_backfills_days_and_counters(database_url: str) -> None:
    config = alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "0009")
    try:
        rows = await _history(database_url)
        await asyncio.to_thread(command.upgrade, config, "0010")
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                days = dict((await connection.execute(select(Payout.id, Payout.limit_day))).all())
        finally:
            await engine.dispose()
        assert days == {row["id"]: _day(row["created_at"]) for row in rows}
        assert _day(BEFORE) != _day(AFTER)

        database = Database.connect(database_url)
        try:
            async with database.transaction() as session:
                repo = PolicyRepository(session)
                stored, recounted = await repo.limit_counters(), await repo.recount_limit_counters()
        finally:
            await database.dispose()
        assert stored == recounted
        fingerprint = rows[0]["recipient_fingerprint"]
        assert stored[("requester", "agent-1", _day(AFTER), "CNY")] == (1, 200_00)
        assert stored[("requester", "agent-1", _day(BEFORE), "CNY")] == (1, 100_00)
        assert stored[("ticket", "zendesk:T-1", 0, "CNY")] == (2, 300_00)
        assert stored[("recipient", fingerprint, _day(AFTER), "*")] == (1, 0)
    finally:
        await asyncio.to_thread(command.upgrade, config, "head")
