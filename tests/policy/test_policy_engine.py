"""Policy rules and the decision engine, at every limit's boundary."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from payoutsvc.money import format_money
from payoutsvc.policy.document import (
    DEFAULT_POLICY_DOCUMENT,
    Policy,
    default_policy,
    parse_policy_document,
)
from payoutsvc.policy.engine import (
    PayoutFacts,
    PolicyDecision,
    PolicyReason,
    approver_limit_allows,
    duplicate_window_start,
    evaluate_policy,
    policy_day_bounds,
)
from payoutsvc.policy.rules import RULES, RuleOutcome

VERSION = 7
POLICY = default_policy(VERSION)


def _lift_recipient_and_ticket_caps(d: dict[str, Any]) -> None:
    # The default per-ticket / per-recipient caps (5000.00 CNY) forbid anything above them, so
    # dual approval (over 10000.00 CNY) is only reachable once they are lifted.
    d["per_ticket_max"] = {}
    d["per_recipient_daily"]["amount"] = {}


def _policy(mutate: Callable[[dict[str, Any]], None]) -> Policy:
    doc = copy.deepcopy(DEFAULT_POLICY_DOCUMENT)
    mutate(doc)
    return Policy.from_document(parse_policy_document(doc), VERSION)


def _facts(**changes: Any) -> PayoutFacts:
    base = PayoutFacts(
        amount_minor=1250,
        currency="CNY",
        reason="refund",
        requester_id="agent-17",
        requester_role="agent",
        requester_active=True,
        requester_daily_total_minor=0,
        ticket_total_minor=0,
        recipient_daily_count=0,
        recipient_daily_total_minor=0,
        recipient_blocked=False,
        duplicate_suspected=False,
        recipient_warnings=(),
    )
    return dataclasses.replace(base, **changes)


def _rules(decision: PolicyDecision) -> list[str]:
    return [reason.rule for reason in decision.reasons]


def _assert_allowed(decision: PolicyDecision) -> None:
    assert decision.decision != "forbidden", decision.reasons


def _assert_forbidden_by(decision: PolicyDecision, rule: str) -> None:
    assert decision.decision == "forbidden"
    assert _rules(decision) == [rule]
    assert decision.required_approvals == 0


# --- the rule list ------------------------------------------------------------------------


def test_rule_order_and_names_are_stable() -> None:
    assert [rule.name for rule in RULES] == [
        "operator_active",
        "reason_allowed",
        "currency_allowed",
        "request_max",
        "per_ticket_max",
        "daily_request_total",
        "per_recipient_daily_count",
        "per_recipient_daily_amount",
        "recipient_blocked",
        "duplicate_suspected",
        "recipient_warnings",
        "requester_unverified",
        "open_anomaly",
        "role_auto_approve_limit",
        "dual_approval_over",
    ]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_every_rule_documents_the_abuse_it_prevents(rule: Any) -> None:
    doc = type(rule).__doc__ or ""
    assert "revent" in doc, f"{rule.name} must say what abuse it prevents"
    assert rule.field


def test_rule_outcome_invariants() -> None:
    with pytest.raises(ValueError, match="1 or 2"):
        RuleOutcome.require_approval("x", approvals=3)
    with pytest.raises(ValueError, match="no approvals"):
        RuleOutcome("forbid", "x", 1)


def test_format_money() -> None:
    assert format_money(1250, "CNY") == "12.50 CNY"
    assert format_money(500, "JPY") == "500 JPY"
    assert format_money(5, "QQQ") == "5 minor units of QQQ"


# --- the three decisions ------------------------------------------------------------------


def test_small_payout_is_auto_approved_and_explained() -> None:
    decision = evaluate_policy(_facts(), POLICY)
    assert decision.decision == "auto_approved"
    assert decision.auto_approved
    assert decision.required_approvals == 0
    assert decision.version == VERSION
    assert decision.as_json() == {
        "version": VERSION,
        "decision": "auto_approved",
        "reasons": [
            {
                "rule": "role_auto_approve_limit",
                "message": "within auto-approval limit: 12.50 CNY does not exceed the agent "
                "limit of 50.00 CNY.",
            }
        ],
    }
    assert decision.violation_errors() == []


def test_auto_approve_limit_is_inclusive() -> None:
    assert evaluate_policy(_facts(amount_minor=5000), POLICY).decision == "auto_approved"
    decision = evaluate_policy(_facts(amount_minor=5001), POLICY)
    assert decision.decision == "approval_required"
    assert decision.required_approvals == 1
    assert decision.as_json() == {
        "version": VERSION,
        "decision": "approval_required",
        "reasons": [
            {
                "rule": "role_auto_approve_limit",
                "message": "50.01 CNY exceeds the agent auto-approval limit of 50.00 CNY.",
            }
        ],
    }


def test_zero_auto_approve_limit_always_needs_approval() -> None:
    decision = evaluate_policy(_facts(requester_role="finance", amount_minor=1), POLICY)
    assert decision.decision == "approval_required"
    assert _rules(decision) == ["role_auto_approve_limit"]


def test_currency_missing_from_auto_approve_map_always_needs_approval() -> None:
    policy = _policy(lambda d: d["roles"]["agent"]["auto_approve_max"].pop("USD"))
    decision = evaluate_policy(_facts(currency="USD", amount_minor=1), policy)
    assert decision.decision == "approval_required"
    assert _rules(decision) == ["role_auto_approve_limit"]
    assert "no auto-approval limit in USD" in decision.reasons[0].message


def test_forbidden_lists_every_violation_and_no_approval_reasons() -> None:
    facts = _facts(
        amount_minor=60_000,  # over request_max and the auto limit
        reason="partner_payment",
        recipient_blocked=True,
        duplicate_suspected=True,
        recipient_warnings=("luhn_mismatch",),
    )
    decision = evaluate_policy(facts, POLICY)
    assert decision.forbidden
    assert decision.required_approvals == 0
    assert _rules(decision) == ["reason_allowed", "request_max", "recipient_blocked"]
    assert decision.as_json()["decision"] == "forbidden"


def test_violation_errors_and_problem() -> None:
    decision = evaluate_policy(_facts(amount_minor=50_001, recipient_blocked=True), POLICY)
    errors = decision.violation_errors()
    assert [(e.field, e.code) for e in errors] == [
        ("amount", "request_max"),
        ("recipient", "recipient_blocked"),
    ]
    problem = decision.to_service_error().to_problem()
    assert problem["status"] == 422
    assert problem["code"] == "policy_violation"
    assert problem["errors"][0] == {
        "field": "amount",
        "code": "request_max",
        "message": "500.01 CNY exceeds the agent request limit of 500.00 CNY.",
    }


def test_non_forbidden_decision_is_no_error() -> None:
    with pytest.raises(ValueError, match="forbidden"):
        evaluate_policy(_facts(), POLICY).to_service_error()


def test_policy_reason_json_has_rule_and_message_only() -> None:
    assert PolicyReason("x", "y", "amount").as_json() == {"rule": "x", "message": "y"}


# --- operator_active ----------------------------------------------------------------------


def test_unknown_operator_is_forbidden() -> None:
    decision = evaluate_policy(_facts(requester_role=None), POLICY)
    _assert_forbidden_by(decision, "operator_active")
    assert "not a known operator" in decision.reasons[0].message
    assert decision.violation_errors()[0].field == "requested_by"


def test_disabled_operator_is_forbidden() -> None:
    decision = evaluate_policy(_facts(requester_active=False), POLICY)
    _assert_forbidden_by(decision, "operator_active")
    assert "disabled" in decision.reasons[0].message


def test_unknown_operator_skips_role_rules_but_not_policy_caps() -> None:
    facts = _facts(requester_role=None, amount_minor=10**9, reason="other")
    decision = evaluate_policy(facts, POLICY)
    assert _rules(decision) == ["operator_active", "per_ticket_max", "per_recipient_daily_amount"]


def test_role_missing_from_policy_is_forbidden() -> None:
    decision = evaluate_policy(_facts(requester_role="intern"), POLICY)
    _assert_forbidden_by(decision, "operator_active")
    assert "'intern'" in decision.reasons[0].message
    assert f"version {VERSION}" in decision.reasons[0].message


# --- reason_allowed / currency_allowed ----------------------------------------------------


@pytest.mark.parametrize("reason", ["reimbursement", "partner_payment", "other"])
def test_agent_reason_not_allowed(reason: str) -> None:
    decision = evaluate_policy(_facts(reason=reason), POLICY)
    _assert_forbidden_by(decision, "reason_allowed")
    assert decision.reasons[0].message == (
        f"Reason {reason!r} is not allowed for the agent role (allowed: refund, compensation)."
    )


@pytest.mark.parametrize("reason", ["refund", "compensation"])
def test_agent_reason_allowed(reason: str) -> None:
    assert evaluate_policy(_facts(reason=reason), POLICY).decision == "auto_approved"


def test_null_reasons_allow_any_reason() -> None:
    facts = _facts(requester_role="supervisor", reason="partner_payment")
    assert evaluate_policy(facts, POLICY).decision == "auto_approved"


def test_currency_not_in_policy_is_forbidden() -> None:
    decision = evaluate_policy(_facts(currency="JPY", amount_minor=100), POLICY)
    _assert_forbidden_by(decision, "currency_allowed")
    assert decision.reasons[0].message == (
        "JPY is not an allowed currency (allowed: CNY, USD, EUR)."
    )


def test_unknown_currency_does_not_crash() -> None:
    decision = evaluate_policy(_facts(currency="QQQ"), POLICY)
    assert decision.forbidden
    assert "currency_allowed" in _rules(decision)


@pytest.mark.parametrize("cap_map", ["request_max", "daily_request_total"])
def test_currency_missing_from_role_map_cannot_be_requested(cap_map: str) -> None:
    policy = _policy(lambda d: d["roles"]["agent"][cap_map].pop("EUR"))
    decision = evaluate_policy(_facts(currency="EUR", amount_minor=100), policy)
    _assert_forbidden_by(decision, "currency_allowed")
    assert decision.reasons[0].message == "The agent role cannot request payouts in EUR."
    # Other currencies are unaffected.
    assert evaluate_policy(_facts(currency="USD", amount_minor=100), policy).auto_approved


# --- amount caps at their boundaries ------------------------------------------------------


def test_request_max_boundary() -> None:
    at_limit = evaluate_policy(_facts(amount_minor=50_000), POLICY)
    assert at_limit.decision == "approval_required"
    over = evaluate_policy(_facts(amount_minor=50_001), POLICY)
    _assert_forbidden_by(over, "request_max")
    assert over.reasons[0].message == "500.01 CNY exceeds the agent request limit of 500.00 CNY."


def test_request_max_in_other_currency() -> None:
    assert not evaluate_policy(_facts(currency="USD", amount_minor=7_000), POLICY).forbidden
    over = evaluate_policy(_facts(currency="USD", amount_minor=7_001), POLICY)
    _assert_forbidden_by(over, "request_max")
    assert over.reasons[0].message == "70.01 USD exceeds the agent request limit of 70.00 USD."


def test_per_ticket_max_boundary() -> None:
    # 4500.00 already on the ticket + 500.00 = 5000.00, exactly the cap.
    _assert_allowed(
        evaluate_policy(_facts(amount_minor=50_000, ticket_total_minor=450_000), POLICY)
    )
    over = evaluate_policy(_facts(amount_minor=50_000, ticket_total_minor=450_001), POLICY)
    _assert_forbidden_by(over, "per_ticket_max")
    assert over.reasons[0].message == (
        "This payout would bring the ticket's total to 5000.01 CNY (already 4500.01 CNY), "
        "over the per-ticket limit of 5000.00 CNY."
    )
    assert over.violation_errors()[0].field == "ticket"


def test_per_ticket_max_absent_currency_means_no_cap() -> None:
    policy = _policy(lambda d: d["per_ticket_max"].pop("CNY"))
    _assert_allowed(evaluate_policy(_facts(ticket_total_minor=10**12), policy))


def test_daily_request_total_boundary() -> None:
    _assert_allowed(
        evaluate_policy(_facts(amount_minor=50_000, requester_daily_total_minor=150_000), POLICY)
    )
    over = evaluate_policy(_facts(amount_minor=50_000, requester_daily_total_minor=150_001), POLICY)
    _assert_forbidden_by(over, "daily_request_total")
    assert over.reasons[0].message == (
        "This payout would bring agent-17's total for today to 2000.01 CNY "
        "(already 1500.01 CNY), over the agent daily limit of 2000.00 CNY."
    )


def test_daily_request_total_one_minor_unit() -> None:
    assert evaluate_policy(_facts(amount_minor=1, requester_daily_total_minor=199_999), POLICY)
    over = evaluate_policy(_facts(amount_minor=1, requester_daily_total_minor=200_000), POLICY)
    _assert_forbidden_by(over, "daily_request_total")


def test_per_recipient_daily_count_boundary() -> None:
    assert evaluate_policy(_facts(recipient_daily_count=2), POLICY).auto_approved
    over = evaluate_policy(_facts(recipient_daily_count=3), POLICY)
    _assert_forbidden_by(over, "per_recipient_daily_count")
    assert over.reasons[0].message == (
        "The recipient already has 3 payout(s) today; the limit is 3 per recipient per day."
    )


def test_per_recipient_daily_count_null_means_no_cap() -> None:
    policy = _policy(lambda d: d["per_recipient_daily"].update(count=None))
    assert evaluate_policy(_facts(recipient_daily_count=10_000), policy).auto_approved


def test_per_recipient_daily_amount_boundary() -> None:
    facts = _facts(requester_role="supervisor", amount_minor=100_000)
    _assert_allowed(
        evaluate_policy(dataclasses.replace(facts, recipient_daily_total_minor=400_000), POLICY)
    )
    over = evaluate_policy(dataclasses.replace(facts, recipient_daily_total_minor=400_001), POLICY)
    _assert_forbidden_by(over, "per_recipient_daily_amount")
    assert over.reasons[0].message == (
        "This payout would bring the recipient's total for today to 5000.01 CNY "
        "(already 4000.01 CNY), over the per-recipient daily limit of 5000.00 CNY."
    )


def test_recipient_blocked_is_forbidden() -> None:
    decision = evaluate_policy(_facts(recipient_blocked=True), POLICY)
    _assert_forbidden_by(decision, "recipient_blocked")


# --- approval demands ---------------------------------------------------------------------


def test_suspected_duplicate_is_never_auto_approved() -> None:
    decision = evaluate_policy(_facts(amount_minor=1, duplicate_suspected=True), POLICY)
    assert decision.decision == "approval_required"
    assert decision.required_approvals == 1
    assert _rules(decision) == ["duplicate_suspected"]
    assert "24 hour(s)" in decision.reasons[0].message


def test_duplicate_suspicion_off_when_window_is_zero() -> None:
    policy = _policy(lambda d: d.update(duplicate_window_hours=0))
    assert evaluate_policy(_facts(duplicate_suspected=True), policy).auto_approved


def test_recipient_warnings_are_never_auto_approved() -> None:
    facts = _facts(amount_minor=1, recipient_warnings=("luhn_mismatch", "name_mismatch"))
    decision = evaluate_policy(facts, POLICY)
    assert decision.decision == "approval_required"
    assert decision.required_approvals == 1
    assert decision.as_json()["reasons"] == [
        {
            "rule": "recipient_warnings",
            "message": "Recipient validation raised warning(s): luhn_mismatch, name_mismatch.",
        }
    ]


def test_all_approval_reasons_are_listed_in_rule_order() -> None:
    facts = _facts(amount_minor=5_001, duplicate_suspected=True, recipient_warnings=("w",))
    decision = evaluate_policy(facts, POLICY)
    assert _rules(decision) == [
        "duplicate_suspected",
        "recipient_warnings",
        "role_auto_approve_limit",
    ]
    assert decision.required_approvals == 1


def test_dual_approval_boundary() -> None:
    finance = _facts(requester_role="finance", reason="partner_payment")
    policy = _policy(_lift_recipient_and_ticket_caps)
    at = evaluate_policy(dataclasses.replace(finance, amount_minor=1_000_000), policy)
    assert at.decision == "approval_required"
    assert at.required_approvals == 1
    assert _rules(at) == ["role_auto_approve_limit"]
    over = evaluate_policy(dataclasses.replace(finance, amount_minor=1_000_001), policy)
    assert over.decision == "approval_required"
    assert over.required_approvals == 2
    assert _rules(over) == ["role_auto_approve_limit", "dual_approval_over"]
    assert over.reasons[1].message == (
        "10000.01 CNY exceeds the dual-approval threshold of 10000.00 CNY; "
        "two approvals are required."
    )


def test_dual_approval_even_within_auto_limit() -> None:
    # A role trusted to auto-approve large amounts still needs two approvers past the threshold.
    def mutate(d: dict[str, Any]) -> None:
        d["dual_approval_over"]["CNY"] = "100.00"

    decision = evaluate_policy(_facts(amount_minor=10_001), _policy(mutate))
    assert decision.required_approvals == 2
    assert _rules(decision) == ["role_auto_approve_limit", "dual_approval_over"]

    def mutate_with_high_auto_limit(d: dict[str, Any]) -> None:
        mutate(d)
        d["roles"]["agent"]["auto_approve_max"]["CNY"] = "500.00"

    decision = evaluate_policy(_facts(amount_minor=10_001), _policy(mutate_with_high_auto_limit))
    assert _rules(decision) == ["dual_approval_over"]
    assert decision.required_approvals == 2


def test_dual_approval_absent_currency_means_no_threshold() -> None:
    def mutate(d: dict[str, Any]) -> None:
        _lift_recipient_and_ticket_caps(d)
        d["dual_approval_over"].pop("USD")

    decision = evaluate_policy(
        _facts(requester_role="finance", currency="USD", amount_minor=700_000), _policy(mutate)
    )
    assert decision.decision == "approval_required"
    assert decision.required_approvals == 1
    assert _rules(decision) == ["role_auto_approve_limit"]


def test_default_caps_forbid_before_dual_approval() -> None:
    facts = _facts(requester_role="finance", amount_minor=1_000_001)
    decision = evaluate_policy(facts, POLICY)
    assert _rules(decision) == ["per_ticket_max", "per_recipient_daily_amount"]


# --- approvers ----------------------------------------------------------------------------


def test_approver_limit_allows() -> None:
    assert approver_limit_allows(POLICY, "supervisor", 500_000, "CNY")
    assert not approver_limit_allows(POLICY, "supervisor", 500_001, "CNY")
    assert approver_limit_allows(POLICY, "finance", 5_000_000, "CNY")
    assert approver_limit_allows(POLICY, "supervisor", 70_000, "USD")
    assert not approver_limit_allows(POLICY, "supervisor", 70_001, "USD")
    assert not approver_limit_allows(POLICY, "agent", 1, "CNY")  # approve_max: null
    assert not approver_limit_allows(POLICY, "ghost", 1, "CNY")
    assert not approver_limit_allows(POLICY, None, 1, "CNY")
    assert not approver_limit_allows(POLICY, "finance", 1, "JPY")
    policy = _policy(lambda d: d["roles"]["finance"]["approve_max"].pop("EUR"))
    assert not approver_limit_allows(policy, "finance", 1, "EUR")


# --- policy day and duplicate window ------------------------------------------------------


def test_day_bounds_utc() -> None:
    start, end = policy_day_bounds(POLICY, datetime(2024, 5, 1, 23, 59, 59, tzinfo=UTC))
    assert start == datetime(2024, 5, 1, tzinfo=UTC)
    assert end == datetime(2024, 5, 2, tzinfo=UTC)
    assert start.utcoffset() == timedelta(0)


def test_day_bounds_asia_shanghai() -> None:
    policy = _policy(lambda d: d.update(timezone="Asia/Shanghai"))
    # 2024-05-01 17:30 UTC is 2024-05-02 01:30 in Shanghai (UTC+8).
    start, end = policy_day_bounds(policy, datetime(2024, 5, 1, 17, 30, tzinfo=UTC))
    assert start == datetime(2024, 5, 1, 16, 0, tzinfo=UTC)
    assert end == datetime(2024, 5, 2, 16, 0, tzinfo=UTC)
    assert start.tzinfo is UTC
    assert end.tzinfo is UTC
    # One second before Shanghai midnight still belongs to the previous day.
    start, end = policy_day_bounds(policy, datetime(2024, 5, 1, 15, 59, 59, tzinfo=UTC))
    assert (start, end) == (
        datetime(2024, 4, 30, 16, 0, tzinfo=UTC),
        datetime(2024, 5, 1, 16, 0, tzinfo=UTC),
    )
    # Exactly midnight in Shanghai starts the new day (half-open interval).
    start, _ = policy_day_bounds(policy, datetime(2024, 5, 1, 16, 0, tzinfo=UTC))
    assert start == datetime(2024, 5, 1, 16, 0, tzinfo=UTC)


def test_day_bounds_accept_any_aware_now() -> None:
    policy = _policy(lambda d: d.update(timezone="Asia/Shanghai"))
    beijing = timezone(timedelta(hours=8))
    start, end = policy_day_bounds(policy, datetime(2024, 5, 2, 1, 30, tzinfo=beijing))
    assert (start, end) == (
        datetime(2024, 5, 1, 16, 0, tzinfo=UTC),
        datetime(2024, 5, 2, 16, 0, tzinfo=UTC),
    )


def test_day_bounds_across_dst_change() -> None:
    policy = _policy(lambda d: d.update(timezone="America/New_York"))
    start, end = policy_day_bounds(policy, datetime(2024, 3, 10, 12, 0, tzinfo=UTC))
    assert start == datetime(2024, 3, 10, 5, 0, tzinfo=UTC)  # EST midnight
    assert end == datetime(2024, 3, 11, 4, 0, tzinfo=UTC)  # EDT midnight
    assert end - start == timedelta(hours=23)


def test_day_bounds_need_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        policy_day_bounds(POLICY, datetime(2024, 5, 1, 12, 0))


def test_duplicate_window_start() -> None:
    now = datetime(2024, 5, 2, 12, 0, tzinfo=UTC)
    assert duplicate_window_start(POLICY, now) == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    off = _policy(lambda d: d.update(duplicate_window_hours=0))
    assert duplicate_window_start(off, now) is None


# --- who asked, and what the caller may be told ---------------------------------------------


def test_an_unverified_requester_is_never_auto_approved_while_keys_are_required() -> None:
    unverified = _facts(requester_verified=False)
    decision = evaluate_policy(unverified, POLICY)
    assert (decision.decision, _rules(decision)) == ("approval_required", ["requester_unverified"])
    trusting = _policy(lambda d: d.update(approvals={"require_operator_key": False}))
    assert evaluate_policy(unverified, trusting).auto_approved
    assert evaluate_policy(_facts(), POLICY).auto_approved


def test_discreet_messages_name_the_limit_without_others_amounts_or_the_role() -> None:
    full = _facts(
        amount_minor=60_000,
        ticket_total_minor=480_000,
        requester_daily_total_minor=190_000,
        recipient_daily_total_minor=470_000,
        recipient_daily_count=3,
    )
    discreet = dataclasses.replace(full, disclose_totals=False, disclose_requester=False)
    told = {r.rule: r.message for r in evaluate_policy(full, POLICY).reasons}
    hidden = {r.rule: r.message for r in evaluate_policy(discreet, POLICY).reasons}
    assert (
        set(told)
        == set(hidden)
        == {
            "request_max",
            "per_ticket_max",
            "daily_request_total",
            "per_recipient_daily_count",
            "per_recipient_daily_amount",
        }
    )
    assert "already 4800.00 CNY" in told["per_ticket_max"]
    assert "agent request limit of 500.00 CNY" in told["request_max"]
    for message in hidden.values():
        for secret in ("4800.00", "1900.00", "4700.00", "already", "agent ", "500.00 CNY"):
            assert secret not in message, (secret, message)
    assert "per-ticket limit of 5000.00 CNY" in hidden["per_ticket_max"]
    unknown = dataclasses.replace(discreet, requester_role=None, requester_active=False)
    disabled = dataclasses.replace(discreet, requester_active=False)
    # An unknown and a disabled requester are refused in the same words.
    assert (
        evaluate_policy(unknown, POLICY).reasons[0] == evaluate_policy(disabled, POLICY).reasons[0]
    )
