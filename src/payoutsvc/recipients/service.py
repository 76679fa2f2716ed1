"""Recipient checks for clients (validate) and the blocklist. Services never commit.

Neither ever returns or stores a full account: validation answers the masked normalized
recipient, and a block keeps only the recipient's keyed fingerprint and masked account.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import Field, TypeAdapter, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.base import utcnow
from payoutsvc.errors import (
    FieldError,
    InvalidRecipient,
    RecipientAlreadyBlocked,
    ServiceError,
    not_found,
)
from payoutsvc.ids import new_id
from payoutsvc.messages import ENGLISH, Locale
from payoutsvc.money import parse_amount
from payoutsvc.recipients.masking import mask_account
from payoutsvc.recipients.models import RecipientBlock
from payoutsvc.recipients.repository import RecipientRepository
from payoutsvc.recipients.schemas import RecipientIn, RecipientType
from payoutsvc.recipients.storage import public_view
from payoutsvc.recipients.validation import recipient_fingerprint, validate_recipient
from payoutsvc.schemas_common import (
    AMOUNT_PATTERN,
    CURRENCY_SCHEMA,
    StrictModel,
    check_amount,
    check_currency,
)
from payoutsvc.timestamps import rfc3339

log = structlog.get_logger(__name__)

_RECIPIENT: TypeAdapter[Any] = TypeAdapter(RecipientIn)
# The fields a fingerprint is made of (see recipient_fingerprint).
_IDENTITY_FIELDS = frozenset({"recipient.account", "recipient.routing_number", "recipient.app_id"})
# To normalize an account for the blocklist it is checked as a full recipient of its type;
# these stand in for the required fields that do not identify the account.
_NON_IDENTIFYING_PLACEHOLDERS: dict[str, dict[str, str]] = {
    "alipay": {"name": "-"},
    "wechat": {},
    "bank_card_cn": {"name": "-", "bank_name": "-"},
    "iban": {"name": "-"},
    "us_bank": {"name": "-", "account_type": "checking"},
    "paypal": {},
    "stripe_account": {},
}
BLOCKED_CODE = "recipient_blocked"


class RecipientValidateIn(StrictModel):
    """POST /v1/recipients/validate: a recipient, optionally with the amount to pay."""

    recipient: RecipientIn
    currency: str | None = Field(
        default=None,
        min_length=3,
        max_length=3,
        examples=["CNY"],
        description="With `amount`: checks provider currencies and amount limits.",
        json_schema_extra=CURRENCY_SCHEMA,
    )
    amount: str | None = Field(
        default=None,
        examples=["12.50"],
        description="Decimal string in major units.",
        json_schema_extra={"pattern": AMOUNT_PATTERN},
    )

    @field_validator("currency", mode="before")
    @classmethod
    def _currency(cls, value: object) -> str | None:
        return None if value is None else check_currency(value)

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: object, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if "currency" in info.data and info.data["currency"] is None:
            raise PydanticCustomError("currency_required", "An amount needs its currency.")
        return check_amount(value, info.data.get("currency"))


class BlockedRecipientIn(StrictModel):
    """The fields that identify an account; nothing else is needed to block it."""

    type: RecipientType
    account: str = Field(min_length=1, max_length=128, description="The account identifier.")
    routing_number: str | None = Field(
        default=None, min_length=1, max_length=16, description="`us_bank` only (required)."
    )
    app_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="`wechat` only (required)."
    )


class RecipientBlockCreate(StrictModel):
    recipient: BlockedRecipientIn
    reason: str | None = Field(default=None, max_length=1000, examples=["chargeback fraud"])


def _field_errors(problems: Sequence[FieldError], locale: Locale = ENGLISH) -> list[dict[str, str]]:
    return [p.as_dict(locale) for p in problems]


@dataclass(frozen=True, slots=True)
class RecipientValidation:
    """What POST /v1/recipients/validate answers; its messages in the caller's language."""

    errors: list[FieldError]
    warnings: list[FieldError]
    normalized: dict[str, Any]

    def as_json(self, locale: Locale = ENGLISH) -> dict[str, Any]:
        return {
            "valid": not self.errors,
            "errors": _field_errors(self.errors, locale),
            "warnings": _field_errors(self.warnings, locale),
            "normalized": self.normalized,
        }


