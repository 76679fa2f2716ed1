"""The payout policy document (API.md, "Policy, operators, integrations").

Two shapes live here:

* ``PolicyDocumentIn``: what ``PUT /v1/policy`` (and ``PAYOUTSVC_POLICY_FILE``) accepts. Amounts are
  decimal strings in major units, keyed by ISO 4217 currency. Unknown fields are rejected at every
  level. ``parse_policy_document`` turns every problem into a dotted-path ``FieldError`` such as
  ``roles.agent.request_max.CNY``.
* ``Policy``: the validated, immutable internal form with amounts as ``int`` minor units. It is what
  the rule engine reads; ``Policy.to_document()`` renders the ``GET /v1/policy`` body, which
  parses back into an equal ``Policy``.

Map semantics: a currency missing from a role's ``request_max`` or ``daily_request_total`` means
the role cannot request in it; missing from ``auto_approve_max`` means every request in it needs
approval; missing from ``approve_max`` (or ``approve_max: null``) means the role cannot approve it.
A currency missing from ``dual_approval_over``, ``per_ticket_max`` or
``per_recipient_daily.amount`` means that cap does not apply. ``timezone`` (IANA name, default
``UTC``) defines the "day" of the daily totals.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from payoutsvc.errors import FieldError, validation_failed
from payoutsvc.money import AMOUNT_SHAPE, MoneyError, currency_exponent, format_amount, parse_amount
from payoutsvc.operators.schemas import ROLE_PATTERN
from payoutsvc.schemas_common import CURRENCY_SCHEMA

__all__ = [
    "DEFAULT_POLICY_DOCUMENT",
    "PAYOUT_REASONS",
    "ApprovalsIn",
    "PerRecipientDailyIn",
    "Policy",
    "PolicyDocumentIn",
    "PolicyFileError",
    "ReleaseIn",
    "ReviewIn",
    "RoleDocumentIn",
    "RoleLimits",
    "WorkingHoursIn",
    "default_policy",
    "load_policy_file",
    "parse_policy_document",
    "policy_zone",
]

PAYOUT_REASONS: tuple[str, ...] = (
    "refund",
    "compensation",
    "reimbursement",
    "partner_payment",
    "other",
)
PayoutReason = Literal["refund", "compensation", "reimbursement", "partner_payment", "other"]

# The role that may release payouts when a policy does not say (RoleDocumentIn.can_release).
RELEASER_ROLE = "finance"

_ROLE_NAME_FIRST = "abcdefghijklmnopqrstuvwxyz"
_ROLE_NAME_REST = _ROLE_NAME_FIRST + "0123456789_-"
_MAX_TIMEZONE_LENGTH = 64
# Names zoneinfo resolves but that are not portable IANA zones (they depend on the host).
_HOST_DEPENDENT_ZONES = frozenset({"localtime", "posixrules"})


def _custom_error(code: str, message: str) -> PydanticCustomError:
    # The message goes through the context so braces in it are never read as placeholders.
    return PydanticCustomError(code, "{message}", {"message": message})


def _check_currency(code: str) -> str:
    try:
        currency_exponent(code)
    except MoneyError as exc:
        raise _custom_error(exc.code, exc.message) from None
    return code


def _check_role_name(name: str) -> str:
    # Explicit character checks rather than a regex: ``$`` would accept a trailing newline.
    if not (
        1 <= len(name) <= 40
        and name[0] in _ROLE_NAME_FIRST
        and all(c in _ROLE_NAME_REST for c in name[1:])
    ):
        raise _custom_error(
            "invalid_role_name",
            f"{name!r} is not a valid role name: use 1-40 characters a-z, 0-9, '_' or '-', "
            "starting with a letter.",
        )
    return name


@cache
def policy_zone(name: str) -> ZoneInfo:
    """The ``ZoneInfo`` for a policy timezone name; raises ``ValueError`` for an invalid one."""
    if not name or len(name) > _MAX_TIMEZONE_LENGTH or name in _HOST_DEPENDENT_ZONES:
        raise ValueError(f"{name!r} is not an IANA time zone name such as 'Asia/Shanghai'.")
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(
            f"{name!r} is not an IANA time zone name such as 'Asia/Shanghai'."
        ) from None


def _check_timezone(name: str) -> str:
    try:
        policy_zone(name)
    except ValueError as exc:
        raise _custom_error("invalid_timezone", str(exc)) from None
    return name


def _require_amount_string(value: object) -> object:
    if not isinstance(value, str):
        raise _custom_error(
            "amount_not_string",
            'Amount must be a decimal string such as "12.50" (quote it in YAML).',
        )
    return value


CurrencyCode = Annotated[
    str, AfterValidator(_check_currency), Field(json_schema_extra=CURRENCY_SCHEMA)
]
# ROLE_PATTERN is the document's form of _check_role_name (which checks characters one by
# one, see there), as it is of an operator's role.
RoleName = Annotated[
    str, AfterValidator(_check_role_name), Field(json_schema_extra={"pattern": ROLE_PATTERN})
]
TimezoneName = Annotated[str, AfterValidator(_check_timezone)]
# A limit may be zero ("auto_approve_max": {"CNY": "0"}: never auto-approve); the decimals
# its currency allows are checked with the currency.
POLICY_AMOUNT_PATTERN = rf"^{AMOUNT_SHAPE}$"
# Only the type is checked here; the amount itself is parsed against its currency key in
# ``PolicyDocumentIn._check_semantics`` so the error path names the currency.
AmountString = Annotated[
    str,
    BeforeValidator(_require_amount_string),
    Field(max_length=40, json_schema_extra={"pattern": POLICY_AMOUNT_PATTERN}),
]
AmountMap = dict[CurrencyCode, AmountString]


def _role_map_schema(schema: dict[str, Any]) -> None:
    # Pydantic states the key pattern as patternProperties, which leaves any other key open;
    # every key is a role name, and every value a role.
    for pattern, role in schema.pop("patternProperties", {}).items():
        schema["propertyNames"] = {"pattern": pattern}
        schema["additionalProperties"] = role


class _PolicyModel(BaseModel):
    # strict: no "3" -> 3, no true -> 1, no 500.0 -> "500.0"; money is always a string.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RoleDocumentIn(_PolicyModel):
    request_max: AmountMap = Field(description="Largest single payout the role may request.")
    auto_approve_max: AmountMap = Field(
        description="Requests up to this amount are approved without a second person."
    )
    approve_max: AmountMap | None = Field(
        description="Largest payout the role may approve; null: the role cannot approve."
    )
    daily_request_total: AmountMap = Field(
        description="Cap on one requester's total per policy day."
    )
    reasons: list[PayoutReason] | None = Field(
        max_length=len(PAYOUT_REASONS), description="Allowed reasons; null: any reason."
    )
    can_release: bool | None = Field(
        default=None,
        description="May release payouts that wait for a manual release (the policy's "
        "`release` section), record offline payments and see a payout's full recipient "
        "account. Optional in a PUT: true for a role named `finance`, false for any other.",
    )


class PerRecipientDailyIn(_PolicyModel):
    count: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        description="Payouts per recipient per policy day; null: no count cap."
    )
    amount: AmountMap = Field(description="Total per recipient per policy day, per currency.")


class ApprovalsIn(_PolicyModel):
    require_operator_key: bool = Field(
        default=True,
        description="Approve, reject, release, resolve and record-payment only with an API key "
        "bound to the acting operator, and never auto-approve a request whose key is not bound "
        "to its requester. false: an integration key may name any operator (the helpdesk "
        "vouches for its agents).",
    )


class ReleaseIn(_PolicyModel):
    mode: Literal["auto", "manual"] = Field(
        default="auto",
        description="auto: an approved payout is paid at once. manual: it waits in "
        "`approved` until an operator whose role has `can_release` releases it.",
    )
    manual_over: AmountMap | None = Field(
        default=None,
        description="Only with mode manual: per currency, the amount up to which a payout "
        "is still paid at once; above it (or in a currency not listed) it waits for a "
        "release. null: every payout waits.",
    )


_HHMM_DIGITS = "0123456789"


def _check_hhmm(value: str) -> str:
    if not (
        len(value) == 5
        and value[2] == ":"
        and all(c in _HHMM_DIGITS for c in value[:2] + value[3:])
        and int(value[:2]) < 24
        and int(value[3:]) < 60
    ):
        raise _custom_error("invalid_time", f"{value!r} is not a time of day such as '09:00'.")
    return value


TimeOfDay = Annotated[str, AfterValidator(_check_hhmm)]


class WorkingHoursIn(_PolicyModel):
    """When requests and approvals are expected, in the policy's timezone: ``start`` up to
    (excluding) ``end`` on the ISO weekdays ``days`` (1 Monday … 7 Sunday)."""

    start: TimeOfDay
    end: TimeOfDay
    days: list[Annotated[int, Field(ge=1, le=7)]] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5], min_length=1, max_length=7
    )

    @model_validator(mode="after")
    def _start_before_end(self) -> WorkingHoursIn:
        if self.start >= self.end:
            raise _custom_error("invalid_time", "working_hours.start must be before end.")
        return self


class ThresholdSplittingIn(_PolicyModel):
    near_percent: int = Field(
        default=80,
        ge=1,
        le=100,
        description="A payout counts as just under a limit at this share of it or more.",
    )
    min_payouts: int = Field(default=3, ge=2, le=1000)


class RecipientManyTicketsIn(_PolicyModel):
    window_days: int = Field(default=7, ge=1, le=90)
    min_tickets: int = Field(default=5, ge=2, le=100000)
    min_requesters: int = Field(default=3, ge=2, le=100000)


class RequesterVelocityIn(_PolicyModel):
    history_days: int = Field(
        default=30, ge=3, le=365, description="Active days the usual level is the median of."
    )
    min_history_days: int = Field(default=5, ge=1, le=365)
    factor: int = Field(default=3, ge=2, le=1000, description="How many times the median.")
    min_payouts: int = Field(default=5, ge=1, le=100000)


class ApproverConcentrationIn(_PolicyModel):
    window_days: int = Field(default=30, ge=1, le=365)
    min_approvals: int = Field(default=10, ge=2, le=100000)
    share_percent: int = Field(default=80, ge=1, le=100)


class ReviewIn(_PolicyModel):
    """The periodic review (review/detectors.py): each detector's thresholds and whether an
    open anomaly holds new payouts of its subjects for approval."""

    hold_open_anomalies: bool = False
    working_hours: WorkingHoursIn | None = None
    threshold_splitting: ThresholdSplittingIn = Field(default_factory=ThresholdSplittingIn)
    recipient_many_tickets: RecipientManyTicketsIn = Field(default_factory=RecipientManyTicketsIn)
    requester_velocity: RequesterVelocityIn = Field(default_factory=RequesterVelocityIn)
    approver_concentration: ApproverConcentrationIn = Field(default_factory=ApproverConcentrationIn)


class PolicyDocumentIn(_PolicyModel):
    """The body of ``PUT /v1/policy``: the policy document without ``version``."""

    currencies: list[CurrencyCode] = Field(min_length=1, max_length=50)
    roles: dict[RoleName, RoleDocumentIn] = Field(
        min_length=1, max_length=100, json_schema_extra=_role_map_schema
    )
    dual_approval_over: AmountMap
    per_ticket_max: AmountMap
    per_recipient_daily: PerRecipientDailyIn
    duplicate_window_hours: int = Field(ge=0, le=720)
    timezone: TimezoneName = Field(
        default="UTC", description="IANA time zone that defines the day for daily totals."
    )
    # Optional in a PUT (the built-in values apply); documented in the policy router.
    approvals: ApprovalsIn = Field(default_factory=ApprovalsIn)
    release: ReleaseIn = Field(default_factory=ReleaseIn)
    review: ReviewIn = Field(default_factory=ReviewIn)

    def amount_maps(self) -> Iterator[tuple[str, Mapping[str, str]]]:
        """Every amount map in the document with its dotted path."""
        for name, role in self.roles.items():
            yield f"roles.{name}.request_max", role.request_max
            yield f"roles.{name}.auto_approve_max", role.auto_approve_max
            if role.approve_max is not None:
                yield f"roles.{name}.approve_max", role.approve_max
            yield f"roles.{name}.daily_request_total", role.daily_request_total
        yield "dual_approval_over", self.dual_approval_over
        yield "per_ticket_max", self.per_ticket_max
        yield "per_recipient_daily.amount", self.per_recipient_daily.amount
        if self.release.manual_over is not None:
            yield "release.manual_over", self.release.manual_over

    @model_validator(mode="after")
    def _check_semantics(self) -> PolicyDocumentIn:
        errors = _semantic_errors(self)
        if errors:
            raise PydanticCustomError(
                "policy_invalid",
                "{summary}",
                {
                    "summary": "; ".join(f"{e.field}: {e.message}" for e in errors),
                    "field_errors": [e.as_dict() for e in errors],
                },
            )
        return self


def _semantic_errors(doc: PolicyDocumentIn) -> list[FieldError]:
    errors: list[FieldError] = []
    listed: set[str] = set()
    for index, code in enumerate(doc.currencies):
        if code in listed:
            errors.append(
                FieldError(f"currencies.{index}", "duplicate_currency", f"{code} is listed twice.")
            )
        listed.add(code)
    for path, amounts in doc.amount_maps():
        for currency, amount in amounts.items():
            field = f"{path}.{currency}"
            try:
                parse_amount(amount, currency, allow_zero=True)
            except MoneyError as exc:
                errors.append(FieldError(field, exc.code, exc.message))
            if currency not in listed:
                errors.append(
                    FieldError(
                        field,
                        "currency_not_listed",
                        f"{currency} is used here but is not listed in currencies.",
                    )
                )
    if doc.release.mode == "auto" and doc.release.manual_over is not None:
        errors.append(
            FieldError(
                "release.manual_over",
                "manual_over_without_manual_mode",
                "manual_over applies only with release.mode manual.",
            )
        )
    for name, role in doc.roles.items():
        seen: set[str] = set()
        for index, reason in enumerate(role.reasons or ()):
            if reason in seen:
                errors.append(
                    FieldError(
                        f"roles.{name}.reasons.{index}",
                        "duplicate_reason",
                        f"{reason!r} is listed twice.",
                    )
                )
            seen.add(reason)
    return errors


# The same pydantic-type -> error-code mapping as the HTTP edge (payoutsvc.http_errors), kept
# here because this package must not import FastAPI; custom codes (amount_not_string,
# unknown_currency, invalid_role_name, invalid_timezone, ...) pass through unchanged.
_PYDANTIC_CODES = {
    "extra_forbidden": "unknown_field",
    "missing": "required",
    "string_type": "invalid_type",
    "int_type": "invalid_type",
    "int_parsing": "invalid_type",
    "bool_type": "invalid_type",
    "dict_type": "invalid_type",
    "list_type": "invalid_type",
    "model_type": "invalid_type",
    "model_attributes_type": "invalid_type",
    "literal_error": "invalid_choice",
    "string_too_long": "too_long",
    "string_too_short": "too_short",
    "too_long": "too_long",
    "too_short": "too_short",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
}


def _field_errors(exc: ValidationError) -> list[FieldError]:
    errors: list[FieldError] = []
    for err in exc.errors(include_url=False):
        ctx = err.get("ctx") or {}
        if err["type"] == "policy_invalid" and "field_errors" in ctx:
            errors.extend(FieldError(**fe) for fe in ctx["field_errors"])
            continue
        # Dict-key errors end in "[key]": the path up to the key already names it.
        field = ".".join(str(part) for part in err["loc"] if part != "[key]") or "body"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = f"Unknown field {field.rsplit('.', 1)[-1]!r}."
        errors.append(FieldError(field, _PYDANTIC_CODES.get(err["type"], err["type"]), message))
    return errors


def parse_policy_document(data: object) -> PolicyDocumentIn:
    """Validate a policy document (a decoded JSON/YAML object) for ``PUT /v1/policy``.

    Raises ``errors.validation_failed`` (422 ``validation_failed``) listing every problem as a
    ``FieldError`` with a dotted path, e.g. ``roles.agent.request_max.CNY``. Structural problems
    (unknown/missing fields, wrong types, bad currency codes or role names) are reported first;
    amount values and cross-field checks are reported once the structure is valid.
    """
    try:
        return PolicyDocumentIn.model_validate(data)
    except ValidationError as exc:
        raise validation_failed(_field_errors(exc)) from None


@dataclass(frozen=True, slots=True)
class RoleLimits:
    """One role's limits in minor units; treat the mappings as read-only."""

    name: str
    request_max: Mapping[str, int]
    auto_approve_max: Mapping[str, int]
    approve_max: Mapping[str, int] | None
    daily_request_total: Mapping[str, int]
    reasons: tuple[str, ...] | None
    can_release: bool = False


