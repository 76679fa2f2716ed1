"""All SQL of reconciliations: the runs (also the worker's queue), their items, and the
reads of payouts a run compares."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.payouts.models import Payout
from payoutsvc.reconciliation.compare import COMPARED_STATUSES, OurPayout
from payoutsvc.reconciliation.models import Reconciliation, ReconciliationItem, RunStatus

CLAIM_CANDIDATES = 5

_OURS = (
    Payout.id,
    Payout.status,
    Payout.amount_minor,
    Payout.currency,
    Payout.gateway_idempotency_key,
    Payout.gateway_reference,
)


def _ours(rows: Iterable[Any]) -> list[OurPayout]:
    return [OurPayout(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


class ReconciliationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- runs -----------------------------------------------------------------------------
    async def insert(self, run: Reconciliation) -> None:
        self.session.add(run)
        await self.session.flush()

    async def insert_daily(self, values: dict[str, Any]) -> bool:
        """Insert a daily run unless one with its ``daily_key`` exists (another worker, or
        this one before a restart, recorded it): True when this call inserted it."""
        dialect = postgresql if self.session.get_bind().dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(Reconciliation)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["daily_key"])
            .returning(Reconciliation.id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def get(self, run_id: str) -> Reconciliation | None:
        return await self.session.get(Reconciliation, run_id)

    async def page(
        self, limit: int, before_id: str | None, gateway: str | None, status: str | None
    ) -> Sequence[Reconciliation]:
        query = select(Reconciliation).order_by(Reconciliation.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(Reconciliation.id < before_id)
        if gateway is not None:
            query = query.where(Reconciliation.gateway == gateway)
        if status is not None:
            query = query.where(Reconciliation.status == status)
        return (await self.session.execute(query)).scalars().all()

    async def items(self, run_id: str, limit: int) -> Sequence[ReconciliationItem]:
        query = (
            select(ReconciliationItem)
            .where(ReconciliationItem.reconciliation_id == run_id)
            .order_by(ReconciliationItem.id)
            .limit(limit)
        )
        return (await self.session.execute(query)).scalars().all()

    async def count_items(self, run_id: str) -> int:
        query = select(func.count()).where(ReconciliationItem.reconciliation_id == run_id)
        return int((await self.session.execute(query)).scalar_one())

    # -- the worker's queue ---------------------------------------------------------------
    async def claim(self, worker: str, now: datetime, until: datetime) -> Reconciliation | None:
        """Lease one running reconciliation nobody holds (or whose holder's lease ran out).
        A conditional UPDATE per candidate: of several workers, exactly one wins each."""
        free = or_(Reconciliation.locked_until.is_(None), Reconciliation.locked_until < now)
        candidates = await self.session.execute(
            select(Reconciliation.id)
            .where(Reconciliation.status == RunStatus.RUNNING.value, free)
            .order_by(Reconciliation.created_at, Reconciliation.id)
            .limit(CLAIM_CANDIDATES)
        )
        for (run_id,) in candidates.all():
            won = await self.session.execute(
                update(Reconciliation)
                .where(
                    Reconciliation.id == run_id,
                    Reconciliation.status == RunStatus.RUNNING.value,
                    free,
                )
                .values(
                    locked_by=worker,
                    locked_until=until,
                    attempts=Reconciliation.attempts + 1,
                    started_at=func.coalesce(Reconciliation.started_at, now),
                )
                .returning(Reconciliation.id)
                .execution_options(synchronize_session=False)
            )
            if won.first() is not None:
                return await self.session.get(Reconciliation, run_id, populate_existing=True)
        return None

    async def extend(self, run_id: str, worker: str, until: datetime) -> bool:
        """Renew the lease; False when another worker took the run over."""
        result = await self.session.execute(
            update(Reconciliation)
            .where(Reconciliation.id == run_id, Reconciliation.locked_by == worker)
            .values(locked_until=until)
            .returning(Reconciliation.id)
            .execution_options(synchronize_session=False)
        )
        return result.first() is not None

    async def finish(self, run_id: str, worker: str, values: dict[str, Any]) -> bool:
        """Record the outcome, only while this worker still holds the run: a worker whose
        lease ran out cannot overwrite (or double) the result of the one that took over."""
        result = await self.session.execute(
            update(Reconciliation)
            .where(
                Reconciliation.id == run_id,
                Reconciliation.locked_by == worker,
                Reconciliation.status == RunStatus.RUNNING.value,
            )
            .values(locked_by=None, locked_until=None, **values)
            .returning(Reconciliation.id)
            .execution_options(synchronize_session=False)
        )
        return result.first() is not None

    async def insert_items(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(insert(ReconciliationItem), list(rows))

    # -- the payouts a run compares ---------------------------------------------------------
    async def payouts_of_period(
        self, gateway: str, since: datetime, until: datetime
    ) -> list[OurPayout]:
        """Payouts of ``gateway`` sent to it (processing or after) that were created in
        ``[since, until)`` or last changed in it (a finished payout's last change is its
        settlement), oldest first."""
        in_period = or_(
            and_(Payout.created_at >= since, Payout.created_at < until),
            and_(Payout.updated_at >= since, Payout.updated_at < until),
        )
        query = (
            select(*_OURS)
            .where(Payout.gateway == gateway, Payout.status.in_(COMPARED_STATUSES), in_period)
            .order_by(Payout.created_at, Payout.id)
        )
        return _ours((await self.session.execute(query)).all())

    async def payouts_by_keys(self, gateway: str, keys: Sequence[str]) -> list[OurPayout]:
        if not keys:
            return []
        query = select(*_OURS).where(
            Payout.gateway == gateway,
            Payout.status.in_(COMPARED_STATUSES),
            Payout.gateway_idempotency_key.in_(sorted(set(keys))),
        )
        return _ours((await self.session.execute(query)).all())

    async def payouts_by_references(self, gateway: str, refs: Sequence[str]) -> list[OurPayout]:
        """Payouts of ``gateway`` a statement names by bank reference, id or key."""
        if not refs:
            return []
        wanted = sorted(set(refs))
        query = select(*_OURS).where(
            Payout.gateway == gateway,
            Payout.status.in_(COMPARED_STATUSES),
            or_(
                Payout.gateway_reference.in_(wanted),
                Payout.id.in_(wanted),
                Payout.gateway_idempotency_key.in_(wanted),
            ),
        )
        return _ours((await self.session.execute(query)).all())
