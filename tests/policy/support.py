"""Builders for the policy, approval, recipient and audit API tests.

``TEST_POLICY`` has small, round limits so every rule can be hit at its boundary (the limit
passes, one minor unit more does not) with a few requests. Recipients default to PayPal
emails: PayPal has no provider minimum or currency restriction, so amounts like 0.01 work.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from tests.helpers import approve_as, made_operator_key, operator_key, payout_body

TEST_POLICY: dict[str, Any] = {
    "currencies": ["CNY", "USD"],
    "roles": {
        "agent": {
            "request_max": {"CNY": "100.00"},
            "auto_approve_max": {"CNY": "10.00"},
            "approve_max": None,
            "daily_request_total": {"CNY": "300.00"},
            "reasons": ["refund", "compensation"],
        },
        "supervisor": {
            "request_max": {"CNY": "1000.00", "USD": "1000.00"},
            "auto_approve_max": {"CNY": "100.00", "USD": "100.00"},
            "approve_max": {"CNY": "2500.00", "USD": "2500.00"},
            "daily_request_total": {"CNY": "5000.00", "USD": "5000.00"},
            "reasons": None,
        },
        "finance": {
            "request_max": {"CNY": "50000.00"},
            "auto_approve_max": {"CNY": "0.00"},
            "approve_max": {"CNY": "50000.00"},
            "daily_request_total": {"CNY": "200000.00"},
            "reasons": None,
        },
    },
    "dual_approval_over": {"CNY": "2000.00"},
    "per_ticket_max": {"CNY": "3000.00"},
    "per_recipient_daily": {"count": 3, "amount": {"CNY": "1500.00"}},
    "duplicate_window_hours": 24,
    "timezone": "UTC",
}

OPERATORS = {
    "agent-1": "agent",
    "agent-2": "agent",
    "sup-1": "supervisor",
    "sup-2": "supervisor",
    "fin-1": "finance",
    "fin-2": "finance",
    "fin-3": "finance",
}


def policy(**changes: Any) -> dict[str, Any]:
    """A copy of TEST_POLICY with top-level ``changes``."""
    document = copy.deepcopy(TEST_POLICY)
    document.update(changes)
    return document


async def use_policy(client: httpx.AsyncClient, document: dict[str, Any]) -> int:
    """PUT the policy; returns its new version."""
    response = await client.put("/v1/policy", json=document)
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


async def setup_world(client: httpx.AsyncClient, document: dict[str, Any] | None = None) -> int:
    """The test policy plus OPERATORS, each with their own operator-bound key (which
    :func:`post` and :func:`approve` use); returns the policy version."""
    for operator_id, role in OPERATORS.items():
        created = await client.post("/v1/operators", json={"id": operator_id, "role": role})
        assert created.status_code == 201, created.text
        await operator_key(client, operator_id)
    return await use_policy(client, document or TEST_POLICY)


def paypal(index: int) -> dict[str, Any]:
    return {"type": "paypal", "account": f"payee{index}@example.com"}


_counter = iter(range(1, 10**9))


def body(
    amount: str,
    requested_by: str = "agent-1",
    *,
    ticket: str | None = None,
    recipient: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A payout body; a fresh ticket and recipient unless given (so only the rule under test
    sees the shared ones)."""
    n = next(_counter)
    return payout_body(
        amount=amount,
        requested_by=requested_by,
        ticket={"system": "zendesk", "id": ticket or f"T-{n}"},
        recipient=recipient or paypal(n),
        **overrides,
    )


async def post(
    client: httpx.AsyncClient,
    payload: dict[str, Any],
    key: str | None = None,
    *,
    as_requester: bool = True,
) -> httpx.Response:
    """POST the payout with the requester's own key when setup_world made one (as a helpdesk
    holding per-agent keys does), else, or with ``as_requester=False``, with ``client``'s."""
    headers = {"Idempotency-Key": key or uuid.uuid4().hex}
    own = made_operator_key(client, str(payload.get("requested_by")))
    if as_requester and own is not None:
        headers["Authorization"] = f"Bearer {own}"
    return await client.post("/v1/payouts", json=payload, headers=headers)


async def created(client: httpx.AsyncClient, payload: dict[str, Any]) -> dict[str, Any]:
    response = await post(client, payload)
    assert response.status_code == 201, response.text
    return dict(response.json())


def violations(response: httpx.Response) -> set[str]:
    """The violated rules of a 422 policy_violation."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "policy_violation", problem
    return {error["code"] for error in problem["errors"]}


def reason_rules(payout: dict[str, Any]) -> set[str]:
    return {reason["rule"] for reason in payout["policy"]["reasons"]}


def problem_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return str(response.json()["code"])


def db(app: FastAPI) -> Any:
    """The app's Database (for tests that reach under the API)."""
    return app.state.runtime.db


async def approve(
    client: httpx.AsyncClient, payout_id: str, operator_id: str, comment: str | None = None
) -> httpx.Response:
    """``operator_id`` approves with their own operator-bound key."""
    return await approve_as(client, payout_id, operator_id, comment)


async def events(client: httpx.AsyncClient, payout_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/payouts/{payout_id}/events")
    assert response.status_code == 200, response.text
    return list(response.json()["data"])
