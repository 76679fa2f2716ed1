"""Domain errors and their RFC 9457 problem+json rendering.

Every error the service produces is a `ServiceError` (or is mapped to one at the HTTP edge), so
clients always get the same shape: ``type``, ``title``, ``status``, ``detail``, a stable
snake_case ``code`` and a list of field-level ``errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://payoutsvc.dev/problems/"
# A problem lists at most this many field errors: a body with a million bad items must not
# be answered with a million-item list (the detail still says how many there were).
MAX_FIELD_ERRORS = 50


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one input field; ``field`` is a dotted path (``recipient.account``)."""

    field: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "message": self.message}


class ServiceError(Exception):
    """An error a client can act on. Each subclass is one error of the API: its HTTP
    ``status``, stable machine ``code`` and ``title`` are class attributes, so callers
    catch the class they mean (never match on a code string) and the OpenAPI document lists
    each operation's errors from the classes it names (:func:`error_codes`)."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: str = "Internal error"
    # How many field errors the problem lists; a batch (whose size is bounded) lists more.
    error_limit: int = MAX_FIELD_ERRORS

    def __init__(
        self,
        detail: str = "",
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        title: str | None = None,
    ) -> None:
        if title is not None:
            self.title = title
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = list(errors or [])
        self.headers = dict(headers or {})

    def to_problem(self) -> dict[str, Any]:
        return problem_body(
            self.status, self.code, self.title, self.detail, self.errors, self.error_limit
        )


# -- 400 ---------------------------------------------------------------------------------
class InvalidJson(ServiceError):
    """The body (or a JSON-valued field) is not valid JSON."""

    status, code, title = 400, "invalid_json", "Malformed JSON"


class IdempotencyKeyMissing(ServiceError):
    status, code, title = 400, "idempotency_key_missing", "Idempotency-Key header missing"


class IdempotencyKeyInvalid(ServiceError):
    status, code, title = 400, "idempotency_key_invalid", "Invalid Idempotency-Key"


class CallbackMalformed(ServiceError):
    """A gateway notice whose signature checked out but whose content is not understood."""

    status, code, title = 400, "invalid_callback", "Malformed callback"


# -- 401 / 403 ----------------------------------------------------------------------------
class Unauthorized(ServiceError):
    status, code, title = 401, "unauthorized", "Missing or invalid API key"


class CallbackSignatureInvalid(ServiceError):
    status, code, title = 401, "invalid_signature", "Invalid callback signature"


class InsufficientScope(ServiceError):
    status, code, title = 403, "insufficient_scope", "Insufficient scope"


class OperatorDisabled(ServiceError):
    status, code, title = 403, "operator_disabled", "Operator disabled"


class OperatorKeyRequired(ServiceError):
    """The policy's ``approvals.require_operator_key``: a decision needs a key bound to the
    operator who takes it; an integration (or admin) key cannot vouch for a person."""

    status, code, title = 403, "operator_key_required", "Operator-bound API key required"


class OperatorMismatch(ServiceError):
    """An operator-bound key acts only as its own operator, never names another."""

    status, code, title = 403, "operator_mismatch", "API key bound to another operator"


class SelfApprovalForbidden(ServiceError):
    """Four eyes: the requester of a payout can never approve it."""

    status, code, title = 403, "self_approval_forbidden", "Self-approval forbidden"


class SelfReleaseForbidden(ServiceError):
    """Four eyes for the release too: the requester of a payout can never release it."""

    status, code, title = 403, "self_release_forbidden", "Self-release forbidden"


class ReleaseNotAllowed(ServiceError):
    """The operator's role (current policy) has no ``can_release``."""

    status, code, title = 403, "release_not_allowed", "Operator may not release payouts"


class ApprovalLimitExceeded(ServiceError):
    status, code, title = 403, "approval_limit_exceeded", "Approval limit exceeded"


# -- 404 ----------------------------------------------------------------------------------
class NotFound(ServiceError):
    """Also what another integration's object answers (never 403, never data)."""

    status, code, title = 404, "not_found", "Not found"


# -- 409 ----------------------------------------------------------------------------------
class InvalidStatusTransition(ServiceError):
    """The action is not allowed from the payout's current status (payouts/transitions.py)."""

    status, code, title = (
        409,
        "invalid_status_transition",
        "Action not allowed in the current status",
    )


class PayoutInFlight(ServiceError):
    """The executor is talking to the payout's gateway right now; retry in a moment."""

    status, code, title = 409, "payout_in_flight", "Payout is being sent right now"


class IdempotencyKeyInUse(ServiceError):
    status, code, title = 409, "idempotency_key_in_use", "Idempotency key in use"


