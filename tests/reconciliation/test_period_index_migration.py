"""Migration 0016: the payouts indexes a reconciliation's period query walks exist after the
upgrade and are gone after the downgrade; the payouts are untouched. Both backends."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from payoutsvc.db.migrate import alembic_config

PERIOD_INDEXES = {"ix_payouts_gateway_created_at", "ix_payouts_gateway_updated_at"}


async def _payout_indexes(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            indexes = await connection.run_sync(
                lambda sync: sa.inspect(sync).get_indexes("payouts")
            )
    finally:
        await engine.dispose()
    return {str(index["name"]) for index in indexes}


async def test_the_period_indexes_come_and_go_with_the_migration(database_url: str) -> None:
    config = alembic_config(database_url)
    assert await _payout_indexes(database_url) >= PERIOD_INDEXES
    await asyncio.to_thread(command.downgrade, config, "0015")
    try:
        assert not PERIOD_INDEXES & await _payout_indexes(database_url)
        await asyncio.to_thread(command.upgrade, config, "0016")
        assert await _payout_indexes(database_url) >= PERIOD_INDEXES
    finally:
        await asyncio.to_thread(command.upgrade, config, "head")
