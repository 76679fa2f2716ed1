"""Every row of API.md's sandbox table, end to end: API → executor → sandbox ledger."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from payoutsvc.executor.service import Executor
from payoutsvc.recipients.storage import unseal
from payoutsvc.runtime import Runtime
from tests.executor.support import (
    DECLINE_ACCOUNT,
    DECLINE_FUNDS,
    FLAKY_5XX,
    NEVER_RESOLVES,
    PENDING_THEN_SUCCESS,
    SUCCEED,
    TIMEOUT_AFTER_BOOKING,
    FakeClock,
    approved_payout,
    assert_exactly_once,
    attempts_of,
    drain,
    payout_rows,
    transfers_by_payout,
)

pytestmark = pytest.mark.usefixtures("operators")

# amount, final status, failure code, transfers booked (and their ledger status)
BEHAVIOURS: list[tuple[str, str, str | None, list[str]]] = [
    (SUCCEED, "succeeded", None, ["succeeded"]),
    (DECLINE_ACCOUNT, "failed", "recipient_account_invalid", []),
    (TIMEOUT_AFTER_BOOKING, "succeeded", None, ["succeeded"]),
    (PENDING_THEN_SUCCESS, "succeeded", None, ["succeeded"]),
    (DECLINE_FUNDS, "failed", "insufficient_funds", []),
    (FLAKY_5XX, "succeeded", None, ["succeeded"]),
    (NEVER_RESOLVES, "needs_review", None, ["pending"]),
]


async def test_each_sandbox_behaviour_ends_in_its_documented_status(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    created: dict[str, list[dict[str, Any]]] = {}
    for amount, *_ in BEHAVIOURS:
        created[amount] = [await approved_payout(client, runtime, amount) for _ in range(2)]

    await drain(executor, clock)

    await assert_exactly_once(runtime.db)
    ledger = await transfers_by_payout(runtime.db)
    for amount, status, failure_code, booked in BEHAVIOURS:
        for payout in created[amount]:
            got = (await client.get(f"/v1/payouts/{payout['id']}")).json()
            assert got["status"] == status, (amount, got)
            assert (got["failure"] or {}).get("code") == failure_code, (amount, got)
            assert [t.status for t in ledger.get(payout["id"], [])] == booked, amount
            listed = await client.get("/v1/sandbox/transfers", params={"payout_id": payout["id"]})
            assert listed.status_code == 200
            assert [t["status"] for t in listed.json()["data"]] == booked
            for transfer in listed.json()["data"]:
                assert transfer["amount"] == amount
                assert transfer["recipient"]["account_masked"].startswith("139****")
            if status == "succeeded":
                assert got["gateway_reference"] == listed.json()["data"][0]["id"]
                # The key it was booked under is the one the payout got at creation.
                events = (await client.get(f"/v1/payouts/{payout['id']}/events")).json()["data"]
                assert [e["type"] for e in events][-2:] == ["payout.processing", "payout.succeeded"]


async def _operations(runtime: Runtime, payout_id: str) -> list[tuple[str, str]]:
    return [(a.operation, a.outcome) for a in await attempts_of(runtime.db, payout_id)]


async def test_timeout_after_booking_is_found_by_status_query_not_booked_again(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    payout = await approved_payout(client, runtime, TIMEOUT_AFTER_BOOKING)
    await drain(executor, clock)
    assert await _operations(runtime, payout["id"]) == [
        ("submit", "unknown"),
        ("status", "succeeded"),
    ]
    attempts = await attempts_of(runtime.db, payout["id"])
    keys = {a.request["idempotency_key"] for a in attempts}
    ledger = await transfers_by_payout(runtime.db)
    assert keys == {ledger[payout["id"]][0].idempotency_key}


async def test_5xx_twice_is_resubmitted_with_the_same_key(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    payout = await approved_payout(client, runtime, FLAKY_5XX)
    await drain(executor, clock)
    assert await _operations(runtime, payout["id"]) == [
        ("submit", "unknown"),
        ("status", "not_found"),
        ("submit", "unknown"),
        ("status", "not_found"),
        ("submit", "succeeded"),
    ]
    attempts = await attempts_of(runtime.db, payout["id"])
    assert len({a.request["idempotency_key"] for a in attempts}) == 1
    got = (await client.get(f"/v1/payouts/{payout['id']}")).json()
    assert got["attempts"] == 3


async def test_pending_transfer_is_polled_until_it_succeeds(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    payout = await approved_payout(client, runtime, PENDING_THEN_SUCCESS)
    await drain(executor, clock)
    assert await _operations(runtime, payout["id"]) == [
        ("submit", "pending"),
        ("status", "pending"),
        ("status", "pending"),
        ("status", "succeeded"),
    ]


async def test_never_resolving_payout_goes_to_needs_review_when_the_schedule_is_used_up(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    payout = await approved_payout(client, runtime, NEVER_RESOLVES)
    await drain(executor, clock)
    got = (await client.get(f"/v1/payouts/{payout['id']}")).json()
    assert got["status"] == "needs_review"
    steps = len(runtime.settings.executor_retry_schedule) + 1
    assert got["attempts"] == steps
    operations = await _operations(runtime, payout["id"])
    assert operations[0] == ("submit", "unknown")
    assert operations[1:] == [("status", "unknown")] * (steps - 1)
    events = (await client.get(f"/v1/payouts/{payout['id']}/events")).json()["data"]
    assert events[-1]["type"] == "payout.needs_review"
    assert events[-1]["data"]["reason"] == "outcome_unknown"


async def test_retries_wait_for_the_schedule_with_jitter(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    payout = await approved_payout(client, runtime, NEVER_RESOLVES)
    schedule = runtime.settings.executor_retry_schedule
    assert await executor.run_once() == 1
    # Not due before the first delay (minus jitter) has passed; due after it (plus jitter).
    clock.advance(schedule[0] * 0.75)
    assert await executor.run_once() == 0
    clock.advance(schedule[0] * 0.5)
    assert await executor.run_once() == 1
    got = (await client.get(f"/v1/payouts/{payout['id']}")).json()
    assert got["status"] == "processing"
    assert got["attempts"] == 2


async def test_attempts_are_recorded_without_the_account_number(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    payout = await approved_payout(client, runtime, PENDING_THEN_SUCCESS)
    await drain(executor, clock)
    listed = await client.get(f"/v1/payouts/{payout['id']}/attempts")
    assert listed.status_code == 200
    attempts = listed.json()["data"]
    assert [a["operation"] for a in attempts] == ["submit", "status", "status", "status"]
    submit = attempts[0]
    assert submit["request"]["amount_minor"] == 997
    assert submit["request"]["account_masked"].startswith("139****")
    assert submit["latency_ms"] >= 0
    assert attempts[-1]["gateway_reference"] == attempts[0]["gateway_reference"]
    rows = await payout_rows(runtime.db)
    full = unseal(runtime.cipher, rows[payout["id"]].recipient_encrypted, payout["id"])
    account = str(full["account"])
    stored = json.dumps([a.request for a in await attempts_of(runtime.db, payout["id"])])
    assert payout["recipient"]["account_masked"] in stored
    assert account not in stored
    assert account not in listed.text
    ledger = await client.get("/v1/sandbox/transfers", params={"payout_id": payout["id"]})
    assert account not in ledger.text
