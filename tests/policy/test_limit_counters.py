"""The limit counters (policy/models.py LimitCounter) equal a full recount of the payouts after
any run of creates (accepted and refused), rejections, cancellations, executor failures
(sandbox declines) and policy timezone changes; on both backends (hypothesis)."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payoutsvc.db.base import utcnow
from payoutsvc.executor.service import Executor
from payoutsvc.gateways.registry import GatewayRegistry
from payoutsvc.main import create_app
from payoutsvc.payouts.status import NOT_COUNTED_FOR_LIMITS
from payoutsvc.policy.repository import NOT_COUNTED_SQL, PolicyRepository
from payoutsvc.runtime import Runtime
from tests.conftest import ADMIN_KEY, _truncate_postgres, make_settings
from tests.helpers import reject_as
from tests.policy.support import body, paypal, policy, post, setup_world, use_policy

# Below a supervisor's auto-approval (approved, then paid or declined by the sandbox: minor %
# 1000 of 999 and 996 decline), above it (pending: rejected or canceled later), USD that an
# agent may not request (refused: counted in, then out again), and enough to hit the caps.
AMOUNTS = ["12.00", "9.99", "59.96", "150.00", "700.00"]
ZONES = ["UTC", "Asia/Shanghai", "America/Los_Angeles"]

create = st.tuples(
    st.just("create"),
    st.sampled_from(["sup-1", "sup-2", "agent-1"]),
    st.integers(0, 2),  # ticket
    st.integers(0, 2),  # recipient
    st.sampled_from(AMOUNTS),
    st.sampled_from(["CNY", "USD"]),
)
operations = st.lists(
    st.one_of(
        create,
        st.tuples(st.just("reject"), st.integers(0, 30)),
        st.tuples(st.just("cancel"), st.integers(0, 30)),
        st.tuples(st.just("execute")),
        st.tuples(st.just("timezone"), st.sampled_from(ZONES)),
    ),
    min_size=1,
    max_size=30,
)


def test_not_counted_sql_matches_the_statuses() -> None:
    assert (
        "(" + ", ".join(f"'{s}'" for s in sorted(NOT_COUNTED_FOR_LIMITS)) + ")" == NOT_COUNTED_SQL
    )


class Run:
    """One app on a fresh database, driven through the API and one executor."""

    def __init__(self, url: str, stack: AsyncExitStack) -> None:
        self.url = url
        self.stack = stack
        self.created: list[str] = []

    async def start(self) -> None:
        app = create_app(make_settings(self.url))
        await self.stack.enter_async_context(app.router.lifespan_context(app))
        self.runtime: Runtime = app.state.runtime
        self.client = await self.stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://testserver",
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
        )
        await setup_world(self.client)
        gateways = GatewayRegistry(self.runtime)
        self.stack.push_async_callback(gateways.aclose)
        self.executor = Executor(self.runtime, gateways, clock=utcnow, worker_id="counters")

    async def apply(self, operation: tuple[Any, ...]) -> None:
        kind = operation[0]
        if kind == "create":
            _, requester, ticket, recipient, amount, currency = operation
            payload = body(amount, requester, ticket=f"T-{ticket}", recipient=paypal(recipient))
            payload["currency"] = currency
            answer = await post(self.client, payload)
            assert answer.status_code in (201, 422), answer.text
            if answer.status_code == 201:
                self.created.append(answer.json()["id"])
        elif kind in ("reject", "cancel") and self.created:
            payout_id = self.created[operation[1] % len(self.created)]
            if kind == "reject":
                answer = await reject_as(self.client, payout_id, "fin-1")
            else:
                answer = await self.client.post(
                    f"/v1/payouts/{payout_id}/cancel", json={"operator_id": "sup-1"}
                )
            assert answer.status_code in (200, 409), answer.text
        elif kind == "execute":
            await self.executor.run_once()
        elif kind == "timezone":
            await use_policy(self.client, policy(timezone=operation[1]))

    async def counters_and_recount(self) -> tuple[dict[Any, Any], dict[Any, Any]]:
        async with self.runtime.db.transaction() as session:
            repo = PolicyRepository(session)
            return await repo.limit_counters(), await repo.recount_limit_counters()


async def _run(url: str, plan: list[tuple[Any, ...]]) -> None:
    async with AsyncExitStack() as stack:
        run = Run(url, stack)
        await run.start()
        for operation in plan:
            await run.apply(operation)
        stored, recounted = await run.counters_and_recount()
        assert stored == recounted


def test_counters_equal_a_recount(
    backend: str, sqlite_template: Path, postgres_migrated: str | None, tmp_path: Path
) -> None:
    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(plan=operations)
    def check(plan: list[tuple[Any, ...]]) -> None:
        async def fresh_database() -> str:
            if backend == "sqlite":
                path = tmp_path / f"counters-{uuid.uuid4().hex[:8]}.db"
                shutil.copy(sqlite_template, path)
                return f"sqlite+aiosqlite:///{path}"
            assert postgres_migrated is not None
            await _truncate_postgres(postgres_migrated)
            return postgres_migrated

        async def scenario() -> None:
            await _run(await fresh_database(), plan)

        asyncio.run(scenario())

    check()
