"""/v1/reconciliations (scope ``admin``): start one, see it, list them."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from pydantic import ValidationError

from payoutsvc.auth.dependencies import Admin
from payoutsvc.deps import DbSession, RuntimeDep
from payoutsvc.errors import (
    InsufficientScope,
    InvalidCursor,
    InvalidJson,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    ValidationFailed,
)
from payoutsvc.http_errors import field_errors_from_pydantic
from payoutsvc.reconciliation.models import RunStatus
from payoutsvc.reconciliation.schemas import (
    PERIOD_DOC,
    DayOrMoment,
    ReconciliationCreate,
    ReconciliationDetail,
    ReconciliationOut,
    ReconciliationStarted,
)
from payoutsvc.reconciliation.service import ReconciliationService, present
from payoutsvc.reconciliation.statement import COLUMNS, parse_statement
from payoutsvc.schemas_common import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_cursor,
    page_of,
    problem_responses,
)

router = APIRouter(prefix="/v1/reconciliations", tags=["Reconciliation"])

RunId = Annotated[str, Path(max_length=40, examples=["rc_01jd5x0z3q8m4k2n7p9r6s5t4v"])]
_CSV_EXAMPLE = (
    "reference,amount,currency,status,date\nBOC20261201-0042,12.50,CNY,succeeded,2026-12-01\n"
)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReconciliationStarted,
    summary="Start a reconciliation",
    description=(
        "Compare every payout of `gateway` in the period with what the gateway says: the "
        "worker asks it about each payout by its idempotency key and, where it can list its "
        "own transfers (sandbox, Stripe), compares that list too. Or upload the bank "
        "statement (`Content-Type: text/csv`, columns "
        f"`{', '.join(COLUMNS)}`; `gateway`, `from` and `to` then in the query) for the "
        "`manual` gateway or a bank. Answers at once; `GET` the id for the result. A "
        "mismatch changes no payout. Scope `admin`."
    ),
    responses=problem_responses(
        InvalidJson, Unauthorized, InsufficientScope, PayloadTooLarge, ValidationFailed
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": ReconciliationCreate.model_json_schema(by_alias=True),
                    "example": {"gateway": "sandbox", "from": "2026-12-01", "to": "2026-12-01"},
                },
                "text/csv": {"schema": {"type": "string"}, "example": _CSV_EXAMPLE},
            },
        }
    },
)
async def start_reconciliation(
    request: Request,
    session: DbSession,
    runtime: RuntimeDep,
    caller: Admin,
    gateway: Annotated[str | None, Query(max_length=32, description="With a CSV.")] = None,
    from_: Annotated[
        DayOrMoment | None, Query(alias="from", description=PERIOD_DOC + " With a CSV.")
    ] = None,
    to: Annotated[DayOrMoment | None, Query(description="With a CSV.")] = None,
) -> dict[str, Any]:
    body = await request.body()
    service = ReconciliationService(session, runtime)
    requested_by = caller.operator_id or caller.key_id
    if request.headers.get("content-type", "").split(";")[0].strip() == "text/csv":
        if gateway is None or from_ is None or to is None:
            raise ValidationFailed("With a CSV statement, give gateway, from and to in the query.")
        rows = parse_statement(body)
        run = await service.start(gateway, (from_, to), requested_by, rows)
    else:
        form = _create_form(body)
        run = await service.start(form.gateway, (form.from_, form.to), requested_by)
    return {"id": run.id, "status": run.status}


def _create_form(body: bytes) -> ReconciliationCreate:
    try:
        data: object = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidJson("The request body is not valid JSON (or send text/csv).") from None
    try:
        return ReconciliationCreate.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(
            "The request is invalid.", errors=field_errors_from_pydantic(exc.errors())
        ) from None


@router.get(
    "/{run_id}",
    response_model=ReconciliationDetail,
    summary="A reconciliation and what it found",
    description=(
        "`summary` counts every kind (null while running); `items` lists the findings "
        "(matches are only counted), the first 1,000 of `items_total`. Scope `admin`."
    ),
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def get_reconciliation(
    run_id: RunId, session: DbSession, runtime: RuntimeDep, _caller: Admin
) -> dict[str, Any]:
    return await ReconciliationService(session, runtime).detail(run_id)


@router.get(
    "",
    response_model=Page[ReconciliationOut],
    summary="List reconciliations",
    description="Newest first, without their items. Scope `admin`.",
    responses=problem_responses(Unauthorized, InsufficientScope, ValidationFailed, InvalidCursor),
)
async def list_reconciliations(
    session: DbSession,
    runtime: RuntimeDep,
    _caller: Admin,
    gateway: Annotated[str | None, Query(max_length=32)] = None,
    run_status: Annotated[RunStatus | None, Query(alias="status")] = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    runs = await ReconciliationService(session, runtime).page(
        limit + 1,
        decode_cursor(cursor),
        gateway,
        None if run_status is None else run_status.value,
    )
    page = page_of(runs, limit, lambda r: r.id)
    page["data"] = [present(r) for r in page["data"]]
    return page
