"""db/engine.py ``Database.transaction``, the unit of work of every request and executor step:
what the block wrote commits when it ends, nothing of it when it raises or is cancelled, and
either way its connection goes back to the pool. On both backends."""

from __future__ import annotations

import asyncio
import gc
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from payoutsvc.db.base import utcnow
from payoutsvc.db.engine import Database
from payoutsvc.payouts.models import IdempotencyRecord
from payoutsvc.payouts.repository import PayoutRepository


@pytest.fixture
async def db(database_url: str) -> Any:
    database = Database.connect(database_url)
    yield database
    await database.dispose()


async def _claim(db: Database, key: str) -> None:
    """Writes one row, through the driver connection on PostgreSQL (db/driver.py)."""
    async with db.transaction() as session:
        await _claim_in(session, key)


async def _claim_in(session: Any, key: str) -> None:
    now = utcnow()
    await PayoutRepository(session).claim_idempotency_keys(
        "int_tx", [(key, "h" * 64)], now, now + timedelta(hours=1)
    )


async def _keys(db: Database) -> set[str]:
    async with db.transaction(write=False) as session:
        return set((await session.execute(select(IdempotencyRecord.key))).scalars())


def _checked_out(db: Database) -> int:
    return int(getattr(db.write_engine.pool, "checkedout", lambda: 0)())


def _left_to_the_garbage_collector(recorded: pytest.WarningsRecorder) -> list[str]:
    """Connections the block did not return itself (SQLAlchemy warns when the garbage
    collector returns one: a session left unclosed)."""
    return [str(w.message) for w in recorded if "garbage collector" in str(w.message)]


async def test_a_block_that_ends_commits_and_returns_its_connection(db: Database) -> None:
    await _claim(db, "kept")
    assert await _keys(db) == {"kept"}
    assert _checked_out(db) == 0


async def test_a_block_that_raises_writes_nothing_and_returns_its_connection(
    db: Database, recwarn: pytest.WarningsRecorder
) -> None:
    async def refused() -> None:
        async with db.transaction() as session:
            await _claim_in(session, "lost")
            raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        await refused()
    assert await _keys(db) == set()
    assert _checked_out(db) == 0
    assert _left_to_the_garbage_collector(recwarn) == []


async def test_a_cancelled_block_writes_nothing_and_returns_its_connection(
    db: Database, recwarn: pytest.WarningsRecorder
) -> None:
    inside = asyncio.Event()

    async def request() -> None:
        async with db.transaction() as session:
            await _claim_in(session, "cancelled")
            inside.set()
            await asyncio.sleep(30)  # the client went away

    task = asyncio.create_task(request())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)  # the shielded close finishes
    assert await _keys(db) == set()
    assert _checked_out(db) == 0
    assert _left_to_the_garbage_collector(recwarn) == []
    async with db.transaction() as session:  # the pool still serves
        assert (
            await session.execute(select(func.count()).select_from(IdempotencyRecord))
        ).scalar_one() == 0


async def test_a_finished_block_leaves_its_session_to_reference_counting(db: Database) -> None:
    """Nothing of a request's unit of work waits for the garbage collector: a reference
    cycle through the session (its info once held its own transaction) kept every request's
    session, connection and transaction objects alive until a collection, which under load
    ran every few requests (heap.py YOUNG_COLLECTION_THRESHOLD)."""
    await _claim(db, "warm")  # the pool's connection and the statements, made once
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        await _claim(db, "cycle-free")
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, Session)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []
