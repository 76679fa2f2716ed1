"""Small builders shared by API tests."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx

from payoutsvc.db.base import utcnow
from payoutsvc.payouts import transitions
from payoutsvc.payouts.service import PayoutService
from payoutsvc.payouts.status import PayoutStatus
from payoutsvc.runtime import Runtime


def payout_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ticket": {
            "system": "zendesk",
            "id": "48213",
            "url": "https://acme.zendesk.com/agent/tickets/48213",
        },
        "reason": "refund",
        "amount": "12.50",
        "currency": "CNY",
        "recipient": {"type": "alipay", "account": "13800138000", "name": "张三"},
        "requested_by": "agent-17",
        "description": "Price difference refund for order 9931",
        "metadata": {"order_id": "9931"},
    }
    body.update(overrides)
    return body


async def create_operator(client: httpx.AsyncClient, operator_id: str, role: str) -> dict[str, Any]:
    response = await client.post("/v1/operators", json={"id": operator_id, "role": role})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def create_payout(
    client: httpx.AsyncClient, key: str | None = None, **overrides: Any
) -> httpx.Response:
    return await client.post(
        "/v1/payouts",
        json=payout_body(**overrides),
        headers={"Idempotency-Key": key or uuid.uuid4().hex},
    )


async def new_integration_client(
    client: httpx.AsyncClient, name: str, scopes: list[str]
) -> httpx.AsyncClient:
    """A client for a fresh integration holding only ``scopes`` (caller closes it)."""
    created = await client.post("/v1/integrations", json={"name": name})
    assert created.status_code == 201, created.text
    key = await client.post(
        f"/v1/integrations/{created.json()['id']}/api-keys", json={"scopes": scopes}
    )
    assert key.status_code == 201, key.text
    return httpx.AsyncClient(
        transport=client._transport,
        base_url=str(client.base_url),
        headers={"Authorization": f"Bearer {key.json()['key']}"},
    )


# The arrow each target is reached by when a test walks a payout along the lifecycle by hand
# (as the approval flow and the executor would), through the transitions module.
_ARROW_TO = {
    PayoutStatus.APPROVED: transitions.APPROVE,
    PayoutStatus.PROCESSING: transitions.CLAIM,
    PayoutStatus.SUCCEEDED: transitions.FINISH,
    PayoutStatus.FAILED: transitions.FINISH,
    PayoutStatus.NEEDS_REVIEW: transitions.FINISH,
    PayoutStatus.REJECTED: transitions.REJECT,
    PayoutStatus.CANCELED: transitions.CANCEL,
}


async def walk(runtime: Runtime, payout_id: str, *targets: PayoutStatus, actor: str) -> None:
    """Move a payout along ``targets``, one transaction each, as the service would."""
    for target in targets:
        lease = None
        if target is PayoutStatus.PROCESSING:
            lease = transitions.Lease(f"{actor}/test", utcnow() + timedelta(seconds=60))
        async with runtime.db.transaction() as session:
            await PayoutService(session, runtime).transition(
                payout_id,
                None,
                _ARROW_TO[target],
                target,
                actor=actor,
                event_data={},
                lease=lease,
            )
