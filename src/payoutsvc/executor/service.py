"""The executor's three steps for a batch of payouts: claim, execute, finish.

- **claim** (one transaction): take due payouts under a lease; ``approved`` ones move to
  ``processing`` with their ``payout.processing`` event and outbox rows.
- **execute** (no transaction): call the payout's gateway under the payout's own
  idempotency key. A payout claimed straight from ``approved`` has never been sent, so it is
  submitted. Any other (a retry, or a payout whose worker died mid-call) may or may not have
  reached the gateway, so the gateway is asked first (status by key) and the transfer is
  submitted again, with the same key, only if the gateway has none.
- **finish** (one transaction for many payouts): record every gateway call, then write each
  payout's result, event and outbox rows, but only for payouts this claim still owns.

Calls are recorded (payout_attempts) when their step finishes; a call cut short by a crash
leaves no row of its own, and the next worker's status query records what the gateway had.

:class:`payoutsvc.executor.loop.ExecutorLoop` runs these continuously with bounded
concurrency; tests drive them step by step.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import random
import re
import socket
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import Row

from payoutsvc.db.base import utcnow
from payoutsvc.executor import evidence
from payoutsvc.executor.breaker import BreakerConfig, CircuitBreaker
from payoutsvc.executor.repository import ExecutorRepository, FinishRow
from payoutsvc.gateways.base import (
    Gateway,
    GatewayError,
    NotDone,
    OutcomeUnknown,
    ProviderHold,
    Rejected,
    TransferRequest,
    TransferResult,
    TransferState,
)
from payoutsvc.gateways.providers import MissingCredential
from payoutsvc.gateways.registry import GatewayRegistry, UnknownGateway, registry_for
from payoutsvc.ids import new_id
from payoutsvc.metrics import EXECUTOR_FINISHED, GATEWAY_ATTEMPTS, GATEWAY_LATENCY
from payoutsvc.payouts import transitions
from payoutsvc.payouts.events import insert_hashed_events
from payoutsvc.payouts.models import PayoutApproval
from payoutsvc.payouts.presenter import payout_json_of
from payoutsvc.payouts.repository import PayoutRepository
from payoutsvc.payouts.status import PayoutStatus
from payoutsvc.recipients.masking import mask_account
from payoutsvc.recipients.storage import unseal
from payoutsvc.retry import jittered, next_delay
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.outbox import endpoint_presence

log = structlog.get_logger(__name__)

ACTOR = "executor"
APPROVED = PayoutStatus.APPROVED.value
PROCESSING = PayoutStatus.PROCESSING.value
# A payout that cannot be sent for a reason an operator must fix (unknown gateway name,
# undecryptable recipient) waits this long between tries instead of failing.
MISCONFIGURED_RETRY_SECONDS = 60.0


_FINISHED = {status: EXECUTOR_FINISHED.labels(status.value) for status in PayoutStatus}


def default_worker_id() -> str:
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{os.urandom(2).hex()}"


@dataclass(slots=True)
class Job:
    """A payout this worker claimed: the row as claimed, and where its event chain stands."""

    payout: dict[str, Any]
    approvals: list[PayoutApproval]
    token: str  # the claim's lease token (payouts.locked_by)
    fresh: bool  # claimed straight from approved: never sent to the gateway before
    sequence: int  # the payout's newest event sequence after the claim
    head: str  # that event's hash
    refusal: str | None = None  # why its chain does not prove it payable (evidence.py)

    @property
    def id(self) -> str:
        return str(self.payout["id"])

    @property
    def gateway(self) -> str:
        return str(self.payout["gateway"])

    @property
    def key(self) -> str:
        return str(self.payout["gateway_idempotency_key"])


@dataclass(slots=True)
class Call:
    """One gateway call, as it will be stored in payout_attempts."""

    operation: str
    outcome: str
    request: dict[str, Any]
    started_at: datetime
    latency_ms: float
    gateway_status: str | None = None
    reference: str | None = None
    error: str | None = None


class Verdict(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY = "retry"  # pending or unknown: check again per the retry schedule
    DEFERRED = "deferred"  # not attempted (breaker open, misconfiguration): wait, unpenalised
    REFUSED = "refused"  # never sent: no evidence it may be paid (needs_review)


_NOT_ATTEMPTED = frozenset({Verdict.DEFERRED, Verdict.REFUSED})


@dataclass(slots=True)
class Outcome:
    job: Job
    verdict: Verdict
    calls: list[Call] = field(default_factory=list)
    reference: str | None = None
    gateway_status: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    detail: str | None = None
    defer_seconds: float = 0.0
    details: Mapping[str, str] | None = None  # TransferResult.details, kept on the payout
    hold: ProviderHold | None = None  # TransferResult.hold: the provider's own pending


@dataclass(frozen=True, slots=True)
class _Plan:
    outcome: Outcome
    status: PayoutStatus
    row: FinishRow
    move: transitions.Move | None


class Executor:
    def __init__(
        self,
        runtime: Runtime,
        gateways: GatewayRegistry | None = None,
        *,
        worker_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        breaker_config: BreakerConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.gateways = gateways or registry_for(runtime)
        self.worker_id = worker_id or default_worker_id()
        self.clock = clock
        self.lease = timedelta(seconds=self.settings.executor_lease_seconds)
        # A call must end well inside the lease, or another worker could take the payout
        # over while this one still waits for the gateway.
        self.call_timeout = min(30.0, self.settings.executor_lease_seconds / 3)
        self.schedule = self.settings.executor_retry_schedule
        self._breaker_config = breaker_config or BreakerConfig()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._claims = itertools.count(1)
        self._rng = rng or random.Random()  # noqa: S311  (jitter, not security)

    # -- breakers ---------------------------------------------------------------------------
    def breaker(self, gateway: str) -> CircuitBreaker:
        found = self._breakers.get(gateway)
        if found is None:
            found = self._breakers[gateway] = CircuitBreaker(
                gateway, self._breaker_config, clock=lambda: self.clock().timestamp()
            )
        return found

    def paused_gateways(self) -> list[str]:
        return [name for name, b in self._breakers.items() if b.paused()]

    # -- claim ------------------------------------------------------------------------------
    async def claim(self, limit: int) -> list[Job]:
        """Claim up to ``limit`` due payouts: retries and expired leases first, then approved
        payouts oldest first. Gateways whose breaker is open are left alone. One transaction:
        the approved ones move to processing with their event and outbox rows."""
        if limit <= 0:
            return []
        now = self.clock()
        lease = transitions.Lease(f"{self.worker_id}/{next(self._claims)}", now + self.lease)
        paused = self.paused_gateways()
        async with self.runtime.db.transaction() as session:
            repo = ExecutorRepository(session)
            taken = await repo.lock_due(PROCESSING, now=now, limit=limit, paused_gateways=paused)
            fresh = (
                await repo.lock_due(
                    APPROVED, now=now, limit=limit - len(taken), paused_gateways=paused
                )
                if len(taken) < limit
                else []
            )
            if not taken and not fresh:
                return []
            ids = [row.id for row in (*taken, *fresh)]
            approvals = await PayoutRepository(session).approvals_for(ids)
            fresh_payouts = [dict(row._mapping) for row in fresh]
            refused = evidence.refusals(
                [*[dict(row._mapping) for row in taken], *fresh_payouts],
                await repo.events_of_types(ids, evidence.SEGMENT_TYPES),
                self.runtime.audit_key,
            )
            moves = [
                transitions.move(
                    transitions.CLAIM,
                    payout,
                    PayoutStatus.PROCESSING,
                    actor=ACTOR,
                    data={"gateway": payout["gateway"]},
                    at=now,
                    present=functools.partial(payout_json_of, approvals=approvals[payout["id"]]),
                    key=self.runtime.audit_key,
                    lease=lease,
                )
                for payout in fresh_payouts
            ]
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
        jobs = _claimed_jobs(taken, fresh_payouts, moves, approvals, lease)
        for job in jobs:
            job.refusal = refused.get(job.id)
        return jobs

    # -- execute ----------------------------------------------------------------------------
    async def execute(self, job: Job) -> Outcome:
        """Take the payout one step towards a result. Never raises for gateway trouble."""
        if job.refusal is not None:
            return Outcome(job, Verdict.REFUSED, detail=job.refusal)
        try:
            gateway = self.gateways.get(job.gateway)
        except (UnknownGateway, MissingCredential) as exc:
            # Configuration, not the payout, is wrong: it waits (unpenalised) for a fix.
            log.error(  # noqa: TRY400  (a configuration fact, not a crash)
                "payout.execute.gateway_unavailable",
                payout_id=job.id,
                gateway=job.gateway,
                error=str(exc) if isinstance(exc, MissingCredential) else "no such adapter",
            )
            return Outcome(
                job,
                Verdict.DEFERRED,
                defer_seconds=MISCONFIGURED_RETRY_SECONDS,
                detail=f"gateway {job.gateway!r} is not configured",
            )
        try:
            request = self._request(job)
        except Exception as exc:  # noqa: BLE001  (wrong key or corrupt blob: ops must act)
            log.error(  # noqa: TRY400  (no traceback: it could quote key material)
                "payout.execute.recipient_unreadable", payout_id=job.id, error=type(exc).__name__
            )
            return Outcome(
                job,
                Verdict.DEFERRED,
                defer_seconds=MISCONFIGURED_RETRY_SECONDS,
                detail="recipient could not be decrypted",
            )
        breaker = self.breaker(job.gateway)
        if not breaker.allow():
            return Outcome(
                job,
                Verdict.DEFERRED,
                defer_seconds=max(breaker.seconds_until_retry(), 0.5),
                detail="gateway circuit breaker open",
            )
        outcome = await self._attempt(gateway, job, request)
        return _without_account(outcome, str(request.recipient.get("account") or ""))

    async def _attempt(self, gateway: Gateway, job: Job, request: TransferRequest) -> Outcome:
        """Ask (unless the payout was never sent), then submit under the payout's key only
        when the provider has no transfer under it, or documents a re-send as safe."""
        calls: list[Call] = []
        resend_of: TransferResult | None = None
        if not job.fresh:
            known = await self._call(
                gateway,
                job,
                calls,
                "status",
                {"idempotency_key": job.key},
                lambda: gateway.get_status(job.key, reference=job.payout["gateway_reference"]),
            )
            if not isinstance(known, TransferResult):
                # Even NotDone here only means the *query* was not answered.
                return self._retry(job, calls, known)
            if known.state is TransferState.NOT_FOUND and _provider_knew_it(job):
                # The provider acknowledged this transfer before (we hold its reference, or
                # it held the transfer pending): "no such transfer" now means we asked the
                # wrong account, app or host, not that it was never booked. Never re-submit.
                return self._retry(
                    job,
                    calls,
                    OutcomeUnknown(
                        "the gateway no longer finds a transfer it acknowledged before",
                        gateway_status=known.gateway_status or "not_found",
                    ),
                )
            if known.state is not TransferState.NOT_FOUND:
                if not _resend_now(job, known):
                    return self._judge(job, calls, known)
                resend_of = known
        answer = await self._call(
            gateway, job, calls, "submit", request.summary(), lambda: gateway.submit(request)
        )
        if resend_of is not None and _refused(answer):
            # A re-send's refusal does not outweigh the status answer that just said the
            # transfer exists: only a later status query may fail the payout.
            return self._judge(job, calls, resend_of)
        return self._judge(job, calls, answer)

    def _request(self, job: Job) -> TransferRequest:
        payout = job.payout
        return TransferRequest(
            payout_id=job.id,
            idempotency_key=job.key,
            amount_minor=int(payout["amount_minor"]),
            currency=str(payout["currency"]),
            recipient=unseal(self.runtime.cipher, payout["recipient_encrypted"], job.id),
            description=payout.get("description"),
        )

    async def _call(
        self,
        gateway: Gateway,
        job: Job,
        calls: list[Call],
        operation: str,
        summary: dict[str, Any],
        invoke: Callable[[], Any],
    ) -> TransferResult | GatewayError:
        started_at = utcnow()  # when the call really happened (self.clock schedules)
        started = time.perf_counter()
        answer: TransferResult | GatewayError
        try:
            async with asyncio.timeout(self.call_timeout):
                answer = await invoke()
        except GatewayError as exc:
            answer = exc
        except TimeoutError:
            answer = OutcomeUnknown(
                f"no answer within {self.call_timeout:g}s", gateway_status="timeout"
            )
        except Exception as exc:  # an adapter bug must not lose the payout
            log.exception("payout.execute.adapter_error", payout_id=job.id, gateway=job.gateway)
            answer = OutcomeUnknown(f"adapter error: {type(exc).__name__}")
        elapsed = time.perf_counter() - started
        breaker = self.breaker(job.gateway)
        if isinstance(answer, NotDone | OutcomeUnknown):
            breaker.record_failure()
        else:
            breaker.record_success()
        outcome = _outcome_word(answer)
        calls.append(
            Call(
                operation=operation,
                outcome=outcome,
                request=summary,
                started_at=started_at,
                latency_ms=round(elapsed * 1000, 3),
                gateway_status=answer.gateway_status,
                reference=answer.reference if isinstance(answer, TransferResult) else None,
                error=None if isinstance(answer, TransferResult) else answer.message[:500],
            )
        )
        _attempts_counter(job.gateway, operation, outcome).inc()
        _latency_histogram(job.gateway, operation).observe(elapsed)
        return answer

    def _judge(self, job: Job, calls: list[Call], answer: TransferResult | GatewayError) -> Outcome:
        if isinstance(answer, Rejected):
            return Outcome(
                job,
                Verdict.FAILED,
                calls,
                gateway_status=answer.gateway_status,
                failure_code=answer.code,
                failure_message=answer.message,
            )
        if not isinstance(answer, TransferResult):
            return self._retry(job, calls, answer)
        if answer.state is TransferState.SUCCEEDED:
            return Outcome(
                job,
                Verdict.SUCCEEDED,
                calls,
                reference=answer.reference,
                gateway_status=answer.gateway_status,
                details=answer.details,
            )
        if answer.state is TransferState.FAILED:
            return Outcome(
                job,
                Verdict.FAILED,
                calls,
                reference=answer.reference,
                gateway_status=answer.gateway_status,
                failure_code=answer.failure_code or "gateway_declined",
                failure_message=answer.failure_message or "The gateway declined it.",
                details=answer.details,
            )
        # PENDING (or a NOT_FOUND answer to a submit, which no sane gateway gives): ask again.
        return Outcome(
            job,
            Verdict.RETRY,
            calls,
            reference=answer.reference,
            gateway_status=answer.gateway_status,
            detail=f"gateway reports {answer.gateway_status or answer.state.value}",
            details=answer.details,
            hold=answer.hold if answer.state is TransferState.PENDING else None,
        )

    @staticmethod
    def _retry(job: Job, calls: list[Call], error: GatewayError) -> Outcome:
        return Outcome(
            job, Verdict.RETRY, calls, gateway_status=error.gateway_status, detail=error.message
        )

    # -- finish -----------------------------------------------------------------------------
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
            "attempts": done if outcome.verdict in _NOT_ATTEMPTED else done + 1,
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
        hold_until = self._hold_deadline(outcome, done, now)
        if hold_until is not None:
            columns["gateway_hold_until"] = hold_until
            if now < hold_until:
                # The provider holds it for a reason of its own: checked on the slow
                # schedule, and never handed back to the unknown-outcome schedule.
                delay = jittered(self.settings.executor_hold_check_seconds, self._rng)
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
        retry_in = next_delay(self.schedule, done + 1, self._rng)
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

    # -- whole steps ------------------------------------------------------------------------
    async def release(self, jobs: Collection[Job]) -> int:
        """Give unfinished payouts back at once (shutdown): the next claimer asks the gateway."""
        if not jobs:
            return 0
        async with self.runtime.db.transaction() as session:
            return await ExecutorRepository(session).release(
                [(job.id, job.token) for job in jobs], self.clock()
            )

    async def next_due_at(self) -> datetime | None:
        async with self.runtime.db.transaction(write=False) as session:
            return await ExecutorRepository(session).next_due_at()

    async def run_once(self, limit: int | None = None) -> int:
        """Claim one batch, execute it concurrently and finish it; returns how many payouts
        were worked on. For tests and tools: the service runs ExecutorLoop."""
        jobs = await self.claim(limit or self.settings.executor_batch_size)
        if jobs:
            outcomes = await asyncio.gather(*(self.execute(job) for job in jobs))
            await self.finish(outcomes)
        return len(jobs)


@functools.cache
def _attempts_counter(gateway: str, operation: str, outcome: str) -> Any:
    return GATEWAY_ATTEMPTS.labels(gateway, operation, outcome)


@functools.cache
def _latency_histogram(gateway: str, operation: str) -> Any:
    return GATEWAY_LATENCY.labels(gateway, operation)


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


def _claimed_jobs(
    taken: Sequence[Row[Any]],
    fresh: Sequence[dict[str, Any]],
    moves: Sequence[transitions.Move],
    approvals: Mapping[str, list[PayoutApproval]],
    lease: transitions.Lease,
) -> list[Job]:
    """The jobs of one claim: payouts taken over (retries, expired leases) as they were, and
    fresh ones as their claim moved them (processing, with the new chain head)."""
    jobs = [
        Job(
            dict(row._mapping),
            approvals[row.id],
            lease.token,
            False,
            row.last_event_sequence,
            row.last_event_hash,
        )
        for row in taken
    ]
    jobs.extend(
        Job(
            {**payout, **m.values},
            approvals[m.payout_id],
            lease.token,
            True,
            m.head.sequence,
            m.head.hash,
        )
        for payout, m in zip(fresh, moves, strict=True)
    )
    return jobs


def _provider_knew_it(job: Job) -> bool:
    return bool(job.payout["gateway_reference"]) or job.payout.get("gateway_hold_until") is not None


def _refused(answer: TransferResult | GatewayError) -> bool:
    if isinstance(answer, Rejected):
        return True
    return isinstance(answer, TransferResult) and answer.state is TransferState.FAILED


def _without_account(outcome: Outcome, account: str) -> Outcome:
    """Provider messages may quote the payee (a PayPal payer id, an Alipay open id, a phone):
    whatever an adapter let through, the full account never reaches a stored failure
    message, an attempt's error or the logs."""
    if len(account) < 4:
        return outcome
    masked = mask_account(account)

    def scrub(text: str | None) -> str | None:
        if text is None or account.lower() not in text.lower():
            return text
        return re.sub(re.escape(account), masked, text, flags=re.IGNORECASE)

    outcome.failure_message = scrub(outcome.failure_message)
    outcome.detail = scrub(outcome.detail)
    outcome.gateway_status = scrub(outcome.gateway_status)
    for call in outcome.calls:
        call.error = scrub(call.error)
        call.gateway_status = scrub(call.gateway_status)
    return outcome


def _resend_now(job: Job, known: TransferResult) -> bool:
    """Re-submit under the same key after a status query: only for a payout already on the
    slow schedule whose provider documents a re-send as what moves a stuck transfer on."""
    hold = known.hold
    return (
        known.state is TransferState.PENDING
        and hold is not None
        and hold.resend
        and job.payout.get("gateway_hold_until") is not None
    )


def _outcome_word(answer: TransferResult | GatewayError) -> str:
    if isinstance(answer, TransferResult):
        return answer.state.value
    if isinstance(answer, Rejected):
        return "rejected"
    if isinstance(answer, NotDone):
        return "not_done"
    return "unknown"


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
