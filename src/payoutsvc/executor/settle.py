"""The executor's third step: write the results of many payouts in one transaction.

Every gateway call is recorded (payout_attempts), then each payout's result: a status
change planned by ``payouts/transitions.py`` (with its event and outbox rows), or, while
the payout stays processing, when it is due again (the retry schedule, a provider's own
hold, or a deferral). Only payouts this claim still owns are written: still processing
under the claim's lease, and no event since (a callback may have finished one meanwhile).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from payoutsvc.executor import evidence
from payoutsvc.executor.attempt import NOT_ATTEMPTED, Call, Outcome, Verdict
from payoutsvc.executor.claim import ACTOR, Job
from payoutsvc.executor.repository import ExecutorRepository, FinishRow
from payoutsvc.ids import new_id
from payoutsvc.metrics import EXECUTOR_FINISHED
from payoutsvc.payouts import transitions
from payoutsvc.payouts.events import insert_hashed_events
from payoutsvc.payouts.presenter import payout_json_of
from payoutsvc.payouts.status import PayoutStatus
from payoutsvc.retry import jittered, next_delay
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.outbox import endpoint_presence

log = structlog.get_logger(__name__)

_FINISHED = {status: EXECUTOR_FINISHED.labels(status.value) for status in PayoutStatus}


@dataclass(frozen=True, slots=True)
class _Plan:
    outcome: Outcome
    status: PayoutStatus
    row: FinishRow
    move: transitions.Move | None


class Settler:
    def __init__(
        self,
        runtime: Runtime,
        *,
        clock: Callable[[], datetime],
        schedule: Sequence[float],
        hold_check_seconds: float,
        rng: random.Random,
    ) -> None:
        self.runtime = runtime
        self.clock = clock
        self.schedule = schedule
        self.hold_check_seconds = hold_check_seconds
        self.rng = rng

    async def finish(self, outcomes: Sequence[Outcome]) -> set[str]:
        """Record the calls and write the results of many payouts in one transaction.
        Returns the ids whose result was written (the rest were no longer ours)."""
        if not outcomes:
            return set()
        now = self.clock()
        plans = [self._plan(outcome, now) for outcome in outcomes]
        async with self.runtime.db.transaction() as session:
            repo = ExecutorRepository(session)
            # Only payouts still ours are written: still processing under this claim, and no
            # event since (a callback may have finished one meanwhile).
            owned = await repo.finish([plan.row for plan in plans], now)
            await insert_hashed_events(
                session,
                [
                    (plan.move.event, plan.move.head.hash)
                    for plan in plans
                    if plan.move is not None and plan.row.pid in owned
                ],
                endpoint_presence(self.runtime),
            )
            await repo.insert_attempts(
                [
                    _attempt_row(plan.outcome, call, plan.row.attempts)
                    for plan in plans
                    for call in plan.outcome.calls
                ]
            )
        for plan in plans:
            job = plan.outcome.job
            if job.id not in owned:
                log.warning("payout.execute.claim_lost", payout_id=job.id, claim=job.token)
                continue
            _FINISHED[plan.status].inc()
            if plan.status in (PayoutStatus.FAILED, PayoutStatus.NEEDS_REVIEW):
                log.warning(
                    "payout.execute.finished",
                    payout_id=job.id,
                    status=plan.status.value,
                    failure_code=plan.row.failure_code,
                    detail=plan.outcome.detail,
                )
        return owned

    def _plan(self, outcome: Outcome, now: datetime) -> _Plan:
        """What this step writes: the result (a status change, planned by the transitions
        module) or, while the payout stays processing, when it is due again."""
        job = outcome.job
        payout = job.payout
        done = int(payout["attempts"])
        columns: dict[str, Any] = {
            "attempts": done if outcome.verdict in NOT_ATTEMPTED else done + 1,
            "gateway_reference": outcome.reference or payout["gateway_reference"],
            "gateway_status": outcome.gateway_status or payout["gateway_status"],
            "gateway_details": (
                dict(outcome.details) if outcome.details else payout.get("gateway_details")
            ),
            "gateway_hold_until": payout.get("gateway_hold_until"),
            "failure_code": None,
            "failure_message": None,
        }
        target, next_attempt_at, event_data = self._decide(outcome, done, now, columns)
        if target is PayoutStatus.PROCESSING:
            row = _finish_row(job, columns, target.value, next_attempt_at, job.sequence, job.head)
            return _Plan(outcome, target, row, None)
        planned = transitions.move(
            transitions.FINISH,
            {**payout, "last_event_sequence": job.sequence, "last_event_hash": job.head},
            target,
            actor=ACTOR,
            data={"attempts": columns["attempts"], **event_data},
            at=now,
            present=functools.partial(payout_json_of, approvals=job.approvals),
            key=self.runtime.audit_key,
            values=columns,
        )
        values = planned.values
        row = _finish_row(
            job,
            values,
            values["status"],
            values["next_attempt_at"],
            planned.head.sequence,
            planned.head.hash,
        )
        return _Plan(outcome, target, row, planned)

    def _decide(
        self, outcome: Outcome, done: int, now: datetime, columns: dict[str, Any]
    ) -> tuple[PayoutStatus, datetime | None, dict[str, Any]]:
        """The payout's status after this step, when it is due again if it stays
        processing, and what its event says otherwise. Sets the columns that go with it."""
        if outcome.verdict is Verdict.DEFERRED:
            return PayoutStatus.PROCESSING, now + timedelta(seconds=outcome.defer_seconds), {}
        if outcome.verdict is Verdict.REFUSED:
            columns.update(failure_code=evidence.EVIDENCE_MISSING, failure_message=outcome.detail)
            return (
                PayoutStatus.NEEDS_REVIEW,
                None,
                {"reason": evidence.EVIDENCE_MISSING, "detail": outcome.detail},
            )
        if outcome.verdict is Verdict.SUCCEEDED:
            columns["gateway_hold_until"] = None
            return PayoutStatus.SUCCEEDED, None, {"gateway_reference": columns["gateway_reference"]}
        if outcome.verdict is Verdict.FAILED:
            columns.update(
                gateway_hold_until=None,
                failure_code=outcome.failure_code,
                failure_message=outcome.failure_message,
            )
            failure = {"code": outcome.failure_code, "message": outcome.failure_message}
            return PayoutStatus.FAILED, None, {"failure": failure}
        if outcome.offline:
            # Paid by a person outside any gateway (the manual adapter): no next check, so
            # it waits processing, however long, until record-payment settles it.
            return PayoutStatus.PROCESSING, None, {}
        hold_until = self._hold_deadline(outcome, done, now)
        if hold_until is not None:
            columns["gateway_hold_until"] = hold_until
            if now < hold_until:
                # The provider holds it for a reason of its own: checked on the slow
                # schedule, and never handed back to the unknown-outcome schedule.
                delay = jittered(self.hold_check_seconds, self.rng)
                return PayoutStatus.PROCESSING, min(now + timedelta(seconds=delay), hold_until), {}
            return (
                PayoutStatus.NEEDS_REVIEW,
                None,
                {
                    "reason": "provider_deadline_passed",
                    "detail": f"still pending at the gateway after its deadline "
                    f"{hold_until.isoformat()}: {outcome.detail}",
                },
            )
        retry_in = next_delay(self.schedule, done + 1, self.rng)
        if retry_in is not None:
            return PayoutStatus.PROCESSING, now + timedelta(seconds=retry_in), {}
        return (
            PayoutStatus.NEEDS_REVIEW,
            None,
            {
                "reason": "outcome_unknown",
                "detail": f"still unresolved after {done + 1} attempts: {outcome.detail}",
            },
        )

    def _hold_deadline(self, outcome: Outcome, done: int, now: datetime) -> datetime | None:
        """The provider's deadline when this step leaves (or keeps) the payout on the slow
        schedule, else None. A payout once held stays held whatever later checks answer;
        the deadline never moves later than the provider's own clock says."""
        held: datetime | None = outcome.job.payout.get("gateway_hold_until")
        hold = outcome.hold
        if outcome.verdict is not Verdict.RETRY or hold is None:
            return held
        if hold.after_schedule and held is None and done < len(self.schedule):
            return None  # ordinary in-flight state: the normal schedule first
        if hold.since is not None:
            return hold.since + hold.patience
        return held or now + hold.patience

    async def release(self, jobs: Collection[Job]) -> int:
        """Give unfinished payouts back at once (shutdown): the next claimer asks the gateway."""
        if not jobs:
            return 0
        async with self.runtime.db.transaction() as session:
            return await ExecutorRepository(session).release(
                [(job.id, job.token) for job in jobs], self.clock()
            )


