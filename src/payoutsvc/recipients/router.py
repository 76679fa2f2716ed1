"""POST /v1/recipients/validate and the recipient blocklist /v1/recipient-blocks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from payoutsvc.auth.dependencies import Admin, PayoutsWriter
from payoutsvc.deps import DbSession, RuntimeDep
from payoutsvc.errors import (
    InsufficientScope,
    InvalidCursor,
    InvalidRecipient,
    NotFound,
    RecipientAlreadyBlocked,
    Unauthorized,
    ValidationFailed,
)
from payoutsvc.messages import negotiate
from payoutsvc.recipients.schemas import RecipientOut
from payoutsvc.recipients.service import (
    RecipientBlockCreate,
    RecipientService,
    RecipientValidateIn,
)
from payoutsvc.schemas_common import (
    CursorQuery,
    LimitQuery,
    Page,
    ProblemFieldErrorOut,
    decode_cursor,
    page_of,
    problem_responses,
)

router = APIRouter(tags=["Recipients"])

BlockId = Annotated[str, Path(max_length=40, examples=["rb_01jd5x0z3q8m4k2n7p9r6s5t4v"])]


class RecipientValidationOut(BaseModel):
    valid: bool = Field(description="False when `errors` is not empty: a payout would be refused.")
    errors: list[ProblemFieldErrorOut]
    warnings: list[ProblemFieldErrorOut] = Field(
        description="Accepted, but a payout to this recipient is never auto-approved."
    )
    normalized: RecipientOut = Field(
        description="The recipient as it would be stored and paid (e.g. IBAN without spaces, "
        "mobile numbers without country code), with the account masked."
    )


class BlockedRecipientOut(BaseModel):
    type: str
    account_masked: str = Field(examples=["138****8000"])


class RecipientBlockOut(BaseModel):
    id: str = Field(examples=["rb_01jd5x0z3q8m4k2n7p9r6s5t4v"])
    recipient: BlockedRecipientOut
    reason: str | None
    created_by: str = Field(description="The API key that created the block.")
    created_at: datetime


_VALIDATE_EXAMPLE = {
    "recipient": {"type": "iban", "account": "DE89 3704 0044 0532 0130 00", "name": "Max Muster"},
    "amount": "25.00",
    "currency": "EUR",
}
_BLOCK_EXAMPLE = {
    "recipient": {"type": "alipay", "account": "13800138000"},
    "reason": "Chargeback fraud on ticket 48213",
}


def _service(session: DbSession, runtime: RuntimeDep) -> RecipientService:
    return RecipientService(session, runtime.cipher.fingerprint_key)


@router.post(
    "/v1/recipients/validate",
    response_model=RecipientValidationOut,
    summary="Validate a recipient",
    description=(
        "Runs the checks `POST /v1/payouts` runs on a recipient (format, checksums, provider "
        "currency and amount limits when `amount` and `currency` are given) plus the "
        "blocklist, and answers them as data: `valid`, `errors`, `warnings` and the masked "
        "`normalized` recipient. A recipient of the wrong shape (missing or unknown fields) is "
        "422 `validation_failed`. Scope `payouts:write`."
    ),
    responses=problem_responses(Unauthorized, InsufficientScope, ValidationFailed),
    openapi_extra={
        "requestBody": {"content": {"application/json": {"example": _VALIDATE_EXAMPLE}}}
    },
)
async def validate_recipient(
    request: Request,
    body: RecipientValidateIn,
    session: DbSession,
    runtime: RuntimeDep,
    _caller: PayoutsWriter,
) -> JSONResponse:
    result = await _service(session, runtime).validate(body)
    locale = negotiate(request.headers.get("accept-language"))
    return JSONResponse(result.as_json(locale), headers={"Content-Language": locale})


@router.post(
    "/v1/recipient-blocks",
    status_code=status.HTTP_201_CREATED,
    response_model=RecipientBlockOut,
    summary="Block a recipient",
    description=(
        "Refuses every later payout to this account, whoever requests it (policy rule "
        "`recipient_blocked`). Send the identifying fields only: `type` and `account`, plus "
        "`routing_number` for `us_bank` and `app_id` for `wechat`. The account is normalized "
        "first, so `+86 138-0013-8000` blocks `13800138000` too. Only a keyed fingerprint and "
        "the masked account are stored. Already blocked: 409 `recipient_already_blocked`. "
        "Scope `admin`."
    ),
    responses=problem_responses(
        Unauthorized, InsufficientScope, RecipientAlreadyBlocked, ValidationFailed, InvalidRecipient
    ),
    openapi_extra={"requestBody": {"content": {"application/json": {"example": _BLOCK_EXAMPLE}}}},
)
async def create_block(
    body: RecipientBlockCreate, session: DbSession, runtime: RuntimeDep, caller: Admin
) -> JSONResponse:
    block = await _service(session, runtime).block(body, caller.key_id)
    return JSONResponse(block, status_code=status.HTTP_201_CREATED)


@router.get(
    "/v1/recipient-blocks",
    response_model=Page[RecipientBlockOut],
    summary="List blocked recipients",
    description="Newest first. Scope `admin`.",
    responses=problem_responses(Unauthorized, InsufficientScope, ValidationFailed, InvalidCursor),
)
async def list_blocks(
    session: DbSession,
    runtime: RuntimeDep,
    _caller: Admin,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> JSONResponse:
    rows = await _service(session, runtime).list_blocks(limit + 1, decode_cursor(cursor))
    page: dict[str, Any] = page_of(rows, limit, lambda b: b["id"])
    return JSONResponse(page)


@router.get(
    "/v1/recipient-blocks/{block_id}",
    response_model=RecipientBlockOut,
    summary="Get a blocked recipient",
    description="Scope `admin`.",
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def get_block(
    block_id: BlockId, session: DbSession, runtime: RuntimeDep, _caller: Admin
) -> JSONResponse:
    return JSONResponse(await _service(session, runtime).get_block(block_id))


@router.delete(
    "/v1/recipient-blocks/{block_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Unblock a recipient",
    description="Later payouts to the account are no longer refused for being blocked. "
    "Scope `admin`.",
    responses=problem_responses(Unauthorized, InsufficientScope, NotFound),
)
async def delete_block(
    block_id: BlockId, session: DbSession, runtime: RuntimeDep, _caller: Admin
) -> Response:
    await _service(session, runtime).unblock(block_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
