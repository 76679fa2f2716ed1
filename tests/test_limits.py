"""Request limits (README "Limits"): bodies are cut off as they stream in, budgets per API
key and per client address answer 429 with the IETF RateLimit headers, on one process's
memory or on a Redis every replica shares, and a 422 lists a bounded number of problems."""

from __future__ import annotations

import asyncio
import json
import socket
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from unittest.mock import patch

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from payoutsvc.main import create_app
from payoutsvc.ratelimit import ProcessWindows, RateLimiter, burst_item
from tests.api_support import assert_problem, post_payout
from tests.conftest import ADMIN_KEY, make_settings
from tests.helpers import new_integration_client, payout_body

CHUNK = 64 * 1024
MiB = 1024 * 1024


class CountingBody:
    """A request body produced chunk by chunk, remembering how much the server took."""

    def __init__(self, total: int, chunk: bytes = b"x" * CHUNK) -> None:
        self.total = total
        self.chunk = chunk
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += len(self.chunk)
            yield self.chunk


@asynccontextmanager
async def running(database_url: str, **overrides: Any) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(database_url, **overrides))
    async with application.router.lifespan_context(application):
        yield application


def http(
    app: FastAPI, key: str | None = ADMIN_KEY, address: str = "127.0.0.1"
) -> httpx.AsyncClient:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 40000)),
        base_url="http://testserver",
        headers=headers,
    )


