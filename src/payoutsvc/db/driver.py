"""Hot statements run on the session's own asyncpg connection, inside its transaction.

A create payout runs four statements after its first; through ``AsyncSession.execute`` each
costs the server 0.15-0.3 ms of CPU in SQLAlchemy (ORM execute, cache key, bind and result
processing, greenlet hops) on top of what asyncpg itself costs. :class:`DriverStatement`
compiles a statement once (``$n`` placeholders, the order of its bind names) and runs it with
``asyncpg.Connection.fetch`` on the connection the session's transaction is using, so it
sees and is part of the same transaction; asyncpg prepares it once per connection.

Only for statements whose parameters need no SQLAlchemy bind processing (strings,
integers, aware datetimes, lists of those) and whose results need none (scalars). SQLite,
and an engine that tracing instruments (``keep_statements_observable``: every statement must
stay a span), take the ordinary path; the result rows are the same either way (``Row`` or
``asyncpg.Record``, both indexable).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, Executable
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine.interfaces import Compiled
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.util import await_only

__all__ = ["DriverStatement", "keep_statements_observable"]

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]
# Engines whose statements must all pass through SQLAlchemy (tracing.py: its spans come
# from SQLAlchemy's events, which a statement on the driver connection never raises).
_OBSERVED: weakref.WeakSet[Engine] = weakref.WeakSet()
# session.info key: (a weak reference to the session's transaction, its asyncpg connection).
# Weak: the transaction refers to the session, whose info would hold the transaction, and
# that cycle would leave every request's session, connection and transaction objects (~40)
# to the garbage collector instead of freeing them when the request ends.
_DRIVER = "payoutsvc.driver_connection"


def keep_statements_observable(engine: Engine) -> Callable[[], None]:
    """Run every :class:`DriverStatement` on ``engine`` through the session, as tracing
    needs; returns the undo."""
    _OBSERVED.add(engine)
    return lambda: _OBSERVED.discard(engine)


class DriverStatement:
    """``statement`` compiled once for asyncpg; run on the session's driver connection."""

    __slots__ = ("fixed", "names", "sql", "statement")

    def __init__(self, statement: ClauseElement) -> None:
        assert isinstance(statement, Executable)
        compiled: Compiled = statement.compile(dialect=_DIALECT)
        sql = str(compiled)
        if "POSTCOMPILE" in sql:
            raise ValueError("a statement with expanding parameters cannot be precompiled")
        self.statement: Executable = statement
        self.sql = sql
        # The bind names in $n order (a positional dialect's compiler lists them).
        self.names: tuple[str, ...] = tuple(getattr(compiled, "positiontup", None) or ())
        # The values of binds the statement fixed itself (``literal(...)``).
        self.fixed: dict[str, Any] = {
            name: value for name, value in compiled.params.items() if value is not None
        }

    async def fetch(
        self, session: AsyncSession, parameters: Mapping[str, Any]
    ) -> Sequence[Sequence[Any]]:
        """The rows of the statement, run in the session's transaction."""
        driver = await _driver_in_transaction(session)
        if driver is None:
            result = await session.execute(self.statement, dict(parameters))
            return list(result.all())
        rows: Sequence[Sequence[Any]] = await driver.fetch(
            self.sql,
            *(parameters[name] if name in parameters else self.fixed[name] for name in self.names),
        )
        return rows


async def _driver_in_transaction(session: AsyncSession) -> Any:
    """The asyncpg connection of the session's transaction (begun now if it has not begun),
    or None: SQLite, an observed engine, or a transaction that could not be made to begin
    on the database (a statement sent outside it would commit on its own)."""
    # Looked up once per transaction, in one call into SQLAlchemy's greenlet; only a
    # PostgreSQL engine nobody observes gets an entry, so a hit needs no bind check.
    transaction = session.sync_session.get_transaction()
    cached = session.info.get(_DRIVER)
    if (
        cached is not None
        and transaction is not None
        and cached[0]() is transaction
        and cached[1].is_in_transaction()
    ):
        return cached[1]
    bind = session.get_bind()
    if bind.dialect.name != "postgresql" or bind in _OBSERVED:
        return None
    driver = await session.run_sync(_begun_driver)
    begun = session.sync_session.get_transaction()
    if driver is not None and begun is not None:
        session.info[_DRIVER] = (weakref.ref(begun), driver)
    return driver


def _begun_driver(session: Session) -> Any:
    """(In SQLAlchemy's greenlet.) The driver connection of the session's transaction, which
    the session begins if it has not (autobegin), begun on the database too."""
    pooled = session.connection().connection
    driver = pooled.driver_connection
    if driver is None:
        return None
    if not driver.is_in_transaction():
        # No statement has run yet: SQLAlchemy's asyncpg adapter sends BEGIN before its first
        # statement, and commits or rolls back only a transaction it began; so begin it the
        # way it would. Its method is not public API: without it, the ordinary path.
        adapted = pooled.dbapi_connection
        begin = getattr(adapted, "_start_transaction", None)
        if begin is None or getattr(adapted, "_transaction", False) is not None:
            return None
        await_only(begin())
        if not driver.is_in_transaction():
            return None
    return driver
