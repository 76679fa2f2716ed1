"""Migration 0012 on a database with payouts: every existing payout keeps its columns and
belongs to no batch; the downgrade gives the table back as it was. Both backends."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from payoutsvc.auth.models import Integration
from payoutsvc.db.base import utcnow
from payoutsvc.db.migrate import alembic_config
from payoutsvc.ids import new_id
from payoutsvc.payouts.models import Payout, PayoutEvent
from tests.conftest import ENCRYPTION_KEY
from tests.executor.support import approved_rows


def _table(model: Any, row: dict[str, Any]) -> sa.TableClause:
    """Just the columns the rows name (with the model's types): the older revision's
    schema, not the models' newer columns."""
    columns = model.__table__.c
    return sa.table(model.__tablename__, *(sa.column(c, columns[c].type) for c in row))


async def _payouts(url: str) -> list[tuple[Any, ...]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                sa.text("SELECT id, status, amount_minor, last_event_hash FROM payouts ORDER BY id")
            )
            return [tuple(row) for row in result.all()]
    finally:
        await engine.dispose()


async def test_existing_payouts_belong_to_no_batch_after_the_migration(database_url: str) -> None:
    config = alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "0011")
    try:
        integration_id = new_id("int")
        rows, events = approved_rows(
            integration_id,
            base64.urlsafe_b64decode(ENCRYPTION_KEY),
            [(1, 100_00), (2, 250_00)],
            actor="agent-1",
            ticket_system="zendesk",
        )
        engine = create_async_engine(database_url)
        try:
            async with engine.begin() as connection:
                integration = {"id": integration_id, "name": "default", "created_at": utcnow()}
                await connection.execute(sa.insert(_table(Integration, integration)), [integration])
                await connection.execute(sa.insert(_table(Payout, rows[0])), rows)
                await connection.execute(sa.insert(_table(PayoutEvent, events[0])), events)
        finally:
            await engine.dispose()
        before = await _payouts(database_url)
        await asyncio.to_thread(command.upgrade, config, "0012")
        assert await _payouts(database_url) == before
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                batch_ids = (
                    await connection.execute(sa.text("SELECT batch_id FROM payouts"))
                ).all()
                batches = await connection.execute(sa.text("SELECT COUNT(*) FROM payout_batches"))
                assert batches.scalar_one() == 0
        finally:
            await engine.dispose()
        assert [row[0] for row in batch_ids] == [None, None]
        await asyncio.to_thread(command.downgrade, config, "0011")
        assert await _payouts(database_url) == before
    finally:
        await asyncio.to_thread(command.upgrade, config, "head")
