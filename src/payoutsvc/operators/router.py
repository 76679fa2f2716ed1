from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from payoutsvc.deps import DbSession
from payoutsvc.errors import (
    InsufficientScope,
    InvalidCursor,
    NotFound,
    OperatorExists,
    Unauthorized,
    ValidationFailed,
)
from payoutsvc.operators.models import Operator
from payoutsvc.operators.schemas import OperatorCreate, OperatorOut, OperatorUpdate
from payoutsvc.operators.service import OperatorService
from payoutsvc.schemas_common import LimitQuery, Page, decode_cursor, page_of, problem_responses

# Every route needs scope `admin`; main.py attaches that dependency when it includes this
# router, because the auth package depends on operators (operator-bound keys), not back.
router = APIRouter(prefix="/v1/operators", tags=["Operators"])
OperatorId = Annotated[str, Path(max_length=64, examples=["agent-17"])]


async def _one(service: OperatorService, operator: Operator) -> dict[str, Any]:
    return (await _many(service, [operator]))[0]


async def _many(service: OperatorService, operators: list[Operator]) -> list[dict[str, Any]]:
    users = await service.helpdesk_users([o.id for o in operators])
    return [_json(o, users.get(o.id, [])) for o in operators]


def _json(operator: Operator, users: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": operator.id,
        "role": operator.role,
        "display_name": operator.display_name,
        "disabled": operator.disabled,
        "helpdesk_users": [{"connector_id": c, "user_id": u} for c, u in users],
        "created_at": operator.created_at,
        "updated_at": operator.updated_at,
    }


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=OperatorOut,
    summary="Create an operator",
    description="An operator is a person who requests or approves payouts, identified by the "
    "helpdesk's own agent id. The `role` names a role of the policy. Scope `admin`.",
    responses=problem_responses(Unauthorized, InsufficientScope, OperatorExists, ValidationFailed),
)
async def create_operator(body: OperatorCreate, session: DbSession) -> dict[str, Any]:
    service = OperatorService(session)
    return await _one(service, await service.create(body))


@router.get(
    "",
    response_model=Page[OperatorOut],
    summary="List operators",
    description="Ordered by id. Scope `admin`.",
    responses=problem_responses(Unauthorized, InsufficientScope, ValidationFailed, InvalidCursor),
)
async def list_operators(
    session: DbSession,
    limit: LimitQuery = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    service = OperatorService(session)
    rows = await service.list(limit + 1, decode_cursor(cursor))
    page = page_of(list(rows), limit, lambda o: o.id)
    page["data"] = await _many(service, page["data"])
    return page


@router.get(
    "/{operator_id}",
    response_model=OperatorOut,
    summary="Get an operator",
    description="The operator with its role and whether it is disabled. Scope `admin`.",
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def get_operator(operator_id: OperatorId, session: DbSession) -> dict[str, Any]:
    service = OperatorService(session)
    return await _one(service, await service.get(operator_id))


@router.patch(
    "/{operator_id}",
    response_model=OperatorOut,
    summary="Update an operator",
    description="Change the role, display name or `disabled`. A role change applies to later "
    "decisions only. Scope `admin`.",
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound, ValidationFailed),
)
async def update_operator(
    operator_id: OperatorId, body: OperatorUpdate, session: DbSession
) -> dict[str, Any]:
    service = OperatorService(session)
    return await _one(service, await service.update(operator_id, body))


@router.delete(
    "/{operator_id}",
    response_model=OperatorOut,
    summary="Disable an operator",
    description="Operators stay referenced by payouts and the audit trail, so deleting one "
    "disables it: it can no longer request or approve. Scope `admin`.",
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def delete_operator(operator_id: OperatorId, session: DbSession) -> dict[str, Any]:
    service = OperatorService(session)
    return await _one(service, await service.disable(operator_id))
