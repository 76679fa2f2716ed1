"""/metrics: an optional bearer token, and queue gauges read from the database at most once
per PAYOUTSVC_METRICS_REFRESH_SECONDS however often it is scraped."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import event

from payoutsvc.main import create_app
from payoutsvc.metrics import ThrottledRefresh
from tests.api_support import assert_problem
from tests.conftest import make_settings

METRICS_TOKEN = "metrics-token-0123456789abcdef"


@asynccontextmanager
async def scraper(database_url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(make_settings(database_url, **overrides))
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://testserver"
        ) as http,
    ):
        yield http


async def test_with_a_token_metrics_need_it(database_url: str) -> None:
    async with scraper(database_url, metrics_token=METRICS_TOKEN) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": METRICS_TOKEN}):
            refused = await http.get("/metrics", headers=headers)
            assert_problem(refused, 401, "unauthorized")
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "payoutsvc_" not in refused.text
        allowed = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert allowed.status_code == 200
        assert "payoutsvc_executor_queue_depth" in allowed.text
        assert (await http.get("/healthz")).status_code == 200  # the others stay open


async def test_without_a_token_metrics_stay_open(database_url: str) -> None:
    async with scraper(database_url) as http:
        assert (await http.get("/metrics")).status_code == 200


async def test_scrapes_within_the_refresh_interval_do_not_query_the_database(
    database_url: str,
) -> None:
    """The issue: /metrics queried the database on every scrape."""
    application = create_app(make_settings(database_url, metrics_refresh_seconds=60))
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://testserver"
        ) as http,
    ):
        statements: list[str] = []
        engine = application.state.runtime.db.read_engine.sync_engine

        def record(*args: Any) -> None:
            statements.append(str(args[2]))

        event.listen(engine, "before_cursor_execute", record)
        try:
            first = await http.get("/metrics")
            read_by_first = len(statements)
            for _ in range(20):
                assert (await http.get("/metrics")).status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", record)
    assert first.status_code == 200
    assert read_by_first > 0  # the first scrape did read the queues
    assert len(statements) == read_by_first, statements[read_by_first:]


async def test_the_gauges_are_read_again_once_the_interval_has_passed() -> None:
    now = [100.0]
    reads: list[float] = []

    async def read() -> None:
        reads.append(now[0])

    refresh = ThrottledRefresh(read, interval=5, clock=lambda: now[0])
    await refresh()
    now[0] = 104.9
    await refresh()
    assert reads == [100.0]
    now[0] = 105.0
    await refresh()
    assert reads == [100.0, 105.0]


async def test_a_failed_read_is_not_retried_by_every_scrape() -> None:
    now = [0.0]
    attempts: list[float] = []

    async def failing() -> None:
        attempts.append(now[0])
        raise ConnectionError("database down")

    refresh = ThrottledRefresh(failing, interval=5, clock=lambda: now[0])
    for _ in range(3):
        with contextlib.suppress(ConnectionError):
            await refresh()
    assert attempts == [0.0]