def _to_minor(amounts: Mapping[str, str]) -> dict[str, int]:
    return {c: parse_amount(a, c, allow_zero=True) for c, a in amounts.items()}


def _to_strings(amounts: Mapping[str, int]) -> dict[str, str]:
    return {c: format_amount(m, c) for c, m in amounts.items()}


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy version; amounts are ``int`` minor units keyed by currency.

    Treat the mappings as read-only: a ``Policy`` may be shared between concurrent requests.
    """

    version: int
    currencies: tuple[str, ...]
    roles: Mapping[str, RoleLimits]
    dual_approval_over: Mapping[str, int]
    per_ticket_max: Mapping[str, int]
    per_recipient_daily_count: int | None
    per_recipient_daily_amount: Mapping[str, int]
    duplicate_window_hours: int
    timezone: str = "UTC"
    # Decisions only through a key bound to the acting operator; see ApprovalsIn.
    require_operator_key: bool = True
    # The release section (ReleaseIn): "auto" or "manual", and manual's per-currency
    # threshold in minor units (None: every payout waits for a release).
    release_mode: str = "auto"
    release_manual_over: Mapping[str, int] | None = None
    # The periodic review's thresholds (review/detectors.py); frozen, so safe to share.
    review: ReviewIn = field(default_factory=ReviewIn)

    @property
    def zone(self) -> ZoneInfo:
        return policy_zone(self.timezone)

    @property
    def duplicate_window(self) -> timedelta:
        """How far back duplicate suspicion looks; zero means it is off."""
        return timedelta(hours=self.duplicate_window_hours)

    def role(self, name: str | None) -> RoleLimits | None:
        """The role's limits, or None for no role / a role this version does not define."""
        if name is None:
            return None
        return self.roles.get(name)

    @classmethod
    def from_document(cls, doc: PolicyDocumentIn, version: int) -> Policy:
        if version < 1:
            raise ValueError("Policy versions start at 1.")
        roles = {
            name: RoleLimits(
                name=name,
                request_max=_to_minor(role.request_max),
                auto_approve_max=_to_minor(role.auto_approve_max),
                approve_max=None if role.approve_max is None else _to_minor(role.approve_max),
                daily_request_total=_to_minor(role.daily_request_total),
                reasons=None if role.reasons is None else tuple(role.reasons),
                can_release=(
                    role.can_release if role.can_release is not None else name == RELEASER_ROLE
                ),
            )
            for name, role in doc.roles.items()
        }
        return cls(
            version=version,
            currencies=tuple(doc.currencies),
            roles=roles,
            dual_approval_over=_to_minor(doc.dual_approval_over),
            per_ticket_max=_to_minor(doc.per_ticket_max),
            per_recipient_daily_count=doc.per_recipient_daily.count,
            per_recipient_daily_amount=_to_minor(doc.per_recipient_daily.amount),
            duplicate_window_hours=doc.duplicate_window_hours,
            timezone=doc.timezone,
            require_operator_key=doc.approvals.require_operator_key,
            release_mode=doc.release.mode,
            release_manual_over=(
                None if doc.release.manual_over is None else _to_minor(doc.release.manual_over)
            ),
            review=doc.review,
        )

    def to_document(self) -> dict[str, Any]:
        """The ``GET /v1/policy`` body (JSON-ready, canonical amount strings, with ``version``)."""
        return {
            "version": self.version,
            "currencies": list(self.currencies),
            "roles": {
                name: {
                    "request_max": _to_strings(role.request_max),
                    "auto_approve_max": _to_strings(role.auto_approve_max),
                    "approve_max": (
                        None if role.approve_max is None else _to_strings(role.approve_max)
                    ),
                    "daily_request_total": _to_strings(role.daily_request_total),
                    "reasons": None if role.reasons is None else list(role.reasons),
                    "can_release": role.can_release,
                }
                for name, role in self.roles.items()
            },
            "dual_approval_over": _to_strings(self.dual_approval_over),
            "per_ticket_max": _to_strings(self.per_ticket_max),
            "per_recipient_daily": {
                "count": self.per_recipient_daily_count,
                "amount": _to_strings(self.per_recipient_daily_amount),
            },
            "duplicate_window_hours": self.duplicate_window_hours,
            "timezone": self.timezone,
            "approvals": {"require_operator_key": self.require_operator_key},
            "release": {
                "mode": self.release_mode,
                "manual_over": (
                    None
                    if self.release_manual_over is None
                    else _to_strings(self.release_manual_over)
                ),
            },
            "review": self.review.model_dump(mode="json"),
        }

    def release_required(self, amount_minor: int, currency: str) -> bool:
        """Whether a payout of this amount waits for a manual release once approved."""
        if self.release_mode != "manual":
            return False
        if self.release_manual_over is None or currency not in self.release_manual_over:
            return True
        return amount_minor > self.release_manual_over[currency]


