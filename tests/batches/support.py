"""Builders for the batch tests: the policy tests' world (TEST_POLICY, operators with their
own keys) and batch bodies."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.helpers import bearer_of
from tests.policy.support import body

BATCHES = "/v1/payout-batches"


def item(
    key: str, amount: str = "5.00", requested_by: str = "agent-1", **overrides: Any
) -> dict[str, Any]:
    """One batch item: a fresh ticket and PayPal recipient unless given."""
    return {"item_key": key, **body(amount, requested_by, **overrides)}


async def post_batch(
    client: httpx.AsyncClient,
    items: list[dict[str, Any]],
    key: str | None = None,
    *,
    as_operator: str | None = "agent-1",
    description: str | None = "March refunds",
) -> httpx.Response:
    """POST a JSON batch with ``as_operator``'s own key (None: the client's admin key)."""
    headers = {"Idempotency-Key": key or uuid.uuid4().hex}
    if as_operator is not None:
        headers.update(await bearer_of(client, as_operator))
    return await client.post(
        BATCHES, json={"description": description, "items": items}, headers=headers
    )


async def payout_count(client: httpx.AsyncClient) -> int:
    listed = await client.get("/v1/payouts", params={"limit": 200})
    assert listed.status_code == 200, listed.text
    return len(listed.json()["data"])
