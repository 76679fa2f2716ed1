"""Domain errors and their RFC 9457 problem+json rendering.

Every error the service produces is a `ServiceError` (or is mapped to one at the HTTP edge), so
clients always get the same shape: ``type``, ``title``, ``status``, ``detail``, a stable
snake_case ``code`` and a list of field-level ``errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, ClassVar

from payoutsvc.messages import (
    ENGLISH,
    ERRORS,
    FIELD_ERRORS,
    FIELD_FALLBACK,
    MESSAGES,
    NOUNS,
    ErrorText,
    Locale,
    Message,
    message,
)

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
    message: str  # English
    # The catalogue text with its facts, when the message carries any (messages.py); without
    # it other languages get the catalogue's generic message for ``code``.
    text: Message | None = dataclass_field(default=None, compare=False)

    @classmethod
    def of(cls, field_path: str, code: str, text: Message) -> FieldError:
        return cls(field_path, code, text.render(ENGLISH), text)

    def message_in(self, locale: Locale) -> str:
        if locale == ENGLISH:
            return self.message
        if self.text is not None:
            return self.text.render(locale)
        return FIELD_ERRORS.get(self.code, FIELD_FALLBACK)

    def as_dict(self, locale: Locale = ENGLISH) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "message": self.message_in(locale)}


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
        detail: str | Message = "",
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        title: str | None = None,
    ) -> None:
        """``detail``: an English sentence that only restates the title (other languages get
        the catalogue's generic detail for ``code``), or a catalogue ``Message`` carrying the
        facts, rendered in the client's language."""
        if title is not None:
            self.title = title
        self.text = detail if isinstance(detail, Message) else None
        english = detail.render(ENGLISH) if isinstance(detail, Message) else detail
        super().__init__(english or self.title)
        self.detail = english
        self.errors = list(errors or [])
        self.headers = dict(headers or {})

    def to_problem(self, locale: Locale = ENGLISH) -> dict[str, Any]:
        if locale == ENGLISH:
            return problem_body(
                self.status, self.code, self.title, self.detail, self.errors, self.error_limit
            )
        english = (self.title, self.detail)
        return localized_problem(
            self.status,
            self.code,
            self.text,
            self.errors,
            locale,
            english=english,
            error_limit=self.error_limit,
        )

    def i18n_state(self) -> dict[str, Any]:
        """What :func:`relocalize` needs to render this problem again in another language
        (kept with a stored answer; see payouts/service.py)."""
        return {
            "text": None if self.text is None else self.text.as_json(),
            "errors": [None if e.text is None else e.text.as_json() for e in self.errors],
        }


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
    locale: Locale = ENGLISH,
) -> dict[str, Any]:
    return {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail or title,
        "code": code,
        "errors": [e.as_dict(locale) for e in (errors or [])[:error_limit]],
    }


def localized_problem(
    status: int,
    code: str,
    text: Message | None,
    errors: list[FieldError],
    locale: Locale,
    total: int | None = None,
    english: tuple[str, str] = ("", ""),
    error_limit: int = MAX_FIELD_ERRORS,
) -> dict[str, Any]:
    """A problem in ``locale`` (not English): the catalogue's title for ``code``; as detail
    the raise site's message, else a summary of the field errors, else the generic detail.
    A code the catalogue lacks (tests/test_messages.py fails on one) keeps its ``english``
    title and detail rather than showing a bare code."""
    entry = ERRORS.get(code) or ErrorText(english[0] or code, english[1] or english[0] or code)
    title = entry.title
    if text is not None:
        detail = text.render(locale)
    elif errors:
        detail = summarize_field_errors(errors, total, locale)
    else:
        detail = entry.detail
    return problem_body(status, code, title, detail, errors, error_limit, locale)


def relocalize(problem: dict[str, Any], state: dict[str, Any], locale: Locale) -> dict[str, Any]:
    """A problem stored in English (with its :meth:`ServiceError.i18n_state`) in ``locale``."""
    if locale == ENGLISH:
        return problem
    stored = problem.get("errors") or []
    texts = list(state.get("errors") or [])
    errors = []
    for index, item in enumerate(stored):
        data = texts[index] if index < len(texts) else None
        text = Message.from_json(data) if isinstance(data, dict) else None
        errors.append(FieldError(item["field"], item["code"], item["message"], text))
    detail = state.get("text")
    text = Message.from_json(detail) if isinstance(detail, dict) else None
    english = (str(problem.get("title", "")), str(problem.get("detail", "")))
    return localized_problem(
        problem["status"], problem["code"], text, errors, locale, english=english
    )


def summarize_field_errors(
    errors: list[FieldError], total: int | None = None, locale: Locale = ENGLISH
) -> str:
    """The first few problems as one sentence, and how many more there were."""
    total = len(errors) if total is None else total
    separator = MESSAGES["list_separator"].in_locale(locale)
    shown = separator.join(f"{e.field}: {e.message_in(locale)}" for e in errors[:5])
    return shown if total <= 5 else shown + message("and_more", n=total - 5).render(locale)


def validation_failed(errors: list[FieldError], detail: str = "") -> ValidationFailed:
    return ValidationFailed(detail or summarize_field_errors(errors), errors=errors)


def not_found(what: str, object_id: str) -> NotFound:
    noun = what.lower()
    text = message("not_found", what=noun, what_zh=NOUNS.get(noun, what), id=object_id)
    return NotFound(text, title=f"{what} not found")


def invalid_status_transition(object_id: str, status: str, action: str) -> InvalidStatusTransition:
    text = message("invalid_status_transition", action=action, id=object_id, status=status)
    return InvalidStatusTransition(text)
