"""POST /v1/payout-batches/{id}/approve: the single approve's rules per payout, each payout
on its own (a refusal undoes nothing else), the caller's own errors failing everything."""

from __future__ import annotations

import httpx
import pytest

from tests.api_support import assert_problem
from tests.batches.support import BATCHES, item, post_batch
from tests.helpers import bearer_of, new_integration_client
from tests.policy.support import policy, setup_world


@pytest.fixture
async def batch(client: httpx.AsyncClient) -> dict[str, object]:
    """Four payouts all waiting for approval (the admin key proves no requester, so the
    policy auto-approves none): two by agents, one by sup-1, one over sup's approve_max."""
    await setup_world(
        client, policy(per_recipient_daily={"count": None, "amount": {"CNY": "5000.00"}})
    )
    items = [
        item("a", "50.00", "agent-1"),
        item("b", "60.00", "agent-2"),
        item("own", "150.00", "sup-1"),
        item("big", "2400.00", "fin-1"),  # dual approval (over 2000.00)
    ]
    created = await post_batch(client, items, as_operator=None)
    assert created.status_code == 201, created.text
    assert created.json()["counts"] == {"pending_approval": 4}
    return dict(created.json())


def _by_key(answer: httpx.Response) -> dict[str, dict[str, object]]:
    assert answer.status_code == 200, answer.text
    return {r["item_key"]: r for r in answer.json()["results"]}


async def test_batch_approve_applies_the_single_rules_to_each_payout(
    client: httpx.AsyncClient, batch: dict[str, object]
) -> None:
    payout_of = {i["item_key"]: i["payout_id"] for i in batch["items"]}  # type: ignore[attr-defined]
    canceled = await client.post(
        f"/v1/payouts/{payout_of['b']}/cancel", json={"operator_id": "agent-2"}
    )
    assert canceled.status_code == 200, canceled.text
    answer = await client.post(
        f"{BATCHES}/{batch['id']}/approve",
        json={"comment": "checked the list"},
        headers=await bearer_of(client, "sup-1"),
    )
    results = _by_key(answer)
    assert (results["a"]["outcome"], results["a"]["status"]) == ("approved", "approved")
    assert (results["b"]["outcome"], results["b"]["status"]) == ("skipped", "canceled")
    assert results["own"]["outcome"] == "refused"
    assert results["own"]["error"]["code"] == "self_approval_forbidden"  # type: ignore[index]
    assert results["own"]["status"] == "pending_approval"
    # First of two approvals: recorded, still pending.
    assert (results["big"]["outcome"], results["big"]["status"]) == (
        "approval_recorded",
        "pending_approval",
    )
    assert answer.json()["outcomes"] == {
        "approved": 1,
        "skipped": 1,
        "refused": 1,
        "approval_recorded": 1,
    }
    shown = (await client.get(f"{BATCHES}/{batch['id']}")).json()
    assert shown["counts"] == {"approved": 1, "canceled": 1, "pending_approval": 2}
    big = (await client.get(f"/v1/payouts/{payout_of['big']}")).json()
    assert [a["operator_id"] for a in big["approvals"]] == ["sup-1"]

    # Again by the same operator: the one they approved already refuses, the rest is skipped.
    again = _by_key(
        await client.post(
            f"{BATCHES}/{batch['id']}/approve", json={}, headers=await bearer_of(client, "sup-1")
        )
    )
    assert again["big"]["error"]["code"] == "already_approved"  # type: ignore[index]
    assert again["a"]["outcome"] == "skipped"
    # A second approver completes the dual approval.
    second = _by_key(
        await client.post(
            f"{BATCHES}/{batch['id']}/approve", json={}, headers=await bearer_of(client, "fin-2")
        )
    )
    assert (second["big"]["outcome"], second["big"]["status"]) == ("approved", "approved")
    assert second["own"]["outcome"] == "approved"


async def test_an_error_about_the_caller_approves_nothing(
    client: httpx.AsyncClient, batch: dict[str, object]
) -> None:
    # The admin key proves no person: approvals need an operator-bound key.
    refused = await client.post(f"{BATCHES}/{batch['id']}/approve", json={"operator_id": "sup-2"})
    assert_problem(refused, 403, "operator_key_required")
    shown = (await client.get(f"{BATCHES}/{batch['id']}")).json()
    assert shown["counts"] == {"pending_approval": 4}
    missing = await client.post(
        f"{BATCHES}/pb_missing/approve", json={}, headers=await bearer_of(client, "sup-1")
    )
    assert_problem(missing, 404, "not_found")


async def test_another_integrations_batch_is_not_found(
    client: httpx.AsyncClient, batch: dict[str, object]
) -> None:
    async with await new_integration_client(client, "other", ["payouts:read"]) as other:
        assert_problem(await other.get(f"{BATCHES}/{batch['id']}"), 404, "not_found")
        assert (await other.get(BATCHES)).json()["data"] == []
    listed = await client.get(BATCHES, params={"limit": 1})
    assert [b["id"] for b in listed.json()["data"]] == [batch["id"]]
    assert listed.json()["data"][0]["items"] is None


async def test_a_caller_who_may_not_approve_or_release_at_all_is_refused_as_a_whole(
    client: httpx.AsyncClient, batch: dict[str, object]
) -> None:
    # An agent's role has no approval rights: the single approve's 403 for the whole batch,
    # rather than a 200 listing every payout as refused.
    refused = await client.post(
        f"{BATCHES}/{batch['id']}/approve", json={}, headers=await bearer_of(client, "agent-2")
    )
    problem = assert_problem(refused, 403, "approval_limit_exceeded")
    assert "no approval rights" in problem["detail"]
    # Nothing awaits a release yet, yet a role without can_release hears so rather than
    # a 200 with every payout skipped.
    unreleasable = await client.post(
        f"{BATCHES}/{batch['id']}/release",
        json={},
        headers=await bearer_of(client, "sup-1", ("payouts:release",)),
    )
    assert_problem(unreleasable, 403, "release_not_allowed")
    shown = (await client.get(f"{BATCHES}/{batch['id']}")).json()
    assert shown["counts"] == {"pending_approval": 4}
