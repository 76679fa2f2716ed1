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
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, Row, Table, bindparam, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.base import UtcDateTime
from payoutsvc.db.signals import signal_on_commit
from payoutsvc.executor.models import PayoutAttempt
from payoutsvc.payouts.models import Payout
from payoutsvc.payouts.repository import PAYOUTS_DUE
from payoutsvc.payouts.status import PayoutStatus

_P = cast(Table, Payout.__table__)
_A = cast(Table, PayoutAttempt.__table__)
APPROVED = PayoutStatus.APPROVED.value
PROCESSING = PayoutStatus.PROCESSING.value

# SQLite: one executemany statement for the finished steps of a batch.
_FINISH = (
    update(_P)
    .where(
        _P.c.id == bindparam("pid"),
        _P.c.status == PROCESSING,
        _P.c.locked_by == bindparam("token"),
        _P.c.last_event_sequence == bindparam("prev_sequence"),
    )
    .values(
        status=bindparam("new_status"),
        attempts=bindparam("new_attempts"),
        gateway_reference=bindparam("new_reference"),
        gateway_status=bindparam("new_gateway_status"),
        gateway_details=bindparam("new_gateway_details", type_=JSON(none_as_null=True)),
        failure_code=bindparam("new_failure_code"),
        failure_message=bindparam("new_failure_message"),
        next_attempt_at=bindparam("new_next_attempt_at"),
        gateway_hold_until=bindparam("new_hold_until", type_=UtcDateTime()),
        locked_until=None,
        locked_by=None,
        last_event_sequence=bindparam("new_sequence"),
        last_event_hash=bindparam("new_hash"),
        updated_at=bindparam("now"),
    )
)

