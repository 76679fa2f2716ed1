"""Fixtures of the connector tests: a short retry schedule, a fake helpdesk per kind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from payoutsvc.config import Settings
from payoutsvc.connectors.kinds import RENDERERS
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.sender import WebhookSender
from tests.conftest import make_settings


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(
        database_url, webhook_retry_schedule=(0.05, 0.05, 0.05, 0.05), webhook_timeout_seconds=5.0
    )


@pytest.fixture
def runtime(app: Any) -> Runtime:
    found: Runtime = app.state.runtime
    return found


@pytest.fixture
async def sender(runtime: Runtime) -> AsyncIterator[WebhookSender]:
    webhook_sender = WebhookSender(runtime, renderers=RENDERERS)
    try:
        yield webhook_sender
    finally:
        await webhook_sender.aclose()