# -- bodies -------------------------------------------------------------------------------
async def test_a_60_mb_unauthenticated_post_is_refused_before_it_is_read(app: FastAPI) -> None:
    """The attack: a 60 MB POST without a key used to be read and parsed before the 401
    (RSS 125 -> 328 MB). Now the server stops taking it at the limit (256 KiB), whether the
    body is chunked or declares its length, and memory stays far below 200 MB."""
    async with http(app, key=None) as anonymous:
        tracemalloc.start()
        try:
            chunked = CountingBody(60 * MiB)
            response = await anonymous.post(
                "/v1/payouts",
                content=chunked,
                headers={"Content-Type": "application/json", "Idempotency-Key": "big"},
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert_problem(response, 413, "payload_too_large")
        assert chunked.sent <= 256 * 1024 + CHUNK, chunked.sent
        assert peak < 200 * MiB, peak

        declared = CountingBody(60 * MiB)
        response = await anonymous.post(
            "/v1/payouts",
            content=declared,
            headers={"Content-Type": "application/json", "Content-Length": str(60 * MiB)},
        )
        assert_problem(response, 413, "payload_too_large")
        assert declared.sent <= CHUNK  # refused on its Content-Length, nothing read


async def test_a_body_with_millions_of_keys_is_refused_at_the_limit(
    client: httpx.AsyncClient,
) -> None:
    """23 MB of keys took 1.9 s of CPU to parse; now it is never parsed."""
    many_keys = CountingBody(23 * MiB, chunk=b'"k": 1, ' * 8192)
    response = await client.post(
        "/v1/payouts",
        content=many_keys,
        headers={"Content-Type": "application/json", "Idempotency-Key": "keys"},
    )
    assert_problem(response, 413, "payload_too_large")
    assert many_keys.sent <= 256 * 1024 + len(many_keys.chunk)


async def test_a_deeply_nested_body_is_a_client_error(client: httpx.AsyncClient) -> None:
    """Nesting within the byte limit cannot exhaust the parser into a 500."""
    for opener in ("[", '{"a":'):
        deep = (opener * 100_000).encode()[: 200 * 1024]
        response = await client.post(
            "/v1/payouts",
            content=deep,
            headers={"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code in (400, 422), response.text
        assert_problem(response, response.status_code, ("invalid_json", "validation_failed"))


async def test_a_gateway_callback_is_refused_unread_beyond_64_kib(app: FastAPI) -> None:
    """The callback endpoint used to read the whole body before its size check."""
    async with http(app, key=None) as gateway:
        body = CountingBody(8 * MiB)
        response = await gateway.post(
            "/v1/gateway-callbacks/sandbox",
            content=body,
            headers={"Content-Type": "application/json"},
        )
    assert_problem(response, 413, "payload_too_large")
    assert body.sent <= 64 * 1024 + CHUNK, body.sent


async def test_the_openapi_document_states_each_body_limit(app: FastAPI) -> None:
    document = app.openapi()
    create = document["paths"]["/v1/payouts"]["post"]
    callback = document["paths"]["/v1/gateway-callbacks/{gateway}"]["post"]
    assert create["x-max-body-bytes"] == 256 * 1024
    assert callback["x-max-body-bytes"] == 64 * 1024
    assert {"413", "429"} <= set(create["responses"])
    assert "413" in callback["responses"]


async def test_a_422_lists_at_most_50_problems(client: httpx.AsyncClient) -> None:
    body = {**payout_body(), **{f"unknown_{i}": 1 for i in range(2000)}}
    response = await post_payout(client, body)
    problem = assert_problem(response, 422, "validation_failed")
    assert len(problem["errors"]) == 50
    assert "(and 1995 more)" in problem["detail"]
    assert len(response.content) < 20_000


# -- rate limits ----------------------------------------------------------------------------
async def test_a_burst_over_a_keys_rate_is_429_with_retry_after_and_ratelimit_headers(
    database_url: str,
) -> None:
    async with (
        running(database_url, rate_limit="5/second", rate_limit_burst=10) as app,
        http(app) as admin,
    ):
        other = await new_integration_client(admin, "zendesk", ["payouts:read"])
        answers = [await admin.get("/v1/operators") for _ in range(8)]  # 2 spent above
        over = await admin.get("/v1/operators")
        async with other:
            fresh = await other.get("/v1/payouts")
    assert [a.status_code for a in answers] == [200] * 8
    assert answers[0].headers["ratelimit-policy"] == '"per-key";q=10;w=2'
    remaining = [int(a.headers["ratelimit"].split(";r=")[1].split(";")[0]) for a in answers]
    assert remaining == sorted(remaining, reverse=True)
    assert remaining[-1] == 0
    assert_problem(over, 429, "rate_limited")
    assert 1 <= int(over.headers["retry-after"]) <= 2
    assert over.headers["ratelimit"].startswith('"per-key";r=0;t=')
    assert "x-request-id" in over.headers
    # Each key has its own budget.
    assert fresh.status_code == 200, fresh.text
    assert fresh.headers["ratelimit"].startswith('"per-key";r=9;')


async def test_300_bad_key_requests_from_one_address_meet_a_429(database_url: str) -> None:
    """The attack: 300 bad-key requests in 0.4 s never met a 429. Now an address gets the
    burst (200) of requests without a valid key, then 429 for everything it sends, before
    its bodies are read or its keys looked up; other addresses are not affected."""
    # A 20 s window (200 at 10/s), so a slow, loaded machine still sends all 300 inside it.
    async with running(database_url, rate_limit="10/second", rate_limit_burst=200) as app:
        async with http(app, key="psk_guess", address="203.0.113.7") as guesser:
            answers = [(await guesser.get("/v1/payouts")).status_code for _ in range(300)]
            first_429 = answers.index(429)
            unread = CountingBody(10 * MiB)
            refused = await guesser.post("/v1/payouts", content=unread)
            async with http(app, address="203.0.113.7") as same_address:
                shared = await same_address.get("/v1/operators")
        async with http(app, key="psk_guess", address="198.51.100.1") as elsewhere:
            other_address = await elsewhere.get("/v1/payouts")
    assert set(answers[:first_429]) == {401}
    # The burst, plus whatever left the 20 s window meanwhile (nothing, unless very slow).
    assert 200 <= first_429 < 300, first_429
    assert set(answers[first_429:]) == {429}
    assert_problem(refused, 429, "rate_limited")
    assert "retry-after" in refused.headers
    assert refused.headers["ratelimit-policy"] == '"per-address";q=200;w=20'
    assert unread.sent <= CHUNK
    # A valid key from that address waits too: the address cannot be told apart from its keys.
    assert_problem(shared, 429, "rate_limited")
    assert_problem(other_address, 401, "unauthorized")


async def test_gateway_callbacks_count_against_their_address(database_url: str) -> None:
    async with (
        running(database_url, rate_limit="1/second", rate_limit_burst=3) as app,
        http(app, key=None, address="192.0.2.10") as gateway,
    ):
        answers = [
            await gateway.post("/v1/gateway-callbacks/sandbox", content=b"{}") for _ in range(4)
        ]
    assert all(a.status_code != 429 for a in answers[:3]), [a.text for a in answers]
    assert answers[0].headers["ratelimit-policy"] == '"per-address";q=3;w=3'
    assert_problem(answers[3], 429, "rate_limited")


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")
# One Redis and one admin key for every test worker: its two runs (one per backend) must not
# overlap, or each would spend the other's budget.
@pytest.mark.xdist_group("redis")
async def test_replicas_on_redis_share_one_budget(database_url: str) -> None:
    """Two API replicas on one Redis: a key's burst of 10 is 10 across both, not 10 each."""
    redis = {"rate_limit": "5/second", "rate_limit_burst": 10}
    storage = "redis://127.0.0.1:6379"
    async with (
        running(database_url, rate_limit_storage=storage, **redis) as first,
        running(database_url, rate_limit_storage=storage, **redis) as second,
        http(first) as via_first,
        http(second) as via_second,
    ):
        answers = []
        for index in range(12):
            replica = via_first if index % 2 else via_second
            answers.append((await replica.get("/v1/operators")).status_code)
    assert answers[:10] == [200] * 10
    assert answers[10:] == [429, 429]


async def test_budgets_hold_in_memory_while_redis_is_unreachable() -> None:
    """Redis down (nothing listens on port 1): each process still refuses a flood."""
    limiter = RateLimiter(burst_item("5/second", 10), "redis://127.0.0.1:1")
    verdicts = [await limiter.hit("per-key", "key_x") for _ in range(11)]
    assert [v.allowed for v in verdicts] == [True] * 10 + [False]
    assert verdicts[-1].headers()["Retry-After"] in {"1", "2"}


async def test_a_burst_of_parallel_requests_cannot_outrun_the_budget(database_url: str) -> None:
    async with (
        running(database_url, rate_limit="5/second", rate_limit_burst=10) as app,
        http(app) as admin,
    ):
        answers = await asyncio.gather(*(admin.get("/v1/operators") for _ in range(30)))
    codes = [a.status_code for a in answers]
    assert codes.count(200) == 10, codes
    assert codes.count(429) == 20, codes
    assert all(
        json.loads(a.text)["code"] == "rate_limited" for a in answers if a.status_code == 429
    )


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["hit", "peek"]),
            st.sampled_from(["key_a", "key_b"]),
            st.floats(min_value=0, max_value=1.5),
        ),
        max_size=60,
    )
)
def test_process_windows_answer_as_the_limits_memory_storage(
    steps: list[tuple[str, str, float]],
) -> None:
    """The in-process windows (ratelimit.ProcessWindows) give every hit and every peek the
    same verdict, remaining count and reset time as `limits`' own memory storage, whose
    windows they replace because that one trims them in a thread after every hit."""
    clock = [1_000_000.0]
    item = burst_item("3/second", 4)  # 4 per 2 s: windows fill and drain within a run
    ours = MovingWindowRateLimiter(ProcessWindows())
    theirs = MovingWindowRateLimiter(MemoryStorage())

    async def run() -> None:
        for action, key, pause in steps:
            clock[0] += pause
            if action == "hit":
                assert await ours.hit(item, key) == await theirs.hit(item, key)
            mine, original = (
                await ours.get_window_stats(item, key),
                await theirs.get_window_stats(item, key),
            )
            assert mine.remaining == original.remaining
            if mine.remaining < item.amount:
                assert mine.reset_time == original.reset_time
            else:
                # An empty window resets a window from now, as the original says of a key
                # it never saw (of one whose entries all expired it names a past time).
                assert mine.reset_time == clock[0] + item.get_expiry()

    with patch("time.time", lambda: clock[0]):
        asyncio.run(run())
