"""The worker's side: claim a running reconciliation, compare, record what was found.

**Claiming.** A reconciliation row is its own job (the tables are the queues): a worker
leases it with a conditional UPDATE (``locked_by``, ``locked_until``), so of several
workers exactly one runs it; the lease is renewed while the run goes on
(``PAYOUTSVC_RECONCILE_LEASE_SECONDS``).

**Crashes.** The comparison holds nothing but the lease and writes nothing until the end:
the findings, the summary, the status and the ``reconciliation.completed`` deliveries
commit in one transaction, and only while this worker still holds the lease. A worker that
dies mid-run leaves a lease that runs out; the next worker restarts the run from the
beginning (asking a gateway twice changes nothing). After :data:`MAX_ATTEMPTS` starts the
run is marked ``failed`` rather than retried forever.

**Which payouts.** Those of the reconciliation's gateway in ``processing``, ``succeeded``,
``failed`` or ``needs_review`` (sent to the gateway) that were created in the period or
last changed in it (a finished payout's last change is its settlement), plus those whose
transfer the gateway lists in the period although they fall outside it. Each is asked by
its idempotency key through the adapter's ``get_status`` (the executor's own inquiry),
through the call budget (throttle.py). A payout never changes here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from payoutsvc.db.base import utcnow
from payoutsvc.executor.claim import default_worker_id
from payoutsvc.gateways.base import Gateway, GatewayError, ListedTransfer, TransferLister
from payoutsvc.gateways.providers import MissingCredential
from payoutsvc.gateways.registry import GatewayRegistry, UnknownGateway
from payoutsvc.ids import new_id
from payoutsvc.metrics import RECONCILIATION_FINDINGS
from payoutsvc.reconciliation.compare import (
    Finding,
    OurPayout,
    StatementRow,
    compare_statement,
    strangers,
    theirs_of,
    unknown,
    verdict,
)
from payoutsvc.reconciliation.models import ItemKind, Reconciliation, RunStatus
from payoutsvc.reconciliation.repository import ReconciliationRepository
from payoutsvc.reconciliation.service import empty_summary, present
from payoutsvc.reconciliation.throttle import CallBudget
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.outbox import enqueue_notice

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 3
COMPLETED_EVENT = "reconciliation.completed"


class LeaseLost(Exception):
    """Another worker took the run over (this one was too slow); its result is theirs."""


@dataclass
class Comparison:
    findings: list[Finding] = field(default_factory=list)
    payouts_checked: int = 0
    gateway_calls: int = 0


@dataclass(frozen=True, slots=True)
class _Run:
    """What a run needs of its row, read once at the claim."""

    id: str
    gateway: str
    since: datetime
    until: datetime
    statement: list[StatementRow] | None
    attempts: int

    @classmethod
    def of(cls, row: Reconciliation) -> _Run:
        rows = None if row.statement is None else [StatementRow(**r) for r in row.statement]
        return cls(row.id, row.gateway, row.period_from, row.period_to, rows, row.attempts)


def call_budget(runtime: Runtime) -> CallBudget:
    """This process's budget of reconciliation calls (shared by its runners)."""
    rate = runtime.settings.reconcile_calls_per_second
    return runtime.per_process(CallBudget, lambda: CallBudget(rate))


