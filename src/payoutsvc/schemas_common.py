"""Pieces of request/response schema shared by several resources."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from payoutsvc.errors import FieldError, InvalidCursor, ServiceError
from payoutsvc.money import MoneyError, currency_exponent, parse_amount

T = TypeVar("T")


# NUL and the other C0 controls and DEL: nothing a person types into a ticket, a name or a
# description, and PostgreSQL text cannot even store NUL (it would be a 500, not a 422).
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def refuse_control_characters(value: Any) -> Any:
    """The value, if no text in it (strings, dict keys and values, list items) holds a
    control character; a 422 field error ``control_character`` otherwise."""
    if isinstance(value, str):
        if _CONTROL_CHARACTERS.search(value):
            raise PydanticCustomError(
                "control_character", "Text may not contain NUL or other control characters."
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_control_characters(key)
            refuse_control_characters(item)
    elif isinstance(value, list | tuple):
        for item in value:
            refuse_control_characters(item)
    return value


# A query parameter's text, refused like a body's when it holds a control character.
QueryText = Annotated[str, AfterValidator(refuse_control_characters)]


class StrictModel(BaseModel):
    """Request bodies: unknown fields are an error, never silently ignored, and no text
    holds a control character."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        return refuse_control_characters(value)


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next (older) page; null on the last page."
    )


class ProblemFieldError(BaseModel):
    field: str
    code: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, as every error of this API is rendered."""

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable snake_case machine code.")
    errors: list[ProblemFieldError]


LimitQuery = Annotated[int, Query(ge=1, le=200, description="Page size, 1-200.")]
CursorQuery = Annotated[
    str | None, Query(max_length=200, description="Opaque cursor from `next_cursor`.")
]


# Cursors carry a version marker rather than relying on the id's shape: operator ids are the
# helpdesk's own (``agent-17``, no ``prefix_``), and a later cursor format can coexist.
_CURSOR_MARKER = "c1:"


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode((_CURSOR_MARKER + last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    last_id = raw.removeprefix(_CURSOR_MARKER)
    if last_id == raw or not last_id or not last_id.isascii() or not last_id.isprintable():
        raise InvalidCursor(
            "Use the next_cursor of a previous page.",
            errors=[FieldError("cursor", "invalid_cursor", "Not a cursor returned by this API.")],
        )
    return last_id


def page_of(items: list[Any], limit: int, id_of: Any) -> dict[str, Any]:
    """Build ``{"data", "next_cursor"}`` from ``limit + 1`` fetched rows."""
    has_more = len(items) > limit
    items = items[:limit]
    return {
        "data": items,
        "next_cursor": encode_cursor(id_of(items[-1])) if has_more and items else None,
    }


def problem_responses(*errors: type[ServiceError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the problem+json errors an operation can answer, from the
    error classes it names: one response per status, listing each ``code`` it may carry."""
    by_status: dict[int, list[type[ServiceError]]] = {}
    for error in errors:
        by_status.setdefault(error.status, []).append(error)
    return {
        status: {
            "model": Problem,
            "description": "; ".join(f"`{e.code}`: {e.title}" for e in found),
            "content": {"application/problem+json": {}},
        }
        for status, found in sorted(by_status.items())
    }


class ProblemFieldErrorOut(BaseModel):
    field: str
    code: str
    message: str


def check_currency(value: object) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("invalid_currency", "Currency must be an ISO 4217 code string.")
    try:
        currency_exponent(value)
    except MoneyError as exc:
        raise PydanticCustomError(exc.code, exc.message) from None
    return value


def check_amount(value: object, currency: object) -> str:
    """Strict decimal string; precision checked against the currency when it is valid."""
    if not isinstance(currency, str):
        if not isinstance(value, str):
            raise PydanticCustomError(
                "amount_not_string", 'Amount must be a decimal string like "12.50".'
            )
        return value
    try:
        parse_amount(value, currency)
    except MoneyError as exc:
        raise PydanticCustomError(exc.code, exc.message) from None
    assert isinstance(value, str)
    return value