# PostgreSQL: the same as one statement over arrays (one plan, one round trip).
_PG_FINISH = text(
    """
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
    WHERE p.id = v.id AND p.status = 'processing' AND p.locked_by = v.token
      AND p.last_event_sequence = v.prev_sequence
    RETURNING p.id
    """
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

# PostgreSQL: lease the payouts this transaction has locked; approved ones move to
# processing with the head of their event chain (the payout.processing event's hash) in
# the same row write.
_PG_LEASE = text(
    """
    UPDATE payouts AS p SET
        status = 'processing',
        last_event_sequence = p.last_event_sequence + v.new_events,
        last_event_hash = COALESCE(v.head, p.last_event_hash),
        locked_by = :token, locked_until = :lease_until, next_attempt_at = :lease_until,
        updated_at = :now
    FROM unnest(CAST(:ids AS varchar[]), CAST(:heads AS varchar[]), CAST(:new_events AS integer[]))
        AS v(id, head, new_events)
    WHERE p.id = v.id AND p.status IN ('approved', 'processing')
    """
).bindparams(bindparam("now", type_=UtcDateTime()), bindparam("lease_until", type_=UtcDateTime()))


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
        token: str,
        now: datetime,
        lease_until: datetime,
        heads: Sequence[tuple[str, str | None]],
    ) -> None:
        """Lease locked payouts to ``token``. ``heads`` pairs each id with the hash of the
        event written for it now (approved → processing), or None when it has no new event."""
        if not heads:
            return
        await self.session.execute(
            _PG_LEASE,
            {
                "ids": [pid for pid, _ in heads],
                "heads": [head for _, head in heads],
                "new_events": [0 if head is None else 1 for _, head in heads],
                "token": token,
                "lease_until": lease_until,
                "now": now,
            },
        )

    # -- claiming, SQLite: the write transaction (BEGIN IMMEDIATE) already excludes every
    # other writer, so one conditional UPDATE … RETURNING is the whole claim.
    async def claim_approved(
        self,
        *,
        now: datetime,
        lease_until: datetime,
        token: str,
        limit: int,
        paused_gateways: Collection[str] = (),
    ) -> Sequence[Row[Any]]:
        """Move up to ``limit`` approved payouts to processing under this claim's lease and
        return their rows. Only payouts still ``approved`` here are taken, so a cancel that
        committed first wins and is never paid."""
        due = (
            select(_P.c.id)
            .where(_P.c.status == APPROVED)
            .order_by(_P.c.next_attempt_at)
            .limit(limit)
        )
        if paused_gateways:
            due = due.where(_P.c.gateway.not_in(list(paused_gateways)))
        result = await self.session.execute(
            update(_P)
            .where(_P.c.id.in_(due.scalar_subquery()), _P.c.status == APPROVED)
            .values(
                status=PROCESSING,
                last_event_sequence=_P.c.last_event_sequence + 1,
                locked_by=token,
                locked_until=lease_until,
                next_attempt_at=lease_until,
                updated_at=now,
            )
            .returning(*_P.c)
        )
        return result.all()

    async def claim_due_processing(
        self,
        *,
        now: datetime,
        lease_until: datetime,
        token: str,
        limit: int,
        paused_gateways: Collection[str] = (),
    ) -> Sequence[Row[Any]]:
        """Take over processing payouts whose retry is due or whose lease ran out."""
        due = (
            select(_P.c.id)
            .where(_P.c.status == PROCESSING, _P.c.next_attempt_at <= now)
            .order_by(_P.c.next_attempt_at)
            .limit(limit)
        )
        if paused_gateways:
            due = due.where(_P.c.gateway.not_in(list(paused_gateways)))
        result = await self.session.execute(
            update(_P)
            .where(
                _P.c.id.in_(due.scalar_subquery()),
                _P.c.status == PROCESSING,
                _P.c.next_attempt_at <= now,
            )
            .values(
                locked_by=token,
                locked_until=lease_until,
                next_attempt_at=lease_until,
                updated_at=now,
            )
            .returning(*_P.c)
        )
        return result.all()

    # -- finishing -----------------------------------------------------------------------
    async def _owned_sqlite(self, rows: Sequence[dict[str, Any]]) -> set[str]:
        expected = {r["pid"]: (r["token"], r["prev_sequence"]) for r in rows}
        result = await self.session.execute(
            select(_P.c.id, _P.c.status, _P.c.locked_by, _P.c.last_event_sequence).where(
                _P.c.id.in_(list(expected))
            )
        )
        return {
            row.id
            for row in result.all()
            if row.status == PROCESSING
            and (row.locked_by, row.last_event_sequence) == expected[row.id]
        }

    async def finish(self, rows: Sequence[dict[str, Any]], now: datetime) -> set[str]:
        """Write finished steps (keys: pid, token, prev_sequence and the new_* columns) of
        the payouts this claim still owns; returns their ids. A payout is owned while it is
        processing under the claim's token with no event written since the claim."""
        if not rows:
            return set()
        if any(r["new_status"] == PROCESSING for r in rows):
            # A retry is scheduled: idle executors learn its time (their next look) at once.
            signal_on_commit(self.session, PAYOUTS_DUE)
        if not self.is_postgres:
            # SQLite's write transaction excludes every other writer: read, then write.
            owned = await self._owned_sqlite(rows)
            mine = [{**r, "now": now} for r in rows if r["pid"] in owned]
            if mine:
                await self.session.execute(_FINISH, mine)
            return owned
        # In id order, as every multi-row writer of payouts here, so two overlapping finishes
        # (only possible after a lease ran out) rarely deadlock; if they do, the loser's
        # transaction is retried whole and its conditional update then finds nothing.
        rows = sorted(rows, key=lambda r: str(r["pid"]))
        result = await self.session.execute(
            _PG_FINISH,
            {
                "now": now,
                "ids": [r["pid"] for r in rows],
                "tokens": [r["token"] for r in rows],
                "prev_sequences": [r["prev_sequence"] for r in rows],
                "statuses": [r["new_status"] for r in rows],
                "attempts": [r["new_attempts"] for r in rows],
                "references": [r["new_reference"] for r in rows],
                "gateway_statuses": [r["new_gateway_status"] for r in rows],
                "failure_codes": [r["new_failure_code"] for r in rows],
                "failure_messages": [r["new_failure_message"] for r in rows],
                "next_attempts": [r["new_next_attempt_at"] for r in rows],
                "sequences": [r["new_sequence"] for r in rows],
                "heads": [r["new_hash"] for r in rows],
                "gateway_details": [_json_or_none(r["new_gateway_details"]) for r in rows],
                "hold_untils": [r["new_hold_until"] for r in rows],
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
