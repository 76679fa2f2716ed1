"""At most PAYOUTSVC_WEBHOOK_MAX_ENDPOINTS endpoints per integration, even when created in
parallel: each endpoint is one more delivery row in every payout's transaction (1,000
endpoints used to mean 2,000 rows written by one payout)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from payoutsvc.main import create_app
from tests.api_support import assert_problem, new_payout, scalar
from tests.conftest import ADMIN_KEY, make_settings
from tests.helpers import create_operator, new_integration_client

CAP = 3


@pytest.fixture
async def capped(database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    application = create_app(make_settings(database_url, webhook_max_endpoints=CAP))
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as http,
    ):
        yield application, http


def _endpoint(index: int) -> dict[str, str]:
    return {"url": f"https://127.0.0.1:9/hooks/{index}"}


async def test_the_endpoint_after_the_cap_is_422_too_many_endpoints(
    capped: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = capped
    created = [await client.post("/v1/webhook-endpoints", json=_endpoint(i)) for i in range(CAP)]
    assert [c.status_code for c in created] == [201] * CAP
    over = await client.post("/v1/webhook-endpoints", json=_endpoint(99))
    assert_problem(over, 422, "too_many_endpoints")
    # Another integration has its own allowance.
    async with await new_integration_client(client, "zendesk", ["payouts:write"]) as other:
        assert (await other.post("/v1/webhook-endpoints", json=_endpoint(7))).status_code == 201
    # Deleting one makes room again.
    deleted = await client.delete(f"/v1/webhook-endpoints/{created[0].json()['id']}")
    assert deleted.status_code == 204, deleted.text
    assert (await client.post("/v1/webhook-endpoints", json=_endpoint(5))).status_code == 201
    # A payout's events go to the integration's endpoints: never more than the cap.
    await create_operator(client, "agent-17", "agent")
    payout = await new_payout(client)
    endpoints_written = await scalar(
        app,
        "SELECT count(DISTINCT endpoint_id) FROM webhook_deliveries WHERE payout_id = :payout",
        payout=payout["id"],
    )
    assert endpoints_written == CAP


async def test_parallel_creations_cannot_pass_the_cap(
    capped: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = capped
    answers = await asyncio.gather(
        *(client.post("/v1/webhook-endpoints", json=_endpoint(i)) for i in range(12))
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] * CAP + [422] * (12 - CAP), [a.text for a in answers]
    assert await scalar(app, "SELECT count(*) FROM webhook_endpoints") == CAP
