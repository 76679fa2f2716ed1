from __future__ import annotations

import httpx

from tests.helpers import create_operator, create_payout


async def test_create_and_read_payout(client: httpx.AsyncClient) -> None:
    await create_operator(client, "agent-17", "agent")
    created = await create_payout(client)
    assert created.status_code == 201, created.text
    payout = created.json()
    fetched = await client.get(f"/v1/payouts/{payout['id']}")
    assert fetched.json() == payout
