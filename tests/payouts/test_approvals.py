"""Approve, reject, resolve: who may decide, how approvals count, and races."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from payoutsvc.payouts.models import Payout
from payoutsvc.payouts.status import PayoutStatus
from tests.helpers import (
    bearer_of,
    integration_id_of,
    new_integration_client,
    reject_as,
    resolve_as,
    walk,
)
from tests.policy.support import (
    approve,
    body,
    created,
    db,
    events,
    policy,
    problem_code,
    setup_world,
)

# Lets finance request past dual_approval_over (2000.00) without other caps interfering.
DUAL_POLICY = policy(per_recipient_daily={"count": 3, "amount": {"CNY": "50000.00"}})


async def test_one_approval_approves_and_schedules_the_payout(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    version = await setup_world(client)
    payout = await created(client, body("50.00"))
    response = await approve(client, payout["id"], "sup-1", "ok")
    assert response.status_code == 200, response.text
    approved = response.json()
    assert approved["status"] == "approved"
    assert [(a["operator_id"], a["decision"], a["comment"]) for a in approved["approvals"]] == [
        ("sup-1", "approved", "ok")
    ]
    history = await events(client, payout["id"])
    assert [(e["type"], e["actor"]) for e in history] == [
        ("payout.created", "agent-1"),
        ("payout.approved", "sup-1"),
    ]
    data = history[1]["data"]
    assert (data["policy_version"], data["approver_role"], data["required_approvals"]) == (
        version,
        "supervisor",
        1,
    )
    assert [a["operator_id"] for a in data["approvals"]] == ["sup-1"]
    async with db(app).transaction() as session:
        due = (
            await session.execute(select(Payout.next_attempt_at).where(Payout.id == payout["id"]))
        ).scalar_one()
    assert due is not None  # the executor's job from now on


async def test_the_requester_can_never_approve_their_own_payout(
    client: httpx.AsyncClient,
) -> None:
    await setup_world(client)
    payout = await created(client, body("500.00", "sup-1"))
    assert problem_code(await approve(client, payout["id"], "sup-1"), 403) == (
        "self_approval_forbidden"
    )
    assert (await client.get(f"/v1/payouts/{payout['id']}")).json()["approvals"] == []


async def test_the_approver_limit_is_inclusive(client: httpx.AsyncClient) -> None:
    await setup_world(client, DUAL_POLICY)
    at_limit = await created(client, body("2500.00", "fin-1"))
    over = await created(client, body("2500.01", "fin-1"))
    # supervisor approve_max is 2500.00 CNY
    assert (await approve(client, at_limit["id"], "sup-1")).status_code == 200
    refused = await approve(client, over["id"], "sup-1")
    assert problem_code(refused, 403) == "approval_limit_exceeded"
    assert "2500.00 CNY" in refused.json()["detail"]
    # An agent (approve_max: null) approves nothing.
    small = await created(client, body("50.00", "agent-2"))
    assert problem_code(await approve(client, small["id"], "agent-1"), 403) == (
        "approval_limit_exceeded"
    )


async def test_dual_approval_needs_two_distinct_approvers(client: httpx.AsyncClient) -> None:
    await setup_world(client, DUAL_POLICY)
    payout = await created(client, body("2000.01", "fin-1"))
    assert payout["required_approvals"] == 2
    first = await approve(client, payout["id"], "fin-2", "looks right")
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "pending_approval"
    assert [a["operator_id"] for a in first.json()["approvals"]] == ["fin-2"]
    assert problem_code(await approve(client, payout["id"], "fin-2"), 409) == "already_approved"
    assert problem_code(await approve(client, payout["id"], "fin-1"), 403) == (
        "self_approval_forbidden"
    )
    second = await approve(client, payout["id"], "sup-1")
    assert second.status_code == 200, second.text
    assert second.json()["status"] == "approved"
    assert [a["operator_id"] for a in second.json()["approvals"]] == ["fin-2", "sup-1"]
    history = await events(client, payout["id"])
    assert [e["type"] for e in history] == ["payout.created", "payout.approved"]
    assert [a["operator_id"] for a in history[1]["data"]["approvals"]] == ["fin-2", "sup-1"]
    assert problem_code(await approve(client, payout["id"], "fin-3"), 409) == (
        "invalid_status_transition"
    )


async def test_disabled_operators_cannot_approve_and_roles_apply_as_they_are_now(
    client: httpx.AsyncClient,
) -> None:
    await setup_world(client)
    payout = await created(client, body("50.00"))
    sup2 = await bearer_of(client, "sup-2")
    await client.delete("/v1/operators/sup-2")
    # The disabled operator's own key can do nothing, and no other key can name them.
    assert problem_code(await approve(client, payout["id"], "sup-2"), 403) == "operator_disabled"
    named = await client.post(
        f"/v1/payouts/{payout['id']}/approve", json={"operator_id": "sup-2"}, headers=sup2
    )
    assert problem_code(named, 403) == "operator_disabled"
    ghost_key = await client.post(
        f"/v1/integrations/{await integration_id_of(client)}/api-keys",
        json={"scopes": ["payouts:approve"], "operator_id": "ghost"},
    )
    assert problem_code(ghost_key, 422) == "unknown_operator"
    demoted = await client.patch("/v1/operators/sup-1", json={"role": "agent"})
    assert demoted.status_code == 200
    assert problem_code(await approve(client, payout["id"], "sup-1"), 403) == (
        "approval_limit_exceeded"
    )
    promoted = await client.patch("/v1/operators/agent-2", json={"role": "finance"})
    assert promoted.status_code == 200
    assert (await approve(client, payout["id"], "agent-2")).status_code == 200


async def test_reject(client: httpx.AsyncClient) -> None:
    await setup_world(client)
    payout = await created(client, body("50.00"))
    response = await reject_as(client, payout["id"], "sup-1", "no proof")
    assert response.status_code == 200, response.text
    rejected = response.json()
    assert rejected["status"] == "rejected"
    assert [(a["operator_id"], a["decision"], a["comment"]) for a in rejected["approvals"]] == [
        ("sup-1", "rejected", "no proof")
    ]
    history = await events(client, payout["id"])
    assert (history[-1]["type"], history[-1]["actor"], history[-1]["data"]["reason"]) == (
        "payout.rejected",
        "sup-1",
        "no proof",
    )
    again = await reject_as(client, payout["id"], "sup-2")
    assert problem_code(again, 409) == "invalid_status_transition"
    assert problem_code(await approve(client, payout["id"], "sup-2"), 409) == (
        "invalid_status_transition"
    )
    auto = await created(client, body("5.00"))
    assert auto["status"] == "approved"
    late = await reject_as(client, auto["id"], "sup-1")
    assert problem_code(late, 409) == "invalid_status_transition"


async def test_an_approver_of_a_dual_approval_can_still_reject(client: httpx.AsyncClient) -> None:
    await setup_world(client, DUAL_POLICY)
    payout = await created(client, body("2000.01", "fin-1"))
    assert (await approve(client, payout["id"], "fin-2")).status_code == 200
    response = await reject_as(client, payout["id"], "fin-2", "fraud")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "rejected"
    history = await events(client, payout["id"])
    assert (history[-1]["actor"], history[-1]["data"]["reason"]) == ("fin-2", "fraud")


async def test_racing_single_approvals_end_in_one_approval(client: httpx.AsyncClient) -> None:
    await setup_world(client)
    payout = await created(client, body("50.00"))
    answers = await asyncio.gather(
        approve(client, payout["id"], "sup-1"),
        approve(client, payout["id"], "sup-2"),
        approve(client, payout["id"], "fin-1"),
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 409, 409], [a.text for a in answers]
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {
        "invalid_status_transition"
    }
    final = (await client.get(f"/v1/payouts/{payout['id']}")).json()
    assert final["status"] == "approved"
    assert len(final["approvals"]) == 1
    assert [e["type"] for e in await events(client, payout["id"])] == [
        "payout.created",
        "payout.approved",
    ]


async def test_racing_dual_approvals_both_count(client: httpx.AsyncClient) -> None:
    await setup_world(client, DUAL_POLICY)
    # Several payouts raced at once: without serialisation per payout, each of two
    # simultaneous approvals would see only its own and leave the payout pending forever.
    payouts = [await created(client, body("2000.01", "fin-1")) for _ in range(4)]
    answers = await asyncio.gather(
        *(approve(client, p["id"], approver) for p in payouts for approver in ("fin-2", "fin-3"))
    )
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    for index, payout in enumerate(payouts):
        pair = answers[2 * index : 2 * index + 2]
        assert sorted(a.json()["status"] for a in pair) == ["approved", "pending_approval"]
        final = (await client.get(f"/v1/payouts/{payout['id']}")).json()
        assert final["status"] == "approved"
        assert sorted(a["operator_id"] for a in final["approvals"]) == ["fin-2", "fin-3"]
        types = [e["type"] for e in await events(client, payout["id"])]
        assert types == ["payout.created", "payout.approved"]


async def test_approve_racing_cancel_ends_consistently(client: httpx.AsyncClient) -> None:
    await setup_world(client)
    for _ in range(3):
        payout = await created(client, body("50.00"))
        approval, cancel = await asyncio.gather(
            approve(client, payout["id"], "sup-1"),
            client.post(
                f"/v1/payouts/{payout['id']}/cancel",
                json={"operator_id": "agent-1", "reason": "changed mind"},
            ),
        )
        # approved -> canceled is allowed, so the cancel always wins in the end; whether the
        # approval happened first is told by its answer and matches the history exactly.
        assert cancel.status_code == 200, cancel.text
        final = (await client.get(f"/v1/payouts/{payout['id']}")).json()
        assert final["status"] == "canceled"
        types = [e["type"] for e in await events(client, payout["id"])]
        if approval.status_code == 200:
            assert types == ["payout.created", "payout.approved", "payout.canceled"]
            assert len(final["approvals"]) == 1
        else:
            assert problem_code(approval, 409) == "invalid_status_transition"
            assert types == ["payout.created", "payout.canceled"]
            assert final["approvals"] == []


async def _to_needs_review(app: FastAPI, payout_id: str) -> None:
    """Walk the executor's arrows (approved -> processing -> needs_review) as it would."""
    await walk(
        app.state.runtime,
        payout_id,
        PayoutStatus.PROCESSING,
        PayoutStatus.NEEDS_REVIEW,
        actor="executor",
    )


