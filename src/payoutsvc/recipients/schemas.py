"""Recipient shapes per type, as clients send them (API.md, Recipients).

These models only check shape (which fields a type has, their lengths). Account checks
(checksums, formats, provider limits) live in ``recipients.validation``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from payoutsvc.schemas_common import StrictModel

RecipientType = Literal[
    "alipay", "wechat", "bank_card_cn", "iban", "us_bank", "paypal", "stripe_account"
]
RECIPIENT_TYPES: tuple[str, ...] = (
    "alipay",
    "wechat",
    "bank_card_cn",
    "iban",
    "us_bank",
    "paypal",
    "stripe_account",
)

Account = Annotated[str, Field(min_length=1, max_length=128, description="The account identifier.")]
HolderName = Annotated[str, Field(min_length=1, max_length=140, description="Account holder name.")]


# The shapes recipients.validation accepts, as OpenAPI patterns (the document is no looser
# than the checks). Checksums (IBAN mod-97, ABA), country lengths, phone numbering plans and
# each provider's currency and amount limits cannot be patterns: those stay 422
# ``invalid_recipient``. Digit fields may carry spaces or dashes, as people write them.
WECHAT_OPENID_PATTERN = r"^[A-Za-z0-9_-]{20,64}$"
WECHAT_APP_ID_PATTERN = r"^wx[0-9a-zA-Z]{16}$"
STRIPE_ACCOUNT_PATTERN = r"^acct_[A-Za-z0-9]{6,}$"


def _digits_pattern(least: int, most: int) -> str:
    return rf"^[ -]*([0-9][ -]*){{{least},{most}}}$"


def _pattern(pattern: str) -> JsonDict:
    return {"pattern": pattern}


class _RecipientBase(StrictModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AlipayRecipient(_RecipientBase):
    type: Literal["alipay"]
    account: Account = Field(
        description="Mainland mobile number, email (logon id), 16-digit 2088… user id, or "
        'the open id of the payee under the service\'s Alipay app ("0" then letters and digits).'
    )
    name: HolderName


class WechatRecipient(_RecipientBase):
    type: Literal["wechat"]
    account: Account = Field(
        description="The user's openid under `app_id`.",
        json_schema_extra=_pattern(WECHAT_OPENID_PATTERN),
    )
    app_id: str = Field(
        min_length=1,
        max_length=64,
        description="The WeChat app id (appid).",
        json_schema_extra=_pattern(WECHAT_APP_ID_PATTERN),
    )
    name: HolderName | None = Field(
        default=None, description="Real name; required from 2000.00 CNY."
    )


class BankCardCnRecipient(_RecipientBase):
    type: Literal["bank_card_cn"]
    account: Account = Field(
        description="16-19 digit UnionPay card number.",
        json_schema_extra=_pattern(_digits_pattern(16, 19)),
    )
    name: HolderName
    bank_name: str = Field(min_length=1, max_length=140)


class IbanRecipient(_RecipientBase):
    type: Literal["iban"]
    account: Account = Field(
        description="IBAN, with or without spaces.",
        json_schema_extra=_pattern(r"^ *([A-Za-z] *){2}([0-9] *){2}([A-Za-z0-9] *){1,30}$"),
    )
    name: HolderName
    bic: str | None = Field(default=None, min_length=8, max_length=11)


class UsBankRecipient(_RecipientBase):
    type: Literal["us_bank"]
    routing_number: str = Field(
        min_length=1,
        max_length=16,
        description="9-digit ABA number.",
        json_schema_extra=_pattern(_digits_pattern(9, 9)),
    )
    account: Account = Field(
        description="4-17 digit account number.",
        json_schema_extra=_pattern(_digits_pattern(4, 17)),
    )
    account_type: Literal["checking", "savings"]
    name: HolderName


class PaypalRecipient(_RecipientBase):
    type: Literal["paypal"]
    account: Account = Field(
        description="PayPal email, E.164 phone number or PayPal payer id (13 characters)."
    )
    name: HolderName | None = None


class StripeAccountRecipient(_RecipientBase):
    type: Literal["stripe_account"]
    account: Account = Field(
        description="Connected account id, `acct_…`.",
        json_schema_extra=_pattern(STRIPE_ACCOUNT_PATTERN),
    )
    name: HolderName | None = None


RecipientIn = Annotated[
    AlipayRecipient
    | WechatRecipient
    | BankCardCnRecipient
    | IbanRecipient
    | UsBankRecipient
    | PaypalRecipient
    | StripeAccountRecipient,
    Field(discriminator="type"),
]


class RecipientOut(BaseModel):
    type: str
    account_masked: str = Field(examples=["138****8000"])
    name: str | None = Field(examples=["张*"])
    bank_name: str | None = None
    bic: str | None = None
    routing_number: str | None = None
    account_type: str | None = None
    app_id: str | None = None
