"""Fixtures of the finance tests (release, manual gateway, reveal, export): the app's
runtime, a fake clock and an executor on it, the operators and a policy section."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from payoutsvc.executor.service import Executor
from payoutsvc.gateways.registry import GatewayRegistry
from payoutsvc.runtime import Runtime
from tests.executor.support import FakeClock
from tests.helpers import create_operator

REQUESTER = "fin-agent"  # a supervisor: small amounts are auto-approved
APPROVER = "fin-sup"  # a supervisor approves others' payouts
RELEASER = "fin-1"  # finance: can_release by default
OTHER_RELEASER = "fin-2"


@pytest.fixture
def runtime(app: Any) -> Runtime:
    found: Runtime = app.state.runtime
    return found


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def executor(runtime: Runtime, clock: FakeClock) -> AsyncIterator[Executor]:
    gateways = GatewayRegistry(runtime)
    yield Executor(runtime, gateways, clock=clock, worker_id="test-worker")
    await gateways.aclose()


@pytest.fixture
async def operators(client: httpx.AsyncClient) -> None:
    await create_operator(client, REQUESTER, "supervisor")
    await create_operator(client, APPROVER, "supervisor")
    await create_operator(client, RELEASER, "finance")
    await create_operator(client, OTHER_RELEASER, "finance")


async def use_release(client: httpx.AsyncClient, release: dict[str, Any]) -> dict[str, Any]:
    """The current policy with ``release`` as its release section (PUT); returns it."""
    current = (await client.get("/v1/policy")).json()
    current.pop("version")
    current["release"] = release
    response = await client.put("/v1/policy", json=current)
    assert response.status_code == 200, response.text
    return dict(response.json())
