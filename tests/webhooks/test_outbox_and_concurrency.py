"""The outbox on the hot path (one lookup, one insert, nothing cached) and the ordering rule
with several senders claiming from the same tables at once."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from typing import Any

import httpx
from sqlalchemy import event

from payoutsvc.db.base import utcnow
from payoutsvc.main import create_app
from payoutsvc.payouts.events import GENESIS_HASH, NewEvent
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.outbox import enqueue_deliveries
from payoutsvc.webhooks.sender import WebhookSender
from tests.conftest import ADMIN_KEY
from tests.helpers import create_operator, create_payout, eventually, new_integration_client
from tests.webhooks.conftest import create_endpoint
from tests.webhooks.receiver import (
    Received,
    Receiver,
    Reply,
    assert_each_waited_for_the_previous,
)


def _event(integration_id: str, payout_id: str, sequence: int, type_: str) -> NewEvent:
    return NewEvent(
        payout_id=payout_id,
        integration_id=integration_id,
        sequence=sequence,
        type=type_,
        actor="agent-17",
        data={},
        at=utcnow(),
        prev_hash=GENESIS_HASH,
        payout_snapshot={"id": payout_id, "status": type_.removeprefix("payout.")},
    )


async def test_enqueue_uses_one_lookup_and_one_insert_for_a_batch(
    client: httpx.AsyncClient, runtime: Runtime, receiver: Receiver
) -> None:
    other = await new_integration_client(client, "jira", ["payouts:write"])
    try:
        mine = await create_endpoint(client, receiver.url("/a"), ["payout.*"])
        mine_disabled = await create_endpoint(client, receiver.url("/b"), ["*"])
        await client.patch(f"/v1/webhook-endpoints/{mine_disabled['id']}", json={"enabled": False})
        theirs = await create_endpoint(other, receiver.url("/c"), ["payout.succeeded"])
    finally:
        await other.aclose()
    events = [
        _event(mine["integration_id"], "po_1", 1, "payout.created"),
        _event(mine["integration_id"], "po_1", 2, "payout.approved"),
        _event(theirs["integration_id"], "po_2", 1, "payout.created"),
        _event(theirs["integration_id"], "po_2", 2, "payout.succeeded"),
    ]
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "webhook" in statement:
            statements.append(statement.split()[0].upper())

    engine = runtime.db.write_engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        async with runtime.db.transaction() as session:
            await enqueue_deliveries(session, events)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert statements == ["SELECT", "INSERT"]

    by_endpoint: dict[str, list[str]] = defaultdict(list)
    for endpoint in (mine, mine_disabled, theirs):
        response = await client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries")
        by_endpoint[endpoint["id"]] = sorted(d["event_id"] for d in response.json()["data"])
    assert by_endpoint[mine["id"]] == sorted(e.id for e in events[:2])
    assert by_endpoint[mine_disabled["id"]] == []
    assert by_endpoint[theirs["id"]] == [events[3].id]


async def test_several_senders_keep_each_payouts_events_in_order(
    client: httpx.AsyncClient, runtime: Runtime, receiver: Receiver
) -> None:
    jitter = random.Random(7)

    def answer(_request: Received, _index: int) -> Reply:
        return Reply(204, delay=jitter.uniform(0, 0.03))

    receiver.on("/many", answer)
    await create_endpoint(client, receiver.url("/many"), ["payout.*"])
    await create_operator(client, "agent-17", "agent")
    await create_operator(client, "sup-2", "supervisor")
    expected: dict[str, list[str]] = {}
    for index in range(8):
        created = await create_payout(client, amount=f"{10 + index}.00")
        assert created.status_code == 201, created.text
        payout_id = created.json()["id"]
        cancel = await client.post(
            f"/v1/payouts/{payout_id}/cancel", json={"operator_id": "sup-2", "reason": "dup"}
        )
        assert cancel.status_code == 200, cancel.text
        history = (await client.get(f"/v1/payouts/{payout_id}/events")).json()["data"]
        expected[payout_id] = [e["id"] for e in history]
    total = sum(len(ids) for ids in expected.values())

    stop = asyncio.Event()
    senders = [WebhookSender(runtime, batch_size=3, concurrency=3) for _ in range(3)]
    tasks = [asyncio.create_task(s.run(stop)) for s in senders]
    try:
        await eventually(
            lambda: len(receiver.received("/many")) >= total, timeout=20, what="every event"
        )
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    by_payout: dict[str, list[Received]] = defaultdict(list)
    for request in receiver.received("/many"):
        by_payout[json.loads(request.body)["data"]["payout"]["id"]].append(request)
    got = {p: [r.headers["webhook-id"] for r in requests] for p, requests in by_payout.items()}
    assert got == expected  # every event once, each payout's in sequence order
    for requests in by_payout.values():
        assert_each_waited_for_the_previous(receiver, requests)


async def test_the_app_with_its_worker_on_delivers_by_itself(
    settings: Any, receiver: Receiver
) -> None:
    """`payoutsvc serve` (worker on) runs the sender: no test code drives it here."""
    application = create_app(settings.model_copy(update={"run_worker": True}))
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as client,
    ):
        await create_endpoint(client, receiver.url("/worker"), ["payout.created"])
        await create_operator(client, "agent-17", "agent")
        created = await create_payout(client)
        assert created.status_code == 201, created.text
        await eventually(lambda: bool(receiver.received("/worker")), what="the webhook")
    (request,) = receiver.received("/worker")
    assert json.loads(request.body)["data"]["payout"]["id"] == created.json()["id"]
