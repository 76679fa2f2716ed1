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
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Row,
    Table,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.base import UtcDateTime
from payoutsvc.db.signals import signal_on_commit
from payoutsvc.executor.models import PayoutAttempt
from payoutsvc.payouts import transitions
from payoutsvc.payouts.models import Payout
from payoutsvc.payouts.repository import PAYOUTS_DUE
from payoutsvc.payouts.status import PayoutStatus
from payoutsvc.payouts.transitions import ChainHead, Lease, Move

_P = cast(Table, Payout.__table__)
_FINISH_SOURCES_SQL = [f"'{status}'" for status in transitions.FINISH.source_values]
_A = cast(Table, PayoutAttempt.__table__)
APPROVED = PayoutStatus.APPROVED.value
PROCESSING = PayoutStatus.PROCESSING.value

# SQLite: one executemany statement for the finished steps of a batch (FinishRow fields).
_FINISH = (
    update(_P)
    .where(
        _P.c.id == bindparam("pid"),
        _P.c.status.in_([literal_column(v) for v in _FINISH_SOURCES_SQL]),
        _P.c.locked_by == bindparam("token"),
        _P.c.last_event_sequence == bindparam("prev_sequence"),
    )
    .values(
        status=bindparam("status"),
        attempts=bindparam("attempts"),
        gateway_reference=bindparam("reference"),
        gateway_status=bindparam("gateway_status"),
        gateway_details=bindparam("gateway_details", type_=JSON(none_as_null=True)),
        failure_code=bindparam("failure_code"),
        failure_message=bindparam("failure_message"),
        next_attempt_at=bindparam("next_attempt_at"),
        gateway_hold_until=bindparam("hold_until", type_=UtcDateTime()),
        locked_until=None,
        locked_by=None,
        last_event_sequence=bindparam("sequence"),
        last_event_hash=bindparam("head"),
        updated_at=bindparam("now"),
    )
)

# PostgreSQL: the same as one statement over arrays (one plan, one round trip).
_PG_FINISH = text(
    f"""
    UPDATE payouts AS p SET
        status = v.status, attempts = v.attempts, gateway_reference = v.reference,
        gateway_status = v.gateway_status, gateway_details = v.gateway_details,
        failure_code = v.failure_code,
        failure_message = v.failure_message, next_attempt_at = v.next_attempt_at,
        gateway_hold_until = v.hold_until, locked_until = NULL, locked_by = NULL,
        last_event_sequence = v.sequence,
        last_event_hash = v.head, updated_at = :now
    FROM unnest(
        CAST(:ids AS varchar[]), CAST(:tokens AS varchar[]), CAST(:prev_sequences AS integer[]),
        CAST(:statuses AS varchar[]), CAST(:attempts AS integer[]),
        CAST(:references AS varchar[]), CAST(:gateway_statuses AS varchar[]),
        CAST(:failure_codes AS varchar[]), CAST(:failure_messages AS text[]),
        CAST(:next_attempts AS timestamptz[]), CAST(:sequences AS integer[]),
        CAST(:heads AS varchar[]), CAST(:gateway_details AS json[]),
        CAST(:hold_untils AS timestamptz[])
    ) AS v(id, token, prev_sequence, status, attempts, reference, gateway_status,
           failure_code, failure_message, next_attempt_at, sequence, head, gateway_details,
           hold_until)
    WHERE p.id = v.id AND p.status IN ({transitions.FINISH.sql_sources})
      AND p.locked_by = v.token AND p.last_event_sequence = v.prev_sequence
    RETURNING p.id
    """  # noqa: S608  (the statuses are PayoutStatus literals, not input)
).bindparams(bindparam("now", type_=UtcDateTime()))


_PG_INSERT_ATTEMPTS = text(
    """
    INSERT INTO payout_attempts (id, payout_id, attempt, operation, gateway, worker, request,
        outcome, error, gateway_status, gateway_reference, latency_ms, started_at)
    SELECT * FROM unnest(
        CAST(:id AS varchar[]), CAST(:payout_id AS varchar[]), CAST(:attempt AS integer[]),
        CAST(:operation AS varchar[]), CAST(:gateway AS varchar[]), CAST(:worker AS varchar[]),
        CAST(:request AS json[]), CAST(:outcome AS varchar[]), CAST(:error AS text[]),
        CAST(:gateway_status AS varchar[]), CAST(:gateway_reference AS varchar[]),
        CAST(:latency_ms AS float8[]), CAST(:started_at AS timestamptz[])
    )
    """
)
_ATTEMPT_COLUMNS = (
    "id",
    "payout_id",
    "attempt",
    "operation",
    "gateway",
    "worker",
    "request",
    "outcome",
    "error",
    "gateway_status",
    "gateway_reference",
    "latency_ms",
    "started_at",
)