def _finish_row(
    job: Job,
    columns: Mapping[str, Any],
    status: str,
    next_attempt_at: datetime | None,
    sequence: int,
    head: str,
) -> FinishRow:
    return FinishRow(
        pid=job.id,
        token=job.token,
        prev_sequence=job.sequence,
        status=status,
        attempts=columns["attempts"],
        reference=columns["gateway_reference"],
        gateway_status=columns["gateway_status"],
        gateway_details=columns["gateway_details"],
        failure_code=columns["failure_code"],
        failure_message=columns["failure_message"],
        next_attempt_at=next_attempt_at,
        hold_until=columns["gateway_hold_until"],
        sequence=sequence,
        head=head,
    )


def _attempt_row(outcome: Outcome, call: Call, attempt: int) -> dict[str, Any]:
    job = outcome.job
    return {
        "id": new_id("att", int(call.started_at.timestamp() * 1000)),
        "payout_id": job.id,
        "attempt": attempt,
        "operation": call.operation,
        "gateway": job.gateway,
        "worker": job.token,
        "request": call.request,
        "outcome": call.outcome,
        "error": call.error,
        "gateway_status": call.gateway_status,
        "gateway_reference": call.reference,
        "latency_ms": call.latency_ms,
        "started_at": call.started_at,
    }
