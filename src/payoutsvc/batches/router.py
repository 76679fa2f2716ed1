from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, status
from fastapi.responses import JSONResponse

from payoutsvc.auth.dependencies import PayoutsApprover, PayoutsReader, PayoutsWriter
from payoutsvc.batches.parsing import parse_csv, parse_json
from payoutsvc.batches.schemas import (
    EXAMPLE_BATCH,
    MAX_BATCH_BYTES,
    BatchActionOut,
    BatchOut,
)
from payoutsvc.batches.service import BatchService
from payoutsvc.deps import DbSession, RuntimeDep
from payoutsvc.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyInvalid,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    InsufficientScope,
    InvalidCursor,
    InvalidJson,
    NotFound,
    OperatorDisabled,
    OperatorKeyRequired,
    OperatorMismatch,
    PayloadTooLarge,
    PolicyChanging,
    Unauthorized,
    UnknownOperator,
    UnsupportedMediaType,
    ValidationFailed,
)
from payoutsvc.payouts.acting import Credential
from payoutsvc.payouts.schemas import OperatorAction
from payoutsvc.payouts.service import check_idempotency_key
from payoutsvc.schemas_common import (
    CursorQuery,
    LimitQuery,
    Page,
    QueryText,
    decode_cursor,
    page_of,
    problem_responses,
)

router = APIRouter(prefix="/v1/payout-batches", tags=["Payout batches"])

BatchId = Annotated[str, Path(max_length=40, examples=["pb_01jd5x0z3q8m4k2n7p9r6s5t4v"])]
# The one route whose body may be this large (main.py gives BodyLimitMiddleware the path).
BATCHES_PATH = "/v1/payout-batches"

_CSV_EXAMPLE = (
    "item_key,ticket.system,ticket.id,reason,amount,currency,recipient.type,"
    "recipient.account,recipient.name,recipient.bank_name,requested_by,metadata.order_id\n"
    "row-1,zendesk,48213,refund,12.50,CNY,bank_card_cn,6222021234567890128,张三,"
    "中国工商银行,agent-17,9931\n"
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=BatchOut,
    summary="Create a batch of payouts",
    description=(
        'Creates up to 1,000 payouts in one request, from JSON `{"description", "items": '
        '[{"item_key", <the POST /v1/payouts body>}]}` or a CSV upload (`Content-Type: '
        "text/csv`, up to 10 MiB, UTF-8 with or without BOM; one row per item, columns named "
        "after the body's fields with dots: `item_key`, `ticket.system`, `ticket.id`, "
        "`ticket.url`, `reason`, `amount`, `currency`, `recipient.type`, `recipient.account`, "
        "`recipient.name`, `recipient.bank_name`, `recipient.bic`, ..., `requested_by`, "
        "`description`, `metadata.<key>`; an empty cell is an absent field; the batch's "
        "description is then the `description` query parameter).\n\n"
        "**All or nothing:** every item is checked (fields, recipient, requester, policy); if "
        "any is bad the answer is 422 `validation_failed` with the problems of every bad item "
        "in `errors` (`items[3].recipient.account`; a policy refusal has the rule as its "
        "`code`) and nothing is created. Otherwise each item is a payout decided by the "
        "policy as if created alone, in the batch's order (the daily and per-ticket caps "
        "count the earlier items).\n\n"
        "**Idempotency:** `Idempotency-Key` is required. The same key with the same items "
        "returns the stored 201 with `Idempotent-Replayed: true` and creates nothing; with "
        "other items it is 422 `idempotency_key_reused`; while the first request runs, 409 "
        "`idempotency_key_in_use`. Each item's payout is created under its own key derived "
        "from the batch's key and its `item_key`. Scope `payouts:write`."
    ),
    responses={
        **problem_responses(
            IdempotencyKeyMissing,
            IdempotencyKeyInvalid,
            InvalidJson,
            Unauthorized,
            InsufficientScope,
            IdempotencyKeyInUse,
            PayloadTooLarge,
            UnsupportedMediaType,
            ValidationFailed,
            IdempotencyKeyReused,
            PolicyChanging,
        ),
        200: {"description": "Never returned; a replay repeats the original 201."},
    },
    openapi_extra={
        "x-max-body-bytes": MAX_BATCH_BYTES,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/BatchCreate"},
                    "example": EXAMPLE_BATCH,
                },
                "text/csv": {"schema": {"type": "string"}, "example": _CSV_EXAMPLE},
            },
        },
    },
)
async def create_batch(
    request: Request,
    session: DbSession,
    runtime: RuntimeDep,
    caller: PayoutsWriter,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="Unique per batch, ≤ 255 chars."),
    ] = None,
    description: Annotated[
        QueryText | None,
        Query(max_length=1000, description="The batch's description, for a CSV upload."),
    ] = None,
) -> JSONResponse:
    key = check_idempotency_key(idempotency_key)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()  # at most MAX_BATCH_BYTES: BodyLimitMiddleware cuts it off
    if media_type == "text/csv":
        parsed = parse_csv(body, description)
    elif media_type in ("application/json", ""):
        parsed = parse_json(body)
    else:
        raise UnsupportedMediaType("Send the batch as application/json or text/csv.")
    answer = await BatchService(session, runtime).create(
        Credential.of(caller), caller.integration_id, key, parsed
    )
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    return JSONResponse(answer.body, status_code=answer.status_code, headers=headers)


