"""Limits hold under concurrency: 20 parallel requests whose sum exceeds a cap never push the
accepted total past it (PostgreSQL: advisory locks per requester/ticket/recipient; SQLite:
one writer at a time). Driven through the same ASGI app concurrently on both backends."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.policy.support import body, paypal, policy, post, setup_world

PARALLEL = 20
AMOUNT = "25.00"  # 20 x 25.00 = 500.00, every cap below is 300.00

# Only the cap under test is tight; the others are out of reach.
GENEROUS = {"CNY": "100000.00"}
CASES: dict[str, dict[str, Any]] = {
    "daily_request_total": {"per_ticket_max": GENEROUS},
    "per_ticket_max": {"per_ticket_max": {"CNY": "300.00"}},
    "per_recipient_daily_amount": {
        "per_ticket_max": GENEROUS,
        "per_recipient_daily": {"count": None, "amount": {"CNY": "300.00"}},
    },
}


def _document(rule: str) -> dict[str, Any]:
    document = policy(**CASES[rule], duplicate_window_hours=0)
    if rule != "per_recipient_daily_amount":
        document["per_recipient_daily"] = {"count": None, "amount": GENEROUS}
    daily = {"CNY": "300.00"} if rule == "daily_request_total" else GENEROUS
    document["roles"]["supervisor"]["daily_request_total"] = daily
    return document


@pytest.mark.parametrize("rule", sorted(CASES))
async def test_parallel_requests_never_exceed_a_cap(client: httpx.AsyncClient, rule: str) -> None:
    await setup_world(client, _document(rule))

    def request(n: int) -> dict[str, Any]:
        # Share exactly the dimension whose cap is tested.
        return body(
            AMOUNT,
            "sup-1" if rule == "daily_request_total" else ("sup-1", "sup-2")[n % 2],
            ticket="T-shared" if rule == "per_ticket_max" else None,
            recipient=paypal(1) if rule == "per_recipient_daily_amount" else None,
        )

    answers = await asyncio.gather(*(post(client, request(n)) for n in range(PARALLEL)))
    accepted = [a.json() for a in answers if a.status_code == 201]
    refused = [a.json() for a in answers if a.status_code != 201]
    assert all(r["code"] == "policy_violation" for r in refused), refused
    assert {e["code"] for r in refused for e in r["errors"]} == {rule}
    accepted_minor = sum(p["amount_minor"] for p in accepted)
    assert accepted_minor <= 300_00
    # Serialised checks admit exactly as many as fit: 12 x 25.00 = 300.00.
    assert len(accepted) == 12, [a.text for a in answers]
    listed = await client.get("/v1/payouts", params={"limit": 200})
    assert sum(p["amount_minor"] for p in listed.json()["data"]) == accepted_minor
