from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, status
from fastapi.responses import JSONResponse, Response, StreamingResponse

from payoutsvc.auth.dependencies import (
    Admin,
    PayoutsApprover,
    PayoutsReader,
    PayoutsReleaser,
    PayoutsWriter,
)
from payoutsvc.deps import DbSession, RuntimeDep, runtime_of
from payoutsvc.errors import (
    AlreadyApproved,
    ApprovalLimitExceeded,
    IdempotencyKeyInUse,
    IdempotencyKeyInvalid,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    InsufficientScope,
    InvalidCursor,
    InvalidJson,
    InvalidRecipient,
    InvalidStatusTransition,
    NotFound,
    OperatorDisabled,
    OperatorKeyRequired,
    OperatorMismatch,
    PayoutInFlight,
    PolicyChanging,
    PolicyViolation,
    ReleaseNotAllowed,
    SelfApprovalForbidden,
    SelfReleaseForbidden,
    Unauthorized,
    UnknownOperator,
    ValidationFailed,
    relocalize,
)
from payoutsvc.http_errors import problem_response, request_locale
from payoutsvc.payouts.acting import Credential
from payoutsvc.payouts.approvals import ApprovalService
from payoutsvc.payouts.export import HEADER, MEDIA_TYPES, ExportFormat, PayoutExport
from payoutsvc.payouts.finance import FinanceService, PaymentResult
from payoutsvc.payouts.schemas import (
    EXAMPLE_REQUEST,
    OperatorAction,
    OperatorReasonAction,
    PayoutCreate,
    PayoutEventList,
    PayoutOut,
    PayoutPreviewOut,
    RecordPaymentAction,
    ResolveAction,
    RevealedRecipientOut,
)
from payoutsvc.payouts.service import (
    IDEMPOTENCY_KEY_SCHEMA,
    PayoutService,
    check_idempotency_key,
)
from payoutsvc.payouts.status import PayoutStatus
from payoutsvc.schemas_common import (
    CursorQuery,
    LimitQuery,
    Page,
    QueryText,
    QueryTimestamp,
    decode_cursor,
    page_of,
    problem_responses,
)
from payoutsvc.timestamps import aware

# What every action on a payout (cancel, approve, reject, resolve) may answer.
_ACTION_ERRORS = (
    Unauthorized,
    InsufficientScope,
    OperatorDisabled,
    NotFound,
    InvalidStatusTransition,
    ValidationFailed,
    UnknownOperator,
    OperatorMismatch,
)
# What a decision (approve, reject, resolve) may answer besides: see payouts/acting.py.
_DECISION_ERRORS = (*_ACTION_ERRORS, OperatorKeyRequired)
_BOUND_KEYS = (
    " With an operator-bound key `operator_id` may be omitted (it is the key's operator; "
    "naming another is 403 `operator_mismatch`). Under the policy's "
    "`approvals.require_operator_key` (default true) only such a key, bound to the operator "
    "deciding, may decide: any other key, admin keys included, is 403 `operator_key_required`."
)

router = APIRouter(prefix="/v1/payouts", tags=["Payouts"])

PayoutId = Annotated[str, Path(max_length=40, examples=["po_01jd5x0z3q8m4k2n7p9r6s5t4v"])]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PayoutOut,
    summary="Request a payout",
    description=(
        "Creates a ticket-linked payout. The policy decides its first status: `approved` "
        "(within the requester's auto-approval limit) or `pending_approval`; a request the "
        "policy forbids is 422 `policy_violation`.\n\n"
        "**Idempotency** (per integration and key, kept at least 24 h): the same key with the "
        "same body replays the stored answer with `Idempotent-Replayed: true`; with a different "
        "body it is 422 `idempotency_key_reused`; while the first request is still running it "
        "is 409 `idempotency_key_in_use`; a missing header is 400 `idempotency_key_missing`.\n\n"
        "**Requester**: with an operator-bound key `requested_by` may be omitted (it is the "
        "key's operator; naming another is 403 `operator_mismatch`). Under the policy's "
        "`approvals.require_operator_key` (default true) a request whose key is not bound to "
        "its requester is never auto-approved (rule `requester_unverified`). Scope "
        "`payouts:write`."
    ),
    responses={
        **problem_responses(
            IdempotencyKeyMissing,
            IdempotencyKeyInvalid,
            InvalidJson,
            Unauthorized,
            InsufficientScope,
            IdempotencyKeyInUse,
            ValidationFailed,
            IdempotencyKeyReused,
            InvalidRecipient,
            PolicyViolation,
            UnknownOperator,
            OperatorDisabled,
            OperatorMismatch,
            PolicyChanging,
        ),
        200: {"description": "Never returned; a replay repeats the original 201 (or 422)."},
    },
    openapi_extra={
        "requestBody": {"content": {"application/json": {"example": EXAMPLE_REQUEST}}},
    },
)
async def create_payout(
    request: Request,
    body: PayoutCreate,
    session: DbSession,
    caller: PayoutsWriter,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Unique per payout attempt, ≤ 255 chars.",
            json_schema_extra=IDEMPOTENCY_KEY_SCHEMA,
        ),
    ] = None,
) -> Response:
    key = check_idempotency_key(idempotency_key)
    # The runtime read from the request, not as a dependency: the busiest endpoint, and
    # FastAPI spends ~15 µs per dependency per request.
    answer = await PayoutService(session, runtime_of(request)).create(
        Credential.of(caller), caller.integration_id, key, body
    )
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    if answer.status_code >= 400:
        # A stored refusal is rendered in this request's language (a replay in another
        # language than the first request's gets the same facts in its own language).
        locale = request_locale(request)
        problem = relocalize(answer.body, answer.i18n or {}, locale)
        return problem_response(answer.status_code, problem, locale, headers)
    return Response(answer.stored_json, answer.status_code, headers, media_type="application/json")


