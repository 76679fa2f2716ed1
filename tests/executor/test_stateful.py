"""Model-based test: random interleavings of create / approve / cancel / executor step /
crash-and-restart / gateway fault / time passing, with the invariants checked after every
step and, once faults stop, every payout driven to its documented end.

Invariants (after each step):
- no payout is booked twice, and every booking is under the payout's own key;
- a payout that was canceled or rejected was never sent;
- a succeeded payout has exactly one succeeded transfer;
- statuses only move along the arrows of API.md (checked against the last observation and
  along each payout's event chain).
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from payoutsvc.executor.breaker import BreakerConfig
from payoutsvc.executor.service import Executor
from payoutsvc.gateways.registry import GatewayRegistry
from payoutsvc.gateways.sandbox import Behaviour, SandboxGateway, behaviour_for
from payoutsvc.main import create_app
from payoutsvc.payouts.status import ALLOWED_TRANSITIONS, PayoutStatus
from payoutsvc.runtime import Runtime
from tests.conftest import ADMIN_KEY, _truncate_postgres, make_settings
from tests.executor.support import (
    APPROVER,
    REQUESTER,
    FakeClock,
    FaultyGateway,
    active_count,
    assert_exactly_once,
    payout_rows,
    setup_operators,
    transfers_by_payout,
    unique_body,
)
from tests.helpers import bearer_of

# minor % 1000 of each sandbox behaviour; amounts over 500.00 CNY wait for an approval.
REMAINDERS = [12, 999, 998, 997, 996, 995, 994]
MAX_FAULTS = 6
# Long enough that injected faults can never use it up (997 alone needs 3 of its steps).
SCHEDULE = ",".join(["2"] * 20)


def reachable(source: PayoutStatus) -> set[PayoutStatus]:
    found, frontier = {source}, [source]
    while frontier:
        for target in ALLOWED_TRANSITIONS[frontier.pop()]:
            if target not in found:
                found.add(target)
                frontier.append(target)
    return found


@dataclass
class Backend:
    name: str
    sqlite_template: Path
    postgres_url: str | None
    tmp: Path


class ExecutorMachine(RuleBasedStateMachine):
    backend: ClassVar[Backend]
    payouts = Bundle("payouts")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.stack = AsyncExitStack()
        self.seen: dict[str, PayoutStatus] = {}
        self.amounts: dict[str, int] = {}
        self.faults_left = MAX_FAULTS
        self.workers = 0
        self.clock = FakeClock()
        self.run(self._start())

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    async def _start(self) -> None:
        backend = self.backend
        if backend.name == "sqlite":
            path = backend.tmp / f"machine-{uuid.uuid4().hex[:8]}.db"
            shutil.copy(backend.sqlite_template, path)
            url = f"sqlite+aiosqlite:///{path}"
        else:
            assert backend.postgres_url is not None
            await _truncate_postgres(backend.postgres_url)
            url = backend.postgres_url
        app = create_app(make_settings(url, executor_retry_schedule=SCHEDULE))
        await self.stack.enter_async_context(app.router.lifespan_context(app))
        self.runtime: Runtime = app.state.runtime
        self.client = await self.stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://testserver",
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
        )
        await setup_operators(self.client)
        # The requester asks and the approver decides with their own operator-bound keys.
        self.requester_key = await bearer_of(self.client, REQUESTER)
        self.approver_key = await bearer_of(self.client, APPROVER)
        self.gateway = FaultyGateway(SandboxGateway(self.runtime.db))
        self.gateways = GatewayRegistry(self.runtime, instances={"sandbox": self.gateway})
        self.stack.push_async_callback(self.gateways.aclose)
        self.executor = self._new_executor()

    def _new_executor(self) -> Executor:
        self.workers += 1
        return Executor(
            self.runtime,
            self.gateways,
            clock=self.clock,
            worker_id=f"worker-{self.workers}",
            breaker_config=BreakerConfig(),
        )

    def teardown(self) -> None:
        try:
            self.run(self._drain_without_faults())
        finally:
            self.run(self.stack.aclose())
            self.loop.close()

    # -- rules ------------------------------------------------------------------------------
    @rule(
        target=payouts,
        remainder=st.sampled_from(REMAINDERS),
        needs_approval=st.booleans(),
    )
    def create(self, remainder: int, needs_approval: bool) -> str:
        minor = (50_000 if needs_approval else 1_000) + remainder
        body = unique_body(f"{minor // 100}.{minor % 100:02d}")
        created = self.run(
            self.client.post(
                "/v1/payouts",
                json=body,
                headers={"Idempotency-Key": uuid.uuid4().hex, **self.requester_key},
            )
        )
        assert created.status_code == 201, created.text
        payout = created.json()
        self.amounts[payout["id"]] = minor
        return str(payout["id"])

    @rule(payout_id=payouts)
    def approve(self, payout_id: str) -> None:
        answer = self.run(
            self.client.post(
                f"/v1/payouts/{payout_id}/approve",
                json={"operator_id": APPROVER, "comment": "ok"},
                headers=self.approver_key,
            )
        )
        before = self.seen.get(payout_id)
        assert answer.status_code in (200, 409), answer.text
        if answer.status_code == 409:
            assert before is not PayoutStatus.PENDING_APPROVAL

    @rule(payout_id=payouts)
    def cancel(self, payout_id: str) -> None:
        answer = self.run(
            self.client.post(
                f"/v1/payouts/{payout_id}/cancel",
                json={"operator_id": APPROVER, "reason": "changed mind"},
            )
        )
        assert answer.status_code in (200, 409), answer.text
        if answer.status_code == 200:
            assert self.seen.get(payout_id) in (
                None,
                PayoutStatus.PENDING_APPROVAL,
                PayoutStatus.APPROVED,
            )

    @rule()
    def executor_step(self) -> None:
        self.run(self.executor.run_once())

    @rule(seconds=st.sampled_from([0.5, 3, 20, 61, 600]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(reached=st.integers(min_value=0, max_value=4))
    def crash_and_restart(self, reached: int) -> None:
        """A worker claims a batch, some of its calls reach the gateway, then it dies
        without writing anything; a new worker starts once the leases run out."""

        async def die() -> None:
            jobs = await self.executor.claim(4)
            for job in jobs[:reached]:
                await self.executor.execute(job)

        self.run(die())
        self.executor = self._new_executor()
        self.clock.advance(self.executor.lease.total_seconds() + 1)

    @precondition(lambda self: self.faults_left > 0)
    @rule(fault=st.sampled_from(["refused", "timeout", "lost_reply"]))
    def gateway_fault(self, fault: str) -> None:
        self.faults_left -= 1
        self.gateway.faults.append(fault)

    # -- invariants ---------------------------------------------------------------------------
    @invariant()
    def paid_at_most_once_and_only_along_the_arrows(self) -> None:
        self.run(self._check())

    async def _check(self) -> None:
        await assert_exactly_once(self.runtime.db)
        rows = await payout_rows(self.runtime.db)
        ledger = await transfers_by_payout(self.runtime.db)
        for pid, row in rows.items():
            status = PayoutStatus(row.status)
            before = self.seen.get(pid)
            if before is not None:
                assert status in reachable(before), (pid, before, status)
            self.seen[pid] = status
            if status in (PayoutStatus.CANCELED, PayoutStatus.REJECTED):
                assert pid not in ledger, f"{pid} was {status} yet sent"

    # -- the end ------------------------------------------------------------------------------
    async def _drain_without_faults(self) -> None:
        self.gateway.faults.clear()
        for _ in range(200):
            if await self.executor.run_once() == 0:
                if await active_count(self.runtime.db) == 0:
                    break
                self.clock.advance(61)
        await self._check()
        rows = await payout_rows(self.runtime.db)
        for pid, row in rows.items():
            assert row.status not in ("approved", "processing"), (pid, row.status)
            if row.status in ("pending_approval", "canceled", "rejected"):
                continue
            behaviour = behaviour_for(self.amounts[pid])
            expected = {
                Behaviour.DECLINE_ACCOUNT: "failed",
                Behaviour.DECLINE_FUNDS: "failed",
                Behaviour.NEVER_RESOLVES: "needs_review",
            }.get(behaviour, "succeeded")
            assert row.status == expected, (pid, behaviour, row.status)


@pytest.mark.slow
def test_executor_state_machine(
    backend: str, sqlite_template: Path, postgres_migrated: str | None, tmp_path: Path
) -> None:
    ExecutorMachine.backend = Backend(backend, sqlite_template, postgres_migrated, tmp_path)
    run_state_machine_as_test(
        ExecutorMachine,
        settings=settings(
            max_examples=12,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
