"""Request and response bodies of /v1/connectors (API.md, Helpdesk connectors)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

from payoutsvc.connectors.kinds import KINDS
from payoutsvc.schemas_common import TEXT_PATTERN, URL_PATTERN, StrictModel
from payoutsvc.webhooks.filters import EVENT_FILTERS_SCHEMA, validate_event_filters

Kind = Literal["zendesk", "jira_service_management", "freshdesk"]
Locale = Literal["zh-CN", "en"]
Action = Literal["request", "approve", "reject", "cancel"]

EXAMPLE_CREATE: dict[str, Any] = {
    "kind": "zendesk",
    "name": "Acme support",
    "base_url": "https://acme.zendesk.com",
    "credentials": {
        "email": "payouts-bot@acme.example",
        "api_token": "zendesk-api-token",
        "webhook_signing_secret": "zendesk-webhook-signing-secret",
    },
    "locale": "zh-CN",
    "trust_actor": True,
    "write_back": {"events": ["payout.*"], "tags": True},
}


def _filters(value: list[str]) -> list[str]:
    try:
        return validate_event_filters(value)
    except ValueError as exc:
        raise PydanticCustomError("invalid_event_filter", str(exc)) from None


class WriteBack(StrictModel):
    events: list[str] = Field(
        default_factory=lambda: ["payout.*"],
        min_length=1,
        max_length=64,
        json_schema_extra=EVENT_FILTERS_SCHEMA,
    )
    tags: StrictBool = Field(
        default=False,
        description="Also tag the ticket with the payout's status (`payout_succeeded`, …), "
        "replacing the previous status tag and keeping the ticket's other tags.",
    )

    @field_validator("events")
    @classmethod
    def _events_known(cls, value: list[str]) -> list[str]:
        return _filters(value)


Credentials = dict[str, str]


def _credentials_of_kind(fields: tuple[str, ...]) -> dict[str, Any]:
    """What connectors/service.py ``_credentials`` accepts for a kind: exactly its fields,
    each a non-empty text."""
    return {
        "type": "object",
        "properties": {
            name: {"type": "string", "minLength": 1, "pattern": TEXT_PATTERN} for name in fields
        },
        "required": list(fields),
        "additionalProperties": False,
    }


_CREDENTIALS_PER_KIND = {
    name: _credentials_of_kind(k.credential_fields) for name, k in KINDS.items()
}


def _credentials_follow_the_kind(schema: dict[str, Any]) -> None:
    """The document's form of the per-kind rule: ``credentials`` is the shape of ``kind``."""
    schema["allOf"] = [
        {
            "if": {"properties": {"kind": {"const": name}}, "required": ["kind"]},
            "then": {"properties": {"credentials": shape}},
        }
        for name, shape in _CREDENTIALS_PER_KIND.items()
    ]
    schema["examples"] = [EXAMPLE_CREATE]


def _credentials_of_some_kind(schema: dict[str, Any]) -> None:
    """A PATCH names no kind: its credentials are one kind's shape (the connector's own kind
    is checked against the stored connector, a rule of the data, not of the body)."""
    schema["anyOf"] = [
        {"type": "object", "properties": {"credentials": shape}}
        for shape in _CREDENTIALS_PER_KIND.values()
    ]
    schema["examples"] = [{"credentials": {"api_key": "new", "inbound_secret": "s"}}]


_BASE_URL = Field(
    max_length=2048,
    pattern=r"^https?://[^/?#\s\x00-\x1f\x7f]+/?$",
    examples=["https://acme.zendesk.com"],
)


class ConnectorCreate(StrictModel):
    model_config = ConfigDict(json_schema_extra=_credentials_follow_the_kind)

    kind: Kind
    name: str = Field(min_length=1, max_length=140)
    integration_id: str | None = Field(
        default=None, max_length=40, description="Defaults to the calling key's integration."
    )
    base_url: str = _BASE_URL
    credentials: Credentials = Field(
        description="Per kind (API.md): zendesk `email`, `api_token`, `webhook_signing_secret`; "
        "jira_service_management `email`, `api_token`, `webhook_secret`; freshdesk `api_key`, "
        "`inbound_secret`. Stored encrypted, never shown again."
    )
    locale: Locale = "en"
    trust_actor: StrictBool = False
    write_back: WriteBack = Field(default_factory=WriteBack)


class ConnectorUpdate(StrictModel):
    model_config = ConfigDict(json_schema_extra=_credentials_of_some_kind)

    name: str | None = Field(default=None, min_length=1, max_length=140)
    base_url: str | None = Field(
        default=None, max_length=2048, pattern=r"^https?://[^/?#\s\x00-\x1f\x7f]+/?$"
    )
    credentials: Credentials | None = Field(
        default=None, description="Replaces all credentials (rotation)."
    )
    locale: Locale | None = None
    trust_actor: StrictBool | None = None
    write_back: WriteBack | None = None
    enabled: StrictBool | None = None


class ConnectorOut(BaseModel):
    id: str
    kind: Kind
    name: str
    integration_id: str
    base_url: str
    locale: Locale
    trust_actor: bool
    write_back: WriteBack
    enabled: bool
    credential_fields: list[str] = Field(description="Which credentials are set (never values).")
    inbound_url: str
    created_at: datetime
    updated_at: datetime


class ConnectorTestOut(BaseModel):
    ok: bool
    status_code: int | None
    error: str | None


class InboundTicket(BaseModel):
    id: str = Field(min_length=1, max_length=128)
    url: str | None = Field(default=None, max_length=2048, pattern=URL_PATTERN)

    @field_validator("url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return value or None


class InboundTrigger(BaseModel):
    """What the README's trigger templates render. Unknown fields are ignored (helpdesks add
    their own); a field that is empty in the template arrives as ""."""

    event_id: str = Field(min_length=1, max_length=128)
    action: Action
    actor: str = Field(min_length=1, max_length=128)
    ticket: InboundTicket
    payout_id: str | None = Field(default=None, max_length=40)
    amount: str | None = None
    currency: str | None = None
    reason: str | None = None
    recipient: dict[str, Any] | None = None
    description: str | None = Field(default=None, max_length=1000)
    comment: str | None = Field(default=None, max_length=1000)
    timestamp: str | int | None = None

    @field_validator("payout_id", "amount", "currency", "reason", "description", "comment")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value if value else None


class InboundAnswer(BaseModel):
    payout_id: str
    status: str