# The built-in policy, used until a PUT or PAYOUTSVC_POLICY_FILE. CNY values are API.md's example
# (finance's auto_approve_max "0" is written in its canonical form "0.00" so GET round-trips
# byte for byte); USD/EUR are roughly CNY / 7. Do not mutate: copy it first.
DEFAULT_POLICY_DOCUMENT: dict[str, Any] = {
    "currencies": ["CNY", "USD", "EUR"],
    "roles": {
        "agent": {
            "request_max": {"CNY": "500.00", "USD": "70.00", "EUR": "70.00"},
            "auto_approve_max": {"CNY": "50.00", "USD": "7.00", "EUR": "7.00"},
            "approve_max": None,
            "daily_request_total": {"CNY": "2000.00", "USD": "280.00", "EUR": "280.00"},
            "reasons": ["refund", "compensation"],
            "can_release": False,
        },
        "supervisor": {
            "request_max": {"CNY": "5000.00", "USD": "700.00", "EUR": "700.00"},
            "auto_approve_max": {"CNY": "500.00", "USD": "70.00", "EUR": "70.00"},
            "approve_max": {"CNY": "5000.00", "USD": "700.00", "EUR": "700.00"},
            "daily_request_total": {"CNY": "20000.00", "USD": "2800.00", "EUR": "2800.00"},
            "reasons": None,
            "can_release": False,
        },
        "finance": {
            "request_max": {"CNY": "50000.00", "USD": "7000.00", "EUR": "7000.00"},
            "auto_approve_max": {"CNY": "0.00", "USD": "0.00", "EUR": "0.00"},
            "approve_max": {"CNY": "50000.00", "USD": "7000.00", "EUR": "7000.00"},
            "daily_request_total": {"CNY": "200000.00", "USD": "28000.00", "EUR": "28000.00"},
            "reasons": None,
            "can_release": True,
        },
    },
    "dual_approval_over": {"CNY": "10000.00", "USD": "1400.00", "EUR": "1400.00"},
    "per_ticket_max": {"CNY": "5000.00", "USD": "700.00", "EUR": "700.00"},
    "per_recipient_daily": {
        "count": 3,
        "amount": {"CNY": "5000.00", "USD": "700.00", "EUR": "700.00"},
    },
    "duplicate_window_hours": 24,
    "timezone": "UTC",
    "approvals": {"require_operator_key": True},
    "release": {"mode": "auto", "manual_over": None},
    "review": {
        "hold_open_anomalies": False,
        "working_hours": None,
        "threshold_splitting": {"near_percent": 80, "min_payouts": 3},
        "recipient_many_tickets": {"window_days": 7, "min_tickets": 5, "min_requesters": 3},
        "requester_velocity": {
            "history_days": 30,
            "min_history_days": 5,
            "factor": 3,
            "min_payouts": 5,
        },
        "approver_concentration": {"window_days": 30, "min_approvals": 10, "share_percent": 80},
    },
}


