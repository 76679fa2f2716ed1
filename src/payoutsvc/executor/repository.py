"""All SQL of the executor: claiming due payouts, finishing them, recording gateway calls.

The payouts table is the queue. A payout is the executor's job while it is ``approved`` (due
since ``next_attempt_at``, the time it was created approved or got approved) or
``processing`` (due at ``next_attempt_at``). While a worker holds it, ``locked_by`` carries
that claim's token and ``locked_until`` its lease; ``next_attempt_at`` is set to the lease's
end too, so the one (status, next_attempt_at) index gives approved payouts oldest first, and
finds payouts whose retry is due and payouts whose worker died.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Row,
    Table,
    bindparam,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.base import UtcDateTime
from payoutsvc.db.bulk import BulkInsert, array_parameters, one_of, unnest_of
from payoutsvc.db.signals import signal_on_commit
from payoutsvc.executor.models import PayoutAttempt
from payoutsvc.payouts import transitions
from payoutsvc.payouts.models import Payout, PayoutEvent
from payoutsvc.payouts.repository import PAYOUTS_DUE
from payoutsvc.payouts.status import PayoutStatus
from payoutsvc.payouts.transitions import ChainHead, Lease, Move

_P = cast(Table, Payout.__table__)
_FINISH_SOURCES_SQL = [f"'{status}'" for status in transitions.FINISH.source_values]
_A = cast(Table, PayoutAttempt.__table__)
_E = cast(Table, PayoutEvent.__table__)
# What the evidence check reads of an event (executor/evidence.py ChainEvent).
_EVIDENCE_COLUMNS = tuple(
    _E.c[name]
    for name in (
        "id",
        "payout_id",
        "sequence",
        "type",
        "actor",
        "at",
        "data",
        "prev_hash",
        "hash",
        "hash_scheme",
    )
)
APPROVED = PayoutStatus.APPROVED.value
PROCESSING = PayoutStatus.PROCESSING.value

# A finishing write, per FinishRow field: the payouts column it is matched against...
_FINISH_MATCH: tuple[tuple[str, str], ...] = (
    ("pid", "id"),
    ("token", "locked_by"),
    ("prev_sequence", "last_event_sequence"),
)
# ...or written to.
_FINISH_SET: tuple[tuple[str, str], ...] = (
    ("status", "status"),
    ("attempts", "attempts"),
    ("reference", "gateway_reference"),
    ("gateway_status", "gateway_status"),
    ("gateway_details", "gateway_details"),
    ("failure_code", "failure_code"),
    ("failure_message", "failure_message"),
    ("next_attempt_at", "next_attempt_at"),
    ("hold_until", "gateway_hold_until"),
    ("sequence", "last_event_sequence"),
    ("head", "last_event_hash"),
)
_FINISH_FIELDS = tuple(field for field, _ in (*_FINISH_MATCH, *_FINISH_SET))

# SQLite: one executemany statement for the finished steps of a batch.
_FINISH = (
    update(_P)
    .where(
        _P.c.id == bindparam("b_pid"),
        _P.c.status.in_([literal_column(v) for v in _FINISH_SOURCES_SQL]),
        _P.c.locked_by == bindparam("b_token"),
        _P.c.last_event_sequence == bindparam("b_prev_sequence"),
    )
    .values(
        {
            # b_: bind names that equal a column name are reserved in an UPDATE's SET.
            **{
                column: bindparam(f"b_{field}", type_=_P.c[column].type)
                for field, column in _FINISH_SET
            },
            "locked_until": None,
            "locked_by": None,
            "updated_at": bindparam("b_now", type_=UtcDateTime()),
        }
    )
)

# PostgreSQL: the same as one statement over arrays (one plan, one round trip).
_PG_FINISH = text(
    f"""
    UPDATE payouts AS p SET
        {", ".join(f"{column} = v.{field}" for field, column in _FINISH_SET)},
        locked_until = NULL, locked_by = NULL, updated_at = :now
    FROM {unnest_of(_P, (*_FINISH_MATCH, *_FINISH_SET))}
    WHERE p.id = v.pid AND p.status IN ({transitions.FINISH.sql_sources})
      AND p.locked_by = v.token AND p.last_event_sequence = v.prev_sequence
    RETURNING p.id
    """  # noqa: S608  (column names from the Table, statuses PayoutStatus literals)
).bindparams(bindparam("now", type_=UtcDateTime()))


_INSERT_ATTEMPTS = BulkInsert(_A, [column.name for column in _A.columns])

# Lease the payouts this transaction has locked: approved ones move to processing (their
# new status and chain head come from the claim's transitions), taken-over ones keep theirs.
_LEASABLE = sorted({*transitions.CLAIM.source_values, PROCESSING})
_LEASE_FIELDS = (
    ("pid", "id"),
    ("new_status", "status"),
    ("sequence", "last_event_sequence"),
    ("head", "last_event_hash"),
)
_PG_LEASE = text(
    f"""
    UPDATE payouts AS p SET
        status = v.new_status,
        last_event_sequence = v.sequence,
        last_event_hash = v.head,
        locked_by = :token, locked_until = :lease_until, next_attempt_at = :lease_until,
        updated_at = :now
    FROM {unnest_of(_P, _LEASE_FIELDS)}
    WHERE p.id = v.pid AND p.status IN ({", ".join(f"'{s}'" for s in _LEASABLE)})
    """  # noqa: S608  (column names from the Table, statuses PayoutStatus literals)
).bindparams(bindparam("now", type_=UtcDateTime()), bindparam("lease_until", type_=UtcDateTime()))
_SQLITE_LEASE = (
    update(_P)
    .where(
        _P.c.id == bindparam("pid"), _P.c.status.in_([literal_column(f"'{s}'") for s in _LEASABLE])
    )
    .values(
        status=bindparam("new_status"),
        last_event_sequence=bindparam("sequence"),
        last_event_hash=bindparam("head"),
        locked_by=bindparam("token"),
        locked_until=bindparam("lease_until", type_=UtcDateTime()),
        next_attempt_at=bindparam("lease_until", type_=UtcDateTime()),
        updated_at=bindparam("now", type_=UtcDateTime()),
    )
)


@dataclass(frozen=True, slots=True)
class FinishRow:
    """One payout's finishing write: applied only while the payout is still processing
    under ``token`` at ``prev_sequence`` (no event written since the claim)."""

    pid: str
    token: str
    prev_sequence: int
    status: str
    attempts: int
    reference: str | None
    gateway_status: str | None
    gateway_details: Mapping[str, str] | None
    failure_code: str | None
    failure_message: str | None
    next_attempt_at: datetime | None
    hold_until: datetime | None
    sequence: int
    head: str


class ExecutorRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def is_postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    # -- claiming, PostgreSQL: lock due rows (skipping rows others are claiming), then lease
    async def lock_due(
        self, status: str, *, now: datetime, limit: int, paused_gateways: Collection[str] = ()
    ) -> Sequence[Row[Any]]:
        """Due payouts of ``status``, row-locked for this transaction; rows other workers
        are claiming right now are skipped. ``approved`` oldest first; ``processing`` whose
        retry is due or whose lease ran out, most overdue first."""
        query = select(_P).limit(limit).with_for_update(skip_locked=True)
        if status == APPROVED:
            # One waiting for a manual release has no due time yet: the same index range.
            query = query.where(
                _P.c.status == APPROVED, _P.c.next_attempt_at.is_not(None)
            ).order_by(_P.c.next_attempt_at)
        else:
            query = query.where(_P.c.status == PROCESSING, _P.c.next_attempt_at <= now).order_by(
                _P.c.next_attempt_at
            )
        if paused_gateways:
            query = query.where(_P.c.gateway.not_in(list(paused_gateways)))
        return (await self.session.execute(query)).all()

    async def events_of_types(
        self, payout_ids: Sequence[str], types: Sequence[str]
    ) -> dict[str, list[Row[Any]]]:
        """The claimed payouts' events of ``types`` (the payment evidence), in one query."""
        found: dict[str, list[Row[Any]]] = {pid: [] for pid in payout_ids}
        if not payout_ids:
            return found
        query = select(*_EVIDENCE_COLUMNS).where(
            one_of(_E.c.payout_id, payout_ids, postgres=self.is_postgres),
            _E.c.type.in_(list(types)),
        )
        result = await self.session.execute(query)
        for row in result:
            found[row.payout_id].append(row)
        return found

    async def lease(
        self,
        *,
        now: datetime,
        lease: Lease,
        taken: Sequence[tuple[str, ChainHead]],
        moves: Sequence[Move],
    ) -> None:
        """Lease locked payouts to the claim: ``taken`` ones (already processing) keep their
        status and chain; ``moves`` (approved → processing) write what their transition
        planned, in the same row write."""
        rows = [
            *((pid, PROCESSING, head.sequence, head.hash) for pid, head in taken),
            *((m.payout_id, m.target.value, m.head.sequence, m.head.hash) for m in moves),
        ]
        if not rows:
            return
        leases = [
            {"pid": pid, "new_status": status, "sequence": sequence, "head": head}
            for pid, status, sequence, head in rows
        ]
        shared = {"token": lease.token, "lease_until": lease.until, "now": now}
        if self.is_postgres:
            parameters = array_parameters(_P, _LEASE_FIELDS, leases)
            await self.session.execute(_PG_LEASE, {**parameters, **shared})
            return
        await self.session.execute(_SQLITE_LEASE, [{**row, **shared} for row in leases])

    # -- finishing -----------------------------------------------------------------------
    async def _owned_sqlite(self, rows: Sequence[FinishRow]) -> set[str]:
        expected = {r.pid: (r.token, r.prev_sequence) for r in rows}
        result = await self.session.execute(
            select(_P.c.id, _P.c.status, _P.c.locked_by, _P.c.last_event_sequence).where(
                _P.c.id.in_(list(expected))
            )
        )
        return {
            row.id
            for row in result.all()
            if row.status in transitions.FINISH.source_values
            and (row.locked_by, row.last_event_sequence) == expected[row.id]
        }

    async def finish(self, rows: Sequence[FinishRow], now: datetime) -> set[str]:
        """Write finished steps of the payouts this claim still owns; returns their ids. A
        payout is owned while it is processing under the claim's token with no event written
        since the claim."""
        if not rows:
            return set()
        if any(r.status == PROCESSING for r in rows):
            # A retry is scheduled: idle executors learn its time (their next look) at once.
            signal_on_commit(self.session, PAYOUTS_DUE)
        if not self.is_postgres:
            # SQLite's write transaction excludes every other writer: read, then write.
            owned = await self._owned_sqlite(rows)
            mine = [
                {**{f"b_{name}": getattr(r, name) for name in _FINISH_FIELDS}, "b_now": now}
                for r in rows
                if r.pid in owned
            ]
            if mine:
                await self.session.execute(_FINISH, mine)
            return owned
        # In id order, as every multi-row writer of payouts here, so two overlapping finishes
        # (only possible after a lease ran out) rarely deadlock; if they do, the loser's
        # transaction is retried whole and its conditional update then finds nothing.
        ordered = sorted(rows, key=lambda r: r.pid)
        parameters = {name: [getattr(r, name) for r in ordered] for name in _FINISH_FIELDS}
        parameters["gateway_details"] = [
            None if r.gateway_details is None else json.dumps(r.gateway_details, ensure_ascii=False)
            for r in ordered
        ]
        result = await self.session.execute(_PG_FINISH, {**parameters, "now": now})
        return {row.id for row in result.all()}

    async def release(self, claims: Sequence[tuple[str, str]], now: datetime) -> int:
        """Give payouts back (shutdown, unfinished work): due at once for the next claimer,
        which resolves them by status query. Returns how many were still held."""
        released = 0
        for token in {token for _, token in claims}:
            ids = [pid for pid, t in claims if t == token]
            result = await self.session.execute(
                update(_P)
                .where(_P.c.id.in_(ids), _P.c.status == PROCESSING, _P.c.locked_by == token)
                .values(locked_by=None, locked_until=None, next_attempt_at=now, updated_at=now)
            )
            released += int(getattr(result, "rowcount", 0) or 0)
        if released:
            signal_on_commit(self.session, PAYOUTS_DUE)  # other workers take them at once
        return released

    async def next_due_at(self) -> datetime | None:
        """When the earliest approved or processing payout is, or was, due: an idle
        executor's next look (a processing payout's lease end counts: it is taken over then)."""
        earliest = [
            select(_P.c.next_attempt_at)
            .where(_P.c.status == status, _P.c.next_attempt_at.is_not(None))
            .order_by(_P.c.next_attempt_at)
            .limit(1)
            .scalar_subquery()
            for status in (APPROVED, PROCESSING)
        ]
        times = (await self.session.execute(select(*earliest))).one()
        return min((t for t in times if t is not None), default=None)

    async def insert_attempts(self, rows: Sequence[dict[str, Any]]) -> None:
        await _INSERT_ATTEMPTS.run(self.session, rows)

    async def attempts_for(self, payout_id: str) -> Sequence[Row[Any]]:
        result = await self.session.execute(
            select(_A).where(_A.c.payout_id == payout_id).order_by(_A.c.started_at, _A.c.id)
        )
        return result.all()

    async def by_gateway_key(self, gateway: str, idempotency_key: str) -> Row[Any] | None:
        result = await self.session.execute(
            select(_P).where(
                _P.c.gateway_idempotency_key == idempotency_key, _P.c.gateway == gateway
            )
        )
        return result.first()

    async def queue_stats(self, now: datetime) -> dict[str, Any]:
        """Depth per active status, how many are due now, and since when the oldest waits."""
        depth_rows = await self.session.execute(
            select(_P.c.status, func.count())
            .where(_P.c.status.in_([APPROVED, PROCESSING, PayoutStatus.NEEDS_REVIEW.value]))
            .group_by(_P.c.status)
        )
        depth = {status: int(count) for status, count in depth_rows.all()}
        approved = await self.session.execute(
            select(func.count(), func.min(_P.c.next_attempt_at)).where(
                _P.c.status == APPROVED, _P.c.next_attempt_at.is_not(None)
            )
        )
        approved_due, approved_oldest = approved.one()
        retries = await self.session.execute(
            select(func.count(), func.min(_P.c.next_attempt_at)).where(
                _P.c.status == PROCESSING, _P.c.next_attempt_at <= now
            )
        )
        retry_count, retry_oldest = retries.one()
        candidates = [t for t in (approved_oldest, retry_oldest) if t is not None]
        return {
            "depth": depth,
            # Approved payouts waiting for a manual release are in the depth, not due.
            "due": int(approved_due or 0) + int(retry_count or 0),
            "oldest_due_since": min(candidates) if candidates else None,
        }
