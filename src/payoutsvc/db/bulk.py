"""Many rows in one statement, from the table's own metadata, so a column is named once.

PostgreSQL: one statement over arrays (``unnest(CAST(:col AS type[]), …)``), one plan and one
round trip for any number of rows (asyncpg would run an executemany once per row). SQLite:
a Core executemany, which its driver runs in one call. Both forms come from the ``Table``,
so adding a column to a hot insert is one change in the model, not two SQL texts.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import (
    ARRAY,
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TextClause,
    any_,
    insert,
    literal,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

from payoutsvc import jsontext
from payoutsvc.db.base import UtcDateTime
from payoutsvc.db.driver import DriverStatement
from payoutsvc.db.signals import CHANNEL, queue_notify_in_statement

__all__ = [
    "BulkInsert",
    "Field",
    "FoldableWrite",
    "array_parameters",
    "bulk_insert",
    "folded_writes",
    "one_of",
    "pg_array_type",
    "unnest_of",
]


def one_of(column: Column[Any], values: Sequence[Any], *, postgres: bool) -> ColumnElement[bool]:
    """``column IN values`` for a batch of keys. PostgreSQL: ``column = ANY(:array)``, one
    parameter, so the statement and its plan do not grow with the batch (an expanded IN of
    500 ids costs the client a cast per id to render and the server a 500-item plan)."""
    if postgres:
        return column == any_(literal(list(values), ARRAY(column.type)))
    return column.in_(list(values))


def pg_array_type(column: Column[Any]) -> str:
    """The PostgreSQL element type an array parameter for ``column`` is cast to."""
    kind: TypeEngine[Any] = column.type
    if isinstance(kind, UtcDateTime | DateTime):
        return "timestamptz"
    if isinstance(kind, JSON):
        return "json"
    if isinstance(kind, BigInteger):  # before Integer: BigInteger is one
        return "bigint"
    if isinstance(kind, Integer):
        return "integer"
    if isinstance(kind, Float):
        return "float8"
    if isinstance(kind, Boolean):
        return "boolean"
    if isinstance(kind, LargeBinary):
        return "bytea"
    if isinstance(kind, Text):
        return "text"
    if isinstance(kind, String):
        return "varchar"
    raise TypeError(f"no array type for {column.table.name}.{column.name} ({kind!r})")


# A field of the row source: a column of the table, or (name, column whose type it has) for
# a value that is not stored under its own name (the lease token a row must still carry).
Field = str | tuple[str, str]


def unnest_of(table: Table, fields: Sequence[Field], *, alias: str = "v", prefix: str = "") -> str:
    """``unnest(CAST(:a AS varchar[]), …) AS v(a, …)`` for ``fields``: the row source of a
    bulk UPDATE … FROM or INSERT … SELECT; each field is bound as a list of that name
    (``prefix`` + name: see :class:`FoldableWrite`)."""
    pairs = [(f, f) if isinstance(f, str) else f for f in fields]
    casts = ", ".join(
        f"CAST(:{prefix}{name} AS {pg_array_type(table.c[column])}[])" for name, column in pairs
    )
    return f"unnest({casts}) AS {alias}({', '.join(name for name, _ in pairs)})"


def _bulk_insert_sql(table: Table, names: Sequence[str], suffix: str = "", prefix: str = "") -> str:
    return (
        f"INSERT INTO {table.name} ({', '.join(names)}) "  # noqa: S608  (names from the Table)
        f"SELECT * FROM {unnest_of(table, names, prefix=prefix)} {suffix}"
    )


def _one_row_insert_sql(table: Table, names: Sequence[str], prefix: str = "") -> str:
    # Scalar parameters typed by their columns: a row of arrays costs the client an array
    # encoding per column (asyncpg checks each array and each element), and a create
    # inserts one payout of ~40 columns.
    values = ", ".join(f":{prefix}{name}" for name in names)
    return f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({values})"  # noqa: S608


def bulk_insert(table: Table, names: Sequence[str], *, suffix: str = "") -> TextClause:
    """``INSERT INTO table (names) SELECT * FROM unnest(…)`` plus ``suffix`` (an ON
    CONFLICT or RETURNING clause)."""
    return text(_bulk_insert_sql(table, names, suffix))


def array_parameters(
    table: Table, fields: Sequence[Field], rows: Sequence[Mapping[str, Any]]
) -> dict[str, list[Any]]:
    """One list per field for :func:`bulk_insert` / :func:`unnest_of` (JSON columns
    serialised, since asyncpg sends ``json[]`` elements as text)."""
    return _shape(table, tuple(fields)).parameters(rows)


class _Shape:
    """A row source's field names and which of them are JSON, worked out once."""

    __slots__ = ("json_names", "names")

    def __init__(self, table: Table, fields: tuple[Field, ...]) -> None:
        pairs = [(f, f) if isinstance(f, str) else f for f in fields]
        self.names = tuple(name for name, _ in pairs)
        # (name, whether None is SQL NULL): SQLAlchemy's JSON stores None as the JSON text
        # 'null' unless the column says none_as_null, and both databases must agree.
        self.json_names = tuple(
            (name, bool(getattr(table.c[column].type, "none_as_null", False)))
            for name, column in pairs
            if isinstance(table.c[column].type, JSON)
        )

    def parameters(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        parameters = {name: [row[name] for row in rows] for name in self.names}
        for name, none_as_null in self.json_names:
            parameters[name] = [_json_text(value, none_as_null) for value in parameters[name]]
        return parameters

    def row_parameters(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """One row's fields as scalars (``_one_row_insert_sql``), JSON serialised alike."""
        parameters = {name: row[name] for name in self.names}
        for name, none_as_null in self.json_names:
            parameters[name] = _json_text(parameters[name], none_as_null)
        return parameters


def _json_text(value: Any, none_as_null: bool) -> str | None:
    return (None if none_as_null else "null") if value is None else jsontext.dumps(value)


@functools.cache
def _shape(table: Table, fields: tuple[Field, ...]) -> _Shape:
    return _Shape(table, fields)


# -- folding writes into one statement (PostgreSQL) ------------------------------------------
_FOLD = "payoutsvc.folded_writes"  # session.info key: the writes waiting for the fold's end


class FoldableWrite:
    """A PostgreSQL write over array parameters whose SQL is rendered with a bind prefix, so
    that inside :func:`folded_writes` it waits and runs in one statement with the others
    (each as a data-modifying ``WITH`` part under its own prefix); outside, at once. Built
    once (module level): each prefix's text is rendered once."""

    def __init__(self, render: Callable[[str], str]) -> None:
        self._render = functools.cache(render)
        self._direct = text(render(""))

    async def run(self, session: AsyncSession, parameters: Mapping[str, Any]) -> None:
        waiting: list[tuple[str, dict[str, Any]]] | None = session.info.get(_FOLD)
        if waiting is None:
            await session.execute(self._direct, dict(parameters))
            return
        prefix = f"w{len(waiting)}_"
        waiting.append((self._render(prefix), {prefix + k: v for k, v in parameters.items()}))


@asynccontextmanager
async def folded_writes(session: AsyncSession) -> AsyncIterator[None]:
    """On PostgreSQL, the :class:`FoldableWrite` writes made in the block (bulk inserts, the
    idempotency answer) and the transaction's wake-up NOTIFYs run as one statement when the
    block ends, one round trip instead of one each. The block must not read what it writes
    (nothing has run until it ends); all parts see the snapshot from before the statement,
    and foreign keys between them are checked at its end. SQLite: each write runs at once."""
    if session.get_bind().dialect.name != "postgresql":
        yield
        return
    waiting: list[tuple[str, dict[str, Any]]] = []
    session.info[_FOLD] = waiting
    try:
        yield
    finally:
        del session.info[_FOLD]
    names = queue_notify_in_statement(session)
    if not waiting and not names:
        return
    parameters: dict[str, Any] = {"fold_channel": CHANNEL, "fold_names": names}
    for _, part in waiting:
        parameters.update(part)
    await _folded_statement(tuple(sql for sql, _ in waiting)).fetch(session, parameters)


@functools.lru_cache(maxsize=64)
def _folded_statement(parts: tuple[str, ...]) -> DriverStatement:
    # Data-modifying WITH parts run whether or not the main query reads them.
    with_parts = ", ".join(f"w{n} AS ({sql})" for n, sql in enumerate(parts))
    notify = (
        "SELECT pg_notify(:fold_channel, name) FROM unnest(CAST(:fold_names AS text[])) AS name"
    )
    # The parts are our own SQL texts (BulkInsert, FoldableWrite), never input.
    return DriverStatement(text(f"WITH {with_parts} {notify}" if parts else notify))


class BulkInsert:
    """One INSERT of many rows into ``table``'s ``names`` columns, built once (module level)
    in both forms: building or cache-keying a statement per call costs more than it runs.
    On PostgreSQL it folds into :func:`folded_writes`."""

    def __init__(self, table: Table, names: Sequence[str]) -> None:
        self.table = table
        self.names = tuple(names)
        self.postgres = FoldableWrite(functools.partial(_bulk_insert_sql, table, self.names, ""))
        self.postgres_one_row = FoldableWrite(
            functools.partial(_one_row_insert_sql, table, self.names)
        )
        self.shape = _shape(table, self.names)
        self.sqlite = insert(table)

    async def run(self, session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (each with every column in ``names``) in one statement."""
        if not rows:
            return
        if session.get_bind().dialect.name == "postgresql":
            if len(rows) == 1:
                await self.postgres_one_row.run(session, self.shape.row_parameters(rows[0]))
            else:
                await self.postgres.run(session, self.shape.parameters(rows))
        else:
            # Callers pass exactly the table's columns; a stray key fails loudly here.
            await session.execute(self.sqlite, list(rows))
