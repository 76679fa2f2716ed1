"""Idempotency-Key on POST /v1/payouts: replays, conflicts, scope, expiry, concurrency."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from payoutsvc.background import BackgroundLoops
from payoutsvc.config import Settings
from payoutsvc.db.base import utcnow
from payoutsvc.payouts.repository import PayoutRepository
from payoutsvc.workers import start_background_work
from tests.api_support import (
    alipay_recipient,
    assert_problem,
    db_session,
    post_payout,
    scalar,
)
from tests.helpers import create_operator, new_integration_client, payout_body


@pytest.fixture
async def requester(client: httpx.AsyncClient) -> str:
    await create_operator(client, "agent-17", "agent")
    return "agent-17"


async def _payouts_with_key(app: FastAPI, key: str) -> int:
    return int(await scalar(app, "SELECT count(*) FROM payouts WHERE idempotency_key = :k", k=key))


async def test_replay_returns_the_stored_answer(
    client: httpx.AsyncClient, app: FastAPI, requester: str
) -> None:
    body = payout_body()
    first = await post_payout(client, body, key="replay-1")
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    for _ in range(2):
        again = await post_payout(client, body, key="replay-1")
        assert again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert again.headers["content-type"] == first.headers["content-type"]
    assert await _payouts_with_key(app, "replay-1") == 1
    events = (await client.get(f"/v1/payouts/{first.json()['id']}/events")).json()["data"]
    assert [e["type"] for e in events].count("payout.created") == 1


async def test_replay_ignores_json_key_order_and_whitespace(
    client: httpx.AsyncClient, requester: str
) -> None:
    """Same body means same JSON content, not the same bytes."""
    body = payout_body()
    first = await post_payout(client, body, key="order")
    reordered = dict(reversed(list(body.items())))
    again = await client.post(
        "/v1/payouts",
        content=httpx.Request("POST", "/", json=reordered).content.replace(b",", b", "),
        headers={"Idempotency-Key": "order", "Content-Type": "application/json"},
    )
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


@pytest.mark.parametrize(
    "change",
    [
        {"amount": "12.51"},
        {"recipient": alipay_recipient(8001)},
        {"metadata": {"order_id": "9932"}},
        {"description": None},
    ],
)
async def test_same_key_different_body_is_refused(
    client: httpx.AsyncClient, app: FastAPI, requester: str, change: dict[str, Any]
) -> None:
    first = await post_payout(client, payout_body(), key="reused")
    assert first.status_code == 201
    response = await post_payout(client, payout_body(**change), key="reused")
    assert_problem(response, 422, "idempotency_key_reused")
    assert "idempotent-replayed" not in response.headers
    assert await _payouts_with_key(app, "reused") == 1


@pytest.mark.parametrize("headers", [{}, {"Idempotency-Key": ""}, {"Idempotency-Key": "   "}])
async def test_missing_key_is_400(
    client: httpx.AsyncClient, app: FastAPI, requester: str, headers: dict[str, str]
) -> None:
    response = await client.post("/v1/payouts", json=payout_body(), headers=headers)
    assert_problem(response, 400, "idempotency_key_missing")
    assert await scalar(app, "SELECT count(*) FROM payouts") == 0


async def test_key_length_limit(client: httpx.AsyncClient, app: FastAPI, requester: str) -> None:
    too_long = await post_payout(client, payout_body(), key="k" * 256)
    assert_problem(too_long, 400, "idempotency_key_invalid")
    assert await scalar(app, "SELECT count(*) FROM payouts") == 0
    longest = await post_payout(client, payout_body(), key="k" * 255)
    assert longest.status_code == 201, longest.text


async def test_a_key_is_scoped_to_its_integration(
    client: httpx.AsyncClient, app: FastAPI, requester: str
) -> None:
    scopes = ["payouts:write", "payouts:read"]
    async with (
        await new_integration_client(client, "desk-a", scopes) as desk_a,
        await new_integration_client(client, "desk-b", scopes) as desk_b,
    ):
        a = await post_payout(desk_a, payout_body(), key="shared-key")
        b = await post_payout(desk_b, payout_body(amount="9.90"), key="shared-key")
    assert (a.status_code, b.status_code) == (201, 201), (a.text, b.text)
    assert "idempotent-replayed" not in b.headers
    assert a.json()["id"] != b.json()["id"]
    assert await _payouts_with_key(app, "shared-key") == 2


@pytest.mark.parametrize(
    "invalid",
    [
        {"amount": "1.005"},
        {"recipient": {"type": "alipay", "account": "12345", "name": "张三"}},
    ],
    ids=["bad-amount", "bad-recipient"],
)
async def test_a_refused_request_stores_nothing(
    client: httpx.AsyncClient, app: FastAPI, requester: str, invalid: dict[str, Any]
) -> None:
    """A request that fails validation is not an answer to remember. (A policy decision is:
    a request the policy refuses may be replayed, so that case is not here.)"""
    refused = await post_payout(client, payout_body(**invalid), key="fix-and-retry")
    assert refused.status_code == 422, refused.text
    assert await scalar(app, "SELECT count(*) FROM idempotency_keys") == 0
    corrected = await post_payout(client, payout_body(), key="fix-and-retry")
    assert corrected.status_code == 201, corrected.text
    assert "idempotent-replayed" not in corrected.headers


async def test_records_are_kept_at_least_24_hours(
    client: httpx.AsyncClient, app: FastAPI, requester: str
) -> None:
    assert (await post_payout(client, payout_body(), key="ttl")).status_code == 201
    async with db_session(app) as session:
        record = await PayoutRepository(session).get_idempotency(_default_id(app), "ttl")
    assert record is not None
    assert record.expires_at - record.created_at >= timedelta(hours=24)
    with pytest.raises(ValidationError):
        Settings(idempotency_ttl_hours=23)


def _default_id(app: FastAPI) -> str:
    integration_id: str = app.state.test_default_integration
    return integration_id


@pytest.fixture(autouse=True)
async def _remember_default_integration(app: FastAPI, client: httpx.AsyncClient) -> None:
    integrations = (await client.get("/v1/integrations")).json()["data"]
    app.state.test_default_integration = next(
        i["id"] for i in integrations if i["name"] == "default"
    )


async def _expire(app: FastAPI, key: str) -> None:
    async with db_session(app) as session:
        record = await PayoutRepository(session).get_idempotency(_default_id(app), key)
        assert record is not None
        record.expires_at = utcnow() - timedelta(seconds=1)


async def test_purge_removes_only_expired_records(
    client: httpx.AsyncClient, app: FastAPI, requester: str
) -> None:
    old = await post_payout(client, payout_body(), key="old")
    await post_payout(client, payout_body(amount="9.90"), key="fresh")
    await _expire(app, "old")
    async with db_session(app) as session:
        assert await PayoutRepository(session).purge_idempotency(utcnow()) == 1
    keys = await scalar(app, "SELECT count(*) FROM idempotency_keys WHERE key = 'fresh'")
    assert keys == 1
    assert await scalar(app, "SELECT count(*) FROM idempotency_keys WHERE key = 'old'") == 0
    # The payout itself stays; only the stored answer is gone, so the key is free again.
    assert (await client.get(f"/v1/payouts/{old.json()['id']}")).status_code == 200
    reused = await post_payout(client, payout_body(amount="8.80"), key="old")
    assert reused.status_code == 201, reused.text
    assert reused.json()["id"] != old.json()["id"]


async def test_an_expired_record_is_not_replayed_even_before_the_purge(
    client: httpx.AsyncClient, app: FastAPI, requester: str
) -> None:
    old = await post_payout(client, payout_body(), key="stale")
    await _expire(app, "stale")
    again = await post_payout(client, payout_body(amount="9.90"), key="stale")
    assert again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != old.json()["id"]


class _RecordingLoops(BackgroundLoops):
    """Records what a process would run instead of starting it."""

    def __init__(self) -> None:
        super().__init__()
        self.periodic: dict[str, tuple[float, Callable[[], Awaitable[object]]]] = {}

    def every(self, name: str, interval: float, step: Callable[[], Awaitable[object]]) -> None:
        self.periodic[name] = (interval, step)

    def start(self, name: str, run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        del name, run


async def test_the_purge_runs_periodically_in_every_api_process(
    client: httpx.AsyncClient, app: FastAPI, requester: str
) -> None:
    await post_payout(client, payout_body(), key="purged")
    await post_payout(client, payout_body(amount="9.90"), key="kept")
    await _expire(app, "purged")
    loops = _RecordingLoops()
    start_background_work(app.state.runtime, loops, False)
    purges = [(i, s) for name, (i, s) in loops.periodic.items() if "idempotency" in name]
    assert len(purges) == 1, loops.periodic
    interval, step = purges[0]
    assert 0 < interval <= 24 * 3600
    await step()
    remaining = await scalar(app, "SELECT count(*) FROM idempotency_keys")
    assert remaining == 1
    assert await scalar(app, "SELECT key FROM idempotency_keys") == "kept"


async def test_a_second_request_while_the_first_runs_is_409(
    client: httpx.AsyncClient, app: FastAPI, requester: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()
    original = PayoutRepository.insert_payouts

    async def paused_insert(self: PayoutRepository, rows: Any) -> None:
        entered.set()
        await release.wait()
        await original(self, rows)

    monkeypatch.setattr(PayoutRepository, "insert_payouts", paused_insert)
    body = payout_body()
    first = asyncio.create_task(post_payout(client, body, key="slow"))
    await asyncio.wait_for(entered.wait(), timeout=10)
    second = asyncio.create_task(post_payout(client, body, key="slow"))
    # The second answers 409 at once, or (if it has to wait for the database) replays later.
    done, _ = await asyncio.wait({second}, timeout=2)
    release.set()
    created = await first
    assert created.status_code == 201, created.text
    concurrent = await second
    if done:
        assert_problem(concurrent, 409, "idempotency_key_in_use")
        assert concurrent.headers["retry-after"].isdigit()
    else:
        assert concurrent.status_code == 201
        assert concurrent.json() == created.json()
    replay = await post_payout(client, body, key="slow")
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == created.json()
    assert await _payouts_with_key(app, "slow") == 1


async def test_fifty_concurrent_identical_requests_create_one_payout(
    client: httpx.AsyncClient, app: FastAPI, requester: str
) -> None:
    body = payout_body()
    key = f"concurrent-{uuid.uuid4().hex}"
    responses = await asyncio.gather(*(post_payout(client, body, key=key) for _ in range(50)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 409}, [
        r.text for r in responses if r.status_code not in (201, 409)
    ]
    created = [r for r in responses if r.status_code == 201]
    assert created, statuses
    assert len({r.text for r in created}) == 1
    originals = [r for r in created if "idempotent-replayed" not in r.headers]
    assert len(originals) == 1
    for conflict in (r for r in responses if r.status_code == 409):
        assert_problem(conflict, 409, "idempotency_key_in_use")
    assert await _payouts_with_key(app, key) == 1
    assert await scalar(app, "SELECT count(*) FROM idempotency_keys") == 1
    payout_id = created[0].json()["id"]
    created_events = await scalar(
        app,
        "SELECT count(*) FROM payout_events WHERE payout_id = :p AND type = 'payout.created'",
        p=payout_id,
    )
    assert created_events == 1
