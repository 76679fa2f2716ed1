"""/v1/connectors (API.md, Helpdesk connectors): thin; the service holds the logic."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response, status
from fastapi.responses import JSONResponse

from payoutsvc.auth.dependencies import Admin
from payoutsvc.connectors.schemas import (
    EXAMPLE_CREATE,
    ConnectorCreate,
    ConnectorOut,
    ConnectorTestOut,
    ConnectorUpdate,
    InboundAnswer,
)
from payoutsvc.connectors.service import ConnectorService
from payoutsvc.deps import DbSession, RuntimeDep
from payoutsvc.errors import (
    AlreadyApproved,
    ApprovalLimitExceeded,
    CallbackSignatureInvalid,
    ConnectorDisabled,
    InsufficientScope,
    InvalidCursor,
    InvalidJson,
    InvalidRecipient,
    InvalidStatusTransition,
    NotFound,
    OperatorDisabled,
    OperatorKeyRequired,
    PolicyViolation,
    SelfApprovalForbidden,
    Unauthorized,
    UnknownOperator,
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
from payoutsvc.webhooks.schemas import WebhookDeliveryOut
from payoutsvc.webhooks.ssrf import installed_resolver

router = APIRouter(prefix="/v1/connectors", tags=["Helpdesk connectors"])

ConnectorId = Annotated[str, Path(max_length=40, examples=["hc_01jd5x0z3q8m4k2n7p9r6s5t4v"])]
_ADMIN = " Scope `admin`."


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ConnectorOut,
    summary="Connect a helpdesk",
    description="Ties an integration to a Zendesk, Jira Service Management or Freshdesk "
    "account. `credentials` are stored encrypted and never shown again (the answer lists "
    "only which are set). The helpdesk calls `inbound_url` (see the README for each "
    "helpdesk's trigger); payout events of its tickets are written back as internal notes. "
    "`base_url` passes the same SSRF guard as webhook URLs (422 `webhook_url_refused`)." + _ADMIN,
    responses=problem_responses(
        Unauthorized, InsufficientScope, NotFound, ValidationFailed, WebhookUrlRefused
    ),
    openapi_extra={"requestBody": {"content": {"application/json": {"example": EXAMPLE_CREATE}}}},
)
async def create_connector(
    body: ConnectorCreate, request: Request, session: DbSession, runtime: RuntimeDep, caller: Admin
) -> dict[str, Any]:
    service = ConnectorService(session, runtime, installed_resolver(request.app.state))
    return await service.create(caller.integration_id, caller.visible_integration, body)


@router.get(
    "",
    response_model=Page[ConnectorOut],
    summary="List connectors",
    description="Newest first." + _ADMIN,
    responses=problem_responses(Unauthorized, InsufficientScope, ValidationFailed, InvalidCursor),
)
async def list_connectors(
    session: DbSession,
    runtime: RuntimeDep,
    caller: Admin,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    rows = await ConnectorService(session, runtime).list(
        caller.visible_integration, limit + 1, decode_cursor(cursor)
    )
    return page_of(rows, limit, lambda c: c["id"])


@router.get(
    "/{connector_id}",
    response_model=ConnectorOut,
    summary="Get a connector",
    description="Never shows the credentials." + _ADMIN,
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def get_connector(
    connector_id: ConnectorId, session: DbSession, runtime: RuntimeDep, caller: Admin
) -> dict[str, Any]:
    return await ConnectorService(session, runtime).get(connector_id, caller.visible_integration)


@router.patch(
    "/{connector_id}",
    response_model=ConnectorOut,
    summary="Update a connector",
    description="Change the name, base URL, locale, `trust_actor`, write-back or `enabled`; "
    "`credentials` replaces all credentials (rotation)." + _ADMIN,
    responses=problem_responses(
        Unauthorized, InsufficientScope, NotFound, ValidationFailed, WebhookUrlRefused
    ),
)
async def update_connector(
    connector_id: ConnectorId,
    body: ConnectorUpdate,
    request: Request,
    session: DbSession,
    runtime: RuntimeDep,
    caller: Admin,
) -> dict[str, Any]:
    service = ConnectorService(session, runtime, installed_resolver(request.app.state))
    return await service.update(connector_id, caller.visible_integration, body)


@router.delete(
    "/{connector_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a connector",
    description="Its pending notes are dropped and its inbound URL stops working." + _ADMIN,
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def delete_connector(
    connector_id: ConnectorId, session: DbSession, runtime: RuntimeDep, caller: Admin
) -> Response:
    await ConnectorService(session, runtime).delete(connector_id, caller.visible_integration)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{connector_id}/deliveries",
    response_model=Page[WebhookDeliveryOut],
    summary="A connector's write-back attempts",
    description="Its notes as deliveries, newest first, as for webhook endpoints." + _ADMIN,
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound, InvalidCursor),
)
async def list_connector_deliveries(
    connector_id: ConnectorId,
    session: DbSession,
    runtime: RuntimeDep,
    caller: Admin,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    rows = await ConnectorService(session, runtime).deliveries(
        connector_id, caller.visible_integration, limit + 1, decode_cursor(cursor)
    )
    return page_of(rows, limit, lambda d: d["id"])


@router.post(
    "/{connector_id}/test",
    response_model=ConnectorTestOut,
    summary="Test a connector's credentials",
    description="Makes one cheap authenticated call to the helpdesk (Zendesk `GET "
    "/api/v2/users/me`, Jira `GET /rest/api/3/myself`, Freshdesk `GET /api/v2/agents/me`) "
    "through the SSRF guard and says whether it was accepted." + _ADMIN,
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def test_connector(
    connector_id: ConnectorId,
    request: Request,
    session: DbSession,
    runtime: RuntimeDep,
    caller: Admin,
) -> dict[str, Any]:
    service = ConnectorService(session, runtime, installed_resolver(request.app.state))
    return await service.test(connector_id, caller.visible_integration)


@router.post(
    "/{connector_id}/inbound",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=InboundAnswer,
    summary="A helpdesk trigger (no API key)",
    description="Called by the helpdesk's trigger or automation (README). No API key: the "
    "helpdesk's signature (Zendesk, Jira webhooks) or the inbound secret header "
    "(`X-Payoutsvc-Secret`: Freshdesk, Jira automation) is the credential; one that does not "
    "verify, or a timestamp more than 5 minutes away, is 401 `invalid_signature` and "
    "changes nothing. A redelivered `event_id` replays the first answer "
    "(`Idempotent-Replayed: true`) and does nothing again. Actions run through the same "
    "services and policy as the API; a refusal is answered as a problem and also written "
    "back to the ticket as an internal note.",
    responses=problem_responses(
        InvalidJson,
        CallbackSignatureInvalid,
        ConnectorDisabled,
        NotFound,
        ValidationFailed,
        UnknownOperator,
        OperatorDisabled,
        OperatorKeyRequired,
        SelfApprovalForbidden,
        ApprovalLimitExceeded,
        InvalidStatusTransition,
        AlreadyApproved,
        InvalidRecipient,
        PolicyViolation,
    ),
)
async def inbound(
    connector_id: ConnectorId, request: Request, session: DbSession, runtime: RuntimeDep
) -> JSONResponse:
    headers = {k.lower(): v for k, v in request.headers.items()}
    answer = await ConnectorService(session, runtime).inbound(
        connector_id, headers, await request.body()
    )
    extra = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    if answer.status_code >= 400:
        extra["Content-Type"] = "application/problem+json"
    return JSONResponse(answer.body, status_code=answer.status_code, headers=extra)
