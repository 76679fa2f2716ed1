"""The payout policy rules, one small class each, evaluated in ``RULES`` order.

Every rule reads only ``PayoutFacts`` (which the service gathers from the database, inside the
same transaction that inserts the payout, so the totals cannot race) and a ``Policy``. A rule
returns ``None`` when it has nothing to say, or a ``RuleOutcome`` that either forbids the payout
or demands approval. All limits are inclusive: exactly the limit passes, one minor unit more
does not. Rule ``name``s are part of the API (``policy.reasons[].rule`` and the ``errors`` of a
422 ``policy_violation``): never rename one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import ClassVar, Literal

from payoutsvc.messages import Message, message
from payoutsvc.money import format_money
from payoutsvc.policy.document import Policy, RoleLimits

__all__ = [
    "RULES",
    "CurrencyAllowed",
    "DailyRequestTotal",
    "DualApprovalOver",
    "DuplicateSuspected",
    "OpenAnomaly",
    "OperatorActive",
    "PayoutFacts",
    "PerRecipientDailyAmount",
    "PerRecipientDailyCount",
    "PerTicketMax",
    "ReasonAllowed",
    "RecipientBlocked",
    "RecipientWarnings",
    "RequestMax",
    "RequesterUnverified",
    "RoleAutoApproveLimit",
    "Rule",
    "RuleOutcome",
]


@dataclass(frozen=True, slots=True)
class PayoutFacts:
    """Everything the rules need about one payout request; totals EXCLUDE the request itself.

    "Counted" payouts are those not ``rejected``, ``canceled`` or ``failed``; "today" is the
    current day in the policy's timezone (see ``engine.policy_day_bounds``).
    """

    amount_minor: int
    currency: str
    reason: str
    requester_id: str
    requester_role: str | None  # None: unknown operator
    requester_active: bool
    requester_daily_total_minor: int  # same requester and currency, today
    ticket_total_minor: int  # same ticket (system + id) and currency, any day
    recipient_daily_count: int  # same recipient fingerprint, today, any currency
    recipient_daily_total_minor: int  # same recipient fingerprint and currency, today
    recipient_blocked: bool
    duplicate_suspected: bool  # same ticket + recipient + amount in the window, other key
    recipient_warnings: tuple[str, ...] = ()  # warning codes from recipient validation
    requester_verified: bool = True  # the request came with a key bound to the requester
    # The requester or the recipient is a subject of an open review anomaly (only looked up
    # when the policy's review.hold_open_anomalies is on).
    open_anomaly: bool = False
    # What the messages may tell the caller (they are stored on the payout and shown to its
    # integration): the amounts other payouts already use, which may be other integrations'
    # (totals are company-wide), and the requester's existence, role and limits, which a key
    # that does not prove the requester must not learn by naming operators.
    disclose_totals: bool = True
    disclose_requester: bool = True


OutcomeKind = Literal["forbid", "require_approval"]


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """What a rule concluded: ``forbid`` (a violation) or ``require_approval`` by 1 or 2 people."""

    kind: OutcomeKind
    message: str  # English: what the payout's policy.reasons[] say
    approvals: int = 0  # 0 for forbid; 1 or 2 for require_approval
    # The catalogue text behind a forbid's message (messages.py): a 422 policy_violation
    # is rendered from it in the client's language, with the same amounts.
    text: Message | None = dataclass_field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.kind == "forbid" and self.approvals != 0:
            raise ValueError("A forbid outcome carries no approvals.")
        if self.kind == "require_approval" and self.approvals not in (1, 2):
            raise ValueError("An approval outcome needs 1 or 2 approvals.")

    @classmethod
    def forbid(cls, ident: str, **params: str | int) -> RuleOutcome:
        """A violation, said by the catalogue text ``ident`` (``rule.*`` in messages.py)."""
        text = message(ident, **params)
        return cls("forbid", text.render(), text=text)

    @classmethod
    def require_approval(cls, message: str, approvals: int = 1) -> RuleOutcome:
        return cls("require_approval", message, approvals)


class Rule(ABC):
    """One policy rule. ``name`` is stable API; ``field`` is the request field it concerns."""

    name: ClassVar[str]
    field: ClassVar[str]

    @abstractmethod
    def evaluate(self, facts: PayoutFacts, policy: Policy) -> RuleOutcome | None:
        """Return a violation / approval demand, or None when the rule has nothing to say."""

    def __repr__(self) -> str:
        return f"<rule {self.name}>"


def _role_name(facts: PayoutFacts, role: RoleLimits) -> str:
    return f"the {role.name} role" if facts.disclose_requester else "the requester's role"


def _known_role(facts: PayoutFacts, policy: Policy) -> RoleLimits | None:
    """The requester's role when it exists in this policy; role rules stay silent otherwise
    (``operator_active`` already forbids the request)."""
    return policy.role(facts.requester_role)


class OperatorActive(Rule):
    """Only known, enabled operators whose role this policy defines may request payouts.

    Prevents payouts made in the name of made-up or former staff, by disabled (e.g. offboarded or
    compromised) accounts, and by operators whose role a newer policy removed, which would
    otherwise slip past every role limit.
    """

    name = "operator_active"
    field = "requested_by"

    def evaluate(self, facts: PayoutFacts, policy: Policy) -> RuleOutcome | None:
        who = facts.requester_id
        active = facts.requester_active and policy.role(facts.requester_role) is not None
        if not facts.disclose_requester:
            return None if active else RuleOutcome.forbid("rule.not_active", who=who)
        if facts.requester_role is None:
            return RuleOutcome.forbid("rule.unknown_operator", who=who)
        if not facts.requester_active:
            return RuleOutcome.forbid("rule.operator_disabled", who=who)
        if policy.role(facts.requester_role) is None:
            return RuleOutcome.forbid(
                "rule.role_undefined", who=who, role=facts.requester_role, version=policy.version
            )
        return None


class ReasonAllowed(Rule):
    """A role may only pay out for the reasons its policy lists.

    Prevents front-line agents from moving money under reasons they are not trusted with, e.g.
    an agent labelling a transfer ``partner_payment`` to reach a friend's account.
    """

    name = "reason_allowed"
    field = "reason"

    def evaluate(self, facts: PayoutFacts, policy: Policy) -> RuleOutcome | None:
        role = _known_role(facts, policy)
        if role is None or role.reasons is None or facts.reason in role.reasons:
            return None
        if not facts.disclose_requester:
            return RuleOutcome.forbid("rule.reason_not_allowed", reason=facts.reason)
        allowed = ", ".join(role.reasons) or "none"
        return RuleOutcome.forbid(
            "rule.reason_not_allowed_role", reason=facts.reason, role=role.name, allowed=allowed
        )


class CurrencyAllowed(Rule):
    """Payouts only in currencies the policy lists and the requester's role has limits for.

    Prevents dodging every CNY limit by paying in a currency the policy never capped, and
    payouts in currencies finance does not operate.
    """

    name = "currency_allowed"
    field = "currency"

    def evaluate(self, facts: PayoutFacts, policy: Policy) -> RuleOutcome | None:
        currency = facts.currency
        if currency not in policy.currencies:
            allowed = ", ".join(policy.currencies)
            return RuleOutcome.forbid(
                "rule.currency_not_allowed", currency=currency, allowed=allowed
            )
        role = _known_role(facts, policy)
        if role is None:
            return None
        if currency not in role.request_max or currency not in role.daily_request_total:
            if not facts.disclose_requester:
                return RuleOutcome.forbid("rule.currency_not_for_requester", currency=currency)
            return RuleOutcome.forbid(
                "rule.currency_not_for_role", role=role.name, currency=currency
            )
        return None


class RequestMax(Rule):
    """A single payout may not exceed the requester role's per-request maximum.

    Prevents one large payout by an operator whose role is only trusted with small amounts.
    """

    name = "request_max"
    field = "amount"

    def evaluate(self, facts: PayoutFacts, policy: Policy) -> RuleOutcome | None:
        role = _known_role(facts, policy)
        if role is None:
            return None
        limit = role.request_max.get(facts.currency)
        if limit is None or facts.amount_minor <= limit:
            return None
        amount = format_money(facts.amount_minor, facts.currency)
        if not facts.disclose_requester:
            return RuleOutcome.forbid("rule.request_max_hidden", amount=amount)
        return RuleOutcome.forbid(
            "rule.request_max",
            amount=amount,
            role=role.name,
            limit=format_money(limit, facts.currency),
        )


class PerTicketMax(Rule):
    """All live payouts on one ticket together may not exceed the per-ticket cap.

    Prevents paying one complaint many times over, by one operator or by several, through a
    series of payouts that are each under the per-request limit.
    """

    name = "per_ticket_max"
    field = "ticket"

    def evaluate(self, facts: PayoutFacts, policy: Policy) -> RuleOutcome | None:
        limit = policy.per_ticket_max.get(facts.currency)
        if limit is None:
            return None
        total = facts.ticket_total_minor + facts.amount_minor
        if total <= limit:
            return None
        c = facts.currency
        if not facts.disclose_totals:
            return RuleOutcome.forbid("rule.per_ticket_max_hidden", limit=format_money(limit, c))
        return RuleOutcome.forbid(
            "rule.per_ticket_max",
            total=format_money(total, c),
            already=format_money(facts.ticket_total_minor, c),
            limit=format_money(limit, c),
        )


class DailyRequestTotal(Rule):
    """One requester's payouts per policy day may not exceed their role's daily total.

    Prevents an operator from splitting a large sum into many payouts that each stay under the
    per-request limit (structuring), and bounds the damage of a hijacked operator account.
    """

    name = "daily_request_total"
    field = "amount"

    def evaluate(self, facts: PayoutFacts, policy: Policy) -> RuleOutcome | None:
        role = _known_role(facts, policy)
        if role is None:
            return None
        limit = role.daily_request_total.get(facts.currency)
        if limit is None:
            return None  # currency_allowed forbids the request
        total = facts.requester_daily_total_minor + facts.amount_minor
        if total <= limit:
            return None
        c = facts.currency
        who = facts.requester_id
        totals = {
            "total": format_money(total, c),
            "already": format_money(facts.requester_daily_total_minor, c),
        }
        if not facts.disclose_requester:
            if not facts.disclose_totals:
                return RuleOutcome.forbid("rule.daily_request_total_hidden", who=who)
            return RuleOutcome.forbid("rule.daily_request_total_no_role", who=who, **totals)
        role_limit = {"role": role.name, "limit": format_money(limit, c)}
        if not facts.disclose_totals:
            return RuleOutcome.forbid("rule.daily_request_total_no_totals", who=who, **role_limit)
        return RuleOutcome.forbid("rule.daily_request_total", who=who, **totals, **role_limit)


class PerRecipientDailyCount(Rule):
    """One recipient may receive at most ``per_recipient_daily.count`` payouts per policy day.

    Prevents funnelling many small payouts, across tickets and operators, to one account
    (e.g. an insider's or a fraud ring's).
    """

    name = "per_recipient_daily_count"
    field = "recipient"

    def evaluate(self, facts: PayoutFacts, policy: Policy) -> RuleOutcome | None:
        limit = policy.per_recipient_daily_count
        if limit is None or facts.recipient_daily_count + 1 <= limit:
            return None
        if not facts.disclose_totals:
            return RuleOutcome.forbid("rule.per_recipient_daily_count_hidden", limit=limit)
        return RuleOutcome.forbid(
            "rule.per_recipient_daily_count", count=facts.recipient_daily_count, limit=limit
        )


class PerRecipientDailyAmount(Rule):
    """One recipient may receive at most ``per_recipient_daily.amount`` per currency per day.

    Prevents concentrating money on one account across tickets and operators, where every
    per-ticket and per-requester limit is individually respected.
    """

    name = "per_recipient_daily_amount"
    field = "recipient"

    def evaluate(self, facts: PayoutFacts, policy: Policy) -> RuleOutcome | None:
        limit = policy.per_recipient_daily_amount.get(facts.currency)
        if limit is None:
            return None
        total = facts.recipient_daily_total_minor + facts.amount_minor
        if total <= limit:
            return None
        c = facts.currency
        if not facts.disclose_totals:
            return RuleOutcome.forbid(
                "rule.per_recipient_daily_amount_hidden", limit=format_money(limit, c)
            )
        return RuleOutcome.forbid(
            "rule.per_recipient_daily_amount",
            total=format_money(total, c),
            already=format_money(facts.recipient_daily_total_minor, c),
            limit=format_money(limit, c),
        )


class RecipientBlocked(Rule):
    """No payouts to a blocklisted recipient.

    Prevents paying accounts already known for fraud, chargebacks or abuse, whoever asks.
    """

    name = "recipient_blocked"
    field = "recipient"

    def evaluate(self, facts: PayoutFacts, policy: Policy) -> RuleOutcome | None:
        if not facts.recipient_blocked:
            return None
        return RuleOutcome.forbid("rule.recipient_blocked")


class DuplicateSuspected(Rule):
    """A payout like a recent one (same ticket, recipient and amount) needs a human look.

    Prevents double payment when a helpdesk retries with a new idempotency key, or an operator
    (or two) submits the same refund twice; a genuine second payout is still possible.
    """

    name = "duplicate_suspected"
    field = "ticket"

    def evaluate(self, facts: PayoutFacts, policy: Policy) -> RuleOutcome | None:
        if not facts.duplicate_suspected or policy.duplicate_window_hours == 0:
            return None
        return RuleOutcome.require_approval(
            "A payout with the same ticket, recipient and amount was requested in the last "
            f"{policy.duplicate_window_hours} hour(s) under another idempotency key."
        )


class RecipientWarnings(Rule):
    """A recipient that passed validation only with warnings needs a human look.

    Prevents auto-paying a likely mistyped or suspicious account (e.g. a card number failing
    its Luhn check), where money would be lost or misdirected.
    """

    name = "recipient_warnings"
    field = "recipient"

    def evaluate(self, facts: PayoutFacts, policy: Policy) -> RuleOutcome | None:
        if not facts.recipient_warnings:
            return None
        return RuleOutcome.require_approval(
            f"Recipient validation raised warning(s): {', '.join(facts.recipient_warnings)}."
        )


class RequesterUnverified(Rule):
    """With ``approvals.require_operator_key``, a request whose API key is not bound to its
    requester is never approved on the requester's authority: a person must approve it.

    Prevents an integration key from naming a supervisor as requester to have a payout
    auto-approved under the supervisor's limit, when the person at the helpdesk is an agent
    whose own limit is far lower (or nobody at all). The request limits (``request_max``,
    daily totals) still apply to the operator named.
    """

    name = "requester_unverified"
    field = "requested_by"

    def evaluate(self, facts: PayoutFacts, policy: Policy) -> RuleOutcome | None:
        if facts.requester_verified or not policy.require_operator_key:
            return None
        return RuleOutcome.require_approval(
            f"The API key is not bound to {facts.requester_id}, so the request is not approved "
            "on their authority (policy approvals.require_operator_key); an operator must "
            "approve it."
        )


class OpenAnomaly(Rule):
    """With ``review.hold_open_anomalies``, a payout whose requester or recipient is the
    subject of an open review anomaly (review/detectors.py) needs a person's approval.

    Prevents a pattern the periodic review flagged (split payouts, a recipient collecting on
    many tickets, a requester's sudden volume) from carrying on automatically while finance
    has not yet looked at it.
    """

    name = "open_anomaly"
    field = "requested_by"

    def evaluate(self, facts: PayoutFacts, policy: Policy) -> RuleOutcome | None:
        if not facts.open_anomaly or not policy.review.hold_open_anomalies:
            return None
        return RuleOutcome.require_approval(
            "The requester or the recipient is the subject of an open review anomaly "
            "(policy review.hold_open_anomalies); an operator must approve it."
        )


class RoleAutoApproveLimit(Rule):
    """Above the role's auto-approval limit, a second person must approve.

    Prevents one operator from moving meaningful money alone (four-eyes principle). A currency
    missing from ``auto_approve_max`` always needs approval.
    """

    name = "role_auto_approve_limit"
    field = "amount"

    def evaluate(self, facts: PayoutFacts, policy: Policy) -> RuleOutcome | None:
        role = _known_role(facts, policy)
        if role is None:
            return None
        limit = role.auto_approve_max.get(facts.currency)
        if limit is None:
            who = _role_name(facts, role).capitalize()
            return RuleOutcome.require_approval(
                f"{who} has no auto-approval limit in {facts.currency}."
            )
        if facts.amount_minor <= limit:
            return None
        amount = format_money(facts.amount_minor, facts.currency)
        if not facts.disclose_requester:
            return RuleOutcome.require_approval(
                f"{amount} exceeds the requester's auto-approval limit."
            )
        return RuleOutcome.require_approval(
            f"{amount} exceeds the {role.name} auto-approval limit of "
            f"{format_money(limit, facts.currency)}."
        )

    def within_limit_message(self, facts: PayoutFacts, policy: Policy) -> str:
        """Why a payout this rule did not flag may go through without approval."""
        role = _known_role(facts, policy)
        limit = None if role is None else role.auto_approve_max.get(facts.currency)
        if role is None or limit is None or not facts.disclose_requester:
            return "within auto-approval limit"
        return (
            f"within auto-approval limit: {format_money(facts.amount_minor, facts.currency)} "
            f"does not exceed the {role.name} limit of {format_money(limit, facts.currency)}."
        )


class DualApprovalOver(Rule):
    """Above ``dual_approval_over``, two different approvers must approve.

    Prevents a single colluding or compromised approver from releasing a large payout.
    """

    name = "dual_approval_over"
    field = "amount"

    def evaluate(self, facts: PayoutFacts, policy: Policy) -> RuleOutcome | None:
        threshold = policy.dual_approval_over.get(facts.currency)
        if threshold is None or facts.amount_minor <= threshold:
            return None
        return RuleOutcome.require_approval(
            f"{format_money(facts.amount_minor, facts.currency)} exceeds the dual-approval "
            f"threshold of {format_money(threshold, facts.currency)}; two approvals are required.",
            approvals=2,
        )


RULES: tuple[Rule, ...] = (
    OperatorActive(),
    ReasonAllowed(),
    CurrencyAllowed(),
    RequestMax(),
    PerTicketMax(),
    DailyRequestTotal(),
    PerRecipientDailyCount(),
    PerRecipientDailyAmount(),
    RecipientBlocked(),
    DuplicateSuspected(),
    RecipientWarnings(),
    RequesterUnverified(),
    OpenAnomaly(),
    RoleAutoApproveLimit(),
    DualApprovalOver(),
)
