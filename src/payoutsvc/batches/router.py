from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, Request, status
from fastapi.responses import JSONResponse, Response

from payoutsvc.auth.dependencies import (
    PayoutsApprover,
    PayoutsReader,
    PayoutsReleaser,
    PayoutsWriter,
)
from payoutsvc.batches.parsing import parse_csv, parse_json
from payoutsvc.batches.schemas import (
    EXAMPLE_BATCH,
    MAX_BATCH_BYTES,
    BatchActionOut,
    BatchOut,
)
from payoutsvc.batches.service import CSV, PAIN_001, BatchService
from payoutsvc.deps import DbSession, RuntimeDep, WriteSession
from payoutsvc.errors import (
    ApprovalLimitExceeded,
    IdempotencyKeyInUse,
    IdempotencyKeyInvalid,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    InsufficientScope,
    InvalidCursor,
    InvalidJson,
    NotFound,
    NothingToExport,
    OperatorDisabled,
    OperatorKeyRequired,
    OperatorMismatch,
    PayloadTooLarge,
    PolicyChanging,
    ReleaseNotAllowed,
    SepaDebtorNotConfigured,
    Unauthorized,
    UnknownOperator,
    UnsupportedMediaType,
    ValidationFailed,
)
from payoutsvc.payouts.acting import Credential
from payoutsvc.payouts.schemas import OperatorAction
from payoutsvc.payouts.service import IDEMPOTENCY_KEY_SCHEMA, check_idempotency_key
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

_BOUND_KEYS = (
    " Decisions need a key bound to the deciding operator under the policy's "
    "`approvals.require_operator_key` (default true): any other key is 403 "
    "`operator_key_required`."
)
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
        Header(
            alias="Idempotency-Key",
            description="Unique per batch, ≤ 255 chars.",
            json_schema_extra=IDEMPOTENCY_KEY_SCHEMA,
        ),
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
        "disabled operator, or 403 `approval_limit_exceeded` for a role with no approval "
        "rights at all) fails the whole request and approves nothing, even when no payout "
        "waits for approval. Scope `payouts:approve`."
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
        ApprovalLimitExceeded,
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


@router.post(
    "/{batch_id}/release",
    response_model=BatchActionOut,
    summary="Release every payout of a batch that waits for a release",
    description=(
        "`POST /v1/payouts/{id}/release` for each payout of the batch that waits for one "
        "(`approved`, `release.required`, not released yet), with the same rules per payout: "
        "the operator's role must have `can_release` (else 403 `release_not_allowed` for the "
        "whole request, releasing nothing, even when no payout waits) and a payout they "
        "requested themselves is `refused` with `self_release_forbidden` while the others "
        "are released (each in its own savepoint). Payouts in another state are "
        "`skipped`. Released payouts are the executor's job at once. Scope "
        "`payouts:release`." + _BOUND_KEYS
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
        ReleaseNotAllowed,
    ),
)
async def release_batch(
    batch_id: BatchId,
    body: OperatorAction,
    session: DbSession,
    runtime: RuntimeDep,
    caller: PayoutsReleaser,
) -> JSONResponse:
    return JSONResponse(
        await BatchService(session, runtime).release(
            Credential.of(caller),
            batch_id,
            caller.visible_integration,
            body.operator_id,
            body.comment,
        )
    )


_MEDIA_TYPES = {CSV: "text/csv; charset=utf-8", PAIN_001: "application/xml"}
_EXTENSIONS = {CSV: "csv", PAIN_001: "xml"}


@router.get(
    "/{batch_id}/export",
    summary="The bank file paying a batch offline",
    description=(
        "The file finance uploads to the bank portal to pay the batch's payouts that await "
        "offline payment: those the executor handed to the `manual` gateway (status "
        "`processing`, gateway status `awaiting_manual_payment`), so nothing is in it before "
        "its approvals, its release and the executor's evidence check.\n\n"
        "* `format=csv`: `bank_card_cn` payouts in CNY, for the bulk-transfer upload of "
        "Chinese corporate bank portals; UTF-8 with a BOM; columns `序号, 收款账号, "
        "收款账号名称, 收款账号开户行, 金额, 币种, 汇款用途, 备注` (备注 is the payout id).\n"
        "* `format=pain.001`: `iban` payouts in EUR as an ISO 20022 `pain.001.001.09` SEPA "
        "credit transfer from the account in `PAYOUTSVC_SEPA_DEBTOR_NAME`/`_IBAN`/`_BIC` "
        "(409 `sepa_debtor_not_configured` without them); each end-to-end id is the payout "
        "id.\n\n"
        "The file holds full account numbers, so every export writes a `payout.exported` "
        "event into each exported payout's audit chain (who, when, the file's sha256). 409 "
        "`nothing_to_export` when no payout of the batch fits the format. `X-Export-Rows` "
        "says how many payouts the file pays. Scope `payouts:release`."
    ),
    response_class=Response,
    responses={
        200: {
            "description": "The bank file.",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/xml": {"schema": {"type": "string"}},
            },
        },
        **problem_responses(
            Unauthorized,
            InsufficientScope,
            NotFound,
            NothingToExport,
            SepaDebtorNotConfigured,
            ValidationFailed,
        ),
    },
)
async def export_batch(
    batch_id: BatchId,
    session: WriteSession,
    runtime: RuntimeDep,
    caller: PayoutsReleaser,
    format: Annotated[Literal["csv", "pain.001"], Query(description="`csv` or `pain.001`.")],
) -> Response:
    actor = caller.operator_id or f"api_key:{caller.key_id}"
    exported = await BatchService(session, runtime).export(
        actor, caller.key_id, batch_id, caller.visible_integration, format
    )
    filename = f"{exported.name}.{_EXTENSIONS[exported.format]}"
    return Response(
        exported.content,
        media_type=_MEDIA_TYPES[exported.format],
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Export-Rows": str(exported.rows),
            "Cache-Control": "no-store",
        },
    )
