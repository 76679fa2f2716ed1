"""The review workflow over HTTP: list with filters and cursor, review by an operator-bound
key with the decision chained into the anomaly's audited history, CSV export, the hold on
new payouts, ``anomaly.detected`` webhooks and the per-kind counter."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from payoutsvc.db.base import utcnow
from payoutsvc.payouts.events import GENESIS_HASH, event_hash
from payoutsvc.policy.document import DEFAULT_POLICY_DOCUMENT
from payoutsvc.review.models import AnomalyEvent
from tests.api_support import alipay_recipient, assert_problem, db_session, scalar
from tests.helpers import bearer_of, create_operator, payout_body, request_as
from tests.review.support import (
    TODAY,
    Seeder,
    anomalies,
    quiet_history,
    scan,
    seeder,
    set_review_policy,
)

NOON = TODAY + timedelta(hours=12)


def _small(index: int, recipient: dict[str, str] | None = None) -> dict[str, Any]:
    """A 5.00 CNY refund on a ticket of its own (no duplicate suspicion between them)."""
    return payout_body(
        amount="5.00",
        recipient=recipient or alipay_recipient(8200 + index),
        ticket={"system": "zendesk", "id": f"hold-{index}"},
    )


def _split(seed: Seeder, requester: str, at: Any, recipient: str | None = None) -> list[str]:
    """Three payouts just under the agent auto-approval limit (50.00 CNY) on one day."""
    return [
        seed.payout(requester, amount, at + timedelta(minutes=i), recipient=recipient)
        for i, amount in enumerate((4800, 4900, 4750))
    ]


async def _two_anomalies(client: httpx.AsyncClient, app: FastAPI) -> list[dict[str, Any]]:
    seed = await seeder(client)
    quiet_history(seed, days=0)
    _split(seed, "agent-1", NOON)
    _split(seed, "agent-2", NOON + timedelta(hours=1))
    await seed.commit(app)
    await scan(app)
    found = await anomalies(client)
    assert len(found) == 2
    return found


async def test_list_filters_and_pages(client: httpx.AsyncClient, app: FastAPI) -> None:
    found = await _two_anomalies(client, app)
    first = await client.get("/v1/anomalies", params={"limit": 1, "status": "open"})
    assert first.status_code == 200
    page = first.json()
    assert [a["id"] for a in page["data"]] == [found[0]["id"]]
    second = await client.get("/v1/anomalies", params={"limit": 1, "cursor": page["next_cursor"]})
    assert [a["id"] for a in second.json()["data"]] == [found[1]["id"]]
    assert second.json()["next_cursor"] is None
    assert await anomalies(client, kind="off_hours") == []
    assert await anomalies(client, status="dismissed") == []
    assert len(await anomalies(client, since="2026-11-25T00:00:00Z")) == 2
    assert await anomalies(client, since=(utcnow() + timedelta(days=1)).isoformat()) == []
    got = await client.get(f"/v1/anomalies/{found[0]['id']}")
    assert got.json() == found[0]
    assert_problem(await client.get("/v1/anomalies/an_missing"), 404, "not_found")
    assert_problem(
        await client.get("/v1/anomalies", params={"kind": "nope"}), 422, "validation_failed"
    )
    assert_problem(
        await client.get("/v1/anomalies", params={"cursor": "!!"}), 422, "invalid_cursor"
    )


async def test_reviews_need_an_operator_bound_key_and_are_audited(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    target, other = await _two_anomalies(client, app)
    url = f"/v1/anomalies/{target['id']}/review"
    body = {"operator_id": "fin-1", "outcome": "dismissed", "comment": "Agreed with finance."}
    # The admin key proves no person: under require_operator_key it may not decide.
    assert_problem(await client.post(url, json=body), 403, "operator_key_required")
    fin = await bearer_of(client, "fin-1", ("admin",))
    assert_problem(
        await client.post(url, json={**body, "outcome": "maybe"}, headers=fin),
        422,
        "validation_failed",
    )
    reviewed = await client.post(url, json=body, headers=fin)
    assert reviewed.status_code == 200, reviewed.text
    assert reviewed.json()["status"] == "dismissed"
    assert reviewed.json()["review"]["operator_id"] == "fin-1"
    assert reviewed.json()["review"]["comment"] == "Agreed with finance."
    again = await client.post(url, json={**body, "outcome": "confirmed"}, headers=fin)
    assert_problem(again, 409, "invalid_status_transition")
    assert [a["id"] for a in await anomalies(client, status="open")] == [other["id"]]
    assert [a["id"] for a in await anomalies(client, status="dismissed")] == [target["id"]]

    events = (await client.get(f"/v1/anomalies/{target['id']}/events")).json()["data"]
    assert [(e["type"], e["actor"]) for e in events] == [
        ("anomaly.detected", "system"),
        ("anomaly.reviewed", "fin-1"),
    ]
    assert events[1]["data"]["outcome"] == "dismissed"
    assert events[1]["data"]["comment"] == "Agreed with finance."
    # The same keyed chain as a payout's history: each hash recomputes under the audit key.
    key = app.state.runtime.audit_key
    previous = GENESIS_HASH
    for event in events:
        stored = await _event_row(app, event["id"])
        assert stored["prev_hash"] == previous
        assert stored["hash_scheme"] == "hmac-sha256"
        assert event["hash"] == event_hash(
            payout_id=target["id"],
            sequence=event["sequence"],
            type=event["type"],
            actor=event["actor"],
            at=stored["at"],
            data=stored["data"],
            prev_hash=previous,
            event_id=event["id"],
            key=key,
        )
        previous = event["hash"]


async def _event_row(app: FastAPI, event_id: str) -> dict[str, Any]:
    async with db_session(app) as session:
        row = await session.get(AnomalyEvent, event_id)
        assert row is not None
        return {
            "prev_hash": row.prev_hash,
            "hash_scheme": row.hash_scheme,
            "at": row.at,
            "data": row.data,
        }


async def test_export_csv(client: httpx.AsyncClient, app: FastAPI) -> None:
    found = await _two_anomalies(client, app)
    response = await client.get("/v1/anomalies/export", params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["id"] for r in rows] == [a["id"] for a in found]
    assert rows[0]["kind"] == "threshold_splitting"
    assert rows[0]["payouts"] == "3"
    assert rows[0]["explanation"] == found[0]["explanation"]
    filtered = await client.get("/v1/anomalies/export", params={"status": "dismissed"})
    assert len(list(csv.DictReader(io.StringIO(filtered.text)))) == 0
    assert_problem(
        await client.get("/v1/anomalies/export", params={"format": "xlsx"}),
        422,
        "validation_failed",
    )


async def test_open_anomaly_holds_new_payouts_of_its_subjects(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    seed = await seeder(client)
    await create_operator(client, "agent-9", "agent")
    # A real payout to the recipient the pattern is about, to learn its fingerprint.
    mule = alipay_recipient(8123)
    first = await request_as(client, "agent-9", _small(0, mule))
    assert first.json()["status"] == "approved"
    fingerprint = await scalar(
        app, "SELECT recipient_fingerprint FROM payouts WHERE id = :id", id=first.json()["id"]
    )
    now = utcnow()
    _split(seed, "agent-1", now - timedelta(hours=2))  # requester subject: agent-1
    for i in range(5):  # recipient subject: the mule, paid on 5 tickets by 4 agents
        seed.payout(
            f"agent-{i % 4 + 2}", 1000, now - timedelta(hours=3, minutes=i), recipient=fingerprint
        )
    await seed.commit(app)
    await scan(app, now + timedelta(minutes=5))
    assert {a["kind"] for a in await anomalies(client)} == {
        "threshold_splitting",
        "recipient_many_tickets",
    }

    # Off by default: the flag is what holds.
    assert (await request_as(client, "agent-1", _small(1))).json()["status"] == "approved"
    await set_review_policy(client, hold_open_anomalies=True)
    held = (await request_as(client, "agent-1", _small(2))).json()
    assert held["status"] == "pending_approval"
    assert [r["rule"] for r in held["policy"]["reasons"]] == ["open_anomaly"]
    to_mule = (await request_as(client, "agent-5", _small(3, mule))).json()
    assert to_mule["status"] == "pending_approval"
    assert [r["rule"] for r in to_mule["policy"]["reasons"]] == ["open_anomaly"]
    # Neither subject: auto-approved as before.
    assert (await request_as(client, "agent-5", _small(4))).json()["status"] == "approved"
    # Reviewed anomalies hold nothing.
    fin = await bearer_of(client, "fin-1", ("admin",))
    for anomaly in await anomalies(client, status="open"):
        reviewed = await client.post(
            f"/v1/anomalies/{anomaly['id']}/review", json={"outcome": "confirmed"}, headers=fin
        )
        assert reviewed.status_code == 200, reviewed.text
    assert (await request_as(client, "agent-1", _small(5))).json()["status"] == "approved"


async def test_detected_anomalies_reach_subscribed_endpoints_and_the_counter(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    endpoints = {}
    for name, events in (("all", ["*"]), ("payouts", ["payout.*"]), ("review", ["anomaly.*"])):
        created = await client.post(
            "/v1/webhook-endpoints",
            json={"url": f"http://127.0.0.1:9/{name}", "events": events},
        )
        assert created.status_code == 201, created.text
        endpoints[name] = created.json()["id"]
    before = await _counter(client)
    found = await _two_anomalies(client, app)
    deliveries = await _deliveries(app)
    assert sorted(deliveries) == sorted(
        (endpoints[name], a["id"]) for name in ("all", "review") for a in found
    )
    payload = await scalar(
        app,
        "SELECT payload FROM webhook_deliveries WHERE payout_id = :id AND endpoint_id = :e",
        id=found[0]["id"],
        e=endpoints["all"],
    )
    assert '"type":"anomaly.detected"' in payload
    assert f'"anomaly":{{"id":"{found[0]["id"]}"' in payload
    assert await _counter(client) == before + 2


async def _deliveries(app: FastAPI) -> list[tuple[str, str]]:
    async with db_session(app) as session:
        rows = await session.execute(
            text(
                "SELECT endpoint_id, payout_id FROM webhook_deliveries"
                " WHERE event_type = 'anomaly.detected'"
            )
        )
        return [(r[0], r[1]) for r in rows.all()]


async def _counter(client: httpx.AsyncClient) -> float:
    exposition = (await client.get("/metrics")).text
    for line in exposition.splitlines():
        if line.startswith('payoutsvc_anomalies_detected_total{kind="threshold_splitting"}'):
            return float(line.split()[-1])
    return 0.0


async def test_review_thresholds_are_validated(client: httpx.AsyncClient) -> None:
    document = {
        **DEFAULT_POLICY_DOCUMENT,
        "review": {"working_hours": {"start": "25:00", "end": "19:00"}},
    }
    refused = await client.put("/v1/policy", json=document)
    assert_problem(refused, 422, "validation_failed", "review.working_hours.start", "invalid_time")
    document["review"] = {"threshold_splitting": {"near_percent": 0}}
    refused = await client.put("/v1/policy", json=document)
    assert_problem(refused, 422, "validation_failed", "review.threshold_splitting.near_percent")
    assert (await client.get("/v1/policy")).json()["version"] == 1  # nothing changed
