"""All SQL of the sandbox gateway's ledger (transfers, per-key call counters, secret)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.bulk import array_parameters, bulk_insert
from payoutsvc.gateways.models import SandboxCallCounter, SandboxSecret, SandboxTransfer

_T = cast(Table, SandboxTransfer.__table__)
_C = cast(Table, SandboxCallCounter.__table__)
_TRANSFER_COLUMNS = tuple(column.name for column in _T.columns)
# A key booked concurrently by another process is skipped, never booked twice.
_PG_BOOK = bulk_insert(
    _T,
    _TRANSFER_COLUMNS,
    suffix="ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key",
)
_SQLITE_BOOK = (
    sqlite.insert(_T)
    .on_conflict_do_nothing(index_elements=[_T.c.idempotency_key])
    .returning(_T.c.idempotency_key)
)


class SandboxLedgerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def _dialect(self) -> Any:
        return postgresql if self.session.get_bind().dialect.name == "postgresql" else sqlite

    async def count_submits(self, keys: Sequence[str], now: datetime) -> dict[str, int]:
        """Add one submit to each key's counter (keys must be distinct); returns the new
        counts. One upsert for the whole batch."""
        if not keys:
            return {}
        statement = self._dialect.insert(_C)
        statement = statement.on_conflict_do_update(
            index_elements=[_C.c.idempotency_key],
            set_={"submits": _C.c.submits + 1, "updated_at": statement.excluded.updated_at},
        ).returning(_C.c.idempotency_key, _C.c.submits)
        result = await self.session.execute(
            statement, [{"idempotency_key": k, "submits": 1, "updated_at": now} for k in keys]
        )
        return {key: int(count) for key, count in result.all()}

    async def book(self, transfers: Sequence[dict[str, Any]]) -> set[str]:
        """Insert transfers whose key has none yet; returns the keys actually booked here.
        A key booked concurrently by another process is skipped, never booked twice."""
        if not transfers:
            return set()
        if self.session.get_bind().dialect.name == "postgresql":
            parameters = array_parameters(_T, _TRANSFER_COLUMNS, transfers)
            result = await self.session.execute(_PG_BOOK, parameters)
        else:
            result = await self.session.execute(_SQLITE_BOOK, list(transfers))
        return {key for (key,) in result.all()}

    async def by_keys(self, keys: Sequence[str]) -> dict[str, Row[Any]]:
        if not keys:
            return {}
        result = await self.session.execute(select(_T).where(_T.c.idempotency_key.in_(keys)))
        return {row.idempotency_key: row for row in result.all()}

    async def for_update(self, key: str) -> Row[Any] | None:
        result = await self.session.execute(
            select(_T).where(_T.c.idempotency_key == key).with_for_update()
        )
        return result.first()

    async def record_status_check(
        self, key: str, status: str, status_checks: int, now: datetime
    ) -> None:
        await self.session.execute(
            update(_T)
            .where(_T.c.idempotency_key == key)
            .values(status=status, status_checks=status_checks, updated_at=now)
        )

    async def list_transfers(
        self, *, payout_id: str | None, limit: int, before_id: str | None
    ) -> Sequence[Row[Any]]:
        query = select(_T).order_by(_T.c.id.desc()).limit(limit)
        if payout_id is not None:
            query = query.where(_T.c.payout_id == payout_id)
        if before_id is not None:
            query = query.where(_T.c.id < before_id)
        return (await self.session.execute(query)).all()

    async def created_between(self, since: datetime, until: datetime) -> Sequence[Row[Any]]:
        query = (
            select(_T)
            .where(_T.c.created_at >= since, _T.c.created_at < until)
            .order_by(_T.c.created_at, _T.c.id)
        )
        return (await self.session.execute(query)).all()

    async def secret(self, name: str, candidate: str, now: datetime) -> str:
        """The stored secret called ``name``, storing ``candidate`` first if there is none
        (the first process to ask wins; everyone then reads the same value)."""
        await self.session.execute(
            self._dialect.insert(SandboxSecret.__table__)
            .values(name=name, value=candidate, created_at=now)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        result = await self.session.execute(
            select(SandboxSecret.value).where(SandboxSecret.name == name)
        )
        return str(result.scalar_one())
