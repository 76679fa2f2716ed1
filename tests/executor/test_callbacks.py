"""POST /v1/gateway-callbacks/{gateway} and GET /v1/sandbox/transfers."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from payoutsvc.executor.service import Executor
from payoutsvc.gateways.sandbox import POLLS_UNTIL_SUCCESS, SandboxGateway
from payoutsvc.runtime import Runtime
from tests.executor.conftest import AppFactory
from tests.executor.support import (
    NEVER_RESOLVES,
    PENDING_THEN_SUCCESS,
    SUCCEED,
    approved_payout,
    assert_exactly_once,
    attempts_of,
    drain,
    statuses,
)
from tests.helpers import new_integration_client

pytestmark = pytest.mark.usefixtures("operators")


def keyless(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Gateways call without an API key: the signature is their credential."""
    return httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))


async def post_notice(
    client: httpx.AsyncClient, runtime: Runtime, notice: dict[str, Any], **sign: Any
) -> httpx.Response:
    body, headers = await SandboxGateway(runtime.db).signed_notice(notice, **sign)
    async with keyless(client) as gateway:
        return await gateway.post(
            "/v1/gateway-callbacks/sandbox",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )


async def settled_notice(runtime: Runtime, key: str) -> dict[str, Any]:
    """Let the sandbox settle a pending transfer (it does after a few polls) and return the
    notice it sends about it."""
    sandbox = SandboxGateway(runtime.db)
    for _ in range(POLLS_UNTIL_SUCCESS):
        await sandbox.get_status(key)
    notice = await sandbox.notice_for(key)
    assert notice is not None
    assert notice["status"] == "succeeded"
    return notice


async def pending_payout(client: httpx.AsyncClient, runtime: Runtime, executor: Executor) -> str:
    """A payout the sandbox accepted as pending: processing, waiting for its next poll."""
    payout = await approved_payout(client, runtime, PENDING_THEN_SUCCESS)
    assert await executor.run_once() == 1
    assert (await statuses(runtime.db))[payout["id"]] == "processing"
    return str(payout["id"])


async def test_signed_success_notice_finishes_a_processing_payout_once(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor
) -> None:
    payout_id = await pending_payout(client, runtime, executor)
    listed = await client.get("/v1/sandbox/transfers", params={"payout_id": payout_id})
    notice = await settled_notice(runtime, listed.json()["data"][0]["idempotency_key"])

    first = await post_notice(client, runtime, notice)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": True, "result": "applied"}
    again = await post_notice(client, runtime, notice)
    assert again.json()["result"] == "duplicate"

    got = (await client.get(f"/v1/payouts/{payout_id}")).json()
    assert got["status"] == "succeeded"
    assert got["gateway_reference"] == notice["reference"]
    events = (await client.get(f"/v1/payouts/{payout_id}/events")).json()["data"]
    assert [e["type"] for e in events].count("payout.succeeded") == 1
    assert events[-1]["actor"] == "gateway:sandbox"
    operations = [a.operation for a in await attempts_of(runtime.db, payout_id)]
    assert operations == ["submit", "callback", "callback"]
    assert await executor.run_once() == 0  # nothing left for the executor
    await assert_exactly_once(runtime.db)


async def test_notice_while_an_executor_holds_the_payout_wins_and_the_executor_backs_off(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor
) -> None:
    payout_id = await pending_payout(client, runtime, executor)
    executor.clock.advance(3600)  # type: ignore[attr-defined]
    jobs = await executor.claim(1)
    assert [j.id for j in jobs] == [payout_id]
    notice = await settled_notice(runtime, jobs[0].key)
    assert (await post_notice(client, runtime, notice)).json()["result"] == "applied"
    outcomes = [await executor.execute(job) for job in jobs]
    assert await executor.finish(outcomes) == set()  # its claim was overtaken
    await assert_exactly_once(runtime.db)


async def test_a_notice_never_moves_a_payout_backwards(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor
) -> None:
    before = contradictions()
    payout = await approved_payout(client, runtime, SUCCEED)
    assert await executor.run_once() == 1
    key = (await client.get(f"/v1/sandbox/transfers?payout_id={payout['id']}")).json()["data"][0][
        "idempotency_key"
    ]
    for status in ("failed", "pending"):
        notice = {
            "idempotency_key": key,
            "status": status,
            "failure_code": "insufficient_funds" if status == "failed" else None,
        }
        answer = await post_notice(client, runtime, notice)
        assert answer.status_code == 200
        assert answer.json()["result"] == ("stale" if status == "failed" else "recorded")
    got = (await client.get(f"/v1/payouts/{payout['id']}")).json()
    assert (got["status"], got["failure"]) == ("succeeded", None)
    # A final result contradicting a final status is counted for a person to reconcile.
    assert contradictions() == before + 1


def contradictions() -> float:
    value = REGISTRY.get_sample_value(
        "payoutsvc_gateway_callback_contradictions_total", {"gateway": "sandbox"}
    )
    return value or 0.0