async def payout_filters(
    ticket_system: Annotated[QueryText | None, Query(max_length=64)] = None,
    ticket_id: Annotated[QueryText | None, Query(max_length=128)] = None,
    status: PayoutStatus | None = None,
    requested_by: Annotated[QueryText | None, Query(max_length=64)] = None,
    created_gte: Annotated[QueryTimestamp | None, Query(description="RFC 3339, inclusive")] = None,
    created_lt: Annotated[QueryTimestamp | None, Query(description="RFC 3339, exclusive")] = None,
) -> dict[str, Any]:
    """The list filters, shared by the list and the export."""
    return {
        "ticket_system": ticket_system,
        "ticket_id": ticket_id,
        "status": status.value if status else None,
        "requested_by": requested_by,
        "created_gte": aware(created_gte),
        "created_lt": aware(created_lt),
    }


PayoutFilters = Annotated[dict[str, Any], Depends(payout_filters)]


@router.get(
    "",
    response_model=Page[PayoutOut],
    summary="List payouts",
    description="Newest first, filtered by ticket, status, requester and creation time. "
    "Keys without `admin` see only their integration's payouts. Scope `payouts:read`.",
    responses=problem_responses(Unauthorized, InsufficientScope, ValidationFailed, InvalidCursor),
)
async def list_payouts(
    session: DbSession,
    runtime: RuntimeDep,
    caller: PayoutsReader,
    filters: PayoutFilters,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> JSONResponse:
    rows = await PayoutService(session, runtime).list_json(
        caller.visible_integration, limit + 1, decode_cursor(cursor), **filters
    )
    return JSONResponse(page_of(rows, limit, lambda p: p["id"]))


@router.get(
    "/export",
    summary="Export payouts for the books (CSV or XLSX)",
    description=(
        "Every payout the list's filters match (same query parameters, no paging), newest "
        "first, masked (never a full account), streamed: `format=csv` is UTF-8 with a BOM "
        "(spreadsheet programs then show Chinese text), `format=xlsx` one sheet `payouts`. "
        "Columns, in order: " + ", ".join(f"`{name}`" for name in HEADER) + ". Text a "
        "spreadsheet would run as a formula starts with `'`. Keys without `admin` export only "
        "their integration's payouts. Scope `payouts:read`."
    ),
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {media: {} for media in MEDIA_TYPES.values()},
            "description": "The file, as an attachment.",
        },
        **problem_responses(Unauthorized, InsufficientScope, ValidationFailed),
    },
)
async def export_payouts(
    runtime: RuntimeDep,
    caller: PayoutsReader,
    filters: PayoutFilters,
    format: Annotated[ExportFormat, Query(description="csv or xlsx")] = "csv",
) -> StreamingResponse:
    export = PayoutExport(runtime.db, caller.visible_integration, filters)
    return StreamingResponse(
        export.chunks(format),
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="payouts.{format}"'},
    )


