"""db/bulk.py ``folded_writes``: on PostgreSQL the create path's writes after the limit
counters' row locks (payout, events, stored answer, wake-up NOTIFY) run as one statement;
nothing is written before the block ends, nothing at all when it fails, and the wake-ups
still reach this process and the others. SQLite writes at once, as before."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    LargeBinary,
    MetaData,
    String,
    Table,
    event,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.base import UtcDateTime, utcnow
from payoutsvc.db.bulk import BulkInsert, folded_writes
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


_SAMPLE = Table(
    "bulk_insert_sample",
    MetaData(),
    Column("id", String(20), primary_key=True),
    Column("amount", BigInteger),
    Column("at", UtcDateTime()),
    Column("document", JSON),
    Column("nullable_document", JSON(none_as_null=True)),
    Column("sealed", LargeBinary),
    Column("flag", Boolean),
)
_INSERT_SAMPLE = BulkInsert(_SAMPLE, [column.name for column in _SAMPLE.columns])


def _sample(n: int, *, empty: bool) -> dict[str, Any]:
    return {
        "id": f"row-{n}",
        "amount": 10**15 + n,
        "at": utcnow(),
        "document": None if empty else {"n": n, "text": "ünï", "list": [1, None]},
        "nullable_document": None if empty else {"n": n},
        "sealed": b"\x00\xff" * n,
        "flag": not empty,
    }


@pytest.mark.parametrize("folded", [False, True], ids=["alone", "folded"])
async def test_one_row_and_many_rows_are_stored_alike(db: Database, folded: bool) -> None:
    """A one-row BulkInsert sends scalars (VALUES), more rows send arrays (unnest): both
    store the same values, JSON null and SQL NULL included, alone or folded."""
    async with db.write_engine.begin() as connection:
        await connection.run_sync(_SAMPLE.metadata.create_all)
    try:
        rows = [_sample(n, empty=n % 2 == 1) for n in range(4)]
        async with (
            db.transaction() as session,
            folded_writes(session) if folded else contextlib.nullcontext(),
        ):
            await _INSERT_SAMPLE.run(session, rows[:1])
            await _INSERT_SAMPLE.run(session, rows[1:2])
            await _INSERT_SAMPLE.run(session, rows[2:])
        async with db.transaction(write=False) as session:
            stored = {row.id: dict(row._mapping) for row in await session.execute(select(_SAMPLE))}
            empty_json = await session.scalar(
                select(func.count()).where(_SAMPLE.c.document.is_(None))
            )
        assert stored == {row["id"]: row for row in rows}
        # JSON's None is the JSON text 'null' (not SQL NULL) unless the column says otherwise.
        assert empty_json == 0
    finally:
        async with db.write_engine.begin() as connection:
            await connection.run_sync(_SAMPLE.metadata.drop_all)
