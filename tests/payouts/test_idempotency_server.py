"""Idempotency under a real cross-connection race: the real server process (uvicorn, two
worker processes on PostgreSQL) and 50 concurrent HTTP requests with one key."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import ADMIN_KEY, ENCRYPTION_KEY, POSTGRES_URL
from tests.helpers import payout_body

# SQLite is one process by design, and the in-process ASGI test covers it (test_idempotency).
pytestmark = pytest.mark.skipif(POSTGRES_URL is None, reason="needs PAYOUTSVC_TEST_DATABASE_URL")

STARTUP_DEADLINE_SECONDS = 120
WORKER_PROCESSES = 2


@pytest.fixture(params=["postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    """`payoutsvc serve` with two worker processes on a free loopback port; yields its base URL
    once every worker has started."""
    port = _free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTSVC_")}
    environment.update(
        PAYOUTSVC_DATABASE_URL=database_url,
        PAYOUTSVC_BOOTSTRAP_API_KEY=ADMIN_KEY,
        PAYOUTSVC_ENCRYPTION_KEY=ENCRYPTION_KEY,
        PAYOUTSVC_RUN_WORKER="false",
        PAYOUTSVC_LOG_LEVEL="INFO",  # "startup.ready" tells when each worker serves
        PAYOUTSVC_LOG_FORMAT="json",
    )
    log_path = tmp_path / "server.log"
    script = Path(sys.executable).with_name("payoutsvc")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(script),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(WORKER_PROCESSES),
            ],
            cwd=tmp_path,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        while True:
            assert process.poll() is None, log_path.read_text()
            started = log_path.read_text().count("startup.ready")
            try:
                ready = httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                ready = False
            if ready and started >= WORKER_PROCESSES:
                break
            assert time.monotonic() < deadline, (
                "server did not become ready:\n" + log_path.read_text()
            )
            time.sleep(0.1)
        yield base_url
    finally:
        # Our own process group only (uvicorn's worker processes are in it).
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
async def http(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        limits=httpx.Limits(max_connections=60),
        timeout=60,
    ) as client:
        yield client


async def _count(database_url: str, sql: str, **params: str) -> int:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(text(sql), params)).scalar_one())
    finally:
        await engine.dispose()


async def test_fifty_concurrent_requests_to_the_real_server_create_one_payout(
    http: httpx.AsyncClient, database_url: str
) -> None:
    operator = await http.post("/v1/operators", json={"id": "agent-17", "role": "agent"})
    assert operator.status_code == 201, operator.text
    body = payout_body()
    key = "real-race"

    async def attempt() -> httpx.Response:
        return await http.post("/v1/payouts", json=body, headers={"Idempotency-Key": key})

    responses = await asyncio.gather(*(attempt() for _ in range(50)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 409}, [r.text for r in responses if r.status_code >= 400]
    created = [r for r in responses if r.status_code == 201]
    assert created
    assert len({r.content for r in created}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in created) == 1
    for conflict in (r for r in responses if r.status_code == 409):
        assert conflict.json()["code"] == "idempotency_key_in_use"
        assert conflict.headers["content-type"].startswith("application/problem+json")

    payouts = await _count(
        database_url, "SELECT count(*) FROM payouts WHERE idempotency_key = :k", k=key
    )
    assert payouts == 1
    # Once the first answer has committed, every retry replays it.
    replay = await attempt()
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == created[0].content