def default_policy(version: int = 1) -> Policy:
    """The built-in policy as a ``Policy`` with the given version."""
    return Policy.from_document(parse_policy_document(DEFAULT_POLICY_DOCUMENT), version)


class PolicyFileError(ValueError):
    """A policy file that cannot be read, decoded or validated; ``errors`` lists field problems."""

    def __init__(self, path: str, message: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.errors = errors or []


class _UniqueKeySafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (a repeated role must not override)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _unique_json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def load_policy_file(path: str | os.PathLike[str]) -> PolicyDocumentIn:
    """Read a policy document from ``.yaml``/``.yml`` (safe loader) or ``.json``.

    Raises ``PolicyFileError`` for an unsupported extension, an unreadable file, a syntax error,
    duplicate keys or an invalid document (then ``errors`` holds the field errors).
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in {".yaml", ".yml", ".json"}:
        raise PolicyFileError(str(file), "policy files must end in .yaml, .yml or .json.")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyFileError(str(file), f"cannot read the policy file: {exc}") from exc
    try:
        if suffix == ".json":
            data: object = json.loads(text, object_pairs_hook=_unique_json_object)
        else:
            data = yaml.load(text, Loader=_UniqueKeySafeLoader)  # noqa: S506 - a SafeLoader
    except (ValueError, yaml.YAMLError) as exc:
        raise PolicyFileError(str(file), f"cannot parse the policy file: {exc}") from exc
    try:
        return PolicyDocumentIn.model_validate(data)
    except ValidationError as exc:
        errors = _field_errors(exc)
        summary = "; ".join(f"{e.field}: {e.message}" for e in errors)
        raise PolicyFileError(str(file), f"invalid policy: {summary}", errors) from None
