"""Operator-bound API keys and the policy's approvals.require_operator_key (issue 13, item 1).

The attack: one helpdesk integration key with write + approve scopes requested 450 CNY as
`sup-2` (auto-approved on a supervisor's limit; an agent's is 50), requested 400 as `agent-17`
and approved it as `sup-3`, and approved a 12,000 CNY dual-approval payout as `fin-2` and then
`fin-3`. Each case below is that attack, or a way around the fix.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from payoutsvc.policy.router import DUAL_APPROVAL_EXAMPLE as DUAL_APPROVAL_POLICY
from tests.api_support import assert_problem
from tests.helpers import (
    approve_as,
    bearer_of,
    create_operator,
    integration_id_of,
    new_integration_client,
    payout_body,
    request_as,
)

_counter = iter(range(1, 10**6))
DESK_SCOPES = ["payouts:write", "payouts:read", "payouts:approve"]


def _body(amount: str, requested_by: str | None, **overrides: Any) -> dict[str, Any]:
    """A payout on its own ticket and recipient, so only the rule under test fires."""
    n = next(_counter)
    body = payout_body(
        amount=amount,
        ticket={"system": "zendesk", "id": f"OK-{n}"},
        recipient={"type": "alipay", "account": f"1390000{n:04d}", "name": "张三"},
        **overrides,
    )
    if requested_by is None:
        del body["requested_by"]
    else:
        body["requested_by"] = requested_by
    return body


async def _post(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post(
        "/v1/payouts", json=body, headers={"Idempotency-Key": uuid.uuid4().hex, **headers}
    )


async def _people(client: httpx.AsyncClient) -> None:
    for operator_id, role in [
        ("agent-17", "agent"),
        ("sup-2", "supervisor"),
        ("sup-3", "supervisor"),
        ("fin-1", "finance"),
        ("fin-2", "finance"),
        ("fin-3", "finance"),
    ]:
        await create_operator(client, operator_id, role)


async def _status(client: httpx.AsyncClient, payout_id: str) -> tuple[str, list[str]]:
    payout = (await client.get(f"/v1/payouts/{payout_id}")).json()
    return payout["status"], [a["operator_id"] for a in payout["approvals"]]


async def test_a_key_binds_to_an_existing_enabled_operator(client: httpx.AsyncClient) -> None:
    await _people(client)
    integration = await integration_id_of(client)
    keys = f"/v1/integrations/{integration}/api-keys"
    bound = await client.post(keys, json={"scopes": ["payouts:approve"], "operator_id": "sup-2"})
    assert bound.status_code == 201, bound.text
    assert bound.json()["operator_id"] == "sup-2"
    listed = {k["id"]: k for k in (await client.get(keys)).json()["data"]}
    assert listed[bound.json()["id"]]["operator_id"] == "sup-2"
    assert all("key" not in k for k in listed.values())
    unknown = await client.post(keys, json={"scopes": ["payouts:approve"], "operator_id": "x-9"})
    assert_problem(unknown, 422, "unknown_operator", "operator_id")
    assert (await client.delete("/v1/operators/sup-3")).status_code == 200
    disabled = await client.post(keys, json={"scopes": ["payouts:read"], "operator_id": "sup-3"})
    assert_problem(disabled, 403, "operator_disabled", "operator_id")


async def test_one_integration_key_can_no_longer_act_as_anyone(client: httpx.AsyncClient) -> None:
    await _people(client)
    assert (await client.put("/v1/policy", json=DUAL_APPROVAL_POLICY)).status_code == 200
    async with await new_integration_client(client, "desk", DESK_SCOPES) as desk:
        # 450 CNY "as sup-2": within a supervisor's auto-approval limit, but the key does not
        # prove sup-2, so it waits for a person.
        as_sup = await _post(desk, _body("450.00", "sup-2"))
        assert as_sup.status_code == 201, as_sup.text
        assert as_sup.json()["status"] == "pending_approval"
        assert "requester_unverified" in {r["rule"] for r in as_sup.json()["policy"]["reasons"]}
        # 400 CNY as agent-17, approved "as sup-3": refused.
        small = (await _post(desk, _body("400.00", "agent-17"))).json()
        named = await desk.post(f"/v1/payouts/{small['id']}/approve", json={"operator_id": "sup-3"})
        assert_problem(named, 403, "operator_key_required")
        # 12,000 CNY, two approvals needed, "as fin-2" then "as fin-3": refused both times.
        large = (await _post(desk, _body("12000.00", "fin-1"))).json()
        assert large["required_approvals"] == 2
        for approver in ("fin-2", "fin-3"):
            response = await desk.post(
                f"/v1/payouts/{large['id']}/approve", json={"operator_id": approver}
            )
            assert_problem(response, 403, "operator_key_required")
        rejected = await desk.post(
            f"/v1/payouts/{large['id']}/reject", json={"operator_id": "sup-2"}
        )
        assert_problem(rejected, 403, "operator_key_required")
    # The back office's own (unbound, admin) key proves no person either.
    admin_named = await client.post(
        f"/v1/payouts/{large['id']}/approve", json={"operator_id": "fin-2"}
    )
    assert_problem(admin_named, 403, "operator_key_required")
    for payout in (as_sup.json(), small, large):
        assert await _status(client, payout["id"]) == ("pending_approval", [])


async def test_a_bound_key_acts_only_as_its_operator(client: httpx.AsyncClient) -> None:
    await _people(client)
    assert (await client.put("/v1/policy", json=DUAL_APPROVAL_POLICY)).status_code == 200
    # Requesting: requested_by defaults to the key's operator, and within the agent's own
    # limit the policy approves it at once.
    own = await _post(client, _body("12.00", None), **await bearer_of(client, "agent-17"))
    assert own.status_code == 201, own.text
    assert (own.json()["requested_by"], own.json()["status"]) == ("agent-17", "approved")
    # agent-17's key naming sup-2 as requester: 403, nothing created.
    before = len((await client.get("/v1/payouts")).json()["data"])
    as_sup = await _post(client, _body("450.00", "sup-2"), **await bearer_of(client, "agent-17"))
    assert_problem(as_sup, 403, "operator_mismatch", "requested_by")
    assert len((await client.get("/v1/payouts")).json()["data"]) == before
    # Approving: sup-3's key naming fin-2 is refused; omitting operator_id approves as sup-3.
    pending = (await request_as(client, "agent-17", _body("400.00", None))).json()
    assert pending["status"] == "pending_approval"
    sup3 = await bearer_of(client, "sup-3")
    path = f"/v1/payouts/{pending['id']}/approve"
    mismatch = await client.post(path, json={"operator_id": "fin-2"}, headers=sup3)
    assert_problem(mismatch, 403, "operator_mismatch", "operator_id")
    approved = await client.post(path, json={"comment": "ok"}, headers=sup3)
    assert approved.status_code == 200, approved.text
    assert [a["operator_id"] for a in approved.json()["approvals"]] == ["sup-3"]
    # Dual approval takes two people with two keys; one key cannot count twice.
    large = (await request_as(client, "fin-1", _body("12000.00", None))).json()
    assert (await approve_as(client, large["id"], "fin-2")).json()["status"] == "pending_approval"
    again = await approve_as(client, large["id"], "fin-2")
    assert_problem(again, 409, "already_approved")
    assert (await approve_as(client, large["id"], "fin-3")).json()["status"] == "approved"


async def test_a_disabled_operators_keys_do_nothing(client: httpx.AsyncClient) -> None:
    await _people(client)
    sup2 = await bearer_of(client, "sup-2")
    pending = (await request_as(client, "agent-17", _body("400.00", None))).json()
    assert (await client.get("/v1/payouts", headers=sup2)).status_code == 200
    assert (await client.patch("/v1/operators/sup-2", json={"disabled": True})).status_code == 200
    assert_problem(await client.get("/v1/payouts", headers=sup2), 403, "operator_disabled")
    refused = await client.post(f"/v1/payouts/{pending['id']}/approve", json={}, headers=sup2)
    assert_problem(refused, 403, "operator_disabled")
    assert await _status(client, pending["id"]) == ("pending_approval", [])


async def test_resolve_needs_the_resolving_operators_admin_key(client: httpx.AsyncClient) -> None:
    await _people(client)
    payout = (await request_as(client, "agent-17", _body("12.00", None))).json()
    path = f"/v1/payouts/{payout['id']}/resolve"
    unbound = await client.post(path, json={"operator_id": "fin-1", "outcome": "failed"})
    assert_problem(unbound, 403, "operator_key_required")
    # A bound key without `admin` lacks the scope; with it, the decision reaches the status
    # check (the payout does not need review).
    reviewer = await bearer_of(client, "fin-1")
    no_scope = await client.post(path, json={"outcome": "failed"}, headers=reviewer)
    assert_problem(no_scope, 403, "insufficient_scope")
    admin_fin = await bearer_of(client, "fin-1", ("admin",))
    wrong_status = await client.post(path, json={"outcome": "failed"}, headers=admin_fin)
    assert_problem(wrong_status, 409, "invalid_status_transition")


async def test_cancel_is_not_an_approvers_decision(client: httpx.AsyncClient) -> None:
    """An integration key may withdraw its own request (money never moves); a bound key
    still cancels only as its own operator."""
    await _people(client)
    async with await new_integration_client(client, "desk", DESK_SCOPES) as desk:
        first = (await _post(desk, _body("400.00", "agent-17"))).json()
        second = (await _post(desk, _body("400.00", "agent-17"))).json()
        canceled = await desk.post(
            f"/v1/payouts/{first['id']}/cancel", json={"operator_id": "agent-17"}
        )
        assert canceled.status_code == 200, canceled.text
        missing = await desk.post(f"/v1/payouts/{second['id']}/cancel", json={})
        assert_problem(missing, 422, "validation_failed", "operator_id")
    history = (await client.get(f"/v1/payouts/{first['id']}/events")).json()["data"]
    assert history[-1]["data"]["operator_verified"] is False
    mismatch = await client.post(
        f"/v1/payouts/{second['id']}/cancel",
        json={"operator_id": "sup-2"},
        headers=await bearer_of(client, "agent-17"),
    )
    assert_problem(mismatch, 403, "operator_mismatch")


async def test_without_require_operator_key_the_helpdesk_vouches_for_its_agents(
    client: httpx.AsyncClient,
) -> None:
    """``require_operator_key: false`` is what the README says it is: an integration key is
    trusted to name the right person, for requests and decisions alike."""
    await _people(client)
    trusting = {**DUAL_APPROVAL_POLICY, "approvals": {"require_operator_key": False}}
    assert (await client.put("/v1/policy", json=trusting)).status_code == 200
    async with await new_integration_client(client, "desk", DESK_SCOPES) as desk:
        as_sup = await _post(desk, _body("450.00", "sup-2"))
        assert as_sup.json()["status"] == "approved"
        pending = (await _post(desk, _body("400.00", "agent-17"))).json()
        approved = await desk.post(
            f"/v1/payouts/{pending['id']}/approve", json={"operator_id": "sup-3"}
        )
        assert approved.json()["status"] == "approved"
        # Naming is still required without a bound key.
        unnamed = await desk.post(f"/v1/payouts/{pending['id']}/approve", json={})
        assert_problem(unnamed, 422, "validation_failed", "operator_id")
    # A bound key stays bound whatever the policy says.
    mismatch = await client.post(
        f"/v1/payouts/{pending['id']}/reject",
        json={"operator_id": "sup-3"},
        headers=await bearer_of(client, "sup-2"),
    )
    assert_problem(mismatch, 403, "operator_mismatch")


async def test_errors_do_not_tell_a_non_admin_key_about_other_operators(
    client: httpx.AsyncClient,
) -> None:
    """Probing with names: an unknown, a disabled and an existing operator look the same to
    a key that does not prove them, and no refusal names a role or a limit."""
    await _people(client)
    await create_operator(client, "sup-9", "supervisor")
    assert (await client.delete("/v1/operators/sup-9")).status_code == 200
    trusting = {**DUAL_APPROVAL_POLICY, "approvals": {"require_operator_key": False}}
    assert (await client.put("/v1/policy", json=trusting)).status_code == 200
    async with await new_integration_client(client, "desk", DESK_SCOPES) as desk:
        pending = (await _post(desk, _body("400.00", "agent-17"))).json()
        approve = f"/v1/payouts/{pending['id']}/approve"
        ghost = await desk.post(approve, json={"operator_id": "ghost-1"})
        gone = await desk.post(approve, json={"operator_id": "sup-9"})
        for response, name in ((ghost, "ghost-1"), (gone, "sup-9")):
            problem = assert_problem(response, 422, "unknown_operator", "operator_id")
            assert problem["detail"] == f"{name!r} is not an active operator."
            assert "disabled" not in response.text
        limited = await desk.post(approve, json={"operator_id": "agent-17"})
        assert_problem(limited, 403, "self_approval_forbidden")
        other = (await _post(desk, _body("600.00", "sup-2"))).json()  # over sup's auto limit
        by_agent = await desk.post(
            f"/v1/payouts/{other['id']}/approve", json={"operator_id": "agent-17"}
        )
        assert_problem(by_agent, 403, "approval_limit_exceeded")
        assert "agent" not in by_agent.json()["detail"].replace("agent-17", "")
        # Requests: an unknown and a disabled requester get the same refusal, and a role's
        # limits are not quoted.
        refusals = {who: await _post(desk, _body("10.00", who)) for who in ("ghost-1", "sup-9")}
        seen = [
            [(e["code"], e["message"].replace(who, "X")) for e in r.json()["errors"]]
            for who, r in refusals.items()
        ]
        assert [r.status_code for r in refusals.values()] == [422, 422]
        assert seen[0] == seen[1], seen
        over = await _post(desk, _body("600.00", "agent-17"))
        assert over.status_code == 422, over.text
        text = " ".join(e["message"] for e in over.json()["errors"])
        assert "500.00" not in text
        assert "agent role" not in text
    # The same key bound to a person may hear about their own limits.
    own = await _post(client, _body("600.00", None), **await bearer_of(client, "agent-17"))
    assert "500.00" in own.json()["errors"][0]["message"]
    # A mismatch answers alike for an operator who exists and one who does not.
    agent = await bearer_of(client, "agent-17")
    exists = await client.post(approve, json={"operator_id": "sup-2"}, headers=agent)
    invented = await client.post(approve, json={"operator_id": "nobody-7"}, headers=agent)
    assert exists.json() == invented.json()
