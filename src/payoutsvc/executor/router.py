"""A payout's gateway calls, for support and operations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from payoutsvc.auth.dependencies import PayoutsReader
from payoutsvc.deps import DbSession
from payoutsvc.errors import InsufficientScope, NotFound, Unauthorized, not_found
from payoutsvc.executor.repository import ExecutorRepository
from payoutsvc.payouts.presenter import rfc3339
from payoutsvc.payouts.repository import PayoutRepository
from payoutsvc.schemas_common import problem_responses

router = APIRouter(prefix="/v1/payouts", tags=["Payouts"])


class PayoutAttemptOut(BaseModel):
    id: str
    attempt: int = Field(description="The executor step (1, 2, …) the call belonged to.")
    operation: str = Field(description="`submit`, `status` (query by key) or `callback`.")
    gateway: str
    outcome: str = Field(
        description="`succeeded`, `pending`, `failed`, `not_found`, `rejected`, "
        "`not_done` (certainly not acted on) or `unknown` (timeout, 5xx after sending)."
    )
    gateway_status: str | None
    gateway_reference: str | None
    error: str | None
    latency_ms: float
    request: dict[str, Any] = Field(
        description="What was sent, without the account number (masked)."
    )
    started_at: str


class PayoutAttemptList(BaseModel):
    data: list[PayoutAttemptOut]


@router.get(
    "/{payout_id}/attempts",
    response_model=PayoutAttemptList,
    summary="A payout's gateway calls",
    description="Every submit, status query and callback for the payout, oldest first, with "
    "outcome, latency and the gateway's status and reference. Scope `payouts:read`.",
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def list_payout_attempts(
    payout_id: Annotated[str, Path(max_length=40)],
    session: DbSession,
    caller: PayoutsReader,
) -> dict[str, Any]:
    if (
        await PayoutRepository(session).current_status(payout_id, caller.visible_integration)
        is None
    ):
        raise not_found("Payout", payout_id)
    rows = await ExecutorRepository(session).attempts_for(payout_id)
    return {
        "data": [
            {
                "id": r.id,
                "attempt": r.attempt,
                "operation": r.operation,
                "gateway": r.gateway,
                "outcome": r.outcome,
                "gateway_status": r.gateway_status,
                "gateway_reference": r.gateway_reference,
                "error": r.error,
                "latency_ms": r.latency_ms,
                "request": r.request,
                "started_at": rfc3339(r.started_at),
            }
            for r in rows
        ]
    }
