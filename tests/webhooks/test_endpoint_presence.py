"""The outbox's memory of integrations without webhook endpoints: it spares the endpoint
lookup for them, and forgets at once when an endpoint is created or enabled (in this process
through the wake-up, in others through NOTIFY) or after its TTL."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from payoutsvc.db.signals import Signals
from payoutsvc.webhooks.outbox import NO_ENDPOINT_TTL_SECONDS, EndpointPresence, endpoint_presence
from payoutsvc.webhooks.repository import ENDPOINTS_CHANGED
from tests.api_support import new_payout, scalar
from tests.helpers import create_operator
from tests.webhooks.conftest import create_endpoint


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_none_is_remembered_until_a_change_or_the_ttl() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    signals, clock = Signals(engine), _Clock()
    presence = EndpointPresence(signals, clock)
    assert presence.without_endpoints({"int_a", "int_b"}) == set()
    presence.remember_none({"int_a"})
    assert presence.without_endpoints({"int_a", "int_b"}) == {"int_a"}
    signals.fire([ENDPOINTS_CHANGED])
    assert presence.without_endpoints({"int_a"}) == set()
    presence.remember_none({"int_a"})
    clock.now += NO_ENDPOINT_TTL_SECONDS
    assert presence.without_endpoints({"int_a"}) == set()
    await engine.dispose()


async def test_an_endpoint_created_after_payouts_without_one_gets_the_next_event(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await create_operator(client, "agent-17", "agent")
    await new_payout(client, 1)
    presence = endpoint_presence(app.state.runtime)
    integration_id = await scalar(app, "SELECT integration_id FROM payouts")
    assert presence.without_endpoints({integration_id}) == {integration_id}
    await create_endpoint(client, "https://example.com/hook", ["payout.created"])
    second = await new_payout(client, 2)
    deliveries = await scalar(
        app, "SELECT count(*) FROM webhook_deliveries WHERE payout_id = :p", p=second["id"]
    )
    assert deliveries == 1
