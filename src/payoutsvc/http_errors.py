"""Every error leaves as RFC 9457 problem+json: domain errors, framework validation errors,
404/405, and unexpected exceptions (500 without a stack trace)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from payoutsvc.errors import (
    MAX_FIELD_ERRORS,
    PROBLEM_CONTENT_TYPE,
    FieldError,
    InvalidJson,
    PayloadTooLarge,
    RateLimited,
    ServiceError,
    ValidationFailed,
    localized_problem,
    problem_body,
    summarize_field_errors,
)
from payoutsvc.messages import ENGLISH, Locale, Message, message, negotiate
from payoutsvc.middleware import BodyTooLarge
from payoutsvc.recipients.schemas import RECIPIENT_TYPES
from payoutsvc.schemas_common import Problem

_PYDANTIC_CODES = {
    "extra_forbidden": "unknown_field",
    "missing": "required",
    "string_type": "invalid_type",
    "int_type": "invalid_type",
    "int_parsing": "invalid_type",
    "bool_type": "invalid_type",
    "bool_parsing": "invalid_type",
    "dict_type": "invalid_type",
    "list_type": "invalid_type",
    "model_type": "invalid_type",
    "model_attributes_type": "invalid_type",
    "literal_error": "invalid_choice",
    "enum": "invalid_choice",
    "union_tag_invalid": "invalid_choice",
    "union_tag_not_found": "required",
    "string_pattern_mismatch": "invalid_format",
    "string_too_long": "too_long",
    "string_too_short": "too_short",
    "too_long": "too_long",
    "too_short": "too_short",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
    "datetime_from_date_parsing": "invalid_format",
    "datetime_parsing": "invalid_format",
    "datetime_type": "invalid_format",
    "json_invalid": "invalid_json",
}
_SOURCES = {"body", "query", "path", "header", "cookie"}


def _field_path(loc: Sequence[int | str]) -> str:
    parts = list(loc)
    if parts and parts[0] in _SOURCES:
        parts = parts[1:]
    cleaned: list[str] = []
    for index, part in enumerate(parts):
        # Discriminated unions put the tag in the location: recipient.alipay.account.
        if index > 0 and parts[index - 1] == "recipient" and part in RECIPIENT_TYPES:
            continue
        cleaned.append(str(part))
    return ".".join(cleaned) or "body"


# Pydantic errors whose bound other languages must state too: catalogue id, context key.
_BOUNDS = {
    "string_too_long": ("field.max_length", "max_length"),
    "string_too_short": ("field.min_length", "min_length"),
    "too_long": ("field.max_items", "max_length"),
    "too_short": ("field.min_items", "min_length"),
    "greater_than_equal": ("field.ge", "ge"),
    "less_than_equal": ("field.le", "le"),
}


def _bound_text(error_type: str, ctx: dict[str, Any]) -> Message | None:
    """The catalogue text of a length or range error, with its bound (the English message
    stays pydantic's own)."""
    ident, key = _BOUNDS.get(error_type, ("", ""))
    if not ident or key not in ctx:
        return None
    return message(ident, limit=str(ctx[key]))


def field_errors_from_pydantic(errors: Sequence[Any]) -> list[FieldError]:
    found: list[FieldError] = []
    for error in errors:
        error_type = str(error.get("type", "invalid"))
        english = str(error.get("msg", "Invalid value"))
        field = _field_path(error.get("loc", ()))
        if error_type == "extra_forbidden":
            english = f"Unknown field {field.rsplit('.', 1)[-1]!r}."
        elif error_type in ("union_tag_invalid", "union_tag_not_found"):
            # Pydantic reports a bad discriminator on the union itself; the field at fault is
            # the tag (``recipient.type``), which is what a client has to fix.
            tag = str((error.get("ctx") or {}).get("discriminator", "")).strip("'\"")
            if tag.isidentifier():
                field = tag if field == "body" else f"{field}.{tag}"
        code = _PYDANTIC_CODES.get(error_type, error_type)
        text = _bound_text(error_type, error.get("ctx") or {})
        found.append(FieldError(field, code, english, text))
    return found


def request_locale(request: Request) -> Locale:
    """The language of the request's problem texts, from its ``Accept-Language``."""
    return negotiate(request.headers.get("accept-language"))


def problem_response(
    status: int, body: dict[str, Any], locale: Locale, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A problem+json response whose texts are in ``locale`` (said in ``Content-Language``;
    ``Vary`` tells caches the texts depend on ``Accept-Language``)."""
    headers = {**(headers or {}), "Content-Language": locale, "Vary": "Accept-Language"}
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_CONTENT_TYPE)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    locale = request_locale(request)
    return problem_response(exc.status, exc.to_problem(locale), locale, exc.headers or None)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    locale = request_locale(request)
    raw = exc.errors()
    # Only the first MAX_FIELD_ERRORS are rendered (problem_body caps the list); converting
    # the rest of a huge body's errors would be work nobody reads.
    errors = field_errors_from_pydantic(raw[:MAX_FIELD_ERRORS])
    if any(e.code == InvalidJson.code for e in errors):
        failure = InvalidJson("The request body is not valid JSON.")
        return problem_response(failure.status, failure.to_problem(locale), locale)
    status, code = ValidationFailed.status, ValidationFailed.code
    if locale == ENGLISH:
        detail = summarize_field_errors(errors, len(raw))
        body = problem_body(status, code, ValidationFailed.title, detail, errors)
    else:
        body = localized_problem(status, code, None, errors, locale, len(raw))
    return problem_response(status, body, locale)


_HTTP_CODES = {
    # FastAPI's own 400 is "There was an error parsing the body": a body it could not decode.
    400: ("invalid_json", "Malformed JSON"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    401: ("unauthorized", "Missing or invalid API key"),
    403: ("forbidden", "Forbidden"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
}


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's own 405 names only the first
    route that matched the path (``POST`` for ``/v1/payouts``, hiding ``GET``)."""
    allowed: list[str] = []
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = ", ".join(allowed)
    locale = request_locale(request)
    if isinstance(exc, BodyTooLarge):
        body = exc.error.to_problem(locale)
    else:
        detail = exc.detail if isinstance(exc.detail, str) else title
        if locale == ENGLISH:
            body = problem_body(exc.status_code, code, title, detail)
        else:
            english = (title, detail)
            body = localized_problem(exc.status_code, code, None, [], locale, english=english)
    return problem_response(exc.status_code, body, locale, headers)


_OPENAPI_METHODS = frozenset({"get", "put", "post", "patch", "delete", "head", "options"})
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def document_schemas(document: dict[str, Any], models: Sequence[type[BaseModel]]) -> None:
    """Put ``models`` (and the models they use) in the document's components (in place):
    for request bodies an operation documents by hand (``openapi_extra``), such as a
    batch that comes as JSON or CSV."""
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas.setdefault(model.__name__, schema)


def document_problem_responses(document: dict[str, Any]) -> dict[str, Any]:
    """Make the OpenAPI document say what the handlers above do (in place).

    FastAPI documents its own 422 as ``application/json`` ``HTTPValidationError`` and a
    ``responses=`` model as ``application/json``; here every 4xx is ``application/problem+json``
    with the ``Problem`` schema. Operations with a body also answer 400 (malformed JSON), with
    any input 422, and behind an API key 401/403, whether or not their router listed them.
    """
    document_schemas(document, [Problem])
    schemas: dict[str, Any] = document["components"]["schemas"]
    for path_item in document.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _OPENAPI_METHODS:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            if "requestBody" in operation:
                responses.setdefault("400", {"description": "Malformed JSON body"})
            if operation.get("parameters") or "requestBody" in operation:
                responses.setdefault("422", {"description": "Validation failed; see `errors`"})
            if operation.get("security"):
                responses.setdefault("401", {"description": "Missing or invalid API key"})
                responses.setdefault("403", {"description": "The API key lacks a required scope"})
            for status, response in responses.items():
                if status.startswith("4"):
                    response["content"] = {PROBLEM_CONTENT_TYPE: {"schema": dict(_PROBLEM_REF)}}
                    if response.get("description") == "Validation Error":
                        response["description"] = "Validation failed; see `errors`"
    text = json.dumps(document.get("paths", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}" not in text:
            schemas.pop(unused, None)
    return document


BODY_LIMIT_EXTENSION = "x-max-body-bytes"


def document_request_limits(document: dict[str, Any], default_limit: int | None) -> dict[str, Any]:
    """Say in the document what the limits do (in place): every operation with a body has
    its byte limit as ``x-max-body-bytes`` (a route with its own ``max_body_size`` states it
    in ``openapi_extra``) and answers 413 beyond it; every operation behind an API key may
    answer 429."""
    for path_item in document.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _OPENAPI_METHODS:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            limit = operation.get(BODY_LIMIT_EXTENSION, default_limit)
            if "requestBody" in operation and limit is not None:
                operation[BODY_LIMIT_EXTENSION] = limit
                responses.setdefault(
                    "413", {"description": f"`{PayloadTooLarge.code}`: body over {limit} bytes"}
                )
            if operation.get("security"):
                responses.setdefault(
                    "429", {"description": f"`{RateLimited.code}`: over the request rate"}
                )
    return document


def install_error_handlers(app: FastAPI, schemas: Sequence[type[BaseModel]] = ()) -> None:
    """Render every error as problem+json, and document it so in the app's OpenAPI (with
    ``schemas``, the models of hand-documented request bodies)."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            limit: int = app.state.settings.max_body_bytes
            document = document_request_limits(generate(), limit)
            document_schemas(document, schemas)
            app.openapi_schema = document_problem_responses(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
