"""db/bulk.py ``folded_writes``: on PostgreSQL the create path's writes after the limit
counters' row locks (payout, events, stored answer, wake-up NOTIFY) run as one statement;
nothing is written before the block ends, nothing at all when it fails, and the wake-ups
still reach this process and the others. SQLite writes at once, as before."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.base import utcnow
from payoutsvc.db.engine import Database
from payoutsvc.db.signals import signal_on_commit
from payoutsvc.payouts.models import IdempotencyRecord
from payoutsvc.payouts.repository import PayoutRepository


async def _keys(db: Database) -> dict[str, tuple[int, str]]:
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(
                IdempotencyRecord.key,
                IdempotencyRecord.response_status,
                IdempotencyRecord.response_body,
            )
        )
        return {key: (status, body) for key, status, body in rows.all()}


async def _claim(repo: PayoutRepository, *keys: str) -> None:
    now = utcnow()
    claimed = await repo.claim_idempotency_keys(
        "int_fold", [(k, "h" * 64) for k in keys], now, now + timedelta(hours=1)
    )
    assert claimed == set(keys)


@pytest.fixture
async def db(database_url: str) -> Any:
    database = Database.connect(database_url)
    yield database
    await database.dispose()


async def _statements(db: Database, session: AsyncSession) -> list[str]:
    """Every statement sent to the database from now on in this session: asyncpg's query
    logger on PostgreSQL (it also sees what runs on the driver connection, db/driver.py),
    the engine's events on SQLite."""
    seen: list[str] = []
    if db.is_postgres:
        raw = await (await session.connection()).get_raw_connection()
        assert raw.driver_connection is not None
        raw.driver_connection.add_query_logger(lambda record: seen.append(record.query))
        return seen

    @event.listens_for(db.write_engine.sync_engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    return seen


async def test_the_folded_writes_run_once_at_the_end_and_wake_everyone(db: Database) -> None:
    woken = db.signals.subscribe("fold-test")
    async with db.transaction() as session:
        repo = PayoutRepository(session)
        await _claim(repo, "k1", "k2")
        seen = await _statements(db, session)
        before = len(seen)
        async with repo.folded_writes():
            await repo.complete_idempotency_keys("int_fold", [("k1", 201, '{"a": 1}')])
            await repo.complete_idempotency_keys("int_fold", [("k2", 422, '{"b": 2}')])
            signal_on_commit(session, "fold-test")
            if repo.is_postgres:
                await asyncio.sleep(0)
                assert len(seen) == before  # nothing has run yet
        await asyncio.sleep(0)  # asyncpg calls its query loggers soon, not at once
        written = seen[before:]
    if repo.is_postgres:
        # Both answers and the NOTIFY in one statement; the commit notifies nobody again.
        (statement,) = written
        assert statement.startswith("WITH w0 AS (UPDATE")
        assert "w1 AS (UPDATE" in statement
        assert "pg_notify" in statement
    else:
        assert len(written) == 2
    assert await _keys(db) == {"k1": (201, '{"a": 1}'), "k2": (422, '{"b": 2}')}
    await asyncio.wait_for(woken.wait(), 1)  # fired in this process once it committed


async def test_a_failure_inside_the_block_writes_nothing(db: Database) -> None:
    async with db.transaction() as session:
        await _claim(PayoutRepository(session), "k1")

    async def crash_inside_the_block() -> None:
        async with db.transaction() as session:
            repo = PayoutRepository(session)
            async with repo.folded_writes():
                await repo.complete_idempotency_keys("int_fold", [("k1", 201, "{}")])
                raise RuntimeError("crash before the end of the block")

    with pytest.raises(RuntimeError):
        await crash_inside_the_block()
    assert await _keys(db) == {"k1": (0, "")}
    async with db.transaction(write=False) as session:
        count = await session.execute(select(func.count()).select_from(IdempotencyRecord))
        assert count.scalar_one() == 1


async def test_a_first_statement_on_the_driver_connection_is_inside_the_transaction(
    db: Database,
) -> None:
    """The claim is a create's first statement and runs on the driver connection
    (db/driver.py), which must begin the session's transaction first: rolled back with it,
    never committed on its own."""

    async def claim_then_crash() -> None:
        async with db.transaction() as session:
            await _claim(PayoutRepository(session), "k1")
            raise RuntimeError("crash after the claim")

    with pytest.raises(RuntimeError):
        await claim_then_crash()
    assert await _keys(db) == {}
    async with db.transaction() as session:
        await _claim(PayoutRepository(session), "k1")
    assert await _keys(db) == {"k1": (0, "")}
