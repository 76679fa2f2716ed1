"""Reconciliation against the sandbox gateway: planted differences are found, nothing is
changed, each run is run once, the gateway calls keep to their budget, the daily run is
recorded once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from payoutsvc.executor.service import Executor
from payoutsvc.policy.document import DEFAULT_POLICY_DOCUMENT
from payoutsvc.reconciliation.models import Reconciliation, ReconciliationItem
from payoutsvc.reconciliation.repository import ReconciliationRepository
from payoutsvc.reconciliation.service import ReconciliationService
from payoutsvc.runtime import Runtime
from tests.executor.support import FakeClock, approved_payout, drain
from tests.helpers import eventually
from tests.policy.support import use_policy
from tests.reconciliation.support import (
    count_rows,
    deliveries_of,
    drop_from_ledger,
    edit_ledger,
    payout_states,
    plant_stranger,
    result,
    runner,
    start,
)

pytestmark = pytest.mark.usefixtures("operators")


async def paid_payouts(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock, n: int
) -> list[str]:
    payouts = [await approved_payout(client, runtime, f"1{i}.34") for i in range(n)]
    await drain(executor, clock)
    return [p["id"] for p in payouts]


async def endpoint(client: httpx.AsyncClient, events: list[str]) -> str:
    response = await client.post(
        "/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/hook", "events": events}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def findings_counted(kind: str) -> float:
    value = REGISTRY.get_sample_value(
        "payoutsvc_reconciliation_findings_total", {"kind": kind, "gateway": "sandbox"}
    )
    return value or 0.0


async def test_planted_differences_are_found_and_no_payout_changes(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    matched, status_changed, amount_changed, vanished, unanswered = await paid_payouts(
        client, runtime, executor, clock, 5
    )
    await edit_ledger(runtime, status_changed, status="pending")
    await edit_ledger(runtime, amount_changed, amount_minor=99900)
    await drop_from_ledger(runtime, vanished)
    # An amount whose sandbox behaviour is "never answers in time": a timeout, not a verdict.
    await edit_ledger(runtime, unanswered, amount_minor=1994)
    stranger = await plant_stranger(runtime)
    everything = await endpoint(client, ["*"])
    exact = await endpoint(client, ["reconciliation.completed"])
    await endpoint(client, ["payout.*"])
    before = await payout_states(runtime)
    counted_before = findings_counted("status_mismatch")

    run_id = await start(client)
    waiting = await result(client, run_id)
    assert (waiting["status"], waiting["summary"]) == ("running", None)
    assert await runner(runtime).run_once() == run_id

    done = await result(client, run_id)
    assert done["status"] == "completed"
    assert done["summary"] == {
        "matched": 1,
        "status_mismatch": 1,
        "amount_mismatch": 1,
        "missing_at_gateway": 1,
        "unknown_to_us": 1,
        "unknown": 1,
    }
    by_kind = {item["kind"]: item for item in done["items"]}
    assert by_kind["status_mismatch"]["payout_id"] == status_changed
    assert by_kind["status_mismatch"]["ours"]["status"] == "succeeded"
    assert by_kind["status_mismatch"]["theirs"]["status"] == "pending"
    assert by_kind["amount_mismatch"]["payout_id"] == amount_changed
    assert by_kind["amount_mismatch"]["ours"]["amount"] == "12.34"
    assert by_kind["amount_mismatch"]["theirs"]["amount"] == "999.00"
    assert by_kind["missing_at_gateway"]["payout_id"] == vanished
    assert by_kind["unknown_to_us"]["payout_id"] is None
    assert by_kind["unknown_to_us"]["gateway_reference"] == stranger
    assert by_kind["unknown"]["payout_id"] == unanswered
    assert matched not in {item["payout_id"] for item in done["items"]}
    assert done["payouts_checked"] == 5
    assert done["gateway_calls"] == 6  # the ledger's list, then one status query per payout

    assert await payout_states(runtime) == before  # a mismatch changes no payout
    assert await deliveries_of(runtime, "reconciliation.completed") == sorted([everything, exact])
    assert findings_counted("status_mismatch") == counted_before + 1


async def test_two_workers_run_a_reconciliation_once(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    await paid_payouts(client, runtime, executor, clock, 3)
    await endpoint(client, ["*"])
    run_id = await start(client)

    ran = await asyncio.gather(runner(runtime, "w1").run_once(), runner(runtime, "w2").run_once())

    assert sorted(ran, key=str) == sorted([run_id, None], key=str)
    done = await result(client, run_id)
    assert done["gateway_calls"] == 4
    assert done["summary"]["matched"] == 3
    assert len(await deliveries_of(runtime, "reconciliation.completed")) == 1


async def test_a_worker_that_died_mid_run_is_replaced_and_cannot_record_late(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    (vanished,) = await paid_payouts(client, runtime, executor, clock, 1)
    await drop_from_ledger(runtime, vanished)
    run_id = await start(client)
    now = clock()
    async with runtime.db.transaction() as session:  # the first worker claims, then dies
        claimed = await ReconciliationRepository(session).claim("dead", now, now + executor.lease)
    assert claimed is not None

    later = FakeClock(now)
    successor = runner(runtime, "w2", clock=later)
    assert await successor.run_once() is None  # still leased
    later.advance(runtime.settings.reconcile_lease_seconds + 1)
    assert await successor.run_once() == run_id

    async with runtime.db.transaction() as session:
        late = await ReconciliationRepository(session).finish(
            run_id, "dead", {"status": "completed", "summary": {}}
        )
    assert late is False
    done = await result(client, run_id)
    assert done["status"] == "completed"
    assert done["summary"]["missing_at_gateway"] == 1
    assert await count_rows(runtime, ReconciliationItem) == 1


async def test_gateway_calls_keep_to_the_budget(
    make_app: Any, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    app, client = await make_app(reconcile_calls_per_second=2)
    slow: Runtime = app.state.runtime
    await paid_payouts(client, runtime, executor, clock, 3)
    run_id = await start(client)

    began = time.monotonic()
    assert await runner(slow).run_once() == run_id
    elapsed = time.monotonic() - began

    done = await result(client, run_id)
    assert done["gateway_calls"] == 4
    # Two calls a second: the third and fourth wait for the window to move on.
    assert elapsed >= 0.9


async def test_the_daily_run_is_recorded_once_for_the_previous_day(make_app: Any) -> None:
    app, _client = await make_app(reconcile_at="02:00")
    runtime: Runtime = app.state.runtime
    early = datetime(2026, 12, 3, 1, 30, tzinfo=UTC)  # before the default 02:00 (UTC policy)
    later = datetime(2026, 12, 3, 2, 5, tzinfo=UTC)
    async with runtime.db.transaction() as session:
        assert await ReconciliationService(session, runtime).schedule_daily(early) == []
    recorded = []
    for _ in range(2):  # a second worker, or the next look of the same one
        async with runtime.db.transaction() as session:
            recorded += await ReconciliationService(session, runtime).schedule_daily(later)
    assert len(recorded) == 1
    async with runtime.db.transaction(write=False) as session:
        run = await session.get(Reconciliation, recorded[0])
        assert run is not None
        assert (run.gateway, run.daily_key) == ("sandbox", "sandbox:2026-12-02")
        assert run.period_from == datetime(2026, 12, 2, tzinfo=UTC)
        assert run.period_to == datetime(2026, 12, 3, tzinfo=UTC)


async def test_the_worker_runs_waiting_reconciliations(make_app: Any) -> None:
    _app, client = await make_app(run_worker=True, reconcile_poll_seconds=0.05, reconcile_at="")
    run_id = await start(client)

    async def completed() -> bool:
        return (await result(client, run_id))["status"] == "completed"

    await eventually(completed, what="the worker's reconciliation")
    assert (await result(client, run_id))["summary"]["matched"] == 0


async def test_a_gateway_without_credentials_fails_the_run(make_app: Any) -> None:
    app, client = await make_app(gateway_routes="stripe_account=stripe")
    run_id = await start(client, "stripe")
    assert await runner(app.state.runtime).run_once() == run_id
    failed = await result(client, run_id)
    assert failed["status"] == "failed"
    assert "stripe" in failed["error"]
    assert failed["summary"] is None


async def test_the_daily_run_follows_the_policy_timezone(make_app: Any) -> None:
    app, client = await make_app(reconcile_at="02:00")
    runtime: Runtime = app.state.runtime
    await use_policy(client, {**DEFAULT_POLICY_DOCUMENT, "timezone": "Asia/Shanghai"})
    before = datetime(2026, 12, 2, 17, 30, tzinfo=UTC)  # 01:30 on 3 December in Shanghai
    after = datetime(2026, 12, 2, 18, 30, tzinfo=UTC)  # 02:30 there
    async with runtime.db.transaction() as session:
        service = ReconciliationService(session, runtime)
        assert await service.schedule_daily(before) == []
        (run_id,) = await service.schedule_daily(after)
    async with runtime.db.transaction(write=False) as session:
        run = await session.get(Reconciliation, run_id)
        assert run is not None
        assert run.daily_key == "sandbox:2026-12-02"
        assert run.period_from == datetime(2026, 12, 1, 16, tzinfo=UTC)  # Shanghai midnight
        assert run.period_to == datetime(2026, 12, 2, 16, tzinfo=UTC)
