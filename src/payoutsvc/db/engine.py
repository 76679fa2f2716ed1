"""Engines and sessions.

One transaction per request or per executor step. On SQLite there is a second engine for
writes whose transactions start with ``BEGIN IMMEDIATE``: SQLite allows one writer, and a
deferred transaction that reads and then writes fails with "database is locked" instead of
waiting its turn. Reads use deferred transactions and run beside the writer thanks to WAL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from payoutsvc.db.signals import Signals, notify_others, take_pending, take_queued

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _configure_sqlite(engine: AsyncEngine, begin_statement: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the sqlite3 module so BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin_statement)


def create_engine_for(
    url: str, *, begin_immediate: bool = False, pool_size: int = 20
) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(
            url, poolclass=NullPool if parsed.database in (None, "", ":memory:") else None
        )
        _configure_sqlite(engine, "BEGIN IMMEDIATE" if begin_immediate else "BEGIN")
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        # No overflow: an overflow connection closes when it is returned to a full pool, so a
        # load whose transactions in flight hover around the pool's size opens and closes
        # connections all the time (each new one costs a backend, asyncpg's type
        # introspection and every statement prepared again). Measured at 64 connections
        # against 20 + 10 overflow: +20 % creates per second, +15 % for one requester. Past
        # the pool, requests wait for a connection (size it with PAYOUTSVC_DB_POOL_SIZE).
        max_overflow=0,
        pool_pre_ping=False,
        pool_recycle=1800,
    )


def _commit_and_close(session: Session) -> None:
    try:
        session.commit()
    finally:
        session.close()


@dataclass
class Database:
    """The read and write engines of one process; on PostgreSQL both are the same engine."""

    url: str
    write_engine: AsyncEngine
    read_engine: AsyncEngine

    @classmethod
    def connect(cls, url: str, pool_size: int = 20) -> Database:
        if make_url(url).get_backend_name() == "sqlite":
            return cls(
                url,
                create_engine_for(url, begin_immediate=True),
                create_engine_for(url, begin_immediate=False),
            )
        engine = create_engine_for(url, pool_size=pool_size)
        return cls(url, engine, engine)

    @property
    def dialect(self) -> str:
        return self.write_engine.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def __post_init__(self) -> None:
        self._write_sessions = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)
        self.signals = Signals(self.write_engine)

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits when the block ends normally, rolls back on any error.
        Wake-ups the work asked for (:func:`signal_on_commit`) go out once it committed.

        The session begins its transaction on first use (autobegin) and commits and closes
        in one call into SQLAlchemy's greenlet: ``session.begin()``'s block inside the
        session's own context takes three such calls and a task (measured: ~0.25 ms of CPU
        per transaction, a twentieth of a create payout's)."""
        factory = self._write_sessions if write else self._read_sessions
        session = factory()
        try:
            yield session
            signals = take_pending(session)
            if signals and self.is_postgres:
                await notify_others(session, signals)
            signals |= take_queued(session)
            await session.run_sync(_commit_and_close)
        except BaseException:
            # Rolls back; shielded, as AsyncSession's own context closes it, so a cancelled
            # request still returns its connection to the pool.
            await asyncio.shield(session.close())
            raise
        if signals:
            self.signals.fire(signals)

    async def dispose(self) -> None:
        await self.signals.aclose()
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()
