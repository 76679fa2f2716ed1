"""Gateway callbacks (signed by the provider, no API key) and the sandbox's ledger view."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from payoutsvc.auth.dependencies import Admin
from payoutsvc.deps import DbSession, RuntimeDep
from payoutsvc.errors import (
    InsufficientScope,
    InvalidCursor,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from payoutsvc.gateways.registry import registry_for
from payoutsvc.gateways.sandbox import NAME as SANDBOX
from payoutsvc.gateways.sandbox_ledger import SandboxLedgerRepository
from payoutsvc.money import format_amount
from payoutsvc.schemas_common import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_cursor,
    page_of,
    problem_responses,
)
from payoutsvc.timestamps import rfc3339

router = APIRouter(tags=["Gateways"])


class SandboxRecipient(BaseModel):
    type: str
    account_masked: str


class SandboxTransferOut(BaseModel):
    id: str = Field(examples=["tr_01jd5x0z3q8m4k2n7p9r6s5t4v"])
    payout_id: str
    idempotency_key: str = Field(description="The key the transfer was booked under.")
    amount: str
    amount_minor: int
    currency: str
    recipient: SandboxRecipient
    status: str = Field(description="`pending` or `succeeded`.")
    status_checks: int = Field(description="Status queries answered while it was pending.")
    created_at: str
    updated_at: str


@router.get(
    "/v1/sandbox/transfers",
    response_model=Page[SandboxTransferOut],
    summary="Transfers the sandbox booked",
    description=(
        "The sandbox gateway's ledger, newest first, each transfer with the idempotency key "
        "it was booked under: a payout paid exactly once has exactly one. Declines book "
        "nothing. Only while the sandbox is a configured gateway (404 otherwise). "
        "Scope `admin`."
    ),
    responses=problem_responses(
        Unauthorized, InsufficientScope, NotFound, ValidationFailed, InvalidCursor
    ),
)
async def list_sandbox_transfers(
    session: DbSession,
    runtime: RuntimeDep,
    _caller: Admin,
    payout_id: Annotated[str | None, Query(max_length=40)] = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    if not registry_for(runtime).is_configured(SANDBOX):
        raise NotFound(
            "The sandbox gateway is not configured (PAYOUTSVC_GATEWAY / PAYOUTSVC_GATEWAY_ROUTES).",
            title="Sandbox not configured",
        )
    rows = await SandboxLedgerRepository(session).list_transfers(
        payout_id=payout_id, limit=limit + 1, before_id=decode_cursor(cursor)
    )
    page = page_of(list(rows), limit, lambda r: r.id)
    page["data"] = [
        {
            "id": r.id,
            "payout_id": r.payout_id,
            "idempotency_key": r.idempotency_key,
            "amount": format_amount(r.amount_minor, r.currency),
            "amount_minor": r.amount_minor,
            "currency": r.currency,
            "recipient": {"type": r.recipient_type, "account_masked": r.account_masked},
            "status": r.status,
            "status_checks": r.status_checks,
            "created_at": rfc3339(r.created_at),
            "updated_at": rfc3339(r.updated_at),
        }
        for r in page["data"]
    ]
    return page
