"""Many rows in one statement, from the table's own metadata, so a column is named once.

PostgreSQL: one statement over arrays (``unnest(CAST(:col AS type[]), …)``), one plan and one
round trip for any number of rows (asyncpg would run an executemany once per row). SQLite:
a Core executemany, which its driver runs in one call. Both forms come from the ``Table``,
so adding a column to a hot insert is one change in the model, not two SQL texts.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
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

from payoutsvc.db.base import UtcDateTime

__all__ = [
    "BulkInsert",
    "Field",
    "array_parameters",
    "bulk_insert",
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


def unnest_of(table: Table, fields: Sequence[Field], *, alias: str = "v") -> str:
    """``unnest(CAST(:a AS varchar[]), …) AS v(a, …)`` for ``fields``: the row source of a
    bulk UPDATE … FROM or INSERT … SELECT; each field is bound as a list of that name."""
    pairs = [(f, f) if isinstance(f, str) else f for f in fields]
    casts = ", ".join(
        f"CAST(:{name} AS {pg_array_type(table.c[column])}[])" for name, column in pairs
    )
    return f"unnest({casts}) AS {alias}({', '.join(name for name, _ in pairs)})"


def bulk_insert(table: Table, names: Sequence[str], *, suffix: str = "") -> TextClause:
    """``INSERT INTO table (names) SELECT * FROM unnest(…)`` plus ``suffix`` (an ON
    CONFLICT or RETURNING clause)."""
    return text(
        f"INSERT INTO {table.name} ({', '.join(names)}) "  # noqa: S608  (names from the Table)
        f"SELECT * FROM {unnest_of(table, names)} {suffix}"
    )


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
            parameters[name] = [
                (None if none_as_null else "null")
                if value is None
                else json.dumps(value, ensure_ascii=False)
                for value in parameters[name]
            ]
        return parameters


@functools.cache
def _shape(table: Table, fields: tuple[Field, ...]) -> _Shape:
    return _Shape(table, fields)


class BulkInsert:
    """One INSERT of many rows into ``table``'s ``names`` columns, built once (module level)
    in both forms: building or cache-keying a statement per call costs more than it runs."""

    def __init__(self, table: Table, names: Sequence[str]) -> None:
        self.table = table
        self.names = tuple(names)
        self.postgres = bulk_insert(table, self.names)
        self.sqlite = insert(table)

    async def run(self, session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (each with every column in ``names``) in one statement."""
        if not rows:
            return
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(self.postgres, array_parameters(self.table, self.names, rows))
        else:
            # Callers pass exactly the table's columns; a stray key fails loudly here.
            await session.execute(self.sqlite, list(rows))