class ReconciliationRunner:
    def __init__(
        self,
        runtime: Runtime,
        gateways: GatewayRegistry,
        *,
        worker_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.runtime = runtime
        self.gateways = gateways
        self.worker_id = worker_id or default_worker_id()
        self.clock = clock
        self.lease = timedelta(seconds=runtime.settings.reconcile_lease_seconds)
        self.budget = call_budget(runtime)
        self._renewed_at = clock()

    async def run_once(self) -> str | None:
        """Claim and run one reconciliation; its id, or None when there was none to run
        (or another worker took it over before this one finished)."""
        now = self.clock()
        async with self.runtime.db.transaction() as session:
            row = await ReconciliationRepository(session).claim(
                self.worker_id, now, now + self.lease
            )
            run = None if row is None else _Run.of(row)
        if run is None:
            return None
        self._renewed_at = now
        log.info("reconciliation.started", reconciliation_id=run.id, gateway=run.gateway)
        if run.attempts > MAX_ATTEMPTS:
            await self._fail(run, f"gave up after {MAX_ATTEMPTS} interrupted attempts")
            return run.id
        try:
            comparison = await self._compare(run)
            await self._complete(run, comparison)
        except (UnknownGateway, MissingCredential) as exc:
            await self._fail(run, f"the {run.gateway} gateway cannot be used: {exc}")
        except LeaseLost:
            log.warning("reconciliation.lease_lost", reconciliation_id=run.id)
            return None
        return run.id

    # -- comparing --------------------------------------------------------------------------
    async def _compare(self, run: _Run) -> Comparison:
        async with self.runtime.db.transaction(write=False) as session:
            repo = ReconciliationRepository(session)
            payouts = await repo.payouts_of_period(run.gateway, run.since, run.until)
            if run.statement is not None:
                payouts += await repo.payouts_by_references(
                    run.gateway, _unmatched(payouts, [r.reference for r in run.statement])
                )
        if run.statement is not None:
            distinct = _distinct(payouts)
            findings = compare_statement(distinct, run.statement)
            return Comparison(findings, payouts_checked=len(distinct))
        return await self._ask_gateway(run, self.gateways.get(run.gateway), payouts)

    async def _ask_gateway(
        self, run: _Run, gateway: Gateway, payouts: list[OurPayout]
    ) -> Comparison:
        comparison = Comparison()
        listed: list[ListedTransfer] | None = None
        if isinstance(gateway, TransferLister):
            listed = await self._list(run, gateway, comparison)
            if listed:
                keys = {p.idempotency_key for p in payouts}
                extra = [t.idempotency_key for t in listed if t.idempotency_key not in keys]
                async with self.runtime.db.transaction(write=False) as session:
                    payouts += await ReconciliationRepository(session).payouts_by_keys(
                        run.gateway, [k for k in extra if k]
                    )
        for payout in _distinct(payouts):
            await self._call(run, comparison)
            try:
                result = await gateway.get_status(
                    payout.idempotency_key, reference=payout.reference
                )
            except GatewayError as exc:
                comparison.findings.append(unknown(payout, f"{type(exc).__name__}: {exc}"))
            else:
                comparison.findings.append(verdict(payout, theirs_of(result)))
            comparison.payouts_checked += 1
        if listed is not None:
            known_keys = frozenset(p.idempotency_key for p in payouts)
            known_refs = frozenset(p.reference for p in payouts if p.reference)
            comparison.findings += strangers(listed, known_keys, known_refs)
        return comparison

    async def _list(
        self, run: _Run, gateway: TransferLister, comparison: Comparison
    ) -> list[ListedTransfer] | None:
        await self._call(run, comparison)
        try:
            return await gateway.list_transfers(run.since, run.until)
        except GatewayError as exc:
            # Without the list no transfer can be called unknown to us; the status queries
            # still run. Recorded as an unknown finding, so the summary shows it.
            comparison.findings.append(
                Finding(ItemKind.UNKNOWN, None, None, f"the gateway's list failed: {exc}")
            )
            return None

    async def _call(self, run: _Run, comparison: Comparison) -> None:
        """Wait for the call budget, and renew the lease when a third of it has passed."""
        await self.budget.acquire(run.gateway)
        comparison.gateway_calls += 1
        now = self.clock()
        if now - self._renewed_at >= self.lease / 3:
            async with self.runtime.db.transaction() as session:
                repo = ReconciliationRepository(session)
                if not await repo.extend(run.id, self.worker_id, now + self.lease):
                    raise LeaseLost(run.id)
            self._renewed_at = now

    # -- recording ----------------------------------------------------------------------------
    async def _complete(self, run: _Run, comparison: Comparison) -> None:
        now = self.clock()
        counts = Counter(f.kind.value for f in comparison.findings)
        summary = {**empty_summary(), **counts}
        values: dict[str, Any] = {
            "status": RunStatus.COMPLETED.value,
            "summary": summary,
            "payouts_checked": comparison.payouts_checked,
            "gateway_calls": comparison.gateway_calls,
            "finished_at": now,
        }
        async with self.runtime.db.transaction() as session:
            repo = ReconciliationRepository(session)
            if not await repo.finish(run.id, self.worker_id, values):
                raise LeaseLost(run.id)
            await repo.insert_items(
                [
                    _item_row(run.id, f)
                    for f in comparison.findings
                    if f.kind is not ItemKind.MATCHED
                ]
            )
            row = await repo.get(run.id)
            assert row is not None  # finish() just updated it
            data = {"reconciliation": present(row)}
            await enqueue_notice(session, COMPLETED_EVENT, run.id, data, now)
        for kind, count in counts.items():
            if kind != ItemKind.MATCHED.value:
                RECONCILIATION_FINDINGS.labels(kind=kind, gateway=run.gateway).inc(count)
        log.info("reconciliation.completed", reconciliation_id=run.id, **summary)

    async def _fail(self, run: _Run, error: str) -> None:
        values = {"status": RunStatus.FAILED.value, "error": error, "finished_at": self.clock()}
        async with self.runtime.db.transaction() as session:
            await ReconciliationRepository(session).finish(run.id, self.worker_id, values)
        log.warning("reconciliation.failed", reconciliation_id=run.id, error=error)


def _distinct(payouts: list[OurPayout]) -> list[OurPayout]:
    return list({p.id: p for p in payouts}.values())


def _unmatched(payouts: list[OurPayout], references: list[str]) -> list[str]:
    named = {k for p in payouts for k in (p.reference, p.id, p.idempotency_key) if k}
    return [r for r in references if r not in named]


def _item_row(run_id: str, finding: Finding) -> dict[str, Any]:
    ours, theirs = finding.payout, finding.theirs
    return {
        "id": new_id("rci"),
        "reconciliation_id": run_id,
        "kind": finding.kind.value,
        "payout_id": None if ours is None else ours.id,
        "gateway_reference": (theirs.reference if theirs else None)
        or (ours.reference if ours else None),
        "ours_status": None if ours is None else ours.status,
        "theirs_status": None if theirs is None else theirs.status_word,
        "ours_amount_minor": None if ours is None else ours.amount_minor,
        "theirs_amount_minor": None if theirs is None else theirs.amount_minor,
        "ours_currency": None if ours is None else ours.currency,
        "theirs_currency": None if theirs is None else theirs.currency,
        "detail": finding.detail,
    }
