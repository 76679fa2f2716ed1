"""Executor races and faults: cancel vs claim, dead workers, lost replies, the breaker."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import update

from payoutsvc.executor.breaker import BreakerConfig, BreakerState
from payoutsvc.executor.service import Executor
from payoutsvc.gateways.registry import GatewayRegistry
from payoutsvc.gateways.sandbox import SandboxGateway
from payoutsvc.payouts.models import Payout
from payoutsvc.runtime import Runtime
from tests.executor.support import (
    APPROVER,
    FakeClock,
    FaultyGateway,
    approved_payout,
    assert_exactly_once,
    attempts_of,
    drain,
    payout_rows,
    statuses,
    transfers_by_payout,
)

pytestmark = pytest.mark.usefixtures("operators")


def faulty_executor(
    runtime: Runtime, clock: FakeClock, breaker: BreakerConfig | None = None, worker: str = "w1"
) -> tuple[Executor, FaultyGateway]:
    gateway = FaultyGateway(SandboxGateway(runtime.db))
    registry = GatewayRegistry(runtime, instances={"sandbox": gateway})
    return Executor(
        runtime, registry, clock=clock, worker_id=worker, breaker_config=breaker
    ), gateway


async def test_cancel_racing_the_executor_has_exactly_one_winner(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    payouts = [await approved_payout(client, runtime) for _ in range(12)]

    async def cancel(payout_id: str) -> int:
        response = await client.post(
            f"/v1/payouts/{payout_id}/cancel", json={"operator_id": APPROVER, "reason": "race"}
        )
        return response.status_code

    raced = [p["id"] for p in payouts[::2]]
    cancels = [asyncio.create_task(cancel(pid)) for pid in raced]
    # Let the first cancel commit, then claim while the others are in flight.
    await asyncio.wait(cancels, return_when=asyncio.FIRST_COMPLETED)
    await executor.run_once()
    codes = dict(zip(raced, await asyncio.gather(*cancels), strict=True))
    await drain(executor, clock)

    final = await assert_exactly_once(runtime.db)
    ledger = await transfers_by_payout(runtime.db)
    for pid, status in final.items():
        if codes.get(pid) == 200:
            assert status == "canceled"
            assert pid not in ledger  # the executor never sent it
        else:
            assert codes.get(pid, 409) == 409
            assert status == "succeeded"
            assert len(ledger[pid]) == 1


async def test_a_payout_canceled_before_the_claim_is_never_sent(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor
) -> None:
    payout = await approved_payout(client, runtime)
    response = await client.post(
        f"/v1/payouts/{payout['id']}/cancel", json={"operator_id": APPROVER, "reason": "oops"}
    )
    assert response.status_code == 200
    assert await executor.run_once() == 0
    assert await transfers_by_payout(runtime.db) == {}
    assert (await statuses(runtime.db))[payout["id"]] == "canceled"


async def test_cancel_after_the_executor_took_the_payout_is_409(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor
) -> None:
    payout = await approved_payout(client, runtime, "9.97")  # stays processing (pending)
    assert await executor.run_once() == 1
    response = await client.post(
        f"/v1/payouts/{payout['id']}/cancel", json={"operator_id": APPROVER, "reason": "late"}
    )
    assert response.status_code == 409
    assert response.json()["code"] == "invalid_status_transition"


async def test_worker_dying_mid_call_is_taken_over_and_paid_once(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    payouts = [await approved_payout(client, runtime) for _ in range(5)]
    dead, _ = faulty_executor(runtime, clock, worker="dead")
    jobs = await dead.claim(10)
    assert len(jobs) == 5
    # The gateway books all of them, then the worker dies before writing any result.
    await asyncio.gather(*(dead.execute(job) for job in jobs))
    assert len(await transfers_by_payout(runtime.db)) == 5

    survivor, _gateway = faulty_executor(runtime, clock, worker="survivor")
    assert await survivor.run_once() == 0  # the dead worker's lease still holds
    clock.advance(dead.lease.total_seconds() + 1)
    assert await survivor.run_once() == 5

    final = await assert_exactly_once(runtime.db)
    assert set(final.values()) == {"succeeded"}
    for payout in payouts:
        operations = [
            (a.operation, a.outcome, a.worker.split("/")[0])
            for a in await attempts_of(runtime.db, payout["id"])
        ]
        # The survivor only asked; it never submitted again.
        assert operations == [("status", "succeeded", "survivor")]

    # The dead worker's late results must not overwrite anything.
    late = await asyncio.gather(*(dead.execute(job) for job in jobs))
    assert await dead.finish(late) == set()
    assert await assert_exactly_once(runtime.db) == final


async def test_lost_reply_is_resolved_by_status_query_without_a_second_booking(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    payout = await approved_payout(client, runtime)
    executor, gateway = faulty_executor(runtime, clock)
    gateway.faults = ["lost_reply"]
    await drain(executor, clock)
    assert [(a.operation, a.outcome) for a in await attempts_of(runtime.db, payout["id"])] == [
        ("submit", "unknown"),
        ("status", "succeeded"),
    ]
    assert (await statuses(runtime.db))[payout["id"]] == "succeeded"
    await assert_exactly_once(runtime.db)


async def test_refused_connection_is_retried_with_the_same_key(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    payout = await approved_payout(client, runtime)
    executor, gateway = faulty_executor(runtime, clock)
    gateway.faults = ["refused", "timeout"]
    await drain(executor, clock)
    attempts = await attempts_of(runtime.db, payout["id"])
    assert [(a.operation, a.outcome) for a in attempts] == [
        ("submit", "not_done"),
        ("status", "unknown"),
        ("status", "not_found"),
        ("submit", "succeeded"),
    ]
    assert len({a.request["idempotency_key"] for a in attempts}) == 1
    await assert_exactly_once(runtime.db)


async def test_breaker_pauses_a_failing_gateway_and_payouts_wait_instead_of_failing(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    config = BreakerConfig(window=3, minimum_calls=3, failure_rate=1.0, cooldown_seconds=30)
    executor, gateway = faulty_executor(runtime, clock, breaker=config)
    payouts = [await approved_payout(client, runtime) for _ in range(6)]
    gateway.faults = ["refused"] * 3

    assert await executor.run_once(limit=3) == 3  # three refusals open the breaker
    assert executor.breaker("sandbox").state is BreakerState.OPEN
    assert executor.paused_gateways() == ["sandbox"]
    calls = gateway.calls
    assert await executor.run_once() == 0  # nothing of a paused gateway is claimed
    clock.advance(5)  # the refused ones' retries are due, the breaker still open
    assert await executor.run_once() == 0
    assert gateway.calls == calls

    rows = await payout_rows(runtime.db)
    assert {rows[p["id"]].status for p in payouts} == {"processing", "approved"}
    assert all(rows[p["id"]].failure_code is None for p in payouts)

    clock.advance(config.cooldown_seconds)  # half-open: one probe, it succeeds, all flow
    await drain(executor, clock)
    assert executor.breaker("sandbox").state is BreakerState.CLOSED
    final = await assert_exactly_once(runtime.db)
    assert set(final.values()) == {"succeeded"}


async def test_breaker_open_defers_claimed_payouts_without_using_their_schedule(
    client: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    config = BreakerConfig(window=1, minimum_calls=1, failure_rate=1.0, cooldown_seconds=30)
    executor, gateway = faulty_executor(runtime, clock, breaker=config)
    first = await approved_payout(client, runtime)
    second = await approved_payout(client, runtime)
    gateway.faults = ["refused"]
    # Both are claimed in one batch; the first refusal opens the breaker while the second
    # has not called yet, so the second is put back untouched.
    jobs = await executor.claim(2)
    outcomes = [await executor.execute(job) for job in jobs]
    await executor.finish(outcomes)
    rows = await payout_rows(runtime.db)
    assert sorted(rows[p["id"]].attempts for p in (first, second)) == [0, 1]
    assert all(rows[p["id"]].status == "processing" for p in (first, second))
    await drain(executor, clock)
    assert set((await assert_exactly_once(runtime.db)).values()) == {"succeeded"}


async def test_a_payout_for_an_unconfigured_gateway_waits(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    payout = await approved_payout(client, runtime)
    async with runtime.db.transaction() as session:
        await session.execute(
            update(Payout).where(Payout.id == payout["id"]).values(gateway="nowhere")
        )
    assert await executor.run_once() == 1
    row = (await payout_rows(runtime.db))[payout["id"]]
    assert (row.status, row.attempts, row.failure_code) == ("processing", 0, None)
    assert row.next_attempt_at is not None
    assert row.next_attempt_at > clock.now
    assert await transfers_by_payout(runtime.db) == {}


@pytest.mark.parametrize("key_file", [None, "/nonexistent/stripe-key"])
async def test_a_payout_routed_to_a_provider_without_credentials_waits(
    client: httpx.AsyncClient,
    runtime: Runtime,
    executor: Executor,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    key_file: str | None,
) -> None:
    # Stripe has a real adapter, but no key is set here, or only a file that is missing.
    if key_file is not None:
        monkeypatch.setenv("PAYOUTSVC_STRIPE_SECRET_KEY_FILE", key_file)
    payout = await approved_payout(client, runtime)
    async with runtime.db.transaction() as session:
        await session.execute(
            update(Payout).where(Payout.id == payout["id"]).values(gateway="stripe")
        )
    assert await executor.run_once() == 1
    row = (await payout_rows(runtime.db))[payout["id"]]
    assert (row.status, row.attempts, row.failure_code) == ("processing", 0, None)
    assert row.next_attempt_at is not None
    assert row.next_attempt_at > clock.now
