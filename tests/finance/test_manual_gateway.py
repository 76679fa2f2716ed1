"""The manual gateway (API.md, Finance operations): the executor moves a routed payout to
``processing`` / ``awaiting_manual_payment`` and calls nobody; it waits there however long
finance takes, even after a worker crash, until record-payment settles it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from payoutsvc.audit import verify_all
from payoutsvc.config import Settings
from payoutsvc.executor.service import Executor
from payoutsvc.runtime import Runtime
from tests.api_support import assert_problem
from tests.conftest import make_settings
from tests.executor.support import FakeClock, attempts_of, transfers_by_payout, unique_body
from tests.finance.conftest import RELEASER, REQUESTER
from tests.helpers import act_as, bearer_of, request_as

pytestmark = pytest.mark.usefixtures("operators")

RELEASE_SCOPES = ("payouts:release", "payouts:read")
DAY = 24 * 3600.0


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Alipay recipients are paid by finance through the bank portal; others by the sandbox.
    return make_settings(database_url, gateway_routes="alipay=manual")


async def _processing(client: httpx.AsyncClient, executor: Executor) -> dict[str, Any]:
    body = unique_body("12.34")
    body.pop("requested_by")
    created = await request_as(client, REQUESTER, body)
    assert created.status_code == 201, created.text
    payout = created.json()
    assert (payout["status"], payout["gateway"]) == ("approved", "manual")
    assert await executor.run_once() == 1
    view = (await client.get(f"/v1/payouts/{payout['id']}")).json()
    assert (view["status"], view["gateway_status"]) == ("processing", "awaiting_manual_payment")
    return dict(view)


async def record(client: httpx.AsyncClient, payout_id: str, **body: Any) -> httpx.Response:
    return await act_as(client, RELEASER, payout_id, "record-payment", body, RELEASE_SCOPES)


async def test_a_manual_payout_waits_however_long_finance_takes(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    payout = await _processing(client, executor)
    assert payout["id"] not in await transfers_by_payout(runtime.db)  # nothing was booked
    for _ in range(5):
        clock.advance(30 * DAY)  # months: longer than every retry schedule and hold
        assert await executor.run_once() == 0
    assert await executor.next_due_at() is None
    view = (await client.get(f"/v1/payouts/{payout['id']}")).json()
    assert (view["status"], view["gateway_status"]) == ("processing", "awaiting_manual_payment")
    assert view["failure"] is None
    # Only the executor's one step is recorded; it called no provider.
    assert [a.operation for a in await attempts_of(runtime.db, payout["id"])] == ["submit"]


async def test_a_worker_crash_while_claimed_still_ends_waiting(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    body = unique_body("12.34")
    body.pop("requested_by")
    payout = (await request_as(client, REQUESTER, body)).json()
    jobs = await executor.claim(10)  # the worker dies here, lease held
    assert [j.id for j in jobs] == [payout["id"]]
    clock.advance(executor.lease.total_seconds() + 1)
    assert await executor.run_once() == 1  # taken over: asks the gateway, which books nothing
    clock.advance(365 * DAY)
    assert await executor.run_once() == 0
    view = (await client.get(f"/v1/payouts/{payout['id']}")).json()
    assert (view["status"], view["gateway_status"]) == ("processing", "awaiting_manual_payment")


async def test_record_a_payment_then_recording_again_is_409(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor
) -> None:
    payout = await _processing(client, executor)
    missing = await record(client, payout["id"], outcome="succeeded")
    assert_problem(missing, 422, "validation_failed", "reference")
    done = await record(client, payout["id"], outcome="succeeded", reference="CMB-20261203-1")
    assert done.status_code == 200, done.text
    view = done.json()
    assert (view["status"], view["gateway_reference"]) == ("succeeded", "CMB-20261203-1")
    assert view["gateway_status"] == "paid_manually"
    again = await record(client, payout["id"], outcome="succeeded", reference="CMB-20261203-1")
    assert_problem(again, 409, "invalid_status_transition")
    events = (await client.get(f"/v1/payouts/{payout['id']}/events")).json()["data"]
    assert events[-1]["type"] == "payout.succeeded"
    assert events[-1]["actor"] == RELEASER
    async with runtime.db.transaction(write=False) as session:
        report = await verify_all(session, runtime.audit_key)
    assert report.ok, report.problems


async def test_a_failed_offline_payment_needs_its_failure_code(
    client: httpx.AsyncClient, executor: Executor
) -> None:
    payout = await _processing(client, executor)
    missing = await record(client, payout["id"], outcome="failed", comment="account closed")
    assert_problem(missing, 422, "validation_failed", "failure_code")
    failed = await record(
        client,
        payout["id"],
        outcome="failed",
        failure_code="recipient_account_invalid",
        comment="account closed",
    )
    assert failed.status_code == 200, failed.text
    assert failed.json()["status"] == "failed"
    assert failed.json()["failure"] == {
        "code": "recipient_account_invalid",
        "message": "account closed",
    }


async def test_only_manual_payouts_awaiting_payment_can_be_recorded(
    client: httpx.AsyncClient, executor: Executor
) -> None:
    body = unique_body("12.34")
    body.pop("requested_by")
    body["recipient"] = {"type": "paypal", "account": "finance-test@example.com"}
    sandbox = (await request_as(client, REQUESTER, body)).json()
    assert sandbox["gateway"] == "sandbox"
    refused = await record(client, sandbox["id"], outcome="succeeded", reference="X-1")
    assert_problem(refused, 409, "invalid_status_transition")  # approved, not sent
    assert await executor.run_once() == 1
    refused = await record(client, sandbox["id"], outcome="succeeded", reference="X-1")
    assert_problem(refused, 409, "invalid_status_transition")  # paid by its gateway
    assert (await client.get(f"/v1/payouts/{sandbox['id']}")).json()["status"] == "succeeded"


async def test_finance_reveals_the_account_then_records_the_payment(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor
) -> None:
    payout = await _processing(client, executor)
    headers = await bearer_of(client, RELEASER, RELEASE_SCOPES)
    revealed = await client.get(f"/v1/payouts/{payout['id']}/recipient", headers=headers)
    assert revealed.status_code == 200, revealed.text
    assert revealed.json()["recipient"]["type"] == "alipay"
    done = await record(client, payout["id"], outcome="succeeded", reference="ICBC-77")
    assert done.status_code == 200, done.text
    async with runtime.db.transaction(write=False) as session:
        report = await verify_all(session, runtime.audit_key)
    assert report.ok, report.problems