async def test_unverifiable_notices_change_nothing(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor
) -> None:
    payout_id = await pending_payout(client, runtime, executor)
    key = (await client.get(f"/v1/sandbox/transfers?payout_id={payout_id}")).json()["data"][0][
        "idempotency_key"
    ]
    notice = {"idempotency_key": key, "status": "failed", "failure_code": "insufficient_funds"}
    body, headers = await SandboxGateway(runtime.db).signed_notice(notice)
    async with keyless(client) as gateway:
        tampered = await gateway.post(
            "/v1/gateway-callbacks/sandbox",
            content=body.replace(b"failed", b"succeeded"),
            headers=headers,
        )
        unsigned = await gateway.post("/v1/gateway-callbacks/sandbox", content=body)
        unknown_gateway = await gateway.post(
            "/v1/gateway-callbacks/acme-bank", content=body, headers=headers
        )
    stale = await post_notice(client, runtime, notice, timestamp=int(time.time()) - 3600)
    malformed = await post_notice(client, runtime, {"idempotency_key": key, "status": "paid"})
    assert (tampered.status_code, tampered.json()["code"]) == (401, "invalid_signature")
    assert (unsigned.status_code, unsigned.json()["code"]) == (401, "invalid_signature")
    assert (stale.status_code, stale.json()["code"]) == (401, "invalid_signature")
    assert (malformed.status_code, malformed.json()["code"]) == (400, "invalid_callback")
    assert unknown_gateway.status_code == 404
    assert (await statuses(runtime.db))[payout_id] == "processing"
    assert [a.operation for a in await attempts_of(runtime.db, payout_id)] == ["submit"]

    unknown_key = await post_notice(client, runtime, {**notice, "idempotency_key": "f" * 32})
    assert unknown_key.json() == {"received": True, "result": "unknown_transfer"}


async def test_failed_notice_fails_a_processing_payout_with_its_code(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor
) -> None:
    payout_id = await pending_payout(client, runtime, executor)
    key = (await client.get(f"/v1/sandbox/transfers?payout_id={payout_id}")).json()["data"][0][
        "idempotency_key"
    ]
    notice = {
        "idempotency_key": key,
        "status": "failed",
        "failure_code": "recipient_account_invalid",
        "failure_message": "closed account",
    }
    assert (await post_notice(client, runtime, notice)).json()["result"] == "applied"
    got = (await client.get(f"/v1/payouts/{payout_id}")).json()
    assert got["status"] == "failed"
    assert got["failure"] == {"code": "recipient_account_invalid", "message": "closed account"}


async def test_sandbox_ledger_is_admin_only_and_pages(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor
) -> None:
    for _ in range(3):
        await approved_payout(client, runtime)
    await executor.run_once()
    first = await client.get("/v1/sandbox/transfers", params={"limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert len(page["data"]) == 2
    assert page["next_cursor"]
    rest = await client.get("/v1/sandbox/transfers", params={"cursor": page["next_cursor"]})
    ids = [t["id"] for t in page["data"]] + [t["id"] for t in rest.json()["data"]]
    assert len(set(ids)) == 3
    assert rest.json()["next_cursor"] is None
    reader = await new_integration_client(client, "helpdesk", ["payouts:read", "payouts:write"])
    async with reader:
        assert (await reader.get("/v1/sandbox/transfers")).status_code == 403


async def test_a_verified_notice_settles_a_payout_the_executor_gave_up_on(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor
) -> None:
    payout = await approved_payout(client, runtime, NEVER_RESOLVES)
    await drain(executor, executor.clock)  # type: ignore[arg-type]
    assert (await statuses(runtime.db))[payout["id"]] == "needs_review"
    key = (await client.get(f"/v1/sandbox/transfers?payout_id={payout['id']}")).json()["data"][0][
        "idempotency_key"
    ]
    notice = {"idempotency_key": key, "status": "succeeded", "reference": "tr_late"}
    answer = await post_notice(client, runtime, notice)
    assert answer.json()["result"] == "applied"
    got = (await client.get(f"/v1/payouts/{payout['id']}")).json()
    assert got["status"] == "succeeded"
    events = (await client.get(f"/v1/payouts/{payout['id']}/events")).json()["data"]
    assert [e["type"] for e in events][-2:] == ["payout.needs_review", "payout.succeeded"]
    assert (await post_notice(client, runtime, notice)).json()["result"] == "duplicate"


async def test_callbacks_for_a_routed_provider_without_credentials_ask_to_be_resent(
    make_app: AppFactory,
) -> None:
    _, client = await make_app(gateway_routes="stripe_account=stripe")
    async with keyless(client) as gateway:
        answer = await gateway.post("/v1/gateway-callbacks/stripe", content=b"{}")
    assert answer.status_code == 503
    assert answer.json()["code"] == "gateway_unavailable"
    assert "PAYOUTSVC_STRIPE_SECRET_KEY" in answer.json()["detail"]
