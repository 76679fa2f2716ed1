"""A payout's gateway calls, for support and operations; gateway callbacks, which apply a
provider's signed notice to its payout."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field

from payoutsvc.auth.dependencies import PayoutsReader
from payoutsvc.deps import DbSession, RuntimeDep
from payoutsvc.errors import (
    CallbackMalformed,
    CallbackSignatureInvalid,
    GatewayUnavailable,
    InsufficientScope,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    not_found,
)
from payoutsvc.executor.callbacks import CallbackResult, CallbackService
from payoutsvc.executor.repository import ExecutorRepository
from payoutsvc.gateways.base import GatewayError, InvalidCallback, InvalidSignature
from payoutsvc.gateways.providers import MissingCredential
from payoutsvc.gateways.registry import registry_for
from payoutsvc.payouts.repository import PayoutRepository
from payoutsvc.schemas_common import problem_responses
from payoutsvc.timestamps import rfc3339

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


# -- gateway callbacks (signed by the provider, no API key) ------------------------------------
callbacks_router = APIRouter(tags=["Gateways"])

# Provider notices are small; a bigger body is refused before the rest is read
# (main.py gives BodyLimitMiddleware this limit for the callback paths).
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


@callbacks_router.post(
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
    responses=problem_responses(
        CallbackMalformed,
        CallbackSignatureInvalid,
        NotFound,
        PayloadTooLarge,
        GatewayUnavailable,
        RateLimited,
    ),
    openapi_extra={
        "x-max-body-bytes": MAX_CALLBACK_BYTES,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"example": SANDBOX_NOTICE_EXAMPLE}},
        },
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
    body = await request.body()  # at most MAX_CALLBACK_BYTES: BodyLimitMiddleware cuts it off
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
