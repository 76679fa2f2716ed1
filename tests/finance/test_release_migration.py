"""Migration 0011 on a database with payouts: every existing payout keeps its columns and
needs no release (it was decided under a policy without a release section); both backends."""

from __future__ import annotations

import asyncio
import base64
from typing import cast

from alembic import command
from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import create_async_engine

from payoutsvc.auth.models import Integration
from payoutsvc.db.base import utcnow
from payoutsvc.db.migrate import alembic_config
from payoutsvc.ids import new_id
from payoutsvc.payouts.models import Payout, PayoutEvent
from tests.conftest import ENCRYPTION_KEY
from tests.executor.support import approved_rows


async def test_existing_payouts_need_no_release_after_the_migration(database_url: str) -> None:
    config = alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "0010")
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
                await connection.execute(
                    insert(cast(Table, Integration.__table__)),
                    [{"id": integration_id, "name": "default", "created_at": utcnow()}],
                )
                await connection.execute(insert(cast(Table, Payout.__table__)), rows)
                await connection.execute(insert(cast(Table, PayoutEvent.__table__)), events)
            await asyncio.to_thread(command.upgrade, config, "0011")
            async with engine.connect() as connection:
                found = (
                    await connection.execute(
                        select(
                            Payout.id,
                            Payout.amount_minor,
                            Payout.status,
                            Payout.next_attempt_at,
                            Payout.release_required,
                            Payout.released_by,
                            Payout.released_at,
                        )
                    )
                ).all()
        finally:
            await engine.dispose()
        assert sorted((r.id, r.amount_minor, r.status) for r in found) == sorted(
            (r["id"], r["amount_minor"], r["status"]) for r in rows
        )
        assert all(r.next_attempt_at is not None for r in found)  # still due for the executor
        assert {(r.release_required, r.released_by, r.released_at) for r in found} == {
            (False, None, None)
        }
    finally:
        await asyncio.to_thread(command.upgrade, config, "head")
