"""Webhook delivery end to end: real payouts, the real sender, a real receiver on loopback,
signatures checked with the ``standardwebhooks`` library."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from payoutsvc.db.base import utcnow
from payoutsvc.payouts.status import PayoutStatus
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.sender import WebhookSender
from tests.helpers import (
    create_operator,
    create_payout,
    eventually,
    new_integration_client,
    walk,
)
from tests.webhooks.conftest import (
    create_endpoint,
    deliveries_of,
    pump,
    sender_for,
)
from tests.webhooks.receiver import (
    Received,
    Receiver,
    Reply,
    ScriptedServer,
    always,
    assert_each_waited_for_the_previous,
    first_then,
)

FULL_ACCOUNT = "13800138000"


@pytest.fixture
async def operators(client: httpx.AsyncClient) -> None:
    await create_operator(client, "agent-17", "agent")
    await create_operator(client, "sup-2", "supervisor")


async def new_payout(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await create_payout(client, **overrides)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def events_of(client: httpx.AsyncClient, payout_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/payouts/{payout_id}/events")
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def advance(runtime: Runtime, payout_id: str, *targets: PayoutStatus) -> None:
    """Move a payout along the lifecycle the way the approval flow and executor do."""
    await walk(runtime, payout_id, *targets, actor="sup-2")


async def approve_if_pending(client: httpx.AsyncClient, runtime: Runtime, payout_id: str) -> None:
    current = (await client.get(f"/v1/payouts/{payout_id}")).json()["status"]
    if current == "pending_approval":
        await advance(runtime, payout_id, PayoutStatus.APPROVED)


def verified(secret: str, request: Received) -> dict[str, Any]:
    """The body, after ``standardwebhooks`` accepted its signature (raises otherwise)."""
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


async def test_every_event_of_a_payouts_life_arrives_signed_and_in_order(
    client: httpx.AsyncClient, runtime: Runtime, receiver: Receiver, operators: None
) -> None:
    endpoint = await create_endpoint(client, receiver.url("/life"), ["payout.*"])
    payout = await new_payout(client)
    await approve_if_pending(client, runtime, payout["id"])
    await advance(runtime, payout["id"], PayoutStatus.PROCESSING, PayoutStatus.SUCCEEDED)
    history = await events_of(client, payout["id"])
    assert [e["type"] for e in history][-3:] == [
        "payout.approved",
        "payout.processing",
        "payout.succeeded",
    ]
    # Every answer takes a while: were order not enforced, later events would be sent
    # before earlier ones were answered.
    receiver.on("/life", always(204, delay=0.1))

    stop = asyncio.Event()
    sender = WebhookSender(runtime)
    running = asyncio.create_task(sender.run(stop))
    try:
        await eventually(lambda: len(receiver.received("/life")) >= len(history), what="all events")
    finally:
        stop.set()
        await running

    received = receiver.received("/life")
    assert [r.headers["webhook-id"] for r in received] == [e["id"] for e in history]
    assert_each_waited_for_the_previous(receiver, received)
    bodies = [verified(endpoint["secret"], r) for r in received]
    assert [b["type"] for b in bodies] == [e["type"] for e in history]
    assert [b["data"]["sequence"] for b in bodies] == [e["sequence"] for e in history]
    assert [b["data"]["payout"]["status"] for b in bodies][-1] == "succeeded"
    assert bodies[-1]["data"]["payout"]["id"] == payout["id"]
    for body, event in zip(bodies, history, strict=True):
        assert body["timestamp"] == event["at"]
    for request in received:
        assert request.headers["webhook-signature"].startswith("v1,")
        assert request.headers["content-type"] == "application/json"
        assert FULL_ACCOUNT not in request.body.decode()
    assert bodies[0]["data"]["payout"]["recipient"]["account_masked"] == "138****8000"

    log = await deliveries_of(client, endpoint["id"], payout_id=payout["id"])
    assert {d["status"] for d in log} == {"delivered"}
    assert sorted(d["sequence"] for d in log) == [e["sequence"] for e in history]
    assert all(d["attempts"] == 1 and d["last_status_code"] == 204 for d in log)


async def test_a_failing_receiver_gets_the_same_webhook_id_until_it_answers_2xx(
    client: httpx.AsyncClient, receiver: Receiver, sender: WebhookSender, operators: None
) -> None:
    receiver.on(
        "/flaky",
        first_then([Reply(500, body=b"database down"), Reply(502)], Reply(200, body=b"thanks")),
    )
    endpoint = await create_endpoint(client, receiver.url("/flaky"), ["payout.created"])
    payout = await new_payout(client)

    await pump(sender, lambda: len(receiver.received("/flaky")) >= 3)
    (delivery,) = await deliveries_of(client, endpoint["id"])
    await eventually(
        lambda: _status_is(client, delivery["id"], "delivered"), what="delivery recorded"
    )
    # Delivered: nothing is due any more, and nothing more is sent.
    assert await sender.run_once() == 0
    received = receiver.received("/flaky")
    assert len(received) == 3
    created_event = (await events_of(client, payout["id"]))[0]
    assert {r.headers["webhook-id"] for r in received} == {created_event["id"]}
    assert len({r.body for r in received}) == 1  # the exact same body each time
    for request in received:
        verified(endpoint["secret"], request)

    detail = (await client.get(f"/v1/webhook-deliveries/{delivery['id']}")).json()
    assert detail["status"] == "delivered"
    assert detail["attempts"] == 3
    assert detail["last_status_code"] == 200
    assert detail["last_response_excerpt"] == "thanks"
    assert detail["next_attempt_at"] is None
    assert detail["payload"] == json.loads(received[0].body)
    history = detail["attempt_history"]
    assert [a["status_code"] for a in history] == [500, 502, 200]
    assert [a["attempt"] for a in history] == [1, 2, 3]
    assert history[0]["error"] == "HTTP 500"
    assert history[0]["response_excerpt"] == "database down"
    endpoint_now = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
    assert endpoint_now["failing_since"] is None  # the success ended the failing streak


async def _status_is(client: httpx.AsyncClient, delivery_id: str, status: str) -> bool:
    response = await client.get(f"/v1/webhook-deliveries/{delivery_id}")
    return bool(response.json()["status"] == status)


async def test_a_slow_receiver_times_out_and_is_retried(
    client: httpx.AsyncClient, runtime: Runtime, receiver: Receiver, operators: None
) -> None:
    receiver.on("/slow", first_then([Reply(delay=1.0)]))
    endpoint = await create_endpoint(client, receiver.url("/slow"), ["payout.created"])
    await new_payout(client)
    sender = sender_for(runtime, webhook_timeout_seconds=0.3)
    try:
        await pump(sender, lambda: len(receiver.received("/slow")) >= 2)
        (delivery,) = await deliveries_of(client, endpoint["id"])
        await eventually(lambda: _status_is(client, delivery["id"], "delivered"))
    finally:
        await sender.aclose()
    detail = (await client.get(f"/v1/webhook-deliveries/{delivery['id']}")).json()
    first, second = detail["attempt_history"]
    assert first["status_code"] is None
    assert first["error"].startswith("timeout after 0.3")
    assert 250 <= first["latency_ms"] < 1500
    assert second["status_code"] == 204
    ids = {r.headers["webhook-id"] for r in receiver.received("/slow")}
    assert len(ids) == 1


async def test_retry_after_is_honoured_on_503(
    client: httpx.AsyncClient, receiver: Receiver, sender: WebhookSender, operators: None
) -> None:
    receiver.on("/busy", first_then([Reply(503, headers={"Retry-After": "1"})]))
    endpoint = await create_endpoint(client, receiver.url("/busy"), ["payout.created"])
    await new_payout(client)
    await pump(sender, lambda: len(receiver.received("/busy")) >= 1)
    (delivery,) = await deliveries_of(client, endpoint["id"])
    assert delivery["status"] == "pending"
    assert delivery["last_status_code"] == 503
    await pump(sender, lambda: len(receiver.received("/busy")) >= 2)
    first, second = receiver.received("/busy")
    # The schedule alone would retry after ~0.05 s; the receiver asked for 1 s.
    assert second.at - first.at >= 0.9


async def test_a_101_answer_is_a_failed_attempt_and_is_retried_on_a_new_connection(
    client: httpx.AsyncClient, sender: WebhookSender, operators: None
) -> None:
    """A receiver that switches protocols has not accepted the webhook: the attempt fails
    (no status, a protocol error naming the 101) and the retry goes out on a fresh socket."""
    answers = [
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nthanks",
    ]
    async with ScriptedServer(answers) as server:
        endpoint = await create_endpoint(client, server.url("/upgrade"), ["payout.created"])
        await new_payout(client)
        await pump(sender, lambda: len(server.ports) >= 2)
        (delivery,) = await deliveries_of(client, endpoint["id"])
        await eventually(lambda: _status_is(client, delivery["id"], "delivered"))
    detail = (await client.get(f"/v1/webhook-deliveries/{delivery['id']}")).json()
    switched, accepted = detail["attempt_history"]
    assert switched["status_code"] is None
    assert "101" in switched["error"]
    assert accepted["status_code"] == 200
    assert server.ports[0] != server.ports[1]


async def test_retries_end_when_the_schedule_is_used_up(
    client: httpx.AsyncClient, receiver: Receiver, sender: WebhookSender, operators: None
) -> None:
    receiver.on("/down", always(500))
    endpoint = await create_endpoint(client, receiver.url("/down"), ["payout.created"])
    await new_payout(client)
    # First attempt + one per entry of the 3-entry schedule.
    await pump(sender, lambda: len(receiver.received("/down")) >= 4)
    (delivery,) = await deliveries_of(client, endpoint["id"])
    await eventually(lambda: _status_is(client, delivery["id"], "failed"))
    assert await sender.run_once() == 0
    assert len(receiver.received("/down")) == 4
    failed = await deliveries_of(client, endpoint["id"], status="failed")
    assert [d["id"] for d in failed] == [delivery["id"]]
    assert failed[0]["next_attempt_at"] is None
    assert failed[0]["last_error"] == "HTTP 500"
    endpoint_now = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
    assert endpoint_now["failing_since"] is not None
    assert endpoint_now["enabled"] is True  # not yet five days of failures


async def test_a_later_event_waits_for_the_earlier_one(
    client: httpx.AsyncClient,
    runtime: Runtime,
    receiver: Receiver,
    sender: WebhookSender,
    operators: None,
) -> None:
    """While the first event is being retried the second is held back, then follows it."""
    receiver.on("/ordered", first_then([Reply(500), Reply(500)]))
    await create_endpoint(client, receiver.url("/ordered"), ["payout.*"])
    payout = await new_payout(client)
    cancel = await client.post(
        f"/v1/payouts/{payout['id']}/cancel", json={"operator_id": "sup-2", "reason": "dup"}
    )
    assert cancel.status_code == 200, cancel.text
    history = await events_of(client, payout["id"])
    await pump(sender, lambda: len(receiver.received("/ordered")) >= len(history) + 2)
    assert await sender.run_once() == 0
    sequences = [json.loads(r.body)["data"]["sequence"] for r in receiver.received("/ordered")]
    first = history[0]["sequence"]
    assert sequences[:3] == [first, first, first]
    assert sequences[3:] == [e["sequence"] for e in history[1:]]


async def test_event_filters_choose_what_an_endpoint_receives(
    client: httpx.AsyncClient, receiver: Receiver, sender: WebhookSender, operators: None
) -> None:
    only_success = await create_endpoint(client, receiver.url("/success"), ["payout.succeeded"])
    created_and_canceled = await create_endpoint(
        client, receiver.url("/cc"), ["payout.created", "payout.canceled"]
    )
    everything = await create_endpoint(client, receiver.url("/all"), ["*"])
    payout = await new_payout(client)
    cancel = await client.post(
        f"/v1/payouts/{payout['id']}/cancel", json={"operator_id": "sup-2", "reason": "dup"}
    )
    assert cancel.status_code == 200
    history = await events_of(client, payout["id"])

    await pump(
        sender,
        lambda: (
            len(receiver.received("/all")) >= len(history) and len(receiver.received("/cc")) >= 2
        ),
    )
    assert await sender.run_once() == 0
    assert [json.loads(r.body)["type"] for r in receiver.received("/cc")] == [
        "payout.created",
        "payout.canceled",
    ]
    assert [json.loads(r.body)["type"] for r in receiver.received("/all")] == [
        e["type"] for e in history
    ]
    assert receiver.received("/success") == []
    assert await deliveries_of(client, only_success["id"]) == []
    assert len(await deliveries_of(client, created_and_canceled["id"])) == 2
    assert len(await deliveries_of(client, everything["id"])) == len(history)

    # Filters can change; an unknown event name is refused.
    patched = await client.patch(
        f"/v1/webhook-endpoints/{only_success['id']}", json={"events": ["payout.canceled"]}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["events"] == ["payout.canceled"]
    bad = await client.post(
        "/v1/webhook-endpoints", json={"url": receiver.url("/x"), "events": ["refund.*"]}
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "events"
    assert bad.json()["errors"][0]["code"] == "invalid_event_filter"


async def test_one_integration_never_receives_anothers_events(
    client: httpx.AsyncClient, receiver: Receiver, sender: WebhookSender, operators: None
) -> None:
    other = await new_integration_client(client, "freshdesk", ["payouts:write", "payouts:read"])
    try:
        mine = await create_endpoint(client, receiver.url("/default"), ["*"])
        theirs = await create_endpoint(other, receiver.url("/freshdesk"), ["*"])
        assert theirs["integration_id"] != mine["integration_id"]
        my_payout = await new_payout(client)
        their_payout = await new_payout(other)
        my_events = await events_of(client, my_payout["id"])
        their_events = await events_of(other, their_payout["id"])
        await pump(
            sender,
            lambda: (
                len(receiver.received("/default")) >= len(my_events)
                and len(receiver.received("/freshdesk")) >= len(their_events)
            ),
        )
        assert await sender.run_once() == 0
        mine_got = {
            json.loads(r.body)["data"]["payout"]["id"] for r in receiver.received("/default")
        }
        theirs_got = {
            json.loads(r.body)["data"]["payout"]["id"] for r in receiver.received("/freshdesk")
        }
        assert mine_got == {my_payout["id"]}
        assert theirs_got == {their_payout["id"]}

        # Another integration's endpoint and deliveries answer 404; its list shows only its own.
        my_delivery = (await deliveries_of(client, mine["id"], payout_id=my_payout["id"]))[0]
        assert (await other.get(f"/v1/webhook-endpoints/{mine['id']}")).status_code == 404
        assert (
            await other.get(f"/v1/webhook-endpoints/{mine['id']}/deliveries")
        ).status_code == 404
        assert (await other.get(f"/v1/webhook-deliveries/{my_delivery['id']}")).status_code == 404
        retry = await other.post(f"/v1/webhook-deliveries/{my_delivery['id']}/retry")
        assert retry.status_code == 404
        assert (await other.delete(f"/v1/webhook-endpoints/{mine['id']}")).status_code == 404
        listed = (await other.get("/v1/webhook-endpoints")).json()["data"]
        assert [e["id"] for e in listed] == [theirs["id"]]
        # The admin (back office) sees both.
        all_ids = {e["id"] for e in (await client.get("/v1/webhook-endpoints")).json()["data"]}
        assert all_ids == {mine["id"], theirs["id"]}
    finally:
        await other.aclose()


async def test_secret_rotation_signs_with_both_secrets_during_the_grace_period(
    client: httpx.AsyncClient,
    runtime: Runtime,
    receiver: Receiver,
    sender: WebhookSender,
    operators: None,
) -> None:
    endpoint = await create_endpoint(client, receiver.url("/rotate"), ["payout.*"])
    old_secret = endpoint["secret"]
    rotated = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != old_secret
    expires = rotated.json()["previous_secret_expires_at"]
    assert expires is not None
    # The secret is shown on create and rotate only.
    assert "secret" not in (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()

    payout = await new_payout(client)
    history = await events_of(client, payout["id"])
    await pump(sender, lambda: len(receiver.received("/rotate")) >= len(history))
    first = receiver.received("/rotate")[0]
    assert len(first.headers["webhook-signature"].split(" ")) == 2
    assert verified(old_secret, first) == verified(new_secret, first)

    # Rotating again without grace: only the newest secret signs.
    again = await client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", json={"grace_period_seconds": 0}
    )
    assert again.status_code == 200, again.text
    newest = again.json()["secret"]
    assert again.json()["previous_secret_expires_at"] is None
    await advance(runtime, payout["id"], PayoutStatus.CANCELED)
    before = len(receiver.received("/rotate"))
    await pump(sender, lambda: len(receiver.received("/rotate")) > before)
    last = receiver.received("/rotate")[-1]
    assert len(last.headers["webhook-signature"].split(" ")) == 1
    assert verified(newest, last)["type"] == "payout.canceled"
    for stale in (old_secret, new_secret):
        with pytest.raises(WebhookVerificationError):
            Webhook(stale).verify(last.body, last.headers)


async def test_410_gone_disables_the_endpoint_and_cancels_what_it_had_pending(
    client: httpx.AsyncClient, receiver: Receiver, sender: WebhookSender, operators: None
) -> None:
    receiver.on("/gone", always(410))
    endpoint = await create_endpoint(client, receiver.url("/gone"), ["payout.*"])
    payout = await new_payout(client)
    cancel = await client.post(
        f"/v1/payouts/{payout['id']}/cancel", json={"operator_id": "sup-2", "reason": "dup"}
    )
    assert cancel.status_code == 200
    await pump(sender, lambda: bool(receiver.received("/gone")))
    assert await sender.run_once() == 0
    assert len(receiver.received("/gone")) == 1  # the first answer was enough

    state = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
    assert state["enabled"] is False
    assert "410" in state["disabled_reason"]
    assert state["disabled_at"] is not None
    log = await deliveries_of(client, endpoint["id"])
    by_status = sorted(d["status"] for d in log)
    assert by_status == ["canceled"] * (len(log) - 1) + ["failed"]
    assert (await deliveries_of(client, endpoint["id"], status="failed"))[0][
        "last_status_code"
    ] == 410

    # A disabled endpoint gets no new deliveries; re-sending needs it enabled again.
    await new_payout(client)
    assert len(await deliveries_of(client, endpoint["id"])) == len(log)
    resend = await client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/resend",
        json={"since": "2000-01-01T00:00:00Z"},
    )
    assert resend.status_code == 409
    assert resend.json()["code"] == "endpoint_disabled"

    receiver.on("/gone", always(204))
    enabled = await client.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": True})
    assert enabled.status_code == 200
    assert enabled.json()["disabled_reason"] is None
    resend = await client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/resend",
        json={"since": "2000-01-01T00:00:00Z"},
    )
    assert resend.status_code == 202, resend.text
    assert resend.json() == {"requeued": len(log)}
    await pump(sender, lambda: len(receiver.received("/gone")) >= 1 + len(log))
    await eventually(
        lambda: _all_delivered(client, endpoint["id"], len(log)), what="re-sent deliveries"
    )
    resent = receiver.received("/gone")[1:]
    assert [json.loads(r.body)["data"]["sequence"] for r in resent] == sorted(
        d["sequence"] for d in log
    )


async def _all_delivered(client: httpx.AsyncClient, endpoint_id: str, count: int) -> bool:
    log = await deliveries_of(client, endpoint_id, status="delivered")
    return len(log) == count


async def test_five_days_of_failures_disable_the_endpoint(
    client: httpx.AsyncClient, runtime: Runtime, receiver: Receiver, operators: None
) -> None:
    receiver.on("/broken", always(500))
    endpoint = await create_endpoint(client, receiver.url("/broken"), ["payout.created"])
    await new_payout(client)
    now = utcnow()
    today = WebhookSender(runtime, clock=lambda: now)
    later = WebhookSender(runtime, clock=lambda: now + timedelta(days=5, minutes=1))
    try:
        assert await today.run_once() == 1
        state = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
        assert state["enabled"] is True
        assert state["failing_since"] is not None
        # Five days on, the retry fails too: that is five days of nothing but failures.
        assert await later.run_once() == 1
    finally:
        await today.aclose()
        await later.aclose()
    state = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
    assert state["enabled"] is False
    assert "5 days" in state["disabled_reason"]
    (delivery,) = await deliveries_of(client, endpoint["id"])
    assert delivery["status"] == "canceled"
    assert len(receiver.received("/broken")) == 2


async def test_manual_retry_sends_the_same_event_again(
    client: httpx.AsyncClient, receiver: Receiver, sender: WebhookSender, operators: None
) -> None:
    endpoint = await create_endpoint(client, receiver.url("/again"), ["payout.created"])
    await new_payout(client)
    await pump(sender, lambda: bool(receiver.received("/again")))
    (delivery,) = await deliveries_of(client, endpoint["id"])
    await eventually(lambda: _status_is(client, delivery["id"], "delivered"))
    retried = await client.post(f"/v1/webhook-deliveries/{delivery['id']}/retry")
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "pending"
    assert retried.json()["attempts"] == 0
    await pump(sender, lambda: len(receiver.received("/again")) >= 2)
    first, second = receiver.received("/again")
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    missing = await client.post("/v1/webhook-deliveries/wd_unknown/retry")
    assert missing.status_code == 404


async def test_delivery_log_filters_and_pages(
    client: httpx.AsyncClient, receiver: Receiver, sender: WebhookSender, operators: None
) -> None:
    receiver.on("/log", always(204))
    endpoint = await create_endpoint(client, receiver.url("/log"), ["payout.created"])
    first = await new_payout(client)
    second = await new_payout(client)
    await pump(sender, lambda: len(receiver.received("/log")) >= 2)
    await eventually(lambda: _all_delivered(client, endpoint["id"], 2))

    only_first = await deliveries_of(client, endpoint["id"], payout_id=first["id"])
    assert [d["payout_id"] for d in only_first] == [first["id"]]
    assert await deliveries_of(client, endpoint["id"], status="failed") == []
    page = await client.get(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", params={"limit": 1}
    )
    assert page.status_code == 200
    assert [d["payout_id"] for d in page.json()["data"]] == [second["id"]]  # newest first
    cursor = page.json()["next_cursor"]
    assert cursor
    rest = await client.get(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", params={"limit": 1, "cursor": cursor}
    )
    assert [d["payout_id"] for d in rest.json()["data"]] == [first["id"]]
    assert rest.json()["next_cursor"] is None
    bad = await client.get(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", params={"status": "lost"}
    )
    assert bad.status_code == 422


async def test_endpoint_crud(client: httpx.AsyncClient, receiver: Receiver) -> None:
    created = await create_endpoint(client, receiver.url("/crud"), description="Zendesk prod")
    assert created["events"] == ["payout.*"]
    assert created["enabled"] is True
    assert created["id"].startswith("we_")
    fetched = await client.get(f"/v1/webhook-endpoints/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == {k: v for k, v in created.items() if k != "secret"}

    disabled = await client.patch(
        f"/v1/webhook-endpoints/{created['id']}", json={"enabled": False, "description": None}
    )
    assert disabled.status_code == 200
    assert disabled.json()["enabled"] is False
    assert disabled.json()["disabled_reason"] == "disabled through the API"
    assert disabled.json()["description"] is None

    not_http = await client.post("/v1/webhook-endpoints", json={"url": "ftp://files.example/x"})
    assert not_http.status_code == 422
    assert not_http.json()["code"] == "webhook_url_refused"
    assert not_http.json()["errors"][0]["code"] == "unsupported_scheme"

    null_url = await client.patch(f"/v1/webhook-endpoints/{created['id']}", json={"url": None})
    assert null_url.status_code == 422
    assert null_url.json()["errors"][0]["field"] == "url"

    unknown_field = await client.patch(
        f"/v1/webhook-endpoints/{created['id']}", json={"secret": "whsec_mine"}
    )
    assert unknown_field.status_code == 422

    deleted = await client.delete(f"/v1/webhook-endpoints/{created['id']}")
    assert deleted.status_code == 204
    assert (await client.get(f"/v1/webhook-endpoints/{created['id']}")).status_code == 404
    assert (await client.delete(f"/v1/webhook-endpoints/{created['id']}")).status_code == 404


async def test_a_key_without_write_scope_cannot_manage_endpoints(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    reader = await new_integration_client(client, "reader", ["payouts:read"])
    try:
        refused = await reader.post("/v1/webhook-endpoints", json={"url": receiver.url("/r")})
        assert refused.status_code == 403
        assert (await reader.get("/v1/webhook-endpoints")).status_code == 403
    finally:
        await reader.aclose()


async def test_deleting_an_endpoint_while_its_delivery_is_in_flight(
    client: httpx.AsyncClient, receiver: Receiver, sender: WebhookSender, operators: None
) -> None:
    """The attempt finishes after the endpoint is gone: its result is dropped quietly."""
    receiver.on("/vanish", always(204, delay=0.5))
    endpoint = await create_endpoint(client, receiver.url("/vanish"), ["payout.created"])
    await new_payout(client)
    in_flight = asyncio.create_task(sender.run_once())
    await eventually(lambda: bool(receiver.received("/vanish")), what="the request to arrive")
    assert (await client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")).status_code == 204
    assert await in_flight == 1
    assert await sender.run_once() == 0


async def test_delivered_payloads_are_purged_after_30_days(
    client: httpx.AsyncClient, receiver: Receiver, sender: WebhookSender, operators: None
) -> None:
    endpoint = await create_endpoint(client, receiver.url("/purge"), ["payout.created"])
    await new_payout(client)
    await pump(sender, lambda: bool(receiver.received("/purge")))
    (delivered,) = await deliveries_of(client, endpoint["id"])
    await eventually(lambda: _status_is(client, delivered["id"], "delivered"))
    # Still pending (receiver down): kept whatever its age.
    receiver.on("/purge", always(500))
    await new_payout(client)
    await pump(sender, lambda: len(receiver.received("/purge")) >= 2)

    assert await sender.purge(now=utcnow() + timedelta(days=29)) == 0
    assert await sender.purge(now=utcnow() + timedelta(days=31)) == 1
    assert (await client.get(f"/v1/webhook-deliveries/{delivered['id']}")).status_code == 404
    remaining = await deliveries_of(client, endpoint["id"])
    assert [d["status"] for d in remaining] == ["pending"]


async def test_metrics_show_outcomes_latency_and_oldest_pending_age(
    client: httpx.AsyncClient,
    app: Any,
    receiver: Receiver,
    sender: WebhookSender,
    operators: None,
) -> None:
    receiver.on("/metrics", always(500))
    await create_endpoint(client, receiver.url("/metrics"), ["payout.created"])
    await new_payout(client)
    await pump(sender, lambda: bool(receiver.received("/metrics")))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as anonymous:
        text = (await anonymous.get("/metrics")).text
    assert 'payoutsvc_webhook_deliveries_total{outcome="retry_scheduled"}' in text
    assert "payoutsvc_webhook_attempt_duration_seconds_count" in text
    assert "payoutsvc_webhook_pending_deliveries 1.0" in text
    age_line = next(
        line
        for line in text.splitlines()
        if line.startswith("payoutsvc_webhook_oldest_pending_age_seconds ")
    )
    assert float(age_line.split()[1]) > 0


def test_the_recorded_rows_mirror_their_tables() -> None:
    """The sender writes OutcomeRow / AttemptRow fields into these columns, so a column added
    to a table and not to its row (or the other way round) fails here, not in production."""
    from payoutsvc.webhooks.models import WebhookAttempt, WebhookDelivery
    from payoutsvc.webhooks.repository import AttemptRow, OutcomeRow

    attempts = {c.name for c in WebhookAttempt.__table__.columns} - {"id"}
    assert set(AttemptRow.__dataclass_fields__) == attempts
    deliveries = {c.name for c in WebhookDelivery.__table__.columns}
    renamed = {"token": "locked_by", "at": "last_attempt_at"} | {
        f: f"last_{f}" for f in ("status_code", "latency_ms", "error", "response_excerpt")
    }
    assert {renamed.get(f, f) for f in OutcomeRow.__dataclass_fields__} <= deliveries
