"""Seeing the account (API.md, Finance operations): GET /v1/payouts/{id}/recipient returns
the full recipient and records who saw it in the audit chain, without changing the status,
without reaching helpdesk webhooks, and without breaking the executor's evidence check."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from payoutsvc.audit import verify_all
from payoutsvc.executor.service import Executor
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.models import WebhookDelivery
from tests.api_support import assert_problem
from tests.executor.support import unique_body
from tests.finance.conftest import RELEASER, REQUESTER
from tests.helpers import bearer_of, request_as

pytestmark = pytest.mark.usefixtures("operators")

RELEASE_SCOPES = ("payouts:release", "payouts:read")


async def test_reveal_returns_the_account_records_who_and_keeps_everything_else_masked(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor
) -> None:
    hook = await client.post(
        "/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/hook", "events": ["*"]}
    )
    assert hook.status_code == 201, hook.text
    body = unique_body("12.34")
    body.pop("requested_by")
    account = body["recipient"]["account"]
    payout = (await request_as(client, REQUESTER, body)).json()
    assert payout["status"] == "approved"

    revealed = await client.get(
        f"/v1/payouts/{payout['id']}/recipient",
        headers=await bearer_of(client, RELEASER, RELEASE_SCOPES),
    )
    assert revealed.status_code == 200, revealed.text
    assert revealed.headers["cache-control"] == "no-store"
    assert revealed.json()["recipient"]["account"] == account
    assert revealed.json()["recipient"]["name"] == "张三"
    assert revealed.json()["revealed_by"] == RELEASER

    view = await client.get(f"/v1/payouts/{payout['id']}")
    assert view.json()["status"] == "approved"
    assert account not in view.text
    events = (await client.get(f"/v1/payouts/{payout['id']}/events")).json()["data"]
    assert account not in str(events)
    assert [e["type"] for e in events][-1] == "payout.recipient_revealed"
    assert events[-1]["actor"] == RELEASER
    assert events[-1]["data"]["api_key_id"].startswith("key_")

    # The executor still finds the approval behind the reveal, and pays.
    assert await executor.run_once() == 1
    assert (await client.get(f"/v1/payouts/{payout['id']}")).json()["status"] == "succeeded"
    # A reveal after it is finished is recorded as well.
    again = await client.get(
        f"/v1/payouts/{payout['id']}/recipient",
        headers=await bearer_of(client, RELEASER, RELEASE_SCOPES),
    )
    assert again.status_code == 200, again.text

    async with runtime.db.transaction(write=False) as session:
        report = await verify_all(session, runtime.audit_key)
        types = set(
            (
                await session.execute(
                    select(WebhookDelivery.event_type).where(
                        WebhookDelivery.payout_id == payout["id"]
                    )
                )
            ).scalars()
        )
    assert report.ok, report.problems
    assert "payout.succeeded" in types
    assert "payout.recipient_revealed" not in types


async def test_reveal_needs_the_release_scope(client: httpx.AsyncClient) -> None:
    body = unique_body("12.34")
    body.pop("requested_by")
    payout = (await request_as(client, REQUESTER, body)).json()
    refused = await client.get(
        f"/v1/payouts/{payout['id']}/recipient", headers=await bearer_of(client, REQUESTER)
    )
    assert_problem(refused, 403, "insufficient_scope")
    events = (await client.get(f"/v1/payouts/{payout['id']}/events")).json()["data"]
    assert "payout.recipient_revealed" not in [e["type"] for e in events]
    missing = await client.get(
        "/v1/payouts/po_missing/recipient",
        headers=await bearer_of(client, RELEASER, RELEASE_SCOPES),
    )
    assert_problem(missing, 404, "not_found")


async def test_no_reveal_while_the_executor_is_sending_it(
    client: httpx.AsyncClient, executor: Executor
) -> None:
    body = unique_body("12.34")
    body.pop("requested_by")
    payout = (await request_as(client, REQUESTER, body)).json()
    jobs = await executor.claim(10)
    assert [j.id for j in jobs] == [payout["id"]]
    headers = await bearer_of(client, RELEASER, RELEASE_SCOPES)
    busy = await client.get(f"/v1/payouts/{payout['id']}/recipient", headers=headers)
    assert_problem(busy, 409, "payout_in_flight")
    assert busy.headers["retry-after"] == "5"
    await executor.settle([await executor.attempt(job) for job in jobs])  # its write holds
    assert (await client.get(f"/v1/payouts/{payout['id']}")).json()["status"] == "succeeded"
    after = await client.get(f"/v1/payouts/{payout['id']}/recipient", headers=headers)
    assert after.status_code == 200, after.text