async def test_resolve_needs_review(client: httpx.AsyncClient, app: FastAPI) -> None:
    await setup_world(client)
    good = await created(client, body("5.00"))
    bad = await created(client, body("6.00"))
    pending = await created(client, body("50.00"))
    for payout in (good, bad):
        await _to_needs_review(app, payout["id"])
    succeeded = await resolve_as(client, good["id"], "fin-1", "succeeded", "bank statement")
    assert succeeded.status_code == 200, succeeded.text
    assert (succeeded.json()["status"], succeeded.json()["failure"]) == ("succeeded", None)
    failed = await resolve_as(client, bad["id"], "fin-1", "failed", "never arrived")
    assert failed.json()["status"] == "failed"
    assert failed.json()["failure"] == {"code": "manual_review_failed", "message": "never arrived"}
    last = (await events(client, bad["id"]))[-1]
    assert (last["type"], last["actor"], last["data"]["resolution"]) == (
        "payout.failed",
        "fin-1",
        "failed",
    )
    wrong = await resolve_as(client, pending["id"], "fin-1", "failed")
    assert problem_code(wrong, 409) == "invalid_status_transition"
    twice = await resolve_as(client, good["id"], "fin-1", "failed")
    assert problem_code(twice, 409) == "invalid_status_transition"
    approver = await new_integration_client(client, "console", ["payouts:approve"])
    async with approver:
        denied = await approver.post(
            f"/v1/payouts/{pending['id']}/resolve",
            json={"operator_id": "fin-1", "outcome": "failed"},
        )
    assert problem_code(denied, 403) == "insufficient_scope"


async def test_another_integrations_payout_is_not_found(client: httpx.AsyncClient) -> None:
    await setup_world(client)
    payout = await created(client, body("50.00"))
    other = await new_integration_client(client, "other-desk", ["payouts:approve"])
    other_id = await integration_id_of(client, "other-desk")
    bound = await client.post(
        f"/v1/integrations/{other_id}/api-keys",
        json={"scopes": ["payouts:approve"], "operator_id": "sup-1"},
    )
    sup1_elsewhere = {"Authorization": f"Bearer {bound.json()['key']}"}
    async with other:
        response = await other.post(
            f"/v1/payouts/{payout['id']}/approve", json={}, headers=sup1_elsewhere
        )
        rejected = await other.post(
            f"/v1/payouts/{payout['id']}/reject", json={}, headers=sup1_elsewhere
        )
    assert problem_code(response, 404) == "not_found"
    assert problem_code(rejected, 404) == "not_found"
    writer = await new_integration_client(client, "writer-desk", ["payouts:write"])
    async with writer:
        refused = await writer.post(
            f"/v1/payouts/{payout['id']}/approve", json={"operator_id": "sup-1"}
        )
        assert problem_code(refused, 403) == "insufficient_scope"