@router.get(
    "",
    response_model=Page[BatchOut],
    summary="List payout batches",
    description="Newest first, with counts per status (items are left out: get one batch "
    "for them). Keys without `admin` see only their integration's batches. Scope "
    "`payouts:read`.",
    responses=problem_responses(Unauthorized, InsufficientScope, ValidationFailed, InvalidCursor),
)
async def list_batches(
    session: DbSession,
    runtime: RuntimeDep,
    caller: PayoutsReader,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> JSONResponse:
    rows = await BatchService(session, runtime).list_json(
        caller.visible_integration, limit + 1, decode_cursor(cursor)
    )
    return JSONResponse(page_of(rows, limit, lambda b: b["id"]))


@router.get(
    "/{batch_id}",
    response_model=BatchOut,
    summary="Get a payout batch",
    description="The batch with its items and each payout's status now; `counts` per status "
    "and `total_minor` per currency are computed from the payouts. Another integration's "
    "batch answers 404. Scope `payouts:read`.",
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def get_batch(
    batch_id: BatchId, session: DbSession, runtime: RuntimeDep, caller: PayoutsReader
) -> JSONResponse:
    return JSONResponse(
        await BatchService(session, runtime).get_json(batch_id, caller.visible_integration)
    )


@router.post(
    "/{batch_id}/approve",
    response_model=BatchActionOut,
    summary="Approve every pending payout of a batch",
    description=(
        "`POST /v1/payouts/{id}/approve` for each payout of the batch still "
        "`pending_approval`, with the same rules per payout (four eyes, the approver's "
        "`approve_max`, one operator counts once). Each payout is approved in its own "
        "savepoint: one that refuses (`self_approval_forbidden`, `approval_limit_exceeded`, "
        "`already_approved`, or a status that changed meanwhile) is listed with its error and "
        "the others keep their approval. Payouts in another status are `skipped`. An error "
        "about the caller (`operator_key_required`, `operator_mismatch`, an unknown or "
        "disabled operator) fails the whole request and approves nothing. Scope "
        "`payouts:approve`."
    ),
    responses=problem_responses(
        Unauthorized,
        InsufficientScope,
        NotFound,
        ValidationFailed,
        UnknownOperator,
        OperatorDisabled,
        OperatorMismatch,
        OperatorKeyRequired,
    ),
)
async def approve_batch(
    batch_id: BatchId,
    body: OperatorAction,
    session: DbSession,
    runtime: RuntimeDep,
    caller: PayoutsApprover,
) -> JSONResponse:
    return JSONResponse(
        await BatchService(session, runtime).approve(
            Credential.of(caller),
            batch_id,
            caller.visible_integration,
            body.operator_id,
            body.comment,
        )
    )
