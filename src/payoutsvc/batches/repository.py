"""All SQL for payout batches. The payouts themselves are written by the payouts domain."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.batches.models import PayoutBatch
from payoutsvc.db.bulk import one_of
from payoutsvc.db.locks import advisory_lock_id
from payoutsvc.payouts.models import Payout

_PAYOUTS = cast(Table, Payout.__table__)


class BatchRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def is_postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    async def lock_key(self, integration_id: str, key: str) -> bool:
        """Own the batch's Idempotency-Key until commit. PostgreSQL: a transaction-scoped
        advisory lock, False when another transaction holds it (a concurrent request with
        the same key); SQLite serialises writers, so the key is always this one's."""
        if not self.is_postgres:
            return True
        result = await self.session.execute(
            text("SELECT pg_try_advisory_xact_lock(:lock_id)"),
            {"lock_id": advisory_lock_id("batch", integration_id, key)},
        )
        return bool(result.scalar_one())

    async def by_key(self, integration_id: str, key: str) -> PayoutBatch | None:
        query = select(PayoutBatch).where(
            PayoutBatch.integration_id == integration_id, PayoutBatch.idempotency_key == key
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def insert(self, batch: PayoutBatch) -> None:
        self.session.add(batch)
        await self.session.flush()

    async def get(self, batch_id: str, integration_id: str | None) -> PayoutBatch | None:
        query = select(PayoutBatch).where(PayoutBatch.id == batch_id)
        if integration_id is not None:
            query = query.where(PayoutBatch.integration_id == integration_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def list(
        self, integration_id: str | None, limit: int, before_id: str | None
    ) -> Sequence[PayoutBatch]:
        query = select(PayoutBatch).order_by(PayoutBatch.id.desc()).limit(limit)
        if integration_id is not None:
            query = query.where(PayoutBatch.integration_id == integration_id)
        if before_id is not None:
            query = query.where(PayoutBatch.id < before_id)
        return (await self.session.execute(query)).scalars().all()

    async def attach(self, batch_id: str, payout_ids: Sequence[str]) -> None:
        """Mark the payouts a batch created as its own (one statement for all)."""
        await self.session.execute(
            update(_PAYOUTS)
            .where(one_of(_PAYOUTS.c.id, payout_ids, postgres=self.is_postgres))
            .values(batch_id=batch_id)
        )

    async def totals(
        self, batch_ids: Sequence[str]
    ) -> dict[str, builtins.list[tuple[str, str, int, int]]]:
        """Per batch: (status, currency, payouts, amount_minor) of its payouts."""
        found: dict[str, builtins.list[tuple[str, str, int, int]]] = {b: [] for b in batch_ids}
        if not batch_ids:
            return found
        result = await self.session.execute(
            select(
                Payout.batch_id,
                Payout.status,
                Payout.currency,
                func.count(),
                func.sum(Payout.amount_minor),
            )
            .where(one_of(_PAYOUTS.c.batch_id, batch_ids, postgres=self.is_postgres))
            .group_by(Payout.batch_id, Payout.status, Payout.currency)
        )
        for batch_id, status, currency, count, amount in result.all():
            found[str(batch_id)].append((status, currency, int(count), int(amount or 0)))
        return found

    async def statuses(self, batch_id: str) -> dict[str, str]:
        """Each payout of the batch's status, by payout id."""
        result = await self.session.execute(
            select(Payout.id, Payout.status).where(Payout.batch_id == batch_id)
        )
        return {str(pid): str(status) for pid, status in result.all()}

    async def payouts_of(self, batch_id: str) -> dict[str, Payout]:
        """The batch's payouts as they are now, by id."""
        result = await self.session.execute(select(Payout).where(Payout.batch_id == batch_id))
        return {payout.id: payout for payout in result.scalars()}

    async def payouts_in(self, batch_id: str, statuses: Sequence[str]) -> Sequence[Payout]:
        """The batch's payouts in one of ``statuses``, in id (creation) order, row-locked
        until commit (PostgreSQL), so no status change slips between reading and recording
        what was exported."""
        query = (
            select(Payout)
            .where(Payout.batch_id == batch_id, Payout.status.in_(list(statuses)))
            .order_by(Payout.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(query)).scalars().all()
