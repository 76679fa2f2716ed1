"""Domain errors and their RFC 9457 problem+json rendering.

Every error the service produces is a `ServiceError` (or is mapped to one at the HTTP edge), so
clients always get the same shape: ``type``, ``title``, ``status``, ``detail``, a stable
snake_case ``code`` and a list of field-level ``errors``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://payoutsvc.dev/problems/"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one input field; ``field`` is a dotted path (``recipient.account``)."""

    field: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "message": self.message}


@dataclass(eq=False)
class ServiceError(Exception):
    """An error a client can act on; carries its HTTP status and stable machine code."""

    status: int
    code: str
    title: str
    detail: str = ""
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.detail or self.title)

    def to_problem(self) -> dict[str, Any]:
        return problem_body(self.status, self.code, self.title, self.detail, self.errors)


def problem_body(
    status: int, code: str, title: str, detail: str = "", errors: list[FieldError] | None = None
) -> dict[str, Any]:
    return {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail or title,
        "code": code,
        "errors": [e.as_dict() for e in (errors or [])],
    }


def validation_failed(errors: list[FieldError], detail: str = "") -> ServiceError:
    return ServiceError(
        422,
        "validation_failed",
        "Request validation failed",
        detail or "; ".join(f"{e.field}: {e.message}" for e in errors),
        errors,
    )


def not_found(what: str, object_id: str) -> ServiceError:
    return ServiceError(404, "not_found", f"{what} not found", f"No {what.lower()} {object_id!r}.")


def invalid_status_transition(object_id: str, status: str, action: str) -> ServiceError:
    return ServiceError(
        409,
        "invalid_status_transition",
        "Action not allowed in the current status",
        f"Cannot {action} {object_id}: its status is {status!r}.",
    )
