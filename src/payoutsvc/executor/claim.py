"""The executor's first step: claim due payouts under a lease (one transaction).

Retries and expired leases come first, then approved payouts oldest first; gateways whose
breaker is open are left alone. The approved ones move to ``processing`` through
``payouts/transitions.py`` (their ``payout.processing`` event and outbox rows in the same
transaction); the others keep their status and chain and are taken over.
"""

from __future__ import annotations

import functools
import itertools
import os
import socket
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Row

from payoutsvc.executor import evidence
from payoutsvc.executor.repository import ExecutorRepository
from payoutsvc.payouts import transitions
from payoutsvc.payouts.events import insert_hashed_events
from payoutsvc.payouts.models import PayoutApproval, PayoutColumns
from payoutsvc.payouts.presenter import payout_json_of
from payoutsvc.payouts.repository import PayoutRepository
from payoutsvc.payouts.status import PayoutStatus
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.outbox import endpoint_presence

ACTOR = "executor"
APPROVED = PayoutStatus.APPROVED.value
PROCESSING = PayoutStatus.PROCESSING.value


def default_worker_id() -> str:
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{os.urandom(2).hex()}"


@dataclass(frozen=True, slots=True)
class Job:
    """A payout this worker claimed: the row as claimed, and where its event chain stands."""

    payout: PayoutColumns
    approvals: list[PayoutApproval]
    token: str  # the claim's lease token (payouts.locked_by)
    fresh: bool  # claimed straight from approved: never sent to the gateway before
    sequence: int  # the payout's newest event sequence after the claim
    head: str  # that event's hash
    refusal: str | None = None  # why its chain does not prove it payable (evidence.py)

    @property
    def id(self) -> str:
        return self.payout["id"]

    @property
    def gateway(self) -> str:
        return self.payout["gateway"]

    @property
    def key(self) -> str:
        return self.payout["gateway_idempotency_key"]


def _columns(row: Row[Any]) -> PayoutColumns:
    """A claimed payouts row by column name (``select(payouts)``: every column is there)."""
    return cast(PayoutColumns, dict(row._mapping))


class Claimer:
    def __init__(
        self,
        runtime: Runtime,
        *,
        worker_id: str,
        clock: Callable[[], datetime],
        lease: timedelta,
    ) -> None:
        self.runtime = runtime
        self.worker_id = worker_id
        self.clock = clock
        self.lease = lease
        self._claims = itertools.count(1)

    async def claim(self, limit: int, paused: Collection[str] = ()) -> list[Job]:
        """Claim up to ``limit`` due payouts whose gateway is not in ``paused``."""
        if limit <= 0:
            return []
        now = self.clock()
        lease = transitions.Lease(f"{self.worker_id}/{next(self._claims)}", now + self.lease)
        async with self.runtime.db.transaction() as session:
            repo = ExecutorRepository(session)
            taken = await repo.lock_due(PROCESSING, now=now, limit=limit, paused_gateways=paused)
            fresh_rows = (
                await repo.lock_due(
                    APPROVED, now=now, limit=limit - len(taken), paused_gateways=paused
                )
                if len(taken) < limit
                else []
            )
            if not taken and not fresh_rows:
                return []
            ids = [row.id for row in (*taken, *fresh_rows)]
            approvals = await PayoutRepository(session).approvals_for(ids)
            fresh = [_columns(row) for row in fresh_rows]
            # Judged on the rows as read, before the claim moves them (evidence.py).
            refused = evidence.refusals(
                [*(_columns(row) for row in taken), *fresh],
                await repo.events_of_types(ids, evidence.SEGMENT_TYPES),
                self.runtime.audit_key,
            )
            key = self.runtime.audit_key
            moves = [_processing(payout, approvals, now, lease, key) for payout in fresh]
            # The payouts are ours (row-locked on PostgreSQL; SQLite's write transaction
            # excludes every other writer), so their events go in first and the leases follow.
            await insert_hashed_events(
                session, [(m.event, m.head.hash) for m in moves], endpoint_presence(self.runtime)
            )
            await repo.lease(
                now=now,
                lease=lease,
                taken=[
                    (row.id, transitions.ChainHead(row.last_event_sequence, row.last_event_hash))
                    for row in taken
                ],
                moves=moves,
            )
        return _claimed_jobs(taken, fresh, moves, approvals, lease, refused)


def _processing(
    payout: PayoutColumns,
    approvals: Mapping[str, list[PayoutApproval]],
    now: datetime,
    lease: transitions.Lease,
    key: bytes,
) -> transitions.Move:
    return transitions.move(
        transitions.CLAIM,
        payout,
        PayoutStatus.PROCESSING,
        actor=ACTOR,
        data={"gateway": payout["gateway"]},
        at=now,
        present=functools.partial(payout_json_of, approvals=approvals[payout["id"]]),
        key=key,
        lease=lease,
    )


def _claimed_jobs(
    taken: Sequence[Row[Any]],
    fresh: Sequence[PayoutColumns],
    moves: Sequence[transitions.Move],
    approvals: Mapping[str, list[PayoutApproval]],
    lease: transitions.Lease,
    refused: Mapping[str, str],
) -> list[Job]:
    """The jobs of one claim: payouts taken over (retries, expired leases) as they were, and
    fresh ones as their claim moved them (processing, with the new chain head)."""
    jobs = [
        Job(
            _columns(row),
            approvals[row.id],
            lease.token,
            False,
            row.last_event_sequence,
            row.last_event_hash,
            refused.get(row.id),
        )
        for row in taken
    ]
    jobs.extend(
        Job(
            cast(PayoutColumns, {**payout, **m.values}),
            approvals[m.payout_id],
            lease.token,
            True,
            m.head.sequence,
            m.head.hash,
            refused.get(m.payout_id),
        )
        for payout, m in zip(fresh, moves, strict=True)
    )
    return jobs