@router.get(
    "/{payout_id}",
    response_model=PayoutOut,
    summary="Get a payout",
    description="Another integration's payout answers 404. Scope `payouts:read`.",
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def get_payout(
    payout_id: PayoutId, session: DbSession, runtime: RuntimeDep, caller: PayoutsReader
) -> JSONResponse:
    return JSONResponse(
        await PayoutService(session, runtime).get_json(payout_id, caller.visible_integration)
    )


@router.get(
    "/{payout_id}/events",
    response_model=PayoutEventList,
    summary="A payout's history",
    description="Every event of the payout, oldest first, with its actor. Scope `payouts:read`.",
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def list_payout_events(
    payout_id: PayoutId, session: DbSession, runtime: RuntimeDep, caller: PayoutsReader
) -> JSONResponse:
    events = await PayoutService(session, runtime).events_json(
        payout_id, caller.visible_integration
    )
    return JSONResponse({"data": events})


@router.post(
    "/{payout_id}/cancel",
    response_model=PayoutOut,
    summary="Cancel a payout",
    description="`pending_approval` or `approved` → `canceled`. Once the executor has taken "
    "the payout (`processing`) it is 409 `invalid_status_transition`. Scope `payouts:write`. "
    "Not an approver's decision, so any key with the scope may cancel naming an active "
    "operator; an operator-bound key cancels only as its operator (403 `operator_mismatch`).",
    responses=problem_responses(*_ACTION_ERRORS),
)
async def cancel_payout(
    payout_id: PayoutId,
    body: OperatorReasonAction,
    session: DbSession,
    runtime: RuntimeDep,
    caller: PayoutsWriter,
) -> JSONResponse:
    return JSONResponse(
        await PayoutService(session, runtime).cancel(
            Credential.of(caller),
            payout_id,
            caller.visible_integration,
            body.operator_id,
            body.reason,
        )
    )


@router.post(
    "/preview",
    response_model=PayoutPreviewOut,
    summary="Preview the policy decision for a payout",
    description=(
        "Runs the recipient checks and every policy rule on the same body `POST /v1/payouts` "
        "takes, against the current policy and today's totals, and answers what it would "
        "decide (`auto_approved`, `approval_required` with 1 or 2 approvals, or `forbidden` "
        "with each violated rule in `errors`). Creates nothing; needs no `Idempotency-Key`. "
        "An invalid recipient is 422 `invalid_recipient`, as on create. For a key without "
        "`admin`, messages about company-wide totals (ticket, recipient, the requester's day) "
        "name the limit that would be exceeded, never the amounts already used, which may be "
        "other integrations'. Scope `payouts:write`."
    ),
    responses=problem_responses(
        Unauthorized,
        InsufficientScope,
        ValidationFailed,
        InvalidRecipient,
        UnknownOperator,
        OperatorDisabled,
        OperatorMismatch,
    ),
    openapi_extra={
        "requestBody": {"content": {"application/json": {"example": EXAMPLE_REQUEST}}},
    },
)
async def preview_payout(
    body: PayoutCreate, session: DbSession, runtime: RuntimeDep, caller: PayoutsWriter
) -> JSONResponse:
    return JSONResponse(await PayoutService(session, runtime).preview(Credential.of(caller), body))


@router.post(
    "/{payout_id}/approve",
    response_model=PayoutOut,
    summary="Approve a payout",
    description=(
        "Records the operator's approval of a `pending_approval` payout. When `approvals` "
        "reach `required_approvals` the payout becomes `approved` (and is executed); before "
        "that it stays `pending_approval` with the approval listed. The operator must be "
        "active and their role's `approve_max` (current policy) must cover the amount "
        "(403 `approval_limit_exceeded`); the requester can never approve their own payout "
        "(403 `self_approval_forbidden`); one operator counts once (409 `already_approved`). "
        "Other statuses: 409 `invalid_status_transition`. Scope `payouts:approve`." + _BOUND_KEYS
    ),
    responses=problem_responses(
        *_DECISION_ERRORS, SelfApprovalForbidden, ApprovalLimitExceeded, AlreadyApproved
    ),
)
async def approve_payout(
    payout_id: PayoutId,
    body: OperatorAction,
    session: DbSession,
    runtime: RuntimeDep,
    caller: PayoutsApprover,
) -> JSONResponse:
    return JSONResponse(
        await ApprovalService(session, runtime).approve(
            Credential.of(caller),
            payout_id,
            caller.visible_integration,
            body.operator_id,
            body.comment,
        )
    )


@router.post(
    "/{payout_id}/reject",
    response_model=PayoutOut,
    summary="Reject a payout",
    description="`pending_approval` → `rejected`; the money never moves. The rejection and its "
    "`reason` are recorded in `approvals` (decision `rejected`) and the payout's events. "
    "Other statuses: 409 `invalid_status_transition`. Scope `payouts:approve`." + _BOUND_KEYS,
    responses=problem_responses(*_DECISION_ERRORS),
)
async def reject_payout(
    payout_id: PayoutId,
    body: OperatorReasonAction,
    session: DbSession,
    runtime: RuntimeDep,
    caller: PayoutsApprover,
) -> JSONResponse:
    return JSONResponse(
        await ApprovalService(session, runtime).reject(
            Credential.of(caller),
            payout_id,
            caller.visible_integration,
            body.operator_id,
            body.reason,
        )
    )


@router.post(
    "/{payout_id}/resolve",
    response_model=PayoutOut,
    summary="Resolve a payout that needs review",
    description="`needs_review` → `succeeded` or `failed`, once a person has established with "
    "the gateway what happened (the executor could not). `failed` sets the failure code "
    "`manual_review_failed` with the comment as message. Other statuses: 409 "
    "`invalid_status_transition`. Scope `admin`." + _BOUND_KEYS,
    responses=problem_responses(*_DECISION_ERRORS),
)
async def resolve_payout(
    payout_id: PayoutId,
    body: ResolveAction,
    session: DbSession,
    runtime: RuntimeDep,
    caller: Admin,
) -> JSONResponse:
    return JSONResponse(
        await ApprovalService(session, runtime).resolve(
            Credential.of(caller),
            payout_id,
            caller.visible_integration,
            body.operator_id,
            body.outcome,
            body.comment,
        )
    )


@router.post(
    "/{payout_id}/release",
    response_model=PayoutOut,
    summary="Release a payout that waits for a person",
    description=(
        "An `approved` payout whose `release.required` is true (the policy's `release` "
        "section: mode `manual`, above `manual_over`) is not paid until an operator releases "
        "it; then the executor takes it at once. The operator must be active, their role "
        "(current policy) must have `can_release` (403 `release_not_allowed`) and they must "
        "not have requested it (403 `self_release_forbidden`). Any other status, a payout "
        "that needs no release or one released already: 409 `invalid_status_transition`. "
        "Event `payout.released`. Scope `payouts:release`." + _BOUND_KEYS
    ),
    responses=problem_responses(*_DECISION_ERRORS, SelfReleaseForbidden, ReleaseNotAllowed),
)
async def release_payout(
    payout_id: PayoutId,
    body: OperatorAction,
    session: DbSession,
    runtime: RuntimeDep,
    caller: PayoutsReleaser,
) -> JSONResponse:
    return JSONResponse(
        await FinanceService(session, runtime).release(
            Credential.of(caller),
            payout_id,
            caller.visible_integration,
            body.operator_id,
            body.comment,
        )
    )


@router.post(
    "/{payout_id}/record-payment",
    response_model=PayoutOut,
    summary="Record an offline payment (manual gateway)",
    description=(
        "For a payout of the `manual` gateway waiting in `processing` with `gateway_status` "
        "`awaiting_manual_payment`: finance paid it through the bank portal (`succeeded`, "
        "`reference` required: it becomes `gateway_reference`) or could not "
        "(`failed`, `failure_code` required). Any other payout, or one recorded already: 409 "
        "`invalid_status_transition`. Same operator rules as release. Scope "
        "`payouts:release`." + _BOUND_KEYS
    ),
    responses=problem_responses(*_DECISION_ERRORS, ReleaseNotAllowed),
)
async def record_payment(
    payout_id: PayoutId,
    body: RecordPaymentAction,
    session: DbSession,
    runtime: RuntimeDep,
    caller: PayoutsReleaser,
) -> JSONResponse:
    return JSONResponse(
        await FinanceService(session, runtime).record_payment(
            Credential.of(caller),
            payout_id,
            caller.visible_integration,
            body.operator_id,
            PaymentResult(body.outcome, body.reference, body.failure_code, body.comment),
        )
    )


@router.get(
    "/{payout_id}/recipient",
    response_model=RevealedRecipientOut,
    summary="See a payout's full recipient (to pay it)",
    description=(
        "Decrypts and returns the full recipient (account, name, bank details) once per "
        "call, and records a `payout.recipient_revealed` event naming the key and, for an "
        "operator-bound key, its operator. The event is in the audit chain but never sent to "
        "webhooks; the status does not change. While the executor is sending the payout: 409 "
        "`payout_in_flight` (retry). Scope `payouts:release`."
    ),
    responses=problem_responses(
        Unauthorized,
        InsufficientScope,
        NotFound,
        PayoutInFlight,
        OperatorDisabled,
        UnknownOperator,
    ),
)
async def reveal_recipient(
    payout_id: PayoutId, session: DbSession, runtime: RuntimeDep, caller: PayoutsReleaser
) -> JSONResponse:
    return JSONResponse(
        await FinanceService(session, runtime).reveal_recipient(
            Credential.of(caller), caller.key_id, payout_id, caller.visible_integration
        ),
        headers={"Cache-Control": "no-store"},
    )
