"""All SQL for payouts, their approvals, events and idempotency records.

Hot paths use Core statements (one round trip each, no unit-of-work flush).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.payouts.models import IdempotencyRecord, Payout, PayoutApproval, PayoutEvent
from payoutsvc.payouts.status import PayoutStatus


def advisory_lock_id(*parts: str) -> int:
    """A signed 64-bit key for pg_advisory locks, stable across processes."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PayoutRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def is_postgres(self) -> bool:
        return self.session.bind.dialect.name == "postgresql"

    # -- locks ---------------------------------------------------------------------------
    async def try_lock(self, *parts: str) -> bool:
        """Try a transaction-scoped lock (PostgreSQL); SQLite transactions already serialise
        writers with BEGIN IMMEDIATE, so there it always succeeds."""
        if not self.is_postgres:
            return True
        result = await self.session.execute(
            text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": advisory_lock_id(*parts)}
        )
        return bool(result.scalar_one())

    async def lock(self, *keys: tuple[str, ...]) -> None:
        """Wait for transaction-scoped locks, taken in sorted order so two transactions
        locking overlapping sets cannot deadlock."""
        if not self.is_postgres:
            return
        for lock_id in sorted({advisory_lock_id(*k) for k in keys}):
            await self.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_id})

    # -- idempotency -----------------------------------------------------------------------
    async def get_idempotency(self, integration_id: str, key: str) -> IdempotencyRecord | None:
        result = await self.session.execute(
            select(IdempotencyRecord).where(
                IdempotencyRecord.integration_id == integration_id, IdempotencyRecord.key == key
            )
        )
        return result.scalar_one_or_none()

    async def delete_idempotency(self, integration_id: str, key: str) -> None:
        await self.session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.integration_id == integration_id, IdempotencyRecord.key == key
            )
        )

    async def insert_idempotency(self, values: dict[str, Any]) -> None:
        await self.session.execute(insert(IdempotencyRecord).values(**values))

    async def purge_idempotency(self, now: datetime) -> int:
        result = await self.session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.expires_at < now)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    # -- payouts ---------------------------------------------------------------------------
    async def insert_payout(self, values: dict[str, Any]) -> None:
        await self.session.execute(insert(Payout).values(**values))

    async def get(self, payout_id: str, integration_id: str | None) -> Payout | None:
        query = select(Payout).where(Payout.id == payout_id)
        if integration_id is not None:
            query = query.where(Payout.integration_id == integration_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def list(
        self,
        *,
        integration_id: str | None,
        limit: int,
        before_id: str | None,
        ticket_system: str | None = None,
        ticket_id: str | None = None,
        status: str | None = None,
        requested_by: str | None = None,
        created_gte: datetime | None = None,
        created_lt: datetime | None = None,
    ) -> Sequence[Payout]:
        query = select(Payout).order_by(Payout.id.desc()).limit(limit)
        conditions: list[Any] = []
        if integration_id is not None:
            conditions.append(Payout.integration_id == integration_id)
        if before_id is not None:
            conditions.append(Payout.id < before_id)
        if ticket_system is not None:
            conditions.append(Payout.ticket_system == ticket_system)
        if ticket_id is not None:
            conditions.append(Payout.ticket_id == ticket_id)
        if status is not None:
            conditions.append(Payout.status == status)
        if requested_by is not None:
            conditions.append(Payout.requested_by == requested_by)
        if created_gte is not None:
            conditions.append(Payout.created_at >= created_gte)
        if created_lt is not None:
            conditions.append(Payout.created_at < created_lt)
        if conditions:
            query = query.where(*conditions)
        return (await self.session.execute(query)).scalars().all()

    async def transition(
        self,
        payout_id: str,
        integration_id: str | None,
        from_statuses: Iterable[PayoutStatus],
        values: dict[str, Any],
    ) -> Row[Any] | None:
        """Conditional status change: only applies while the payout is in ``from_statuses``,
        so two racing actions end in exactly one outcome. Claims the next event sequence in
        the same statement; returns the updated row, or None when the condition failed."""
        condition = [Payout.id == payout_id, Payout.status.in_([s.value for s in from_statuses])]
        if integration_id is not None:
            condition.append(Payout.integration_id == integration_id)
        result = await self.session.execute(
            update(Payout)
            .where(*condition)
            .values(last_event_sequence=Payout.last_event_sequence + 1, **values)
            .returning(*Payout.__table__.c)
            .execution_options(synchronize_session=False)
        )
        return result.first()

    async def set_chain_head(self, heads: Sequence[tuple[str, str]]) -> None:
        """Store each payout's newest event hash (the head of its audit chain)."""
        if not heads:
            return
        await self.session.execute(
            update(Payout.__table__)
            .where(Payout.__table__.c.id == bindparam("pid"))
            .values(last_event_hash=bindparam("head_hash")),
            [{"pid": pid, "head_hash": h} for pid, h in heads],
        )

    async def current_status(self, payout_id: str, integration_id: str | None) -> str | None:
        query = select(Payout.status).where(Payout.id == payout_id)
        if integration_id is not None:
            query = query.where(Payout.integration_id == integration_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    # -- approvals and events ----------------------------------------------------------------
    async def approvals_for(self, payout_ids: Sequence[str]) -> dict[str, list[PayoutApproval]]:
        found: dict[str, list[PayoutApproval]] = {pid: [] for pid in payout_ids}
        if not payout_ids:
            return found
        result = await self.session.execute(
            select(PayoutApproval)
            .where(PayoutApproval.payout_id.in_(payout_ids))
            .order_by(PayoutApproval.at, PayoutApproval.id)
        )
        for approval in result.scalars():
            found[approval.payout_id].append(approval)
        return found

    async def insert_approval(self, values: dict[str, Any]) -> None:
        await self.session.execute(insert(PayoutApproval).values(**values))

    async def events_for(self, payout_id: str) -> Sequence[PayoutEvent]:
        result = await self.session.execute(
            select(PayoutEvent)
            .where(PayoutEvent.payout_id == payout_id)
            .order_by(PayoutEvent.sequence)
        )
        return result.scalars().all()

    async def count_by_status(self) -> dict[str, int]:
        result = await self.session.execute(
            select(Payout.status, func.count()).group_by(Payout.status)
        )
        return {status: int(count) for status, count in result.all()}
