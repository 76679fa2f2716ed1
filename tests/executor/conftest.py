"""Fixtures of the executor tests: the app's runtime, a fake clock, an executor on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from payoutsvc.executor.service import Executor
from payoutsvc.gateways.registry import GatewayRegistry
from payoutsvc.main import create_app
from payoutsvc.runtime import Runtime
from tests.conftest import ADMIN_KEY, make_settings
from tests.executor.support import FakeClock, setup_operators


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
    await setup_operators(client)


AppFactory = Callable[..., Awaitable[tuple[Any, httpx.AsyncClient]]]


@pytest.fixture
async def make_app(database_url: str) -> AsyncIterator[AppFactory]:
    """Build an app (lifespan running) with settings overrides, plus an admin client."""
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> tuple[Any, httpx.AsyncClient]:
            application = create_app(make_settings(database_url, **overrides))
            await stack.enter_async_context(application.router.lifespan_context(application))
            http = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=application),
                    base_url="http://testserver",
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                )
            )
            return application, http

        yield make


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: starts real server/worker processes (seconds each); in the default run"
    )
