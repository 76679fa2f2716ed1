"""All SQL of the periodic review: the scan's reads (new rows since the watermark and the
windows around them, each on an index), the anomalies and their keyed history."""

from __future__ import annotations

import builtins
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    String,
    Table,
    and_,
    any_,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.ids import id_floor
from payoutsvc.operators.models import Operator
from payoutsvc.payouts.models import Payout, PayoutApproval
from payoutsvc.policy.models import LimitCounter
from payoutsvc.review.detectors import IGNORED_STATUSES, ApprovalRow, CounterRow, PayoutRow
from payoutsvc.review.models import Anomaly, AnomalyEvent, AnomalyStatus, ReviewWatermark

# Bind parameters per IN list: far below every driver's limit.
_CHUNK = 1000
_APPROVED = "approved"  # payouts/approvals.py APPROVED: the decision value of an approval
_WATERMARK_ID = 1
_EVENTS = cast(Table, AnomalyEvent.__table__)

# In PayoutRow's field order; the masked recipient and the ticket are put together by the
# database, so a row becomes a PayoutRow without Python work per column.
_PAYOUT_COLUMNS = (
    Payout.id,
    Payout.integration_id,
    Payout.requested_by,
    Payout.recipient_fingerprint,
    Payout.recipient_type
    + " "
    + func.coalesce(Payout.recipient_public["account_masked"].as_string(), ""),
    Payout.ticket_system + ":" + Payout.ticket_id,
    Payout.amount_minor,
    Payout.currency,
    Payout.status,
    Payout.created_at,
    Payout.limit_day,
)
_APPROVAL_COLUMNS = (
    PayoutApproval.id,
    PayoutApproval.payout_id,
    PayoutApproval.operator_id,
    PayoutApproval.at,
    Payout.requested_by,
    Payout.integration_id,
)


def _chunks(values: Iterable[str], size: int = _CHUNK) -> Iterator[list[str]]:
    ordered = sorted(set(values))
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


def _approval_row(row: Any) -> ApprovalRow:
    return ApprovalRow(
        id=int(row.id),
        payout_id=row.payout_id,
        operator_id=row.operator_id,
        at=row.at,
        requester=row.requested_by,
        integration_id=row.integration_id,
    )


_APPROVALS = (
    select(*_APPROVAL_COLUMNS)
    .join(Payout, Payout.id == PayoutApproval.payout_id)
    .where(PayoutApproval.decision == _APPROVED)
)


class ReviewRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._postgres = session.get_bind().dialect.name == "postgresql"
        # PostgreSQL takes a whole list as one array parameter; SQLite one parameter per value.
        self._chunk = 50_000 if self._postgres else _CHUNK

    def _any(self, column: Any, values: list[str]) -> Any:
        """``column`` equals one of ``values``: ``= ANY(:array)`` on PostgreSQL (one bind
        parameter, one cached statement), an expanding ``IN`` on SQLite."""
        if self._postgres:
            return column == any_(bindparam("values", values, type_=ARRAY(String())))
        return column.in_(values)

    # -- the watermark ------------------------------------------------------------------------
    async def lock_watermark(self, initial_payout_id: str, now: datetime) -> ReviewWatermark:
        """The watermark row, created at ``initial_payout_id`` if missing, locked until this
        transaction ends (PostgreSQL row lock; SQLite's write transaction serialises anyway),
        so a second scan waits and then reads the watermark this one moved."""
        values = {
            "id": _WATERMARK_ID,
            "last_payout_id": initial_payout_id,
            "last_approval_id": 0,
            "scanned_at": now,
        }
        maker = pg_insert if self._postgres else sqlite_insert
        await self.session.execute(
            maker(ReviewWatermark).values(**values).on_conflict_do_nothing(index_elements=["id"])
        )
        found = await self.session.execute(
            select(ReviewWatermark)
            .where(ReviewWatermark.id == _WATERMARK_ID)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return found.scalar_one()

    async def last_approval_id_before(self, at: datetime) -> int:
        """Where a first scan starts reading approvals."""
        found = await self.session.execute(
            select(PayoutApproval.id)
            .where(PayoutApproval.at < at)
            .order_by(PayoutApproval.id.desc())
            .limit(1)
        )
        return int(found.scalar_one_or_none() or 0)

    async def move_watermark(self, payout_id: str, approval_id: int, now: datetime) -> None:
        await self.session.execute(
            update(ReviewWatermark)
            .where(ReviewWatermark.id == _WATERMARK_ID)
            .values(last_payout_id=payout_id, last_approval_id=approval_id, scanned_at=now)
        )

    # -- what the scan reads ------------------------------------------------------------------
    async def one_core(self) -> None:
        """Keep this transaction's queries on one PostgreSQL process (no parallel workers):
        a paced scan's measured busy time is then the CPU it takes from payout creation."""
        if self._postgres:
            await self.session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))

    async def payouts_between(self, after_id: str, up_to_id: str) -> list[PayoutRow]:
        """Payouts with ``after_id < id <= up_to_id`` (ids sort by creation time), oldest
        first: a range of the primary key."""
        found = await self.session.execute(
            select(*_PAYOUT_COLUMNS)
            .where(Payout.id > after_id, Payout.id <= up_to_id)
            .order_by(Payout.id)
        )
        return [PayoutRow._make(r) for r in found.all()]

    async def near_limit_payouts(
        self, days: Sequence[int], longest_day: int, bands: Sequence[tuple[str, int, int]]
    ) -> list[PayoutRow]:
        """The counted payouts of the policy ``days`` whose amount lies in one of the
        ``bands`` (currency, lowest, highest), oldest first: each day a range of the primary
        key (a day is at most ``longest_day`` seconds), filtered by the database."""
        if not days or not bands:
            return []
        in_band = or_(
            *(
                and_(Payout.currency == currency, Payout.amount_minor.between(low, high))
                for currency, low, high in bands
            )
        )
        rows: list[PayoutRow] = []
        for day in days:
            found = await self.session.execute(
                select(*_PAYOUT_COLUMNS)
                .where(
                    Payout.id > id_floor("po", day * 1000 - 1),
                    Payout.id < id_floor("po", (day + longest_day) * 1000),
                    Payout.limit_day == day,
                    Payout.status.not_in(IGNORED_STATUSES),
                    in_band,
                )
                .order_by(Payout.id)
            )
            rows.extend(PayoutRow._make(r) for r in found.all())
        return rows

    async def day_payouts_of(
        self, keys: Iterable[tuple[str, str, int]], longest_day: int
    ) -> dict[tuple[str, str, int], list[PayoutRow]]:
        """The counted payouts of each (requester, currency, policy day), oldest first
        (index on requester and time)."""
        result: dict[tuple[str, str, int], list[PayoutRow]] = {}
        for requester, currency, day in keys:
            found = await self.session.execute(
                select(*_PAYOUT_COLUMNS)
                .where(
                    Payout.requested_by == requester,
                    Payout.created_at >= datetime.fromtimestamp(day, UTC),
                    Payout.created_at < datetime.fromtimestamp(day + longest_day, UTC),
                    Payout.limit_day == day,
                    Payout.currency == currency,
                    Payout.status.not_in(IGNORED_STATUSES),
                )
                .order_by(Payout.id)
            )
            result[requester, currency, day] = [PayoutRow._make(r) for r in found.all()]
        return result

    async def chunk_end(self, after_id: str, before_id: str, size: int | None) -> str:
        """The id of the last of the (at most ``size``) first payouts with ``after_id < id <
        before_id``; ``after_id`` when there are none (a range of the primary key)."""
        ids = select(Payout.id).where(Payout.id > after_id, Payout.id < before_id)
        if size is not None:
            ids = ids.order_by(Payout.id).limit(size)
        found = await self.session.execute(select(func.max(ids.subquery().c.id)))
        return found.scalar_one_or_none() or after_id

    async def recipient_payouts(
        self, fingerprints: Iterable[str], since: datetime, up_to_id: str
    ) -> dict[str, list[PayoutRow]]:
        """Each recipient's payouts created since ``since`` with ``id <= up_to_id``, oldest
        first (index on recipient and time)."""
        result: dict[str, list[PayoutRow]] = defaultdict(list)
        for chunk in _chunks(fingerprints, self._chunk):
            found = await self.session.execute(
                select(*_PAYOUT_COLUMNS)
                .where(
                    self._any(Payout.recipient_fingerprint, chunk),
                    Payout.created_at >= since,
                    Payout.id <= up_to_id,
                )
                .order_by(Payout.id)
            )
            for row in found.all():
                result[row[3]].append(PayoutRow._make(row))
        return result

    async def roles(self, operator_ids: Iterable[str]) -> dict[str, str]:
        roles: dict[str, str] = {}
        for chunk in _chunks(operator_ids):
            found = await self.session.execute(
                select(Operator.id, Operator.role).where(Operator.id.in_(chunk))
            )
            roles.update({row.id: row.role for row in found.all()})
        return roles

    async def requester_days(
        self, requesters: Iterable[str], since_day: int
    ) -> dict[tuple[str, str], list[CounterRow]]:
        """Requesters' day counters (policy/models.py LimitCounter) from ``since_day`` on,
        oldest first, by (requester, currency): a range of the counters' primary key."""
        c = LimitCounter
        result: dict[tuple[str, str], list[CounterRow]] = defaultdict(list)
        for chunk in _chunks(requesters):
            found = await self.session.execute(
                select(c.subject, c.currency, c.day, c.payouts, c.amount_minor)
                .where(c.scope == "requester", c.subject.in_(chunk), c.day >= since_day)
                .order_by(c.subject, c.currency, c.day)
            )
            for row in found.all():
                result[row.subject, row.currency].append(
                    CounterRow(int(row.day), int(row.payouts), int(row.amount_minor))
                )
        return result

    async def approvals_between(
        self, after_id: int, before: datetime, limit: int | None = None
    ) -> list[ApprovalRow]:
        """The first ``limit`` (all: None) approvals after ``after_id`` made before ``before``."""
        query = _APPROVALS.where(PayoutApproval.id > after_id, PayoutApproval.at < before)
        found = await self.session.execute(query.order_by(PayoutApproval.id).limit(limit))
        return [_approval_row(r) for r in found.all()]

    async def approval_counts(
        self, approvers: Iterable[str], since: datetime
    ) -> dict[str, dict[str, int]]:
        """approver -> requester -> approvals since ``since`` (index on approver and time).

        Each approval's requester is looked up by the payout's primary key (a scalar
        subquery): a join lets PostgreSQL choose a (parallel) scan of the whole payouts
        table, several cores' worth of work for a window of a few thousand approvals."""
        requester = (
            select(Payout.requested_by)
            .where(Payout.id == PayoutApproval.payout_id)
            .scalar_subquery()
            .label("requester")
        )
        result: dict[str, dict[str, int]] = defaultdict(dict)
        for chunk in _chunks(approvers):
            found = await self.session.execute(
                select(PayoutApproval.operator_id, requester, func.count())
                .where(
                    PayoutApproval.decision == _APPROVED,
                    PayoutApproval.operator_id.in_(chunk),
                    PayoutApproval.at >= since,
                )
                .group_by(PayoutApproval.operator_id, requester)
            )
            for approver, requester, count in found.all():
                result[approver][requester] = int(count)
        return result

    async def pair_approvals(
        self, pairs: Iterable[tuple[str, str]], since: datetime
    ) -> dict[tuple[str, str], list[ApprovalRow]]:
        """The approvals since ``since`` by each (approver, requester) pair (few pairs)."""
        result: dict[tuple[str, str], list[ApprovalRow]] = defaultdict(list)
        for approver, requester in sorted(set(pairs)):
            found = await self.session.execute(
                _APPROVALS.where(
                    PayoutApproval.operator_id == approver,
                    PayoutApproval.at >= since,
                    Payout.requested_by == requester,
                )
            )
            result[approver, requester].extend(_approval_row(r) for r in found.all())
        return result

    # -- anomalies ----------------------------------------------------------------------------
    async def open_by_keys(self, keys: Sequence[str]) -> dict[str, Anomaly]:
        result: dict[str, Anomaly] = {}
        for chunk in _chunks(keys):
            found = await self.session.execute(select(Anomaly).where(Anomaly.open_key.in_(chunk)))
            result.update({a.open_key: a for a in found.scalars() if a.open_key})
        return result

    def add(self, anomaly: Anomaly) -> None:
        """A new anomaly, inserted when the transaction flushes."""
        self.session.add(anomaly)

    async def insert_events(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(insert(_EVENTS), list(rows))

    async def get(self, anomaly_id: str, *, for_update: bool = False) -> Anomaly | None:
        query = select(Anomaly).where(Anomaly.id == anomaly_id)
        if for_update:
            query = query.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def list(
        self,
        *,
        limit: int,
        before_id: str | None,
        status: AnomalyStatus | None = None,
        kind: str | None = None,
        since: datetime | None = None,
    ) -> Sequence[Anomaly]:
        """Newest first; ``since``: detected at or after."""
        query = select(Anomaly).order_by(Anomaly.id.desc())
        if limit > 0:
            query = query.limit(limit)
        if before_id is not None:
            query = query.where(Anomaly.id < before_id)
        if status is not None:
            query = query.where(Anomaly.status == status.value)
        if kind is not None:
            query = query.where(Anomaly.kind == kind)
        if since is not None:
            query = query.where(Anomaly.detected_at >= since)
        return (await self.session.execute(query)).scalars().all()

    async def anomalies_page(self, after_id: str | None, limit: int) -> Sequence[Anomaly]:
        """Anomalies in id order (keyset pagination), for walking every audit chain."""
        query = select(Anomaly).order_by(Anomaly.id).limit(limit)
        if after_id is not None:
            query = query.where(Anomaly.id > after_id)
        return (await self.session.execute(query)).scalars().all()

    async def events_of(
        self, anomalies: Sequence[Anomaly]
    ) -> dict[str, builtins.list[AnomalyEvent]]:
        """The events of several anomalies, each list in sequence order."""
        found: dict[str, builtins.list[AnomalyEvent]] = {a.id: [] for a in anomalies}
        for chunk in _chunks(found):
            result = await self.session.execute(
                select(AnomalyEvent)
                .where(AnomalyEvent.anomaly_id.in_(chunk))
                .order_by(AnomalyEvent.anomaly_id, AnomalyEvent.sequence)
            )
            for event in result.scalars():
                found[event.anomaly_id].append(event)
        return found

    async def chain_heads(self) -> dict[str, tuple[int, str]]:
        """Every anomaly's chain head (sequence, hash): what an audit checkpoint records
        beside the payouts' (the ids' prefixes keep the two apart)."""
        result = await self.session.execute(
            select(Anomaly.id, Anomaly.last_event_sequence, Anomaly.last_event_hash)
        )
        return {aid: (int(sequence), str(head)) for aid, sequence, head in result.all()}

    async def events_for(self, anomaly_id: str) -> Sequence[AnomalyEvent]:
        found = await self.session.execute(
            select(AnomalyEvent)
            .where(AnomalyEvent.anomaly_id == anomaly_id)
            .order_by(AnomalyEvent.sequence)
        )
        return found.scalars().all()
