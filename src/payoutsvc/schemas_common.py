"""Pieces of request/response schema shared by several resources."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from payoutsvc.errors import FieldError, InvalidCursor, ServiceError
from payoutsvc.money import (
    AMOUNT_SHAPE,
    MoneyError,
    currency_exponent,
    parse_amount,
    payable_currencies,
)

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


# What refuse_control_characters lets through, as an OpenAPI ``pattern``: the document states
# the rule for every free text field, so a client (or a fuzzer) knows a tab is refused.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"


def _text_schema_without_controls(schema: dict[str, Any]) -> None:
    """Give every free text in ``schema`` (a string with no pattern, enum or const of its
    own, also inside nullable unions, arrays and string maps) the :data:`TEXT_PATTERN`."""
    if schema.get("type") == "string" and not {"pattern", "enum", "const"} & set(schema):
        schema["pattern"] = TEXT_PATTERN
    for key in ("anyOf", "oneOf", "allOf"):
        for member in schema.get(key, []):
            _text_schema_without_controls(member)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _text_schema_without_controls(schema[key])
    if isinstance(schema.get("additionalProperties"), dict):
        schema.setdefault("propertyNames", {}).setdefault("pattern", TEXT_PATTERN)


def _document_text_rules(schema: dict[str, Any]) -> None:
    for prop in schema.get("properties", {}).values():
        _text_schema_without_controls(prop)


# A query parameter's text, refused like a body's when it holds a control character.
QueryText = Annotated[
    str,
    AfterValidator(refuse_control_characters),
    Field(json_schema_extra={"pattern": TEXT_PATTERN}),
]


def not_nullable(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of an optional field whose explicit null is refused (a PATCH
    field one leaves out to keep it): the document shows only the non-null form (in place)."""
    members = [member for member in schema.pop("anyOf", []) if member.get("type") != "null"]
    for member in members:
        schema.update(member)


# An http(s) URL without whitespace or control characters (what the URL checks parse further).
URL_PATTERN = r"^https?://[^\s\x00-\x1f\x7f]+$"

# What parse_amount accepts, minus zero; how many decimals a currency allows is the
# validators' (and the policy's) business.
AMOUNT_PATTERN = rf"^(?!0+(\.0+)?$){AMOUNT_SHAPE}$"

_DATE_START = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _refuse_unix_time(value: object) -> object:
    # Pydantic reads "1700000000" (even "-3e-18") as seconds since 1970; the document says
    # RFC 3339, and a number is far likelier a client's mistake than a wish.
    if isinstance(value, str) and not _DATE_START.match(value):
        raise PydanticCustomError("invalid_format", "Use an RFC 3339 timestamp.")
    return value


# A query parameter's timestamp: RFC 3339 (read as UTC without an offset, see ``aware``).
QueryTimestamp = Annotated[datetime, BeforeValidator(_refuse_unix_time)]

# Currency fields: the validators check the code; the document lists the codes they accept.
CURRENCY_SCHEMA: dict[str, Any] = {"enum": list(payable_currencies())}


class StrictModel(BaseModel):
    """Request bodies: unknown fields are an error, never silently ignored, and no text
    holds a control character (the document says so with :data:`TEXT_PATTERN`)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # Here rather than in model_config's json_schema_extra, which subclasses set for
        # their examples (and so would replace).
        schema = handler(core_schema)
        _document_text_rules(handler.resolve_ref_schema(schema))
        return schema

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
# A cursor is base64url of the marker and an id; the pattern is its shape (the marker's
# encoding, then base64url), so a client sees what one looks like. Whether it names a row
# the API handed out only the API knows: a well-shaped stranger is 422 ``invalid_cursor``.
CURSOR_PATTERN = r"^YzE6[A-Za-z0-9_-]{2,}$"
CursorQuery = Annotated[
    str | None,
    Query(
        max_length=200,
        description="Opaque cursor from `next_cursor`.",
        json_schema_extra={"pattern": CURSOR_PATTERN},
    ),
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
