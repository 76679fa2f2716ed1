"""No cross-integration figures (issue 13, item 6).

Policy totals are company-wide by design, so a refusal on one integration's request may be
caused by another integration's payouts. A non-admin key is told which limit its request
would exceed, never the amounts others already use; the back office (admin) sees them.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.helpers import bearer_of, create_operator, new_integration_client, payout_body

TICKET = {"system": "zendesk", "id": "SHARED-1"}
RECIPIENT = {"type": "alipay", "account": "13900001111", "name": "张三"}
_counter = iter(range(1, 10**6))


def _body(amount: str, requested_by: str, **overrides: Any) -> dict[str, Any]:
    n = next(_counter)
    overrides.setdefault("ticket", {"system": "zendesk", "id": f"OWN-{n}"})
    overrides.setdefault(
        "recipient", {"type": "alipay", "account": f"1370000{n:04d}", "name": "李四"}
    )
    return payout_body(amount=amount, requested_by=requested_by, **overrides)


async def _create(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await client.post(
        "/v1/payouts", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    assert response.status_code == 201, response.text


async def _preview_messages(
    client: httpx.AsyncClient, body: dict[str, Any], **headers: str
) -> dict[str, str]:
    response = await client.post("/v1/payouts/preview", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["decision"] == "forbidden", response.json()
    return {e["code"]: e["message"] for e in response.json()["errors"]}


async def test_previews_name_the_limit_not_other_integrations_amounts(
    client: httpx.AsyncClient,
) -> None:
    for operator_id in ("sup-2", "sup-3"):
        await create_operator(client, operator_id, "supervisor")
    # The back office's integration already uses 4000.00 of the ticket's and the recipient's
    # 5000.00, and sup-3 has 19600.00 of a 20000.00 day.
    await _create(client, _body("4000.00", "sup-2", ticket=TICKET, recipient=RECIPIENT))
    for _ in range(4):
        await _create(client, _body("4900.00", "sup-3"))
    shared = {
        "per_ticket_max": _body("1500.00", "sup-2", ticket=TICKET),
        "per_recipient_daily_amount": _body("1500.00", "sup-2", recipient=RECIPIENT),
        "daily_request_total": _body("500.00", "sup-3"),
    }
    secrets = ("4000.00", "5500.00", "19600.00", "20100.00", "already")
    async with await new_integration_client(
        client, "desk", ["payouts:write", "payouts:read"]
    ) as desk:
        for rule, body in shared.items():
            message = (await _preview_messages(desk, body))[rule]
            assert not [s for s in secrets if s in message], message
            assert "limit" in message, message
            created = await desk.post(
                "/v1/payouts", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
            )
            assert created.status_code == 422, created.text
            assert not [s for s in secrets if s in created.text], created.text
        ticket = await _preview_messages(desk, shared["per_ticket_max"])
        assert "per-ticket limit of 5000.00 CNY" in ticket["per_ticket_max"]
    # A key bound to sup-3 is told its limit, not what other integrations put on its day.
    own = await _preview_messages(
        client, shared["daily_request_total"], **await bearer_of(client, "sup-3")
    )
    assert "20000.00 CNY" in own["daily_request_total"]
    assert "19600.00" not in own["daily_request_total"]
    # The back office sees the figures.
    admin = await _preview_messages(client, shared["per_ticket_max"])
    assert "already 4000.00 CNY" in admin["per_ticket_max"]


async def test_a_full_recipient_day_is_not_counted_out_to_other_integrations(
    client: httpx.AsyncClient,
) -> None:
    await create_operator(client, "sup-2", "supervisor")
    for _ in range(3):
        await _create(client, _body("10.00", "sup-2", recipient=RECIPIENT))
    async with await new_integration_client(client, "desk", ["payouts:write"]) as desk:
        message = (await _preview_messages(desk, _body("10.00", "sup-2", recipient=RECIPIENT)))[
            "per_recipient_daily_count"
        ]
    assert message == "The recipient has reached the limit of 3 payout(s) per recipient per day."
