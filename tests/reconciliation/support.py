"""Builders of the reconciliation tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import delete, func, select, update

from payoutsvc.db.base import utcnow
from payoutsvc.gateways.models import SandboxTransfer
from payoutsvc.gateways.registry import GatewayRegistry
from payoutsvc.payouts.models import Payout
from payoutsvc.reconciliation.runner import ReconciliationRunner
from payoutsvc.runtime import Runtime
from payoutsvc.timestamps import rfc3339
from payoutsvc.webhooks.models import WebhookDelivery


def around_now() -> dict[str, str]:
    now = utcnow()
    return {"from": rfc3339(now - timedelta(hours=1)), "to": rfc3339(now + timedelta(hours=1))}


async def start(client: httpx.AsyncClient, gateway: str = "sandbox") -> str:
    response = await client.post("/v1/reconciliations", json={"gateway": gateway, **around_now()})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "running"
    return str(response.json()["id"])


async def result(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/reconciliations/{run_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def runner(runtime: Runtime, worker_id: str = "recon-test", **options: Any) -> ReconciliationRunner:
    return ReconciliationRunner(runtime, GatewayRegistry(runtime), worker_id=worker_id, **options)


async def edit_ledger(runtime: Runtime, payout_id: str, **values: Any) -> None:
    """Change the sandbox's record of a transfer behind our back."""
    async with runtime.db.transaction() as session:
        await session.execute(
            update(SandboxTransfer).where(SandboxTransfer.payout_id == payout_id).values(**values)
        )


async def drop_from_ledger(runtime: Runtime, payout_id: str) -> None:
    async with runtime.db.transaction() as session:
        await session.execute(delete(SandboxTransfer).where(SandboxTransfer.payout_id == payout_id))


async def plant_stranger(runtime: Runtime, amount_minor: int = 4200) -> str:
    """A transfer the sandbox booked that no payout of ours made."""
    now = utcnow()
    async with runtime.db.transaction() as session:
        session.add(
            SandboxTransfer(
                id="tr_stranger0000000000000000",
                idempotency_key="k" * 32,
                payout_id="po_somebody_else",
                amount_minor=amount_minor,
                currency="CNY",
                recipient_type="alipay",
                account_masked="138****0000",
                status="succeeded",
                status_checks=0,
                created_at=now,
                updated_at=now,
            )
        )
    return "tr_stranger0000000000000000"


async def payout_states(runtime: Runtime) -> dict[str, tuple[Any, ...]]:
    """Every payout's status, amount, reference, event head and update time."""
    async with runtime.db.transaction(write=False) as session:
        rows = await session.execute(
            select(
                Payout.id,
                Payout.status,
                Payout.amount_minor,
                Payout.gateway_reference,
                Payout.last_event_sequence,
                Payout.updated_at,
            )
        )
        return {row[0]: tuple(row[1:]) for row in rows.all()}


async def deliveries_of(runtime: Runtime, event_type: str) -> list[str]:
    """Endpoint ids that got a delivery of ``event_type``."""
    async with runtime.db.transaction(write=False) as session:
        rows = await session.execute(
            select(WebhookDelivery.endpoint_id).where(WebhookDelivery.event_type == event_type)
        )
        return sorted(r[0] for r in rows.all())


async def count_rows(runtime: Runtime, model: Any) -> int:
    async with runtime.db.transaction(write=False) as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())