# Lease the payouts this transaction has locked: approved ones move to processing (their
# new status and chain head come from the claim's transitions), taken-over ones keep theirs.
_LEASABLE = sorted({*transitions.CLAIM.source_values, PROCESSING})
_PG_LEASE = text(
    """
    UPDATE payouts AS p SET
        status = v.status,
        last_event_sequence = v.sequence,
        last_event_hash = v.head,
        locked_by = :token, locked_until = :lease_until, next_attempt_at = :lease_until,
        updated_at = :now
    FROM unnest(CAST(:ids AS varchar[]), CAST(:statuses AS varchar[]),
                CAST(:sequences AS integer[]), CAST(:heads AS varchar[]))
        AS v(id, status, sequence, head)
    WHERE p.id = v.id AND p.status IN ({leasable})
    """.format(leasable=", ".join(f"'{s}'" for s in _LEASABLE))
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


_FINISH_FIELDS = tuple(f.name for f in fields(FinishRow))


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


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
            query = query.where(_P.c.status == APPROVED).order_by(_P.c.next_attempt_at)
        else:
            query = query.where(_P.c.status == PROCESSING, _P.c.next_attempt_at <= now).order_by(
                _P.c.next_attempt_at
            )
        if paused_gateways:
            query = query.where(_P.c.gateway.not_in(list(paused_gateways)))
        return (await self.session.execute(query)).all()

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
        if self.is_postgres:
            await self.session.execute(
                _PG_LEASE,
                {
                    "ids": [r[0] for r in rows],
                    "statuses": [r[1] for r in rows],
                    "sequences": [r[2] for r in rows],
                    "heads": [r[3] for r in rows],
                    "token": lease.token,
                    "lease_until": lease.until,
                    "now": now,
                },
            )
            return
        await self.session.execute(
            _SQLITE_LEASE,
            [
                {
                    "pid": pid,
                    "new_status": status,
                    "sequence": sequence,
                    "head": head,
                    "token": lease.token,
                    "lease_until": lease.until,
                    "now": now,
                }
                for pid, status, sequence, head in rows
            ],
        )

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
                {**{name: getattr(r, name) for name in _FINISH_FIELDS}, "now": now}
                for r in rows
                if r.pid in owned
            ]
            if mine:
                await self.session.execute(_FINISH, mine)
            return owned
        # In id order, as every multi-row writer of payouts here, so two overlapping finishes
        # (only possible after a lease ran out) rarely deadlock; if they do, the loser's
        # transaction is retried whole and its conditional update then finds nothing.
        rows = sorted(rows, key=lambda r: r.pid)
        result = await self.session.execute(
            _PG_FINISH,
            {
                "now": now,
                "ids": [r.pid for r in rows],
                "tokens": [r.token for r in rows],
                "prev_sequences": [r.prev_sequence for r in rows],
                "statuses": [r.status for r in rows],
                "attempts": [r.attempts for r in rows],
                "references": [r.reference for r in rows],
                "gateway_statuses": [r.gateway_status for r in rows],
                "failure_codes": [r.failure_code for r in rows],
                "failure_messages": [r.failure_message for r in rows],
                "next_attempts": [r.next_attempt_at for r in rows],
                "sequences": [r.sequence for r in rows],
                "heads": [r.head for r in rows],
                "gateway_details": [_json_or_none(r.gateway_details) for r in rows],
                "hold_untils": [r.hold_until for r in rows],
            },
        )
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
        if not rows:
            return
        if not self.is_postgres:
            await self.session.execute(insert(_A), list(rows))
            return
        # One statement over arrays: no per-row parameter processing on either side.
        columns: dict[str, list[Any]] = {name: [] for name in _ATTEMPT_COLUMNS}
        for row in rows:
            for name in _ATTEMPT_COLUMNS:
                columns[name].append(row[name])
        columns["request"] = [json.dumps(r, ensure_ascii=False) for r in columns["request"]]
        await self.session.execute(_PG_INSERT_ATTEMPTS, columns)

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
            select(func.min(_P.c.next_attempt_at)).where(_P.c.status == APPROVED)
        )
        retries = await self.session.execute(
            select(func.count(), func.min(_P.c.next_attempt_at)).where(
                _P.c.status == PROCESSING, _P.c.next_attempt_at <= now
            )
        )
        retry_count, retry_oldest = retries.one()
        candidates = [t for t in (approved.scalar_one(), retry_oldest) if t is not None]
        return {
            "depth": depth,
            "due": depth.get(APPROVED, 0) + int(retry_count or 0),
            "oldest_due_since": min(candidates) if candidates else None,
        }
