from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from payoutsvc.schemas_common import StrictModel

Scope = Literal["payouts:write", "payouts:read", "payouts:approve", "payouts:release", "admin"]


class IntegrationCreate(StrictModel):
    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$",
        examples=["zendesk-prod"],
    )


class IntegrationOut(BaseModel):
    id: str = Field(examples=["int_01jd5x0z3q8m4k2n7p9r6s5t4v"])
    name: str
    created_at: datetime


_BOUND_OPERATOR = (
    "The operator this key acts as (separation of duties): with it, `requested_by` and "
    "`operator_id` may be omitted and naming anyone else is 403 `operator_mismatch`. Null: an "
    "integration key, which the policy's `approvals.require_operator_key` (default true) keeps "
    "from approving, rejecting or resolving, and whose requests are never auto-approved."
)


class ApiKeyCreate(StrictModel):
    scopes: list[Scope] = Field(min_length=1, examples=[["payouts:write", "payouts:read"]])
    operator_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        examples=["sup-2"],
        description=_BOUND_OPERATOR,
    )


class ApiKeyOut(BaseModel):
    id: str
    integration_id: str
    scopes: list[str]
    operator_id: str | None = Field(description=_BOUND_OPERATOR)
    hint: str = Field(description="The last characters of the secret, to tell keys apart.")
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(BaseModel):
    id: str
    integration_id: str
    key: str = Field(description="The secret. Shown only in this response; store it now.")
    scopes: list[str]
    operator_id: str | None = Field(description=_BOUND_OPERATOR)
    created_at: datetime