class AlreadyApproved(ServiceError):
    status, code, title = 409, "already_approved", "Already approved by this operator"


class IntegrationExists(ServiceError):
    status, code, title = 409, "integration_exists", "Integration exists"


class OperatorExists(ServiceError):
    status, code, title = 409, "operator_exists", "Operator exists"


class PolicyVersionConflict(ServiceError):
    status, code, title = 409, "policy_version_conflict", "Policy version conflict"


class EndpointDisabled(ServiceError):
    status, code, title = 409, "endpoint_disabled", "Endpoint disabled"


class RecipientAlreadyBlocked(ServiceError):
    status, code, title = 409, "recipient_already_blocked", "Recipient already blocked"


class NothingToExport(ServiceError):
    """A batch export in a format none of the batch's payable payouts can be paid in."""

    status, code, title = 409, "nothing_to_export", "Nothing to export"


class SepaDebtorNotConfigured(ServiceError):
    """A pain.001 file names the account it is paid from: PAYOUTSVC_SEPA_DEBTOR_* unset."""

    status, code, title = 409, "sepa_debtor_not_configured", "SEPA debtor account not configured"


# -- 413 ----------------------------------------------------------------------------------
class PayloadTooLarge(ServiceError):
    """The request body is over its route's limit; refused before the rest is read."""

    status, code, title = 413, "payload_too_large", "Payload too large"


# -- 415 ----------------------------------------------------------------------------------
class UnsupportedMediaType(ServiceError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


# -- 422 ----------------------------------------------------------------------------------
class ValidationFailed(ServiceError):
    status, code, title = 422, "validation_failed", "Request validation failed"


class IdempotencyKeyReused(ServiceError):
    status, code, title = 422, "idempotency_key_reused", "Idempotency key reused"


class InvalidRecipient(ServiceError):
    status, code, title = 422, "invalid_recipient", "Invalid recipient"


class PolicyViolation(ServiceError):
    """The policy forbids the payout outright; each violated rule is in ``errors``."""

    status, code, title = 422, "policy_violation", "Policy violation"


class UnknownOperator(ServiceError):
    status, code, title = 422, "unknown_operator", "Unknown operator"


class InvalidCursor(ServiceError):
    status, code, title = 422, "invalid_cursor", "Invalid cursor"


class WebhookUrlRefused(ServiceError):
    status, code, title = 422, "webhook_url_refused", "Webhook URL refused"


class TooManyEndpoints(ServiceError):
    """An integration has PAYOUTSVC_WEBHOOK_MAX_ENDPOINTS endpoints already: each one is a
    delivery row written in every payout's transaction, so the count is bounded."""

    status, code, title = 422, "too_many_endpoints", "Too many webhook endpoints"


# -- 429 ----------------------------------------------------------------------------------
class RateLimited(ServiceError):
    """Over the API key's (or, without a valid key, the client address's) request budget;
    ``Retry-After`` and the ``RateLimit`` headers say when it refills."""

    status, code, title = 429, "rate_limited", "Too many requests"


# -- 503 ----------------------------------------------------------------------------------
class PolicyChanging(ServiceError):
    status, code, title = 503, "policy_changing", "Policy is being changed"


class GatewayUnavailable(ServiceError):
    status, code, title = 503, "gateway_unavailable", "Gateway not configured"


def error_classes() -> list[type[ServiceError]]:
    """Every error of the API, once each: the single list of its error codes."""
    found: list[type[ServiceError]] = []
    pending = list(ServiceError.__subclasses__())
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def error_codes() -> dict[str, type[ServiceError]]:
    return {cls.code: cls for cls in error_classes()}


def problem_body(
    status: int,
    code: str,
    title: str,
    detail: str = "",
    errors: list[FieldError] | None = None,
    error_limit: int = MAX_FIELD_ERRORS,
) -> dict[str, Any]:
    return {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail or title,
        "code": code,
        "errors": [e.as_dict() for e in (errors or [])[:error_limit]],
    }


def summarize_field_errors(errors: list[FieldError], total: int | None = None) -> str:
    """The first few problems as one sentence, and how many more there were."""
    total = len(errors) if total is None else total
    shown = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
    return shown if total <= 5 else f"{shown} (and {total - 5} more)"


def validation_failed(errors: list[FieldError], detail: str = "") -> ValidationFailed:
    return ValidationFailed(detail or summarize_field_errors(errors), errors=errors)


def not_found(what: str, object_id: str) -> NotFound:
    return NotFound(f"No {what.lower()} {object_id!r}.", title=f"{what} not found")


def invalid_status_transition(object_id: str, status: str, action: str) -> InvalidStatusTransition:
    return InvalidStatusTransition(f"Cannot {action} {object_id}: its status is {status!r}.")
