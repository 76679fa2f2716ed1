"""Every policy rule through POST /v1/payouts, at its boundary: the limit passes, the limit
plus 0.01 does not (limits are inclusive)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from payoutsvc.payouts.models import Payout
from payoutsvc.policy.repository import PolicyRepository
from payoutsvc.policy.router import DUAL_APPROVAL_EXAMPLE
from tests.helpers import bearer_of, operator_key, reject_as
from tests.policy.support import (
    TEST_POLICY,
    approve,
    body,
    created,
    db,
    events,
    paypal,
    policy,
    post,
    problem_code,
    reason_rules,
    setup_world,
    use_policy,
    violations,
)


async def test_request_max_boundary(client: httpx.AsyncClient) -> None:
    await setup_world(client)
    at_limit = await created(client, body("100.00"))
    assert at_limit["status"] == "pending_approval"
    over = await post(client, body("100.01"))
    assert violations(over) == {"request_max"}
    assert over.json()["errors"][0]["field"] == "amount"
    assert "100.01 CNY exceeds the agent request limit of 100.00 CNY" in over.text


async def test_auto_approve_boundary_and_the_events_of_an_auto_approval(
    client: httpx.AsyncClient,
) -> None:
    version = await setup_world(client)
    auto = await created(client, body("10.00"))
    assert auto["status"] == "approved"
    assert auto["required_approvals"] == 0
    assert auto["approvals"] == []
    assert auto["policy"]["version"] == version
    assert auto["policy"]["decision"] == "auto_approved"
    assert reason_rules(auto) == {"role_auto_approve_limit"}
    history = await events(client, auto["id"])
    assert [(e["type"], e["actor"]) for e in history] == [
        ("payout.created", "agent-1"),
        ("payout.approved", "system"),
    ]
    assert history[0]["data"]["policy"] == auto["policy"]
    assert history[1]["data"]["auto_approved"] is True
    assert history[1]["data"]["policy_version"] == version

    over = await created(client, body("10.01"))
    assert over["status"] == "pending_approval"
    assert over["required_approvals"] == 1
    assert over["policy"]["decision"] == "approval_required"
    assert reason_rules(over) == {"role_auto_approve_limit"}
    assert [e["type"] for e in await events(client, over["id"])] == ["payout.created"]


async def test_daily_request_total_boundary_counts_only_live_payouts(
    client: httpx.AsyncClient,
) -> None:
    await setup_world(client)
    first = await created(client, body("100.00"))
    await created(client, body("100.00"))
    await created(client, body("99.99"))
    await created(client, body("0.01"))  # 300.00: exactly the daily limit
    over = await post(client, body("0.01"))
    assert violations(over) == {"daily_request_total"}
    # agent-1's own key hears their limit, not the amounts (which may come from payouts other
    # integrations requested for agent-1); the back office sees them.
    assert "over the agent daily limit of 300.00 CNY" in over.text
    assert "already" not in over.text
    seen_by_admin = await post(client, body("0.01"), as_requester=False)
    assert "already 300.00 CNY" in seen_by_admin.text
    # Another requester has their own total.
    await created(client, body("0.01", "agent-2"))
    # A canceled payout no longer counts: its money will never move.
    canceled = await client.post(
        f"/v1/payouts/{first['id']}/cancel", json={"operator_id": "agent-1", "reason": "typo"}
    )
    assert canceled.status_code == 200, canceled.text
    await created(client, body("100.00"))
    assert violations(await post(client, body("0.01"))) == {"daily_request_total"}


async def test_daily_total_starts_at_midnight_in_the_policy_timezone(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await setup_world(client, policy(timezone="Asia/Shanghai"))
    earlier = await created(client, body("100.00"))
    await created(client, body("100.00"))
    await created(client, body("100.00"))
    assert violations(await post(client, body("0.01"))) == {"daily_request_total"}

    zone = ZoneInfo("Asia/Shanghai")
    local_midnight = (
        datetime.now(UTC).astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    )

    async def move(created_at: datetime) -> None:
        # As if it had been created then: its policy day (limit_day) follows, and the limit
        # counters are recounted from the edited payouts.
        local_day = created_at.astimezone(zone).date()
        day_start = datetime.combine(local_day, time(0), tzinfo=zone)
        async with db(app).transaction() as session:
            await session.execute(
                update(Payout)
                .where(Payout.id == earlier["id"])
                .values(created_at=created_at, limit_day=int(day_start.timestamp()))
            )
            await PolicyRepository(session).rebuild_limit_counters()

    await move(local_midnight - timedelta(microseconds=1))  # yesterday in Shanghai
    await created(client, body("100.00"))
    await move(local_midnight)  # the first instant of today in Shanghai counts again
    assert violations(await post(client, body("0.01"))) == {"daily_request_total"}


async def test_per_ticket_max_boundary_counts_only_live_payouts(
    client: httpx.AsyncClient,
) -> None:
    await setup_world(client)
    ticket = "T-shared"
    first = await created(client, body("1000.00", "sup-1", ticket=ticket))
    await created(client, body("1000.00", "sup-2", ticket=ticket))
    await created(client, body("999.99", "sup-1", ticket=ticket))
    await created(client, body("0.01", "sup-2", ticket=ticket))  # 3000.00
    over = await post(client, body("0.01", "sup-1", ticket=ticket))
    assert violations(over) == {"per_ticket_max"}
    # The same ticket id in another ticket system is another ticket.
    other = body("0.01", "sup-1", ticket=ticket)
    other["ticket"]["system"] = "freshdesk"
    await created(client, other)
    rejected = await reject_as(client, first["id"], "fin-1", "no")
    assert rejected.status_code == 200, rejected.text
    await created(client, body("1000.00", "sup-2", ticket=ticket))


async def test_per_recipient_daily_count_boundary(client: httpx.AsyncClient) -> None:
    await setup_world(client)
    recipient = paypal(424242)
    for requester in ("agent-1", "agent-2", "sup-1"):
        await created(client, body("1.00", requester, recipient=recipient))
    over = await post(client, body("1.00", "sup-2", recipient=recipient))
    assert violations(over) == {"per_recipient_daily_count"}
    # The same person by another spelling of the account is the same recipient.
    shouting = {"type": "paypal", "account": "PAYEE424242@example.com"}
    assert violations(await post(client, body("1.00", "sup-2", recipient=shouting))) == {
        "per_recipient_daily_count"
    }


async def test_per_recipient_daily_amount_boundary(client: httpx.AsyncClient) -> None:
    await setup_world(client)
    recipient = paypal(515151)
    await created(client, body("1000.00", "sup-1", recipient=recipient))
    over = await post(client, body("500.01", "sup-2", recipient=recipient))
    assert violations(over) == {"per_recipient_daily_amount"}
    await created(client, body("500.00", "sup-2", recipient=recipient))  # 1500.00
    assert violations(await post(client, body("0.01", "sup-1", recipient=recipient))) == {
        "per_recipient_daily_amount"
    }


async def test_reason_and_currency_rules(client: httpx.AsyncClient) -> None:
    await setup_world(client)
    partner = await post(client, body("5.00", reason="partner_payment"))
    assert violations(partner) == {"reason_allowed"}
    assert (await created(client, body("5.00", "sup-1", reason="partner_payment")))["status"]
    # USD is a policy currency, but the agent role has no USD limits.
    agent_usd = await post(client, body("5.00", currency="USD"))
    assert violations(agent_usd) == {"currency_allowed"}
    assert "cannot request payouts in USD" in agent_usd.text
    supervisor_usd = await created(client, body("5.00", "sup-1", currency="USD"))
    assert supervisor_usd["status"] == "approved"
    # EUR is not a policy currency at all.
    eur = await post(client, body("5.00", "sup-1", currency="EUR"))
    assert violations(eur) == {"currency_allowed"}


async def test_operator_active_rule(client: httpx.AsyncClient) -> None:
    await setup_world(client)
    unknown = await post(client, body("5.00", "nobody"))
    assert violations(unknown) == {"operator_active"}
    assert unknown.json()["errors"][0]["field"] == "requested_by"
    disabled = await client.delete("/v1/operators/agent-2")
    assert disabled.status_code == 200, disabled.text
    # agent-2's own key does nothing now; a key naming agent-2 meets the rule.
    assert problem_code(await post(client, body("5.00", "agent-2")), 403) == "operator_disabled"
    named = await post(client, body("5.00", "agent-2"), as_requester=False)
    assert violations(named) == {"operator_active"}
    made_up_role = await client.post("/v1/operators", json={"id": "intern-1", "role": "intern"})
    assert made_up_role.status_code == 201, made_up_role.text
    undefined = await post(client, body("5.00", "intern-1"))
    assert violations(undefined) == {"operator_active"}
    assert "does not define" in undefined.text


async def test_dual_approval_boundary(client: httpx.AsyncClient) -> None:
    generous_recipients = {"count": 3, "amount": {"CNY": "50000.00"}}
    await setup_world(client, policy(per_recipient_daily=generous_recipients))
    single = await created(client, body("2000.00", "fin-1"))
    assert single["status"] == "pending_approval"
    assert single["required_approvals"] == 1
    dual = await created(client, body("2000.01", "fin-1"))
    assert dual["required_approvals"] == 2
    assert "dual_approval_over" in reason_rules(dual)
    # No dual_approval_over for the currency: never two.
    await use_policy(client, policy(dual_approval_over={}, per_recipient_daily=generous_recipients))
    assert (await created(client, body("2000.01", "fin-1")))["required_approvals"] == 1


async def test_a_forbidden_request_lists_every_violation_and_creates_nothing(
    client: httpx.AsyncClient,
) -> None:
    await setup_world(client)
    response = await post(client, body("100.01", reason="other", currency="CNY"))
    assert violations(response) == {"reason_allowed", "request_max"}
    fields = {e["code"]: e["field"] for e in response.json()["errors"]}
    assert fields == {"reason_allowed": "reason", "request_max": "amount"}
    listed = await client.get("/v1/payouts", params={"requested_by": "agent-1"})
    assert listed.json()["data"] == []


async def test_a_policy_violation_is_stored_under_its_idempotency_key(
    client: httpx.AsyncClient,
) -> None:
    await setup_world(client)
    payload = body("100.01")
    first = await post(client, payload, key="forbidden-once")
    assert violations(first) == {"request_max"}
    assert "Idempotent-Replayed" not in first.headers
    # Even after the policy would allow it, the key answers what it answered.
    await use_policy(
        client,
        policy(
            roles={
                **TEST_POLICY["roles"],
                "agent": {**TEST_POLICY["roles"]["agent"], "request_max": {"CNY": "200.00"}},
            }
        ),
    )
    replay = await post(client, payload, key="forbidden-once")
    assert replay.status_code == 422
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["content-type"].startswith("application/problem+json")
    assert replay.json() == first.json()
    reused = await post(client, body("5.00"), key="forbidden-once")
    assert reused.status_code == 422
    assert reused.json()["code"] == "idempotency_key_reused"
    # A new key is a new request, decided under the new policy.
    assert (await post(client, payload)).status_code == 201


async def test_duplicate_suspicion(client: httpx.AsyncClient) -> None:
    await setup_world(client)
    recipient = paypal(777)
    payload = body("50.00", "sup-1", ticket="T-dup", recipient=recipient)
    first = await created(client, payload)
    assert first["status"] == "approved"
    # The same ticket, recipient and amount under another key: never auto-approved.
    again = await created(client, payload)
    assert again["status"] == "pending_approval"
    assert reason_rules(again) == {"duplicate_suspected"}
    # Another amount, or another ticket, is not a duplicate.
    other_amount = body("50.01", "sup-1", ticket="T-dup", recipient=recipient)
    assert (await created(client, other_amount))["status"] == "approved"
    # A canceled first payout is no duplicate: its money never moves.
    canceled = await client.post(
        f"/v1/payouts/{again['id']}/cancel", json={"operator_id": "sup-1", "reason": "dup"}
    )
    assert canceled.status_code == 200
    await client.post(
        f"/v1/payouts/{first['id']}/cancel", json={"operator_id": "sup-1", "reason": "dup"}
    )
    assert (await created(client, payload))["status"] == "approved"
    # duplicate_window_hours 0 turns the check off.
    await use_policy(client, policy(duplicate_window_hours=0))
    assert (await created(client, payload))["status"] == "approved"


async def test_recipient_warnings_need_approval(client: httpx.AsyncClient) -> None:
    await setup_world(client)
    luhn_fails = {
        "type": "bank_card_cn",
        "account": "6222021234567890121",
        "name": "张三",
        "bank_name": "ICBC",
    }
    payout = await created(client, body("5.00", recipient=luhn_fails))
    assert payout["status"] == "pending_approval"
    assert reason_rules(payout) == {"recipient_warnings"}
    history = await events(client, payout["id"])
    assert history[0]["data"]["warnings"][0]["code"] == "checksum_mismatch"


async def test_preview_decides_without_creating(client: httpx.AsyncClient) -> None:
    version = await setup_world(client)
    auto = await client.post(
        "/v1/payouts/preview", json=body("10.00"), headers=await bearer_of(client, "agent-1")
    )
    assert auto.status_code == 200, auto.text
    assert auto.json() == {
        "decision": "auto_approved",
        "status": "approved",
        "required_approvals": 0,
        "policy": {
            "version": version,
            "decision": "auto_approved",
            "reasons": [auto.json()["policy"]["reasons"][0]],
        },
        "errors": [],
        "warnings": [],
    }
    pending = (await client.post("/v1/payouts/preview", json=body("1000.00", "fin-1"))).json()
    assert (pending["status"], pending["required_approvals"]) == ("pending_approval", 1)
    forbidden = (await client.post("/v1/payouts/preview", json=body("100.01"))).json()
    assert forbidden["decision"] == "forbidden"
    assert forbidden["status"] is None
    assert [e["code"] for e in forbidden["errors"]] == ["request_max"]
    invalid = await client.post(
        "/v1/payouts/preview", json=body("5.00", recipient={"type": "paypal", "account": "x"})
    )
    assert invalid.status_code == 422
    assert invalid.json()["code"] == "invalid_recipient"
    assert (await client.get("/v1/payouts")).json()["data"] == []


async def test_role_changes_apply_to_later_decisions_only(client: httpx.AsyncClient) -> None:
    await setup_world(client)
    before = await created(client, body("50.00", "agent-1"))
    assert before["status"] == "pending_approval"
    promoted = await client.patch("/v1/operators/agent-1", json={"role": "supervisor"})
    assert promoted.status_code == 200, promoted.text
    assert (await client.get(f"/v1/payouts/{before['id']}")).json()["policy"] == before["policy"]
    after = await created(client, body("50.00", "agent-1"))
    assert after["status"] == "approved"
    assert "supervisor" in after["policy"]["reasons"][0]["message"]


async def test_payouts_record_the_policy_version_they_were_decided_under(
    client: httpx.AsyncClient,
) -> None:
    first_version = await setup_world(client)
    old = await created(client, body("50.00", "sup-1"))
    new_version = await use_policy(client, policy(duplicate_window_hours=1))
    new = await created(client, body("50.00", "sup-1"))
    assert new_version == first_version + 1
    assert (old["policy"]["version"], new["policy"]["version"]) == (first_version, new_version)
    assert (await client.get(f"/v1/payouts/{old['id']}")).json()["policy"]["version"] == (
        first_version
    )


async def test_the_readme_worked_example(client: httpx.AsyncClient) -> None:
    """The README's worked example, step by step, on its example policy."""
    for operator_id, role in (
        ("agent-17", "agent"),
        ("agent-2", "agent"),
        ("sup-2", "supervisor"),
        ("fin-1", "finance"),
        ("fin-2", "finance"),
    ):
        assert (
            await client.post("/v1/operators", json={"id": operator_id, "role": role})
        ).is_success
        await operator_key(client, operator_id)  # each person requests and approves with it
    await use_policy(client, copy.deepcopy(DUAL_APPROVAL_EXAMPLE))
    alipay = {"type": "alipay", "account": "13800138000", "name": "张三"}

    def ask(amount: str, requester: str = "agent-17", **more: Any) -> dict[str, Any]:
        return body(amount, requester, ticket="48213", recipient=alipay, **more)

    first = await created(client, ask("120.00"))
    assert (first["status"], first["required_approvals"]) == ("pending_approval", 1)
    assert reason_rules(first) == {"role_auto_approve_limit"}
    assert problem_code(await approve(client, first["id"], "agent-17"), 403) == (
        "self_approval_forbidden"
    )
    assert problem_code(await approve(client, first["id"], "agent-2"), 403) == (
        "approval_limit_exceeded"
    )
    assert (await approve(client, first["id"], "sup-2")).json()["status"] == "approved"
    again = await created(client, ask("120.00"))
    assert "duplicate_suspected" in reason_rules(again)
    assert violations(await post(client, ask("500.01"))) == {"request_max"}
    assert violations(await post(client, ask("30.00", reason="partner_payment"))) == {
        "reason_allowed"
    }
    large = await created(client, body("12000.00", "fin-1", ticket="48213"))
    assert large["required_approvals"] == 2
    assert reason_rules(large) == {"role_auto_approve_limit", "dual_approval_over"}
    assert (await approve(client, large["id"], "fin-2")).json()["status"] == "pending_approval"
    assert problem_code(await approve(client, large["id"], "fin-2"), 409) == "already_approved"
    assert (await approve(client, large["id"], "sup-2")).json()["status"] == "approved"
