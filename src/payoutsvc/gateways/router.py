"""Gateway callbacks (signed by the provider, no API key) and the sandbox's ledger view."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from payoutsvc.auth.dependencies import Admin
from payoutsvc.deps import DbSession, RuntimeDep
from payoutsvc.errors import (
    CallbackMalformed,
    CallbackSignatureInvalid,
    GatewayUnavailable,
    InsufficientScope,
    InvalidCursor,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    ValidationFailed,
)
from payoutsvc.executor.callbacks import CallbackResult, CallbackService
from payoutsvc.gateways.base import GatewayError, InvalidCallback, InvalidSignature
from payoutsvc.gateways.providers import MissingCredential
from payoutsvc.gateways.registry import registry_for
from payoutsvc.gateways.sandbox import NAME as SANDBOX
from payoutsvc.gateways.sandbox_ledger import SandboxLedgerRepository
from payoutsvc.money import format_amount
from payoutsvc.payouts.presenter import rfc3339
from payoutsvc.schemas_common import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_cursor,
    page_of,
    problem_responses,
)

router = APIRouter(tags=["Gateways"])

MAX_CALLBACK_BYTES = 64 * 1024

SANDBOX_NOTICE_EXAMPLE = {
    "notice_id": "ntc_01jd5x0z3q8m4k2n7p9r6s5t4v",
    "idempotency_key": "9f1c2b7e4d3a4c0e8b6f5a2d1c0b9e8f",
    "reference": "tr_01jd5x0z3q8m4k2n7p9r6s5t4v",
    "status": "succeeded",
    "failure_code": None,
    "failure_message": None,
}


class CallbackAck(BaseModel):
    received: bool = True
    result: CallbackResult = Field(
        description="`applied`: the payout took the notice's result; `recorded`: kept for "
        "the record (e.g. still pending); `duplicate`/`stale`: nothing changed; "
        "`unknown_transfer`: no payout of ours under that key."
    )


@router.post(
    "/v1/gateway-callbacks/{gateway}",
    response_model=CallbackAck,
    summary="Receive a gateway callback",
    description=(
        "Asynchronous result notices from a bank/wallet gateway. No API key: the notice is "
        "authenticated by the gateway's own signature, verified by that gateway's adapter "
        "(401 `invalid_signature` otherwise). A verified notice can only finish a payout "
        "that is still `processing` (or `needs_review`); duplicates and stale or "
        "contradicting notices change nothing and are answered 200 so the gateway stops "
        "retrying.\n\n"
        "**Sandbox** (`/v1/gateway-callbacks/sandbox`): a JSON body as in the example, "
        "header `Sandbox-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 over "
        '"<t>.<raw body>">` with the sandbox\'s secret; timestamps older than 5 minutes '
        "are refused.\n\n"
        "**Providers** (`wechatpay`, `alipay`, `stripe`, `paypal`, when routed to): the "
        "provider's own notification format and signature (see the README); Alipay is "
        "answered with the text `success` it expects. 503 `gateway_unavailable` while the "
        "provider's credentials are missing, so it sends the notice again later."
    ),
    responses={
        **problem_responses(
            CallbackMalformed,
            CallbackSignatureInvalid,
            NotFound,
            PayloadTooLarge,
            GatewayUnavailable,
        ),
        413: {
            "description": "Body larger than 64 KiB",
            "content": {"application/problem+json": {}},
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"example": SANDBOX_NOTICE_EXAMPLE}},
        }
    },
)
async def receive_gateway_callback(
    gateway: Annotated[str, Path(max_length=32, examples=["sandbox"])],
    request: Request,
    session: DbSession,
    runtime: RuntimeDep,
) -> Any:
    registry = registry_for(runtime)
    if not registry.is_configured(gateway):
        raise NotFound(f"No gateway {gateway!r} is configured.", title="Gateway not found")
    body = await request.body()
    if len(body) > MAX_CALLBACK_BYTES:
        raise PayloadTooLarge("Callbacks are ≤ 64 KiB.")
    try:
        adapter = registry.get(gateway)
    except MissingCredential as exc:
        # Answered as a server-side failure, so the provider retries after the fix.
        raise GatewayUnavailable(str(exc)) from None
    try:
        notice = await adapter.parse_callback(dict(request.headers), body)
    except InvalidSignature as exc:
        raise CallbackSignatureInvalid(exc.message, title="Callback signature invalid") from None
    except InvalidCallback as exc:
        raise CallbackMalformed(exc.message) from None
    except GatewayError as exc:  # the provider's own verification service did not answer
        raise GatewayUnavailable(exc.message, title="Callback cannot be verified now") from None
    result = await CallbackService(session, runtime).apply(gateway, notice)
    if adapter.callback_reply is not None:
        # Providers such as Alipay retry a notice until they read their own exact answer.
        reply = adapter.callback_reply
        return Response(content=reply.body, media_type=reply.media_type)
    return {"received": True, "result": result.value}


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
