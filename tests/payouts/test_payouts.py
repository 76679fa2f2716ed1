"""Reading, listing, history and cancelling payouts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.api_support import (
    NEW_PAYOUT_STATUSES,
    assert_problem,
    new_payout,
    post_payout,
)
from tests.helpers import create_operator, payout_body


def _ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [p["id"] for p in response.json()["data"]]


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


@pytest.fixture
async def operators(client: httpx.AsyncClient) -> None:
    await create_operator(client, "agent-17", "agent")
    await create_operator(client, "agent-18", "agent")
    await create_operator(client, "sup-2", "supervisor")


async def test_create_answers_the_full_payout_object(
    client: httpx.AsyncClient, operators: None
) -> None:
    created = await post_payout(client, payout_body())
    assert created.status_code == 201, created.text
    payout = created.json()
    assert payout["id"].startswith("po_")
    assert payout["status"] in NEW_PAYOUT_STATUSES
    assert payout["ticket"] == payout_body()["ticket"]
    assert (payout["reason"], payout["amount"], payout["amount_minor"], payout["currency"]) == (
        "refund",
        "12.50",
        1250,
        "CNY",
    )
    assert payout["recipient"]["type"] == "alipay"
    assert payout["recipient"]["account_masked"] == "138****8000"
    assert payout["recipient"]["name"] == "张*"
    assert payout["requested_by"] == "agent-17"
    assert payout["metadata"] == {"order_id": "9931"}
    assert payout["description"] == "Price difference refund for order 9931"
    # Auto-approved payouts need no approval; waiting ones at least one.
    assert payout["required_approvals"] >= (1 if payout["status"] == "pending_approval" else 0)
    assert payout["approvals"] == []
    assert payout["gateway"] == "sandbox"
    assert payout["attempts"] == 0
    assert payout["failure"] is None
    assert payout["gateway_reference"] is None
    created_at = _parse(payout["created_at"])
    assert created_at.tzinfo is not None
    assert abs(datetime.now(UTC) - created_at) < timedelta(minutes=1)
    assert payout["created_at"].endswith("Z")


async def test_get_by_id_and_unknown_ids(client: httpx.AsyncClient, operators: None) -> None:
    payout = await new_payout(client)
    fetched = await client.get(f"/v1/payouts/{payout['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == payout
    for unknown in ("po_00000000000000000000000000", "nothing", "evt_x"):
        assert_problem(await client.get(f"/v1/payouts/{unknown}"), 404, "not_found")
        assert_problem(await client.get(f"/v1/payouts/{unknown}/events"), 404, "not_found")


async def test_list_filters(client: httpx.AsyncClient, operators: None) -> None:
    a = await new_payout(client, 1, ticket={"system": "zendesk", "id": "1"})
    b = await new_payout(
        client, 2, ticket={"system": "zendesk", "id": "2"}, requested_by="agent-18"
    )
    c = await new_payout(client, 3, ticket={"system": "freshdesk", "id": "1"}, requested_by="sup-2")
    canceled = await client.post(f"/v1/payouts/{b['id']}/cancel", json={"operator_id": "sup-2"})
    assert canceled.status_code == 200, canceled.text

    async def listed(**query: Any) -> set[str]:
        return set(_ids(await client.get("/v1/payouts", params=query)))

    assert await listed() == {a["id"], b["id"], c["id"]}
    assert await listed(ticket_system="zendesk") == {a["id"], b["id"]}
    assert await listed(ticket_id="1") == {a["id"], c["id"]}
    assert await listed(ticket_system="zendesk", ticket_id="1") == {a["id"]}
    assert await listed(ticket_system="jira") == set()
    assert await listed(requested_by="agent-18") == {b["id"]}
    assert await listed(requested_by="sup-2", ticket_id="1") == {c["id"]}
    assert await listed(status="canceled") == {b["id"]}
    for status in {a["status"], c["status"]}:
        assert await listed(status=status) == {p["id"] for p in (a, c) if p["status"] == status}
    assert await listed(status="succeeded") == set()


async def test_list_by_creation_time(client: httpx.AsyncClient, operators: None) -> None:
    payouts = [await new_payout(client, i) for i in range(3)]
    middle = payouts[1]
    pivot = middle["created_at"]

    since = await client.get("/v1/payouts", params={"created_gte": pivot})
    assert middle["id"] in _ids(since)
    assert all(_parse(p["created_at"]) >= _parse(pivot) for p in since.json()["data"])
    before = await client.get("/v1/payouts", params={"created_lt": pivot})
    assert middle["id"] not in _ids(before)
    assert all(_parse(p["created_at"]) < _parse(pivot) for p in before.json()["data"])
    assert set(_ids(since)) | set(_ids(before)) == {p["id"] for p in payouts}

    # The same instant written with an offset, and a window around everything.
    shifted = _parse(pivot).astimezone(ZoneInfo("Asia/Shanghai")).isoformat()
    assert "+08:00" in shifted
    in_shanghai = await client.get("/v1/payouts", params={"created_gte": shifted})
    assert set(_ids(in_shanghai)) == set(_ids(since))
    earliest = _parse(payouts[0]["created_at"]) - timedelta(seconds=1)
    latest = _parse(payouts[-1]["created_at"]) + timedelta(seconds=1)
    window = {"created_gte": earliest.isoformat(), "created_lt": latest.isoformat()}
    assert len(_ids(await client.get("/v1/payouts", params=window))) == 3
    future = {"created_gte": (latest + timedelta(days=1)).isoformat()}
    assert _ids(await client.get("/v1/payouts", params=future)) == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "paid"}, "status"),
        ({"created_gte": "yesterday"}, "created_gte"),
        ({"created_lt": "2024-13-01T00:00:00Z"}, "created_lt"),
    ],
)
async def test_invalid_list_parameters(
    client: httpx.AsyncClient, query: dict[str, Any], field: str
) -> None:
    response = await client.get("/v1/payouts", params=query)
    assert_problem(response, 422, "validation_failed", field=field)


@pytest.mark.parametrize("cursor", ["!!!", "Zm9v", "", "po_plain-id", "%%%"])
async def test_invalid_cursor(client: httpx.AsyncClient, cursor: str) -> None:
    response = await client.get("/v1/payouts", params={"cursor": cursor})
    assert_problem(response, 422, "invalid_cursor", field="cursor")


async def test_cursor_pagination_newest_first(client: httpx.AsyncClient, operators: None) -> None:
    created = [await new_payout(client, i) for i in range(5)]
    newest_first = [p["id"] for p in reversed(created)]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await client.get("/v1/payouts", params=params)).json()
        seen += [p["id"] for p in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["data"]) == 2
    assert seen == newest_first
    assert pages == 3
    assert _ids(await client.get("/v1/payouts", params={"limit": 200})) == newest_first
    assert (await client.get("/v1/payouts", params={"limit": 5})).json()["next_cursor"] is None
    default = (await client.get("/v1/payouts")).json()
    assert [p["id"] for p in default["data"]] == newest_first
    assert default["next_cursor"] is None
    # A cursor keeps working with the same filters and stays inside them.
    first = (await client.get("/v1/payouts", params={"limit": 1, "ticket_id": "48213"})).json()
    rest = await client.get(
        "/v1/payouts", params={"limit": 10, "ticket_id": "48213", "cursor": first["next_cursor"]}
    )
    assert _ids(rest) == newest_first[1:]


async def test_events_oldest_first_with_sequence_and_actor(
    client: httpx.AsyncClient, operators: None
) -> None:
    payout = await new_payout(client)
    canceled = await client.post(
        f"/v1/payouts/{payout['id']}/cancel",
        json={"operator_id": "sup-2", "reason": "customer withdrew"},
    )
    assert canceled.status_code == 200, canceled.text
    response = await client.get(f"/v1/payouts/{payout['id']}/events")
    assert response.status_code == 200
    events = response.json()["data"]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "payout.created"
    assert events[0]["actor"] == "agent-17"
    assert events[-1]["type"] == "payout.canceled"
    assert events[-1]["actor"] == "sup-2"
    assert events[-1]["data"]["reason"] == "customer withdrew"
    assert all(e["id"].startswith("evt_") for e in events)
    times = [_parse(e["at"]) for e in events]
    assert times == sorted(times)
    assert set(events[0]) == {"id", "type", "sequence", "actor", "at", "data"}


@pytest.mark.parametrize(
    ("amount", "requester"),
    [("12.50", "agent-17"), ("120.00", "agent-17"), ("300.00", "sup-2")],
    ids=["auto-approvable", "needs-approval", "supervisor"],
)
async def test_cancel_then_cancel_again(
    client: httpx.AsyncClient, operators: None, amount: str, requester: str
) -> None:
    payout = await new_payout(client, amount=amount, requested_by=requester)
    canceled = await client.post(
        f"/v1/payouts/{payout['id']}/cancel", json={"operator_id": "agent-18", "reason": "dup"}
    )
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    assert canceled.json()["id"] == payout["id"]
    assert _parse(canceled.json()["updated_at"]) >= _parse(payout["updated_at"])
    assert (await client.get(f"/v1/payouts/{payout['id']}")).json() == canceled.json()
    again = await client.post(
        f"/v1/payouts/{payout['id']}/cancel", json={"operator_id": "agent-18"}
    )
    problem = assert_problem(again, 409, "invalid_status_transition")
    assert "canceled" in problem["detail"]


async def test_cancel_needs_a_known_active_operator(
    client: httpx.AsyncClient, operators: None
) -> None:
    payout = await new_payout(client)
    path = f"/v1/payouts/{payout['id']}/cancel"
    unknown = await client.post(path, json={"operator_id": "ghost"})
    assert_problem(unknown, 422, "unknown_operator", field="operator_id")
    assert (await client.delete("/v1/operators/agent-18")).status_code == 200
    disabled = await client.post(path, json={"operator_id": "agent-18"})
    assert_problem(disabled, 403, "operator_disabled", field="operator_id")
    assert (await client.get(f"/v1/payouts/{payout['id']}")).json()["status"] == payout["status"]
    assert_problem(await client.post(path, json={}), 422, "validation_failed", field="operator_id")
    assert_problem(
        await client.post(path, json={"operator_id": "sup-2", "comment": "x"}),
        422,
        "validation_failed",
        field="comment",
        field_code="unknown_field",
    )
    assert_problem(
        await client.post("/v1/payouts/po_missing/cancel", json={"operator_id": "sup-2"}),
        404,
        "not_found",
    )


async def test_unknown_or_disabled_requester_is_refused(
    client: httpx.AsyncClient, operators: None
) -> None:
    unknown = await post_payout(client, payout_body(requested_by="ghost"))
    problem = assert_problem(unknown, 422, {"unknown_operator", "policy_violation"})
    if problem["code"] == "unknown_operator":
        assert {e["field"] for e in problem["errors"]} == {"requested_by"}

    assert (
        await client.patch("/v1/operators/agent-18", json={"disabled": True})
    ).status_code == 200
    disabled = await post_payout(client, payout_body(requested_by="agent-18"))
    assert disabled.status_code in (403, 422), disabled.text
    assert_problem(disabled, disabled.status_code, {"operator_disabled", "policy_violation"})
    assert (await client.get("/v1/payouts")).json()["data"] == []
