"""/v1/webhook-endpoints and /v1/webhook-deliveries (API.md, Webhooks to the helpdesk)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse

from payoutsvc.auth.dependencies import PayoutsWriter
from payoutsvc.auth.service import AuthService
from payoutsvc.deps import DbSession, RuntimeDep
from payoutsvc.errors import (
    EndpointDisabled,
    InsufficientScope,
    InvalidCursor,
    NotFound,
    TooManyEndpoints,
    Unauthorized,
    ValidationFailed,
    WebhookUrlRefused,
)
from payoutsvc.schemas_common import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_cursor,
    page_of,
    problem_responses,
)
from payoutsvc.webhooks.schemas import (
    DeliveryStatusName,
    ResendDeliveries,
    ResendResult,
    RotateSecret,
    WebhookDeliveryDetail,
    WebhookDeliveryOut,
    WebhookEndpointCreate,
    WebhookEndpointOut,
    WebhookEndpointUpdate,
    WebhookEndpointWithSecret,
)
from payoutsvc.webhooks.service import WebhookService
from payoutsvc.webhooks.ssrf import installed_resolver

router = APIRouter(tags=["Webhooks"])

EndpointId = Annotated[str, Path(max_length=40, examples=["we_01jd5x0z3q8m4k2n7p9r6s5t4v"])]
DeliveryId = Annotated[str, Path(max_length=40, examples=["wd_01jd5x0z3q8m4k2n7p9r6s5t4v"])]

_SCOPE_NOTE = " Scope `payouts:write` (or `admin`, which sees every integration's)."


@router.post(
    "/v1/webhook-endpoints",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookEndpointWithSecret,
    summary="Register a webhook endpoint",
    description=(
        "Registers a URL that receives this integration's payout events, signed per "
        "Standard Webhooks. The response carries the `whsec_…` signing secret: it is shown "
        "only here (and after a rotation). The URL must be https and resolve only to public "
        "addresses, else 422 `webhook_url_refused` with the reason in `errors[].code` "
        "(`https_required`, `private_address`, `non_canonical_ip`, `credentials_in_url`, "
        "`unresolvable_host`, `invalid_url`). An integration has at most "
        "`PAYOUTSVC_WEBHOOK_MAX_ENDPOINTS` (default 20) endpoints: 422 `too_many_endpoints` "
        "beyond." + _SCOPE_NOTE
    ),
    responses=problem_responses(
        Unauthorized,
        InsufficientScope,
        NotFound,
        ValidationFailed,
        WebhookUrlRefused,
        TooManyEndpoints,
    ),
)
async def create_endpoint(
    body: WebhookEndpointCreate,
    request: Request,
    session: DbSession,
    runtime: RuntimeDep,
    caller: PayoutsWriter,
) -> JSONResponse:
    owner = caller.integration_id
    if body.integration_id is not None and body.integration_id != caller.integration_id:
        if not caller.is_admin:
            raise InsufficientScope(
                "Only `admin` keys may register endpoints for another integration.",
                title="The API key lacks a required scope",
            )
        owner = (await AuthService(session).get_integration(body.integration_id)).id
    created = await WebhookService(
        session, runtime, installed_resolver(request.app.state)
    ).create_endpoint(owner, body)
    return JSONResponse(created, status_code=status.HTTP_201_CREATED)


@router.get(
    "/v1/webhook-endpoints",
    response_model=Page[WebhookEndpointOut],
    summary="List webhook endpoints",
    description="Newest first." + _SCOPE_NOTE,
    responses=problem_responses(Unauthorized, InsufficientScope, ValidationFailed, InvalidCursor),
)
async def list_endpoints(
    session: DbSession,
    runtime: RuntimeDep,
    caller: PayoutsWriter,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> JSONResponse:
    rows = await WebhookService(session, runtime).list_endpoints(
        caller.visible_integration, limit + 1, decode_cursor(cursor)
    )
    return JSONResponse(page_of(rows, limit, lambda e: e["id"]))


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}",
    response_model=WebhookEndpointOut,
    summary="Get a webhook endpoint",
    description="Its state, including why it was disabled. Never the secret." + _SCOPE_NOTE,
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def get_endpoint(
    endpoint_id: EndpointId, session: DbSession, runtime: RuntimeDep, caller: PayoutsWriter
) -> JSONResponse:
    return JSONResponse(
        await WebhookService(session, runtime).get_endpoint(endpoint_id, caller.visible_integration)
    )


@router.patch(
    "/v1/webhook-endpoints/{endpoint_id}",
    response_model=WebhookEndpointOut,
    summary="Update a webhook endpoint",
    description=(
        "Change the URL (checked like at registration), the event filters, the description, "
        "or `enabled`. Disabling cancels the pending deliveries; enabling clears "
        "`disabled_reason` (re-send what was missed with `…/deliveries/resend`)." + _SCOPE_NOTE
    ),
    responses=problem_responses(
        Unauthorized, InsufficientScope, NotFound, ValidationFailed, WebhookUrlRefused
    ),
)
async def update_endpoint(
    endpoint_id: EndpointId,
    body: WebhookEndpointUpdate,
    request: Request,
    session: DbSession,
    runtime: RuntimeDep,
    caller: PayoutsWriter,
) -> JSONResponse:
    service = WebhookService(session, runtime, installed_resolver(request.app.state))
    return JSONResponse(
        await service.update_endpoint(endpoint_id, caller.visible_integration, body)
    )


@router.delete(
    "/v1/webhook-endpoints/{endpoint_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a webhook endpoint",
    description="Deletes the endpoint with its deliveries and their log." + _SCOPE_NOTE,
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def delete_endpoint(
    endpoint_id: EndpointId, session: DbSession, runtime: RuntimeDep, caller: PayoutsWriter
) -> Response:
    await WebhookService(session, runtime).delete_endpoint(endpoint_id, caller.visible_integration)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
    response_model=WebhookEndpointWithSecret,
    summary="Rotate the signing secret",
    description=(
        "Makes a new secret, returned only here. During the grace period (default 24 h, "
        "`grace_period_seconds` 0 - 604800) every delivery is signed with the new and the "
        "previous secret, so receivers can switch without rejecting a message." + _SCOPE_NOTE
    ),
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound, ValidationFailed),
)
async def rotate_secret(
    endpoint_id: EndpointId,
    session: DbSession,
    runtime: RuntimeDep,
    caller: PayoutsWriter,
    body: Annotated[RotateSecret | None, Body(examples=[{"grace_period_seconds": 86400}])] = None,
) -> JSONResponse:
    return JSONResponse(
        await WebhookService(session, runtime).rotate_secret(
            endpoint_id, caller.visible_integration, body or RotateSecret()
        )
    )


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries",
    response_model=Page[WebhookDeliveryOut],
    summary="The endpoint's delivery log",
    description=(
        "Newest first: status, attempts, last response code, latency, error, a response "
        "excerpt (≤ 4 KB) and the next attempt; filter by `payout_id` and `status`. "
        "`GET /v1/webhook-deliveries/{id}` has every attempt." + _SCOPE_NOTE
    ),
    responses=problem_responses(
        Unauthorized, InsufficientScope, NotFound, ValidationFailed, InvalidCursor
    ),
)
async def list_deliveries(
    endpoint_id: EndpointId,
    session: DbSession,
    runtime: RuntimeDep,
    caller: PayoutsWriter,
    payout_id: Annotated[str | None, Query(max_length=40)] = None,
    status: DeliveryStatusName | None = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> JSONResponse:
    rows = await WebhookService(session, runtime).list_deliveries(
        endpoint_id, caller.visible_integration, limit + 1, decode_cursor(cursor), payout_id, status
    )
    return JSONResponse(page_of(rows, limit, lambda d: d["id"]))


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries/resend",
    response_model=ResendResult,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Re-send given-up deliveries",
    description=(
        "Makes the endpoint's `failed` (and by default `canceled`) deliveries created since "
        "`since` due again, each with a fresh retry schedule. 409 `endpoint_disabled` while "
        "the endpoint is disabled." + _SCOPE_NOTE
    ),
    responses=problem_responses(
        Unauthorized, InsufficientScope, NotFound, EndpointDisabled, ValidationFailed
    ),
)
async def resend_deliveries(
    endpoint_id: EndpointId,
    body: ResendDeliveries,
    session: DbSession,
    runtime: RuntimeDep,
    caller: PayoutsWriter,
) -> JSONResponse:
    result = await WebhookService(session, runtime).resend_given_up(
        endpoint_id, caller.visible_integration, body
    )
    return JSONResponse(result, status_code=status.HTTP_202_ACCEPTED)


@router.get(
    "/v1/webhook-deliveries/{delivery_id}",
    response_model=WebhookDeliveryDetail,
    summary="Get a delivery with every attempt",
    description="The delivery, its exact payload and each attempt, oldest first." + _SCOPE_NOTE,
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def get_delivery(
    delivery_id: DeliveryId, session: DbSession, runtime: RuntimeDep, caller: PayoutsWriter
) -> JSONResponse:
    return JSONResponse(
        await WebhookService(session, runtime).get_delivery(delivery_id, caller.visible_integration)
    )


@router.post(
    "/v1/webhook-deliveries/{delivery_id}/retry",
    response_model=WebhookDeliveryOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Re-send a delivery",
    description=(
        "Makes the delivery due now with a fresh retry schedule, whatever its status; the "
        "same `webhook-id` is sent, so receivers can de-duplicate. 409 `endpoint_disabled` "
        "while its endpoint is disabled." + _SCOPE_NOTE
    ),
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound, EndpointDisabled),
)
async def retry_delivery(
    delivery_id: DeliveryId, session: DbSession, runtime: RuntimeDep, caller: PayoutsWriter
) -> JSONResponse:
    result = await WebhookService(session, runtime).retry_delivery(
        delivery_id, caller.visible_integration
    )
    return JSONResponse(result, status_code=status.HTTP_202_ACCEPTED)
