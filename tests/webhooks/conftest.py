"""Fixtures for webhook tests: a real receiver on loopback, a short retry schedule, and
a helper that drives the sender until a condition holds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from payoutsvc.config import Settings
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.sender import WebhookSender
from tests.conftest import make_settings
from tests.helpers import eventually
from tests.webhooks.receiver import Receiver

FAST_SCHEDULE = (0.05, 0.05, 0.05)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(
        database_url, webhook_retry_schedule=FAST_SCHEDULE, webhook_timeout_seconds=5.0
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def runtime(app: Any) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


def sender_for(runtime: Runtime, **settings_overrides: Any) -> WebhookSender:
    """A sender whose settings differ from the app's by ``settings_overrides``."""
    if settings_overrides:
        runtime = Runtime(
            settings=runtime.settings.model_copy(update=settings_overrides),
            db=runtime.db,
            cipher=runtime.cipher,
        )
    return WebhookSender(runtime)


@pytest.fixture
async def sender(runtime: Runtime) -> AsyncIterator[WebhookSender]:
    webhook_sender = WebhookSender(runtime)
    try:
        yield webhook_sender
    finally:
        await webhook_sender.aclose()


async def pump(
    sender: WebhookSender,
    until: Callable[[], bool],
    timeout: float = 10.0,
    what: str = "deliveries",
) -> None:
    """Run sender rounds until ``until()`` holds (retries come due in real time)."""

    async def one_round_then_check() -> bool:
        if not until():
            await sender.run_once()
        return until()

    await eventually(one_round_then_check, timeout=timeout, interval=0.02, what=what)


async def create_endpoint(
    client: httpx.AsyncClient, url: str, events: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url, **extra}
    if events is not None:
        body["events"] = events
    response = await client.post("/v1/webhook-endpoints", json=body)
    assert response.status_code == 201, response.text
    created = dict(response.json())
    assert created["secret"].startswith("whsec_")
    return created


async def deliveries_of(
    client: httpx.AsyncClient, endpoint_id: str, **params: Any
) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])
