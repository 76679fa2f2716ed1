from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, status

from payoutsvc.auth.dependencies import Admin, ApiKeyCache
from payoutsvc.auth.models import ApiKey, Integration
from payoutsvc.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    IntegrationCreate,
    IntegrationOut,
)
from payoutsvc.auth.service import AuthService
from payoutsvc.deps import DbSession
from payoutsvc.errors import (
    InsufficientScope,
    IntegrationExists,
    InvalidCursor,
    NotFound,
    OperatorDisabled,
    Unauthorized,
    UnknownOperator,
    ValidationFailed,
)
from payoutsvc.schemas_common import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_cursor,
    page_of,
    problem_responses,
)

router = APIRouter(prefix="/v1/integrations", tags=["Integrations and API keys"])

IntegrationId = Annotated[str, Path(max_length=40, examples=["int_01jd5x0z3q8m4k2n7p9r6s5t4v"])]


def _integration_json(integration: Integration) -> dict[str, Any]:
    return {"id": integration.id, "name": integration.name, "created_at": integration.created_at}


def _key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "integration_id": key.integration_id,
        "scopes": key.scopes,
        "operator_id": key.operator_id,
        "hint": key.secret_hint,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=IntegrationOut,
    summary="Create an integration",
    description="An integration is one connected helpdesk or console. Its API keys see only "
    "its own payouts, webhook endpoints and deliveries. Scope `admin`.",
    responses=problem_responses(
        Unauthorized, InsufficientScope, IntegrationExists, ValidationFailed
    ),
)
async def create_integration(
    body: IntegrationCreate, session: DbSession, _caller: Admin
) -> dict[str, Any]:
    return _integration_json(await AuthService(session).create_integration(body.name))


@router.get(
    "",
    response_model=Page[IntegrationOut],
    summary="List integrations",
    description="Newest first. Scope `admin`.",
    responses=problem_responses(Unauthorized, InsufficientScope, ValidationFailed, InvalidCursor),
)
async def list_integrations(
    session: DbSession, _caller: Admin, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> dict[str, Any]:
    rows = await AuthService(session).list_integrations(limit + 1, decode_cursor(cursor), None)
    page = page_of(list(rows), limit, lambda i: i.id)
    page["data"] = [_integration_json(i) for i in page["data"]]
    return page


@router.get(
    "/{integration_id}",
    response_model=IntegrationOut,
    summary="Get an integration",
    description="One connected helpdesk or console. Scope `admin`.",
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def get_integration(
    integration_id: IntegrationId, session: DbSession, _caller: Admin
) -> dict[str, Any]:
    return _integration_json(await AuthService(session).get_integration(integration_id))


@router.post(
    "/{integration_id}/api-keys",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    summary="Create an API key",
    description="Returns the secret `key` once; only its SHA-256 hash is stored. With "
    "`operator_id` the key acts only as that operator (422 `unknown_operator` when there is no "
    "such operator, 403 `operator_disabled` when it is disabled). Scope `admin`.",
    responses=problem_responses(
        Unauthorized,
        InsufficientScope,
        NotFound,
        ValidationFailed,
        UnknownOperator,
        OperatorDisabled,
    ),
)
async def create_api_key(
    integration_id: IntegrationId, body: ApiKeyCreate, session: DbSession, _caller: Admin
) -> dict[str, Any]:
    key, secret = await AuthService(session).create_key(
        integration_id, body.scopes, operator_id=body.operator_id
    )
    return {
        "id": key.id,
        "integration_id": key.integration_id,
        "key": secret,
        "scopes": key.scopes,
        "operator_id": key.operator_id,
        "created_at": key.created_at,
    }


@router.get(
    "/{integration_id}/api-keys",
    response_model=Page[ApiKeyOut],
    summary="List an integration's API keys",
    description="Secrets are never shown again; `hint` tells keys apart. Scope `admin`.",
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def list_api_keys(
    integration_id: IntegrationId, session: DbSession, _caller: Admin
) -> dict[str, Any]:
    keys = await AuthService(session).list_keys(integration_id)
    return {"data": [_key_json(k) for k in keys], "next_cursor": None}


@router.delete(
    "/{integration_id}/api-keys/{key_id}",
    response_model=ApiKeyOut,
    summary="Revoke an API key",
    description="The key stops working at once in the process that revoked it and within "
    "`PAYOUTSVC_API_KEY_CACHE_SECONDS` (1 s by default, at most 2) in every other. It stays "
    "revoked, the `PAYOUTSVC_BOOTSTRAP_API_KEY` included. Scope `admin`.",
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def revoke_api_key(
    integration_id: IntegrationId,
    key_id: Annotated[str, Path(max_length=40)],
    session: DbSession,
    request: Request,
    _caller: Admin,
) -> dict[str, Any]:
    revoked = await AuthService(session).revoke_key(integration_id, key_id)
    cache: ApiKeyCache = request.app.state.api_key_cache
    cache.forget_key(key_id)
    return _key_json(revoked)
