"""Request and response bodies of /v1/payouts (API.md, Payouts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from payoutsvc.recipients.schemas import RecipientIn, RecipientOut
from payoutsvc.schemas_common import (
    AMOUNT_PATTERN,
    CURRENCY_SCHEMA,
    URL_PATTERN,
    ProblemFieldErrorOut,
    StrictModel,
    check_amount,
    check_currency,
)

Reason = Literal["refund", "compensation", "reimbursement", "partner_payment", "other"]
REASONS: tuple[str, ...] = ("refund", "compensation", "reimbursement", "partner_payment", "other")

EXAMPLE_REQUEST: dict[str, Any] = {
    "ticket": {
        "system": "zendesk",
        "id": "48213",
        "url": "https://acme.zendesk.com/agent/tickets/48213",
    },
    "reason": "refund",
    "amount": "12.50",
    "currency": "CNY",
    "recipient": {"type": "alipay", "account": "13800138000", "name": "张三"},
    "requested_by": "agent-17",
    "description": "Price difference refund for order 9931",
    "metadata": {"order_id": "9931"},
}


class TicketRef(StrictModel):
    system: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", examples=["zendesk"]
    )
    id: str = Field(min_length=1, max_length=128, examples=["48213"])
    url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=URL_PATTERN,
        examples=["https://acme.zendesk.com/agent/tickets/48213"],
    )


class MoneyFields(StrictModel):
    # currency is declared first so the amount validator can see it.
    currency: str = Field(
        min_length=3,
        max_length=3,
        examples=["CNY"],
        description="ISO 4217 currency code.",
        json_schema_extra=CURRENCY_SCHEMA,
    )
    amount: str = Field(
        examples=["12.50"],
        description="Decimal string in major units; no more decimals than the currency allows.",
        json_schema_extra={"pattern": AMOUNT_PATTERN},
    )

    @field_validator("currency", mode="before")
    @classmethod
    def _currency(cls, value: object) -> str:
        return check_currency(value)

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: object, info: ValidationInfo) -> str:
        return check_amount(value, info.data.get("currency"))


class PayoutCreate(MoneyFields):
    ticket: TicketRef
    reason: Reason
    recipient: RecipientIn
    requested_by: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        examples=["agent-17"],
        description="The requesting operator. May be omitted with an operator-bound key (it "
        "defaults to the key's operator; naming anyone else is 403 `operator_mismatch`).",
    )
    description: str | None = Field(default=None, max_length=1000)
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="Flat string map: at most 50 keys, keys up to 40 and values up to 500 chars.",
        json_schema_extra={
            "maxProperties": 50,
            "propertyNames": {"minLength": 1, "maxLength": 40},
            "additionalProperties": {"type": "string", "maxLength": 500},
        },
    )

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_REQUEST]})

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 50:
            raise PydanticCustomError("too_many_keys", "metadata allows at most 50 keys.")
        for key, item in value.items():
            if not key or len(key) > 40:
                raise PydanticCustomError("invalid_key", "metadata keys must be 1-40 characters.")
            if len(item) > 500:
                raise PydanticCustomError(
                    "value_too_long", "metadata values must be at most 500 characters."
                )
        return value


_ACTING_OPERATOR = (
    "The acting operator. May be omitted with an operator-bound key (it defaults to the key's "
    "operator; naming anyone else is 403 `operator_mismatch`); required otherwise."
)


class OperatorAction(StrictModel):
    # With an operator-bound key the body may be just the comment.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"comment": "ok"}, {"operator_id": "sup-2", "comment": "ok"}]
        },
    )

    operator_id: str | None = Field(
        default=None, min_length=1, max_length=64, examples=["sup-2"], description=_ACTING_OPERATOR
    )
    comment: str | None = Field(default=None, max_length=1000, examples=["ok"])


class OperatorReasonAction(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"reason": "customer withdrew"},
                {"operator_id": "sup-2", "reason": "customer withdrew"},
            ]
        },
    )

    operator_id: str | None = Field(
        default=None, min_length=1, max_length=64, examples=["sup-2"], description=_ACTING_OPERATOR
    )
    reason: str | None = Field(default=None, max_length=1000, examples=["customer withdrew"])


class ResolveAction(StrictModel):
    operator_id: str | None = Field(
        default=None, min_length=1, max_length=64, examples=["fin-1"], description=_ACTING_OPERATOR
    )
    outcome: Literal["succeeded", "failed"]
    comment: str | None = Field(default=None, max_length=1000)


class RecordPaymentAction(StrictModel):
    operator_id: str | None = Field(
        default=None, min_length=1, max_length=64, examples=["fin-1"], description=_ACTING_OPERATOR
    )
    outcome: Literal["succeeded", "failed"]
    reference: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        examples=["CMB20261203000123"],
        description="The bank's reference for the transfer; required when it succeeded.",
    )
    failure_code: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9_]+$",
        examples=["recipient_account_invalid"],
        description="Why it could not be paid (snake_case); required when it failed.",
    )
    comment: str | None = Field(default=None, max_length=1000)


class RevealedRecipientOut(BaseModel):
    payout_id: str
    recipient: dict[str, str | None] = Field(
        description="The full recipient as it was validated: type, account, name and bank "
        "details. Every call is recorded as a `payout.recipient_revealed` event."
    )
    revealed_by: str
    revealed_at: datetime


class ApprovalOut(BaseModel):
    operator_id: str
    decision: str
    comment: str | None
    at: datetime


class PolicyReasonOut(BaseModel):
    rule: str
    message: str


class PolicyOut(BaseModel):
    version: int
    decision: str
    reasons: list[PolicyReasonOut]


class FailureOut(BaseModel):
    code: str
    message: str | None


class ReleaseOut(BaseModel):
    required: bool = Field(
        description="The policy's release section decided that, once approved, the payout "
        "waits for a person's `POST /v1/payouts/{id}/release` before it is paid."
    )
    released_by: str | None = Field(examples=["fin-1"])
    released_at: datetime | None


class PayoutOut(BaseModel):
    id: str = Field(examples=["po_01jd5x0z3q8m4k2n7p9r6s5t4v"])
    status: str = Field(examples=["pending_approval"])
    ticket: TicketRef
    reason: str
    amount: str = Field(examples=["12.50"])
    amount_minor: int = Field(examples=[1250])
    currency: str
    recipient: RecipientOut
    requested_by: str
    description: str | None
    metadata: dict[str, str]
    required_approvals: int
    approvals: list[ApprovalOut]
    policy: PolicyOut | None
    gateway: str
    gateway_reference: str | None
    gateway_status: str | None
    gateway_details: dict[str, str] | None = Field(
        default=None,
        description="What the gateway asks the helpdesk to act on, e.g. WeChat Pay's "
        "`package_info` for the recipient's confirmation while `gateway_status` is "
        "`WAIT_USER_CONFIRM`. Null for most gateways.",
    )
    gateway_hold_until: datetime | None = Field(
        default=None,
        description="While the provider holds the transfer pending for a reason of its own "
        "(WeChat Pay `WAIT_USER_CONFIRM`, PayPal `UNCLAIMED`/`ONHOLD`, Alipay `DEALING`): the "
        "provider's deadline. Until then the payout stays `processing` and is checked on a "
        "slow schedule; after it, `needs_review`. Null otherwise.",
    )
    attempts: int
    failure: FailureOut | None
    release: ReleaseOut
    created_at: datetime
    updated_at: datetime


class PayoutEventOut(BaseModel):
    id: str
    type: str
    sequence: int
    actor: str
    at: datetime
    data: dict[str, Any]


class PayoutEventList(BaseModel):
    data: list[PayoutEventOut]


class PayoutPreviewOut(BaseModel):
    """What POST /v1/payouts would decide for the same body, without creating anything."""

    decision: Literal["forbidden", "approval_required", "auto_approved"] = Field(
        examples=["approval_required"]
    )
    status: Literal["approved", "pending_approval"] | None = Field(
        description="The first status the payout would get; null when forbidden.",
        examples=["pending_approval"],
    )
    required_approvals: int = Field(
        description="Approvals needed (1 or 2); 0 when auto-approved or forbidden."
    )
    policy: PolicyOut
    errors: list[ProblemFieldErrorOut] = Field(
        description="When forbidden: each violated rule, as the 422 `policy_violation` lists it."
    )
    warnings: list[ProblemFieldErrorOut] = Field(
        description="Recipient warnings (a payout with warnings is never auto-approved)."
    )