class RecipientService:
    def __init__(self, session: AsyncSession, fingerprint_key: bytes) -> None:
        self.repo = RecipientRepository(session)
        self.fingerprint_key = fingerprint_key

    async def validate(self, body: RecipientValidateIn) -> RecipientValidation:
        """The checks POST /v1/payouts runs, plus the blocklist, as data instead of a 422."""
        amount_minor = (
            parse_amount(body.amount, body.currency)
            if body.amount is not None and body.currency is not None
            else None
        )
        check = validate_recipient(body.recipient, amount_minor, body.currency)
        errors = list(check.errors)
        if not any(e.field in _IDENTITY_FIELDS for e in errors):
            fingerprint = recipient_fingerprint(check.normalized, self.fingerprint_key)
            if await self.repo.is_blocked(fingerprint):
                errors.append(
                    FieldError("recipient", BLOCKED_CODE, "The recipient is on the blocklist.")
                )
        return RecipientValidation(errors, list(check.warnings), public_view(check.normalized))

    # -- blocklist --------------------------------------------------------------------------------
    def _identity(self, recipient: BlockedRecipientIn) -> dict[str, str | None]:
        """The normalized identifying fields of ``recipient`` (422 ``invalid_recipient``)."""
        problems: list[FieldError] = []
        needs = {"us_bank": "routing_number", "wechat": "app_id"}
        for field in ("routing_number", "app_id"):
            value = getattr(recipient, field)
            if needs.get(recipient.type) == field and value is None:
                problems.append(
                    FieldError(f"recipient.{field}", "required", f"{recipient.type} needs {field}.")
                )
            elif needs.get(recipient.type) != field and value is not None:
                problems.append(
                    FieldError(
                        f"recipient.{field}",
                        "unknown_field",
                        f"{field} does not identify a {recipient.type} recipient.",
                    )
                )
        if problems:
            raise _invalid(problems)
        fields = recipient.model_dump(exclude_none=True)
        try:
            full = _RECIPIENT.validate_python(
                {**fields, **_NON_IDENTIFYING_PLACEHOLDERS[recipient.type]}
            )
        except ValidationError as exc:  # pragma: no cover - shapes mirror the recipient models
            raise _invalid(
                [FieldError("recipient", "invalid", e["msg"]) for e in exc.errors()]
            ) from None
        check = validate_recipient(full, None, None)
        problems = [e for e in check.errors if e.field in _IDENTITY_FIELDS]
        if problems:
            raise _invalid(problems)
        return check.normalized

    async def block(self, body: RecipientBlockCreate, created_by: str) -> dict[str, Any]:
        normalized = self._identity(body.recipient)
        fingerprint = recipient_fingerprint(normalized, self.fingerprint_key)
        now = utcnow()
        values = {
            "id": new_id("rb", int(now.timestamp() * 1000)),
            "fingerprint": fingerprint,
            "recipient_type": body.recipient.type,
            "account_masked": mask_account(normalized.get("account") or ""),
            "reason": body.reason,
            "created_by": created_by,
            "created_at": now,
        }
        if not await self.repo.insert_block(values):
            existing = await self.repo.get_block_by_fingerprint(fingerprint)
            raise RecipientAlreadyBlocked(
                "This recipient is on the blocklist already"
                + (f" ({existing.id})." if existing is not None else ".")
            )
        log.info("recipient.blocked", block_id=values["id"], recipient_type=body.recipient.type)
        block = await self.repo.get_block(str(values["id"]))
        assert block is not None
        return block_json(block)

    async def list_blocks(self, limit: int, before_id: str | None) -> list[dict[str, Any]]:
        return [block_json(b) for b in await self.repo.list_blocks(limit, before_id)]

    async def get_block(self, block_id: str) -> dict[str, Any]:
        block = await self.repo.get_block(block_id)
        if block is None:
            raise not_found("Recipient block", block_id)
        return block_json(block)

    async def unblock(self, block_id: str) -> None:
        if not await self.repo.delete_block(block_id):
            raise not_found("Recipient block", block_id)
        log.info("recipient.unblocked", block_id=block_id)


def _invalid(problems: list[FieldError]) -> ServiceError:
    return InvalidRecipient("; ".join(p.message for p in problems), errors=problems)


def block_json(block: RecipientBlock) -> dict[str, Any]:
    return {
        "id": block.id,
        "recipient": {"type": block.recipient_type, "account_masked": block.account_masked},
        "reason": block.reason,
        "created_by": block.created_by,
        "created_at": rfc3339(block.created_at),
    }
