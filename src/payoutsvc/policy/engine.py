"""Evaluate the policy rules for one payout request and explain the decision.

``evaluate_policy`` runs every rule (so a refusal lists all violations at once) and decides:

* ``forbidden``: at least one rule forbids; ``reasons`` are the violations (API: 422
  ``policy_violation``, see ``PolicyDecision.violation_errors``).
* ``approval_required``: no violation, at least one rule demands approval; ``required_approvals``
  is the largest demand (1 or 2) and ``reasons`` lists every demand.
* ``auto_approved``: neither; ``reasons`` holds one ``role_auto_approve_limit`` explanation.

Everything here is pure: no database, no clock (callers pass ``now``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal

from payoutsvc.errors import FieldError, PolicyViolation, ServiceError
from payoutsvc.messages import Message
from payoutsvc.policy.document import Policy
from payoutsvc.policy.rules import RULES, PayoutFacts, RoleAutoApproveLimit, Rule

__all__ = [
    "PayoutFacts",
    "PolicyDecision",
    "PolicyReason",
    "approver_limit_allows",
    "duplicate_window_start",
    "evaluate_policy",
    "policy_day_bounds",
]

Decision = Literal["forbidden", "approval_required", "auto_approved"]


@dataclass(frozen=True, slots=True)
class PolicyReason:
    """One line of a decision's explanation; ``field`` is the request field it concerns."""

    rule: str
    message: str
    field: str = ""
    # A violation's catalogue text (RuleOutcome.text), for the 422 in the client's language.
    text: Message | None = dataclass_field(default=None, compare=False)

    def as_json(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    decision: Decision
    required_approvals: int  # 0 when auto-approved or forbidden, else 1 or 2
    reasons: list[PolicyReason] = field(default_factory=list)
    version: int = 0
    # The policy's release section: once approved, the payout waits for a person's release.
    release_required: bool = False

    @property
    def forbidden(self) -> bool:
        return self.decision == "forbidden"

    @property
    def auto_approved(self) -> bool:
        return self.decision == "auto_approved"

    def as_json(self) -> dict[str, Any]:
        """The payout object's ``policy`` field."""
        return {
            "version": self.version,
            "decision": self.decision,
            "reasons": [reason.as_json() for reason in self.reasons],
        }

    def violation_errors(self) -> list[FieldError]:
        """The ``errors`` of a 422 ``policy_violation``: one per violated rule (code = rule)."""
        if not self.forbidden:
            return []
        return [FieldError(r.field, r.rule, r.message, r.text) for r in self.reasons]

    def to_service_error(self) -> ServiceError:
        """The 422 ``policy_violation`` problem for a forbidden decision."""
        if not self.forbidden:
            raise ValueError("Only a forbidden decision is an error.")
        errors = self.violation_errors()
        return PolicyViolation(
            "; ".join(e.message for e in errors), errors=errors, title="Payout forbidden by policy"
        )


def evaluate_policy(
    facts: PayoutFacts, policy: Policy, rules: Sequence[Rule] = RULES
) -> PolicyDecision:
    """Run ``rules`` (default: all, in order) on ``facts`` and decide."""
    violations: list[PolicyReason] = []
    demands: list[PolicyReason] = []
    required = 0
    for rule in rules:
        outcome = rule.evaluate(facts, policy)
        if outcome is None:
            continue
        reason = PolicyReason(rule.name, outcome.message, rule.field, outcome.text)
        if outcome.kind == "forbid":
            violations.append(reason)
        else:
            demands.append(reason)
            required = max(required, outcome.approvals)
    if violations:
        return PolicyDecision("forbidden", 0, violations, policy.version)
    release = policy.release_required(facts.amount_minor, facts.currency)
    if demands:
        return PolicyDecision("approval_required", required, demands, policy.version, release)
    auto = RoleAutoApproveLimit()
    return PolicyDecision(
        "auto_approved",
        0,
        [PolicyReason(auto.name, auto.within_limit_message(facts, policy), auto.field)],
        policy.version,
        release,
    )


def approver_limit_allows(
    policy: Policy, role: str | None, amount_minor: int, currency: str
) -> bool:
    """Whether ``role`` may approve ``amount_minor`` of ``currency`` (inclusive limit).

    An unknown role, ``approve_max: null`` or a currency missing from ``approve_max``: no.
    """
    limits = policy.role(role)
    if limits is None or limits.approve_max is None:
        return False
    limit = limits.approve_max.get(currency)
    return limit is not None and amount_minor <= limit


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware.")


def policy_day_bounds(policy: Policy, now: datetime) -> tuple[datetime, datetime]:
    """UTC ``[start, end)`` of the policy day (midnight to midnight in ``policy.timezone``)
    containing ``now``; 23 or 25 hours long across DST changes. ``now`` must be aware."""
    _require_aware(now)
    zone = policy.zone
    local_day = now.astimezone(zone).date()
    start = datetime.combine(local_day, time(0), tzinfo=zone)
    end = datetime.combine(local_day + timedelta(days=1), time(0), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def duplicate_window_start(policy: Policy, now: datetime) -> datetime | None:
    """UTC start of the duplicate-suspicion window ending at ``now``; None when it is off."""
    _require_aware(now)
    if policy.duplicate_window_hours == 0:
        return None
    return now.astimezone(UTC) - policy.duplicate_window
