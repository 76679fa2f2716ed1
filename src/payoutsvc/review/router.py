from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response

from payoutsvc.auth.dependencies import Admin
from payoutsvc.deps import DbSession, RuntimeDep
from payoutsvc.errors import (
    InsufficientScope,
    InvalidCursor,
    InvalidStatusTransition,
    NotFound,
    OperatorDisabled,
    OperatorKeyRequired,
    OperatorMismatch,
    Unauthorized,
    UnknownOperator,
    ValidationFailed,
)
from payoutsvc.payouts.acting import Credential
from payoutsvc.review.models import AnomalyStatus
from payoutsvc.review.schemas import AnomalyEventList, AnomalyKind, AnomalyOut, ReviewIn
from payoutsvc.review.service import ReviewService
from payoutsvc.schemas_common import (
    CursorQuery,
    LimitQuery,
    Page,
    QueryTimestamp,
    decode_cursor,
    page_of,
    problem_responses,
)
from payoutsvc.timestamps import aware

router = APIRouter(prefix="/v1/anomalies", tags=["Periodic review"])

AnomalyId = Annotated[str, Path(max_length=40, examples=["an_01jd5x0z3q8m4k2n7p9r6s5t4v"])]
SinceQuery = Annotated[
    QueryTimestamp | None, Query(description="RFC 3339: detected at or after (inclusive).")
]


@router.get(
    "",
    response_model=Page[AnomalyOut],
    summary="List anomalies",
    description="What the periodic review found, newest first, filtered by `status`, `kind` "
    "and detection time (`since`). Scope `admin`.",
    responses=problem_responses(Unauthorized, InsufficientScope, ValidationFailed, InvalidCursor),
)
async def list_anomalies(
    session: DbSession,
    runtime: RuntimeDep,
    _caller: Admin,
    status: AnomalyStatus | None = None,
    kind: AnomalyKind | None = None,
    since: SinceQuery = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> JSONResponse:
    rows = await ReviewService(session, runtime).list_json(
        limit + 1, decode_cursor(cursor), status, kind, aware(since)
    )
    return JSONResponse(page_of(rows, limit, lambda a: a["id"]))


@router.get(
    "/export",
    summary="Export anomalies as CSV",
    description="Every anomaly matching the filters, newest first, as CSV for the review "
    "meeting (subjects masked as in the API; a cell starting with `=`, `+`, `-` or `@` is "
    "prefixed with `'` so spreadsheets do not run it). Scope `admin`.",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}}, "description": "The CSV file."},
        **problem_responses(Unauthorized, InsufficientScope, ValidationFailed),
    },
)
async def export_anomalies(
    session: DbSession,
    runtime: RuntimeDep,
    _caller: Admin,
    format: Literal["csv"] = "csv",
    status: AnomalyStatus | None = None,
    kind: AnomalyKind | None = None,
    since: SinceQuery = None,
) -> Response:
    body = await ReviewService(session, runtime).export_csv(status, kind, aware(since))
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="anomalies.{format}"'},
    )


@router.get(
    "/{anomaly_id}",
    response_model=AnomalyOut,
    summary="Get an anomaly",
    description="Scope `admin`.",
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def get_anomaly(
    anomaly_id: AnomalyId, session: DbSession, runtime: RuntimeDep, _caller: Admin
) -> JSONResponse:
    return JSONResponse(await ReviewService(session, runtime).get_json(anomaly_id))


@router.get(
    "/{anomaly_id}/events",
    response_model=AnomalyEventList,
    summary="An anomaly's audited history",
    description="Detected, updated and reviewed events, oldest first, each keyed-hashed and "
    "chained like a payout's events. Scope `admin`.",
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def list_anomaly_events(
    anomaly_id: AnomalyId, session: DbSession, runtime: RuntimeDep, _caller: Admin
) -> JSONResponse:
    return JSONResponse({"data": await ReviewService(session, runtime).events_json(anomaly_id)})


@router.post(
    "/{anomaly_id}/review",
    response_model=AnomalyOut,
    summary="Review an anomaly",
    description="Close an open anomaly as `dismissed` or `confirmed`; the review is recorded "
    "in its audited history. A reviewed anomaly is 409 `invalid_status_transition`. With an "
    "operator-bound key `operator_id` may be omitted; under the policy's "
    "`approvals.require_operator_key` (default true) only a key bound to the reviewing "
    "operator may review (403 `operator_key_required`). Scope `admin`.",
    responses=problem_responses(
        Unauthorized,
        InsufficientScope,
        NotFound,
        InvalidStatusTransition,
        ValidationFailed,
        UnknownOperator,
        OperatorDisabled,
        OperatorMismatch,
        OperatorKeyRequired,
    ),
)
async def review_anomaly(
    anomaly_id: AnomalyId,
    body: ReviewIn,
    session: DbSession,
    runtime: RuntimeDep,
    caller: Admin,
) -> JSONResponse:
    return JSONResponse(
        await ReviewService(session, runtime).review(
            Credential.of(caller), anomaly_id, body.operator_id, body.outcome, body.comment
        )
    )
