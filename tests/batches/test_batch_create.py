"""POST /v1/payout-batches: all or nothing, idempotent, each item decided as if alone."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.api_support import assert_problem
from tests.batches.support import BATCHES, item, payout_count, post_batch
from tests.helpers import bearer_of
from tests.policy.support import TEST_POLICY, body, paypal, policy, reason_rules, setup_world


@pytest.fixture
async def world(client: httpx.AsyncClient) -> None:
    await setup_world(client, TEST_POLICY)


async def test_a_batch_creates_one_payout_per_item_decided_by_the_policy(
    client: httpx.AsyncClient, world: None
) -> None:
    # agent: auto-approved up to 10.00, so 5.00 is approved and 50.00 waits for approval.
    created = await post_batch(client, [item("row-1", "5.00"), item("row-2", "50.00")])
    assert created.status_code == 201, created.text
    batch = created.json()
    assert batch["id"].startswith("pb_")
    assert batch["status"] == "open"
    assert batch["counts"] == {"approved": 1, "pending_approval": 1}
    assert batch["total_minor"] == {"CNY": 5500}
    assert [i["item_key"] for i in batch["items"]] == ["row-1", "row-2"]
    first, second = [
        (await client.get(f"/v1/payouts/{i['payout_id']}")).json() for i in batch["items"]
    ]
    assert (first["status"], first["amount"]) == ("approved", "5.00")
    assert (second["status"], second["amount"]) == ("pending_approval", "50.00")
    shown = await client.get(f"{BATCHES}/{batch['id']}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["counts"] == batch["counts"]
    assert shown.json()["items"] == batch["items"]


async def test_a_repeated_item_in_one_batch_is_suspected_as_a_duplicate(
    client: httpx.AsyncClient, world: None
) -> None:
    """Two items paying the same ticket, recipient and amount: the second is held for
    approval as it would be if created alone after the first (the batch writes its payouts
    together, so the duplicate check must see the ones planned before it)."""
    same = {"ticket": "T-twice", "recipient": paypal(4242)}
    created = await post_batch(
        client,
        [item("row-1", "5.00", **same), item("row-2", "5.00", **same), item("row-3", "5.00")],
    )
    assert created.status_code == 201, created.text
    first, second, other = [
        (await client.get(f"/v1/payouts/{i['payout_id']}")).json() for i in created.json()["items"]
    ]
    assert first["status"] == "approved"
    assert second["status"] == "pending_approval"
    assert reason_rules(second) == {"duplicate_suspected"}
    assert other["status"] == "approved"


async def test_one_bad_item_creates_nothing_and_every_bad_item_is_named(
    client: httpx.AsyncClient, world: None
) -> None:
    items = [
        item("row-0"),
        item("row-1", recipient={"type": "alipay", "account": "12", "name": "张三"}),
        item("row-2"),
        item("row-3", amount="1.001"),
        item("row-4", amount="500.00"),  # over the agent's request_max: a policy refusal
    ]
    refused = await post_batch(client, items)
    problem = assert_problem(refused, 422, "validation_failed", "items[1].recipient.account")
    fields = {e["field"] for e in problem["errors"]}
    assert "items[3].amount" in fields
    policy_refused = {e["field"] for e in problem["errors"] if e["code"] == "request_max"}
    assert "items[4].amount" in policy_refused
    assert not any(f.startswith(("items[0]", "items[2]")) for f in fields)
    assert await payout_count(client) == 0
    listed = await client.get(BATCHES)
    assert listed.json()["data"] == []


async def test_duplicate_item_keys_and_too_many_items_are_refused(
    client: httpx.AsyncClient, world: None
) -> None:
    duplicate = await post_batch(client, [item("a"), item("a")])
    assert_problem(duplicate, 422, "validation_failed", "items[1].item_key", "duplicate")
    too_many = await client.post(
        BATCHES,
        json={"items": [item(f"r{n}") for n in range(1001)]},
        headers={"Idempotency-Key": "big", **await bearer_of(client, "agent-1")},
    )
    assert_problem(too_many, 422, "validation_failed", "items")
    missing_key = await client.post(BATCHES, json={"items": [item("a")]})
    assert_problem(missing_key, 400, "idempotency_key_missing")
    assert await payout_count(client) == 0


async def test_a_replayed_batch_creates_nothing_new_and_answers_the_same(
    client: httpx.AsyncClient, world: None
) -> None:
    items = [item("row-1"), item("row-2", "50.00")]
    first = await post_batch(client, items, key="batch-7")
    assert first.status_code == 201, first.text
    again = await post_batch(client, items, key="batch-7")
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert await payout_count(client) == 2
    other = await post_batch(client, [item("row-1")], key="batch-7")
    assert_problem(other, 422, "idempotency_key_reused")
    assert await payout_count(client) == 2
    assert len((await client.get(BATCHES)).json()["data"]) == 1


async def test_a_csv_upload_is_a_batch_with_dotted_columns(
    client: httpx.AsyncClient, world: None
) -> None:
    csv_text = (
        "\ufeffitem_key,ticket.system,ticket.id,reason,amount,currency,recipient.type,"
        "recipient.account,requested_by,metadata.order_id\n"
        "r1,zendesk,T-1,refund,5.00,CNY,paypal,a@example.com,agent-1,9931\n"
        "r2,zendesk,T-2,refund,6.00,CNY,paypal,b@example.com,agent-1,\n"
    )
    headers = {
        "Idempotency-Key": "csv-1",
        "Content-Type": "text/csv",
        **await bearer_of(client, "agent-1"),
    }
    created = await client.post(
        BATCHES, content=csv_text.encode(), headers=headers, params={"description": "csv"}
    )
    assert created.status_code == 201, created.text
    batch = created.json()
    assert (batch["source"], batch["description"], batch["item_count"]) == ("csv", "csv", 2)
    payout = (await client.get(f"/v1/payouts/{batch['items'][0]['payout_id']}")).json()
    assert payout["metadata"] == {"order_id": "9931"}
    assert payout["ticket"]["id"] == "T-1"
    second = (await client.get(f"/v1/payouts/{batch['items'][1]['payout_id']}")).json()
    assert second["metadata"] == {}

    bad = csv_text.replace("b@example.com", "not-an-email").replace("csv-1", "x")
    headers["Idempotency-Key"] = "csv-2"
    refused = await client.post(BATCHES, content=bad.encode(), headers=headers)
    assert_problem(refused, 422, "validation_failed", "items[1].recipient.account")
    unknown = csv_text.replace("metadata.order_id", "colour")
    headers["Idempotency-Key"] = "csv-3"
    refused = await client.post(BATCHES, content=unknown.encode(), headers=headers)
    assert_problem(refused, 422, "validation_failed", "items[0].colour", "unknown_field")
    assert await payout_count(client) == 2


async def test_a_csv_upload_may_be_10_mib_and_no_more(
    client: httpx.AsyncClient, world: None
) -> None:
    headers = {"Idempotency-Key": "big", "Content-Type": "text/csv"}
    # Over the general 256 KiB limit but within 10 MiB: read and judged (no rows, 422).
    padding = "item_key\n" + "\n" * (1024 * 1024)
    judged = await client.post(BATCHES, content=padding.encode(), headers=headers)
    assert_problem(judged, 422, "validation_failed")
    too_big = await client.post(BATCHES, content=b"x" * (10 * 1024 * 1024 + 1), headers=headers)
    assert_problem(too_big, 413, "payload_too_large")
    # Other batch routes keep the general limit.
    approve = await client.post(
        f"{BATCHES}/pb_x/approve",
        content=b"{" + b" " * (300 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert_problem(approve, 413, "payload_too_large")


async def test_the_requesters_daily_cap_holds_across_a_batch_and_parallel_creates(
    client: httpx.AsyncClient,
) -> None:
    """sup-1 may request 300.00 a day here. A 10 x 25.00 batch and 10 single 25.00 creates
    run at once: whatever the interleaving, at most 300.00 is accepted, and the batch is
    all-or-nothing (all 10 items, or none when the singles took the room first)."""
    document = policy(
        per_ticket_max={"CNY": "100000.00"},
        per_recipient_daily={"count": None, "amount": {"CNY": "100000.00"}},
        duplicate_window_hours=0,
    )
    document["roles"]["supervisor"]["daily_request_total"] = {"CNY": "300.00"}
    await setup_world(client, document)
    headers = await bearer_of(client, "sup-1")

    async def single(n: int) -> httpx.Response:
        return await client.post(
            "/v1/payouts",
            json=body("25.00", "sup-1", recipient=paypal(1000 + n)),
            headers={"Idempotency-Key": uuid.uuid4().hex, **headers},
        )

    batch_items = [item(f"r{n}", "25.00", "sup-1") for n in range(10)]
    answers = await asyncio.gather(
        post_batch(client, batch_items, as_operator="sup-1"), *(single(n) for n in range(10))
    )
    batch, singles = answers[0], answers[1:]
    accepted_singles = sum(1 for a in singles if a.status_code == 201)
    for refused in (a for a in singles if a.status_code != 201):
        assert refused.json()["code"] == "policy_violation", refused.text
    batch_count = 10 if batch.status_code == 201 else 0
    if batch.status_code != 201:
        assert_problem(batch, 422, "validation_failed")
    listed = (await client.get("/v1/payouts", params={"limit": 200})).json()["data"]
    assert len(listed) == accepted_singles + batch_count
    assert sum(p["amount_minor"] for p in listed) <= 300_00
    # Serialised checks fill the cap: 12 x 25.00 (or all 10 singles when the batch lost).
    assert len(listed) in (12, 10), [a.text for a in answers]
