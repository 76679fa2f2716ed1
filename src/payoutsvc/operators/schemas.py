from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from payoutsvc.schemas_common import StrictModel, not_nullable

OPERATOR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}$"
ROLE_PATTERN = r"^[a-z][a-z0-9_-]{0,39}$"


class HelpdeskUser(StrictModel):
    """This operator's user in a connector's helpdesk (the ``actor`` its triggers send)."""

    connector_id: str = Field(pattern=r"^hc_[A-Za-z0-9]+$", max_length=40)
    user_id: str = Field(min_length=1, max_length=128, examples=["361723810312"])


_HELPDESK_USERS = Field(
    default=None,
    max_length=50,
    description="Who this operator is in each connector's helpdesk; replaces the whole list. "
    "One helpdesk user maps to one operator (422 `validation_failed` otherwise).",
)


class OperatorCreate(StrictModel):
    id: str = Field(pattern=OPERATOR_ID_PATTERN, max_length=64, examples=["agent-17"])
    role: str = Field(pattern=ROLE_PATTERN, examples=["agent"])
    display_name: str | None = Field(default=None, max_length=140, examples=["Li Lei"])
    helpdesk_users: list[HelpdeskUser] | None = _HELPDESK_USERS


class OperatorUpdate(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"role": "supervisor", "display_name": "Li Lei"}]}
    )

    role: str | None = Field(default=None, pattern=ROLE_PATTERN, json_schema_extra=not_nullable)
    display_name: str | None = Field(default=None, max_length=140)
    disabled: StrictBool | None = Field(
        default=None,
        description="A disabled operator can neither request nor approve.",
        json_schema_extra=not_nullable,
    )
    helpdesk_users: list[HelpdeskUser] | None = _HELPDESK_USERS


class OperatorOut(BaseModel):
    id: str
    role: str
    display_name: str | None
    disabled: bool
    helpdesk_users: list[HelpdeskUser] = []
    created_at: datetime
    updated_at: datetime
