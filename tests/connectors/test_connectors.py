"""Helpdesk connectors end to end, per helpdesk against its fake (tests/connectors/fakes.py):
trigger -> approve by a supervisor -> paid, with internal notes on the ticket; forged, stale
and replayed triggers; refusals written back; outages and rate limits on write-back."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from payoutsvc.connectors.service import ConnectorService
from payoutsvc.executor.service import Executor
from payoutsvc.gateways.registry import GatewayRegistry
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.sender import WebhookSender
from tests.connectors.fakes import FakeHelpdesk
from tests.webhooks.conftest import pump

ACCOUNT = "13800138000"
CREDENTIALS: dict[str, dict[str, str]] = {
    "zendesk": {
        "email": "bot@acme.example",
        "api_token": "zd-token-1",
        "webhook_signing_secret": "zd-signing-secret",
    },
    "jira_service_management": {
        "email": "bot@acme.example",
        "api_token": "jira-token-1",
        "webhook_secret": "jira-webhook-secret",
    },
    "freshdesk": {"api_key": "fd-key-1", "inbound_secret": "fd-inbound-secret"},
}
TICKET = {"zendesk": "4821", "jira_service_management": "SD-42", "freshdesk": "97"}


def signed_headers(kind: str, body: bytes, *, at: datetime | None = None) -> dict[str, str]:
    """Each helpdesk's authentication of the request it sends, as its documentation says."""
    creds = CREDENTIALS[kind]
    if kind == "zendesk":  # developer.zendesk.com/documentation/webhooks/verifying/
        stamp = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        key = creds["webhook_signing_secret"].encode()
        digest = hmac.new(key, stamp.encode() + body, hashlib.sha256).digest()
        return {
            "X-Zendesk-Webhook-Signature": base64.b64encode(digest).decode(),
            "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        }
    if kind == "jira_service_management":  # Jira admin webhooks: WebSub X-Hub-Signature
        digest = hmac.new(creds["webhook_secret"].encode(), body, hashlib.sha256).hexdigest()
        return {"X-Hub-Signature": f"sha256={digest}"}
    return {"X-Payoutsvc-Secret": creds["inbound_secret"]}


@pytest.fixture(params=["zendesk", "jira_service_management", "freshdesk"])
def helpdesk(request: pytest.FixtureRequest) -> Iterator[FakeHelpdesk]:
    fake = FakeHelpdesk(request.param, dict(CREDENTIALS[request.param]))
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


async def connect(client: httpx.AsyncClient, fake: FakeHelpdesk, **extra: Any) -> dict[str, Any]:
    body = {
        "kind": fake.kind,
        "name": f"{fake.kind} test",
        "base_url": fake.base_url,
        "credentials": CREDENTIALS[fake.kind],
        "locale": "en",
        "trust_actor": True,
        "write_back": {"events": ["payout.*"], "tags": True},
        **extra,
    }
    response = await client.post("/v1/connectors", json=body)
    assert response.status_code == 201, response.text
    connector: dict[str, Any] = response.json()
    for operator_id, role, user in (
        ("agent-1", "agent", "u-agent"),
        ("sup-1", "supervisor", "u-sup"),
    ):
        response = await client.post(
            "/v1/operators",
            json={
                "id": operator_id,
                "role": role,
                "helpdesk_users": [{"connector_id": connector["id"], "user_id": user}],
            },
        )
        assert response.status_code == 201, response.text
    return connector


def trigger(kind: str, action: str, actor: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "action": action,
        "actor": actor,
        "ticket": {"id": TICKET[kind], "url": None},
        **fields,
    }
    return body


async def send(
    client: httpx.AsyncClient, connector: dict[str, Any], body: dict[str, Any], **kw: Any
) -> httpx.Response:
    raw = json.dumps(body).encode()
    headers = (
        kw["headers"]
        if "headers" in kw
        else signed_headers(connector["kind"], raw, at=kw.get("at"))
    )
    return await client.post(
        connector["inbound_url"],
        content=raw,
        headers={**headers, "Content-Type": "application/json", "Authorization": ""},
    )


REQUEST = {
    "amount": "100.00",
    "currency": "CNY",
    "reason": "refund",
    "recipient": {"type": "alipay", "account": ACCOUNT, "name": "张三"},
    "description": "price difference",
}


async def pay(runtime: Runtime) -> None:
    gateways = GatewayRegistry(runtime)
    executor = Executor(runtime, gateways, worker_id="connector-test")
    try:
        for _ in range(10):
            if await executor.run_once() == 0:
                break
    finally:
        await gateways.aclose()


async def test_trigger_approve_paid_with_notes(
    client: httpx.AsyncClient, runtime: Runtime, sender: WebhookSender, helpdesk: FakeHelpdesk
) -> None:
    connector = await connect(client, helpdesk)
    ticket = TICKET[helpdesk.kind]
    helpdesk.tags[ticket] = ["vip"]  # an agent's own tag, which status tags leave alone
    first = trigger(helpdesk.kind, "request", "u-agent", **REQUEST)
    response = await send(client, connector, first)
    assert response.status_code == 202, response.text
    payout_id = response.json()["payout_id"]
    assert response.json()["status"] == "pending_approval"

    # A redelivery of the same trigger creates nothing twice and answers the same.
    again = await send(client, connector, first)
    assert again.status_code == 202
    assert again.json() == response.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    listed = await client.get("/v1/payouts", params={"ticket_id": TICKET[helpdesk.kind]})
    assert [p["id"] for p in listed.json()["data"]] == [payout_id]

    # The supervisor's trigger approves it (trust_actor: the signature proves the agent).
    approve = trigger(helpdesk.kind, "approve", "u-sup", payout_id=payout_id, comment="ok")
    response = await send(client, connector, approve)
    assert response.status_code == 202, response.text
    assert response.json() == {"payout_id": payout_id, "status": "approved"}

    await pay(runtime)
    payout = (await client.get(f"/v1/payouts/{payout_id}")).json()
    assert payout["status"] == "succeeded"

    # Rate limited, then down, for a while: every note still arrives once, in order.
    helpdesk.fail_next(1, 429, {"Retry-After": "0"})
    helpdesk.fail_next(3, 503)
    events = [
        e["type"] for e in (await client.get(f"/v1/payouts/{payout_id}/events")).json()["data"]
    ]
    # Each event is a note and, as its own delivery, one tag write (status tags on).
    await pump(
        sender,
        lambda: len(helpdesk.notes) >= len(events) and helpdesk.tag_writes >= len(events),
        what="notes and tags",
    )
    notes = helpdesk.notes
    assert len(notes) == len(events)
    assert helpdesk.tag_writes == len(events)
    assert {n.ticket for n in notes} == {ticket}
    assert helpdesk.tags == {ticket: ["vip", "payout_succeeded"]}
    headings = [n.text.split("<br>")[0].split("\n")[0] for n in notes]
    assert headings[0] == "Payout requested", headings
    assert headings[-1] == "Payout paid", headings
    assert "Payout approved" in headings
    for note in notes:
        assert ACCOUNT not in note.text
        assert payout_id in note.text
        assert "100.00 CNY" in note.text
    assert not [r for r in helpdesk.refused if r[0] != 503 and r[0] != 429], helpdesk.refused

    deliveries = (await client.get(f"{connector['inbound_url'][:-8]}/deliveries")).json()["data"]
    assert len(deliveries) == 2 * len(events)
    assert {d["status"] for d in deliveries} == {"delivered"}
    assert all(d["status"] == "delivered" for d in deliveries)


async def test_forged_stale_and_unknown_actor(
    client: httpx.AsyncClient, runtime: Runtime, sender: WebhookSender, helpdesk: FakeHelpdesk
) -> None:
    connector = await connect(client, helpdesk)
    body = trigger(helpdesk.kind, "request", "u-agent", **REQUEST)
    raw = json.dumps(body).encode()
    forged = {k: v[:-2] + "xx" for k, v in signed_headers(helpdesk.kind, raw).items()}
    if helpdesk.kind == "zendesk":  # keep the timestamp, break the signature
        forged["X-Zendesk-Webhook-Signature-Timestamp"] = signed_headers(helpdesk.kind, raw)[
            "X-Zendesk-Webhook-Signature-Timestamp"
        ]
    response = await send(client, connector, body, headers=forged)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "invalid_signature"
    response = await send(client, connector, body, headers={})
    assert response.status_code == 401

    stale_at = datetime.now(UTC) - timedelta(minutes=6)
    if helpdesk.kind == "zendesk":
        response = await send(client, connector, body, at=stale_at)
    else:  # the body's own timestamp is bounded for helpdesks that send none in headers
        response = await send(client, connector, {**body, "timestamp": stale_at.isoformat()})
    assert response.status_code == 401, response.text
    assert (await client.get("/v1/payouts")).json()["data"] == []

    # The same event id after refusals is still new: none of them was recorded.
    response = await send(client, connector, body)
    assert response.status_code == 202

    # An unknown helpdesk user is refused, and the ticket is told why.
    stranger = trigger(helpdesk.kind, "request", "u-nobody", **REQUEST)
    response = await send(client, connector, stranger)
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_operator"
    await pump(sender, lambda: any("Request refused" in n.text for n in helpdesk.notes))
    refusal = next(n for n in helpdesk.notes if "Request refused" in n.text)
    assert "unknown_operator" in refusal.text
    assert "u-nobody" in refusal.text

    # A self-approval is refused by the same approval rules as the API.
    payout_id = (await client.get("/v1/payouts")).json()["data"][0]["id"]
    response = await send(
        client, connector, trigger(helpdesk.kind, "approve", "u-agent", payout_id=payout_id)
    )
    assert response.status_code == 403
    assert response.json()["code"] == "self_approval_forbidden"
    payout = (await client.get(f"/v1/payouts/{payout_id}")).json()
    assert payout["status"] == "pending_approval"


async def test_without_trust_actor_decisions_need_an_operator_key(
    client: httpx.AsyncClient, helpdesk: FakeHelpdesk
) -> None:
    connector = await connect(client, helpdesk, trust_actor=False)
    response = await send(
        client, connector, trigger(helpdesk.kind, "request", "u-agent", **REQUEST)
    )
    assert response.status_code == 202
    payout_id = response.json()["payout_id"]
    response = await send(
        client, connector, trigger(helpdesk.kind, "approve", "u-sup", payout_id=payout_id)
    )
    assert response.status_code == 403
    assert response.json()["code"] == "operator_key_required"
    response = await send(
        client, connector, trigger(helpdesk.kind, "cancel", "u-agent", comment="mistake")
    )
    assert response.status_code == 202
    assert response.json() == {"payout_id": payout_id, "status": "canceled"}


async def test_credentials_hidden_tested_and_rotated(
    client: httpx.AsyncClient, helpdesk: FakeHelpdesk
) -> None:
    connector = await connect(client, helpdesk)
    shown = (await client.get(f"/v1/connectors/{connector['id']}")).text
    for secret in CREDENTIALS[helpdesk.kind].values():
        assert secret not in shown
    assert connector["credential_fields"] == list(CREDENTIALS[helpdesk.kind])
    listed = (await client.get("/v1/connectors")).json()["data"]
    assert [(c["id"], c["base_url"]) for c in listed] == [(connector["id"], helpdesk.base_url)]
    test = await client.post(f"/v1/connectors/{connector['id']}/test")
    assert test.json() == {"ok": True, "status_code": 200, "error": None}

    wrong = {**CREDENTIALS[helpdesk.kind]}
    first = next(iter(wrong))
    wrong[first] = "wrong-" + wrong[first]
    response = await client.patch(f"/v1/connectors/{connector['id']}", json={"credentials": wrong})
    assert response.status_code == 200, response.text
    test = await client.post(f"/v1/connectors/{connector['id']}/test")
    assert test.json()["ok"] is False

    response = await client.patch(
        f"/v1/connectors/{connector['id']}", json={"credentials": {"nope": "x"}}
    )
    assert response.status_code == 422
    operator = (await client.get("/v1/operators/agent-1")).json()
    assert operator["helpdesk_users"] == [{"connector_id": connector["id"], "user_id": "u-agent"}]
    # One helpdesk user is one operator.
    response = await client.patch(
        "/v1/operators/sup-1",
        json={"helpdesk_users": [{"connector_id": connector["id"], "user_id": "u-agent"}]},
    )
    assert response.status_code == 422
    # Connector targets are not webhook endpoints.
    assert (await client.get("/v1/webhook-endpoints")).json()["data"] == []
    assert (await client.delete(f"/v1/connectors/{connector['id']}")).status_code == 204
    response = await send(
        client, connector, trigger(helpdesk.kind, "request", "u-agent", **REQUEST)
    )
    assert response.status_code == 404


async def test_concurrent_redeliveries_create_one_payout(
    client: httpx.AsyncClient, helpdesk: FakeHelpdesk
) -> None:
    connector = await connect(client, helpdesk)
    body = trigger(helpdesk.kind, "request", "u-agent", **REQUEST)
    answers = await asyncio.gather(*(send(client, connector, body) for _ in range(4)))
    assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
    assert len({a.json()["payout_id"] for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 3
    assert len((await client.get("/v1/payouts")).json()["data"]) == 1


@pytest.mark.parametrize("helpdesk", ["zendesk"], indirect=True)
async def test_write_back_waits_for_retry_after(
    client: httpx.AsyncClient, sender: WebhookSender, helpdesk: FakeHelpdesk
) -> None:
    """A 429's Retry-After is honoured (longer than the retry schedule's 0.05 s), and the
    payout's later notes wait for the earlier one (notes only: status tags off)."""
    connector = await connect(client, helpdesk, write_back={"events": ["payout.*"], "tags": False})
    helpdesk.fail_next(1, 429, {"Retry-After": "1"})
    response = await send(
        client, connector, trigger(helpdesk.kind, "request", "u-agent", **REQUEST)
    )
    payout_id = response.json()["payout_id"]
    response = await send(
        client, connector, trigger(helpdesk.kind, "cancel", "u-agent", payout_id=payout_id)
    )
    assert response.json()["status"] == "canceled"
    started = asyncio.get_running_loop().time()
    await pump(sender, lambda: len(helpdesk.notes) == 2, what="notes")
    assert asyncio.get_running_loop().time() - started >= 0.9
    assert [n.text.split("\n")[0] for n in helpdesk.notes] == [
        "Payout requested",
        "Payout canceled",
    ]
    assert [r[0] for r in helpdesk.requests].count("PUT") == 3


async def test_a_retried_tag_write_neither_repeats_the_note_nor_disturbs_the_tags(
    client: httpx.AsyncClient, sender: WebhookSender, helpdesk: FakeHelpdesk
) -> None:
    """The helpdesk applies the tag write but its answer is lost (502): the retry writes the
    same tags again, and the note, a delivery of its own, is written once."""
    connector = await connect(client, helpdesk)
    ticket = TICKET[helpdesk.kind]
    helpdesk.tags[ticket] = ["vip", "payout_processing"]  # a stale status tag goes too
    helpdesk.lost_tag_answers.append(502)
    body = trigger(helpdesk.kind, "request", "u-agent", **REQUEST)
    response = await send(client, connector, body)
    assert response.status_code == 202, response.text
    await pump(sender, lambda: helpdesk.tag_writes >= 2 and len(helpdesk.notes) >= 1, what="tags")
    assert await sender.run_once() == 0  # nothing left to send
    assert len(helpdesk.notes) == 1
    assert helpdesk.tag_writes == 2
    assert helpdesk.tags == {ticket: ["vip", "payout_pending_approval"]}


async def test_disabling_drops_pending_notes_and_purge_forgets_events(
    client: httpx.AsyncClient, runtime: Runtime, sender: WebhookSender, helpdesk: FakeHelpdesk
) -> None:
    connector = await connect(client, helpdesk)
    body = trigger(helpdesk.kind, "request", "u-agent", **REQUEST)
    first = await send(client, connector, body)
    assert first.status_code == 202
    response = await client.patch(f"/v1/connectors/{connector['id']}", json={"enabled": False})
    assert response.json()["enabled"] is False
    deliveries = (await client.get(f"/v1/connectors/{connector['id']}/deliveries")).json()
    # The note and its tag write (status tags on), both dropped.
    assert [d["status"] for d in deliveries["data"]] == ["canceled", "canceled"]
    assert await sender.run_once() == 0
    assert helpdesk.notes == []
    assert helpdesk.tag_writes == 0
    # Switched off, it takes no trigger, however well signed; nothing is created.
    new_ticket = trigger(helpdesk.kind, "request", "u-agent", **{**REQUEST, "amount": "13.00"})
    refused = await send(client, connector, new_ticket)
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "connector_disabled"
    assert len((await client.get("/v1/payouts")).json()["data"]) == 1
    response = await client.patch(f"/v1/connectors/{connector['id']}", json={"enabled": True})
    assert response.json()["enabled"] is True

    async with runtime.db.transaction() as session:
        purged = await ConnectorService(session, runtime).purge_inbound_events(
            datetime.now(UTC) + timedelta(seconds=1)
        )
    assert purged == 1
    # Forgotten by the connector, the redelivery still creates nothing twice: the payout's
    # own Idempotency-Key (connector id + event id) replays the first answer.
    again = await send(client, connector, body)
    assert again.json() == first.json()
    assert len((await client.get("/v1/payouts")).json()["data"]) == 1


async def test_helpdesk_users_must_name_an_existing_connector(
    client: httpx.AsyncClient, helpdesk: FakeHelpdesk
) -> None:
    connector = await connect(client, helpdesk)
    unknown = {"connector_id": "hc_nosuchconnector", "user_id": "u-new"}

    refused = await client.post(
        "/v1/operators", json={"id": "agent-2", "role": "agent", "helpdesk_users": [unknown]}
    )
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["code"] == "validation_failed"
    assert [(e["field"], e["code"]) for e in problem["errors"]] == [
        ("helpdesk_users[0].connector_id", "unknown_connector")
    ]
    assert (await client.get("/v1/operators/agent-2")).status_code == 404

    kept = {"connector_id": connector["id"], "user_id": "u-agent"}
    refused = await client.patch("/v1/operators/agent-1", json={"helpdesk_users": [kept, unknown]})
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["helpdesk_users[1].connector_id"]
    operator = (await client.get("/v1/operators/agent-1")).json()
    assert operator["helpdesk_users"] == [kept]
