"""Policy document validation, the internal ``Policy`` form and policy files."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from payoutsvc.errors import ServiceError
from payoutsvc.policy.document import (
    DEFAULT_POLICY_DOCUMENT,
    PAYOUT_REASONS,
    Policy,
    PolicyDocumentIn,
    PolicyFileError,
    default_policy,
    load_policy_file,
    parse_policy_document,
)

Mutation = Callable[[dict[str, Any]], None]


def _doc(mutate: Mutation | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(DEFAULT_POLICY_DOCUMENT)
    if mutate is not None:
        mutate(doc)
    return doc


def _errors(doc: object) -> list[tuple[str, str]]:
    with pytest.raises(ServiceError) as info:
        parse_policy_document(doc)
    assert info.value.status == 422
    assert info.value.code == "validation_failed"
    assert info.value.errors, "a validation failure must name its fields"
    return [(e.field, e.code) for e in info.value.errors]


# --- the default policy -------------------------------------------------------------------


def test_default_document_is_valid_and_shaped_like_the_api_example() -> None:
    doc = parse_policy_document(DEFAULT_POLICY_DOCUMENT)
    assert list(doc.roles) == ["agent", "supervisor", "finance"]
    assert doc.currencies == ["CNY", "USD", "EUR"]
    agent = DEFAULT_POLICY_DOCUMENT["roles"]["agent"]
    assert agent["request_max"]["CNY"] == "500.00"
    assert agent["auto_approve_max"]["CNY"] == "50.00"
    assert agent["approve_max"] is None
    assert agent["daily_request_total"]["CNY"] == "2000.00"
    assert agent["reasons"] == ["refund", "compensation"]
    supervisor = DEFAULT_POLICY_DOCUMENT["roles"]["supervisor"]
    assert supervisor["approve_max"]["CNY"] == "5000.00"
    assert supervisor["reasons"] is None
    finance = DEFAULT_POLICY_DOCUMENT["roles"]["finance"]
    assert finance["request_max"]["CNY"] == "50000.00"
    assert finance["daily_request_total"]["CNY"] == "200000.00"
    assert DEFAULT_POLICY_DOCUMENT["dual_approval_over"]["CNY"] == "10000.00"
    assert DEFAULT_POLICY_DOCUMENT["per_ticket_max"]["CNY"] == "5000.00"
    assert DEFAULT_POLICY_DOCUMENT["per_recipient_daily"] == {
        "count": 3,
        "amount": {"CNY": "5000.00", "USD": "700.00", "EUR": "700.00"},
    }
    assert DEFAULT_POLICY_DOCUMENT["duplicate_window_hours"] == 24
    assert DEFAULT_POLICY_DOCUMENT["timezone"] == "UTC"
    assert "version" not in DEFAULT_POLICY_DOCUMENT


def test_every_default_role_has_limits_in_every_currency() -> None:
    for role in DEFAULT_POLICY_DOCUMENT["roles"].values():
        for key in ("request_max", "auto_approve_max", "daily_request_total"):
            assert set(role[key]) == {"CNY", "USD", "EUR"}


def test_default_round_trips_exactly() -> None:
    policy = default_policy(version=3)
    rendered = policy.to_document()
    assert rendered["version"] == 3
    without_version = {k: v for k, v in rendered.items() if k != "version"}
    assert without_version == DEFAULT_POLICY_DOCUMENT
    # Same key order too, so the JSON text is identical.
    assert json.dumps(without_version) == json.dumps(DEFAULT_POLICY_DOCUMENT)
    again = Policy.from_document(parse_policy_document(without_version), 3)
    assert again == policy
    assert again.to_document() == rendered


def test_parsing_does_not_mutate_the_default() -> None:
    before = copy.deepcopy(DEFAULT_POLICY_DOCUMENT)
    default_policy()
    assert before == DEFAULT_POLICY_DOCUMENT


def test_policy_holds_minor_units() -> None:
    policy = default_policy(version=1)
    agent = policy.roles["agent"]
    assert agent.request_max["CNY"] == 50_000
    assert agent.auto_approve_max["CNY"] == 5_000
    assert agent.approve_max is None
    assert agent.reasons == ("refund", "compensation")
    assert policy.roles["finance"].auto_approve_max["CNY"] == 0
    assert policy.roles["supervisor"].reasons is None
    assert policy.dual_approval_over["CNY"] == 1_000_000
    assert policy.per_recipient_daily_count == 3
    assert policy.per_recipient_daily_amount["USD"] == 70_000
    assert policy.role("agent") is agent
    assert policy.role("ghost") is None
    assert policy.role(None) is None
    assert str(policy.zone) == "UTC"
    assert policy.duplicate_window.total_seconds() == 24 * 3600


def test_amounts_are_rendered_canonically() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["roles"]["finance"]["auto_approve_max"]["CNY"] = "0"
        d["per_ticket_max"]["CNY"] = "5000"
        d["currencies"].append("JPY")
        d["per_ticket_max"]["JPY"] = "100000"

    rendered = Policy.from_document(parse_policy_document(_doc(mutate)), 1).to_document()
    assert rendered["roles"]["finance"]["auto_approve_max"]["CNY"] == "0.00"
    assert rendered["per_ticket_max"]["CNY"] == "5000.00"
    assert rendered["per_ticket_max"]["JPY"] == "100000"


def test_from_document_rejects_version_zero() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        Policy.from_document(parse_policy_document(DEFAULT_POLICY_DOCUMENT), 0)


# --- valid variations ---------------------------------------------------------------------


def test_timezone_defaults_to_utc() -> None:
    doc = _doc(lambda d: d.pop("timezone"))
    assert parse_policy_document(doc).timezone == "UTC"


def test_timezone_is_kept() -> None:
    doc = parse_policy_document(_doc(lambda d: d.update(timezone="Asia/Shanghai")))
    policy = Policy.from_document(doc, 2)
    assert policy.timezone == "Asia/Shanghai"
    assert policy.to_document()["timezone"] == "Asia/Shanghai"


def test_nulls_and_open_caps_are_accepted() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["roles"]["agent"]["reasons"] = None
        d["roles"]["supervisor"]["approve_max"] = None
        d["per_recipient_daily"] = {"count": None, "amount": {}}
        d["dual_approval_over"] = {}
        d["duplicate_window_hours"] = 0

    policy = Policy.from_document(parse_policy_document(_doc(mutate)), 4)
    assert policy.roles["agent"].reasons is None
    assert policy.roles["supervisor"].approve_max is None
    assert policy.per_recipient_daily_count is None
    rendered = policy.to_document()
    assert rendered["per_recipient_daily"] == {"count": None, "amount": {}}
    assert rendered["dual_approval_over"] == {}
    assert rendered["roles"]["supervisor"]["approve_max"] is None


@pytest.mark.parametrize("name", ["a", "ops_lead", "tier-2", "x" * 40])
def test_valid_role_names(name: str) -> None:
    doc = _doc(lambda d: d["roles"].update({name: d["roles"]["agent"]}))
    assert name in parse_policy_document(doc).roles


def test_all_reasons_are_accepted() -> None:
    doc = _doc(lambda d: d["roles"]["agent"].update(reasons=list(PAYOUT_REASONS)))
    assert parse_policy_document(doc).roles["agent"].reasons == list(PAYOUT_REASONS)


# --- invalid documents --------------------------------------------------------------------


def _set_agent_cny(value: object) -> Mutation:
    return lambda d: d["roles"]["agent"]["request_max"].update(CNY=value)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            lambda d: d["roles"]["agent"].update(max_per_week="1.00"),
            ("roles.agent.max_per_week", "unknown_field"),
            id="unknown-role-key",
        ),
        pytest.param(
            lambda d: d.update(surprise=True), ("surprise", "unknown_field"), id="unknown-field"
        ),
        pytest.param(
            lambda d: d["per_recipient_daily"].update(days=1),
            ("per_recipient_daily.days", "unknown_field"),
            id="unknown-nested-field",
        ),
        pytest.param(
            lambda d: d.update(version=3), ("version", "unknown_field"), id="version-not-input"
        ),
        pytest.param(
            lambda d: d["roles"].update({"Agent": d["roles"]["agent"]}),
            ("roles.Agent", "invalid_role_name"),
            id="role-name-uppercase",
        ),
        pytest.param(
            lambda d: d["roles"].update({"1st": d["roles"]["agent"]}),
            ("roles.1st", "invalid_role_name"),
            id="role-name-digit-first",
        ),
        pytest.param(
            lambda d: d["roles"].update({"a" * 41: d["roles"]["agent"]}),
            ("roles." + "a" * 41, "invalid_role_name"),
            id="role-name-too-long",
        ),
        pytest.param(
            lambda d: d["roles"].update({"agent\n": d["roles"]["agent"]}),
            ("roles.agent\n", "invalid_role_name"),
            id="role-name-trailing-newline",
        ),
        pytest.param(
            _set_agent_cny("-1.00"), ("roles.agent.request_max.CNY", "invalid_amount"), id="neg"
        ),
        pytest.param(
            _set_agent_cny("1e3"), ("roles.agent.request_max.CNY", "invalid_amount"), id="exp"
        ),
        pytest.param(
            _set_agent_cny("1,000.00"),
            ("roles.agent.request_max.CNY", "invalid_amount"),
            id="separator",
        ),
        pytest.param(
            _set_agent_cny(""), ("roles.agent.request_max.CNY", "invalid_amount"), id="empty"
        ),
        pytest.param(
            _set_agent_cny("500.001"),
            ("roles.agent.request_max.CNY", "too_many_decimals"),
            id="too-many-decimals",
        ),
        pytest.param(
            _set_agent_cny(500), ("roles.agent.request_max.CNY", "amount_not_string"), id="int"
        ),
        pytest.param(
            _set_agent_cny(500.0),
            ("roles.agent.request_max.CNY", "amount_not_string"),
            id="float",
        ),
        pytest.param(
            lambda d: d["roles"]["agent"]["request_max"].update(XYZ="1.00"),
            ("roles.agent.request_max.XYZ", "unknown_currency"),
            id="unknown-currency",
        ),
        pytest.param(
            lambda d: d["roles"]["agent"]["request_max"].update(cny="1.00"),
            ("roles.agent.request_max.cny", "invalid_currency"),
            id="lowercase-currency",
        ),
        pytest.param(
            lambda d: d["roles"]["agent"]["request_max"].update(JPY="1000"),
            ("roles.agent.request_max.JPY", "currency_not_listed"),
            id="currency-not-in-currencies",
        ),
        pytest.param(
            lambda d: d["per_recipient_daily"]["amount"].update(GBP="1.00"),
            ("per_recipient_daily.amount.GBP", "currency_not_listed"),
            id="recipient-currency-not-listed",
        ),
        pytest.param(
            lambda d: d["roles"]["supervisor"]["approve_max"].update(CNY="-5"),
            ("roles.supervisor.approve_max.CNY", "invalid_amount"),
            id="approve-max-negative",
        ),
        pytest.param(
            lambda d: d["dual_approval_over"].update(USD="1.5.0"),
            ("dual_approval_over.USD", "invalid_amount"),
            id="dual-malformed",
        ),
        pytest.param(
            lambda d: d.update(currencies=["CNY", "USD", "EUR", "ABC"]),
            ("currencies.3", "unknown_currency"),
            id="unknown-listed-currency",
        ),
        pytest.param(
            lambda d: d.update(currencies=["CNY", "USD", "EUR", "XAU"]),
            ("currencies.3", "unsupported_currency"),
            id="no-minor-unit-currency",
        ),
        pytest.param(
            lambda d: d.update(currencies=["CNY", "USD", "EUR", "CNY"]),
            ("currencies.3", "duplicate_currency"),
            id="duplicate-currency",
        ),
        pytest.param(
            lambda d: d.update(currencies=[]), ("currencies", "too_short"), id="no-currencies"
        ),
        pytest.param(lambda d: d.update(roles={}), ("roles", "too_short"), id="no-roles"),
        pytest.param(
            lambda d: d.update(timezone="Mars/Olympus_Mons"),
            ("timezone", "invalid_timezone"),
            id="tz-unknown",
        ),
        pytest.param(
            lambda d: d.update(timezone="../../etc/passwd"),
            ("timezone", "invalid_timezone"),
            id="tz-path",
        ),
        pytest.param(
            lambda d: d.update(timezone="America"), ("timezone", "invalid_timezone"), id="tz-dir"
        ),
        pytest.param(
            lambda d: d.update(timezone="localtime"),
            ("timezone", "invalid_timezone"),
            id="tz-host-local",
        ),
        pytest.param(
            lambda d: d.update(timezone=""), ("timezone", "invalid_timezone"), id="tz-empty"
        ),
        pytest.param(lambda d: d.update(timezone=8), ("timezone", "invalid_type"), id="tz-number"),
        pytest.param(
            lambda d: d.update(duplicate_window_hours=721),
            ("duplicate_window_hours", "out_of_range"),
            id="window-too-long",
        ),
        pytest.param(
            lambda d: d.update(duplicate_window_hours=-1),
            ("duplicate_window_hours", "out_of_range"),
            id="window-negative",
        ),
        pytest.param(
            lambda d: d.update(duplicate_window_hours="24"),
            ("duplicate_window_hours", "invalid_type"),
            id="window-string",
        ),
        pytest.param(
            lambda d: d.update(duplicate_window_hours=True),
            ("duplicate_window_hours", "invalid_type"),
            id="window-bool",
        ),
        pytest.param(
            lambda d: d["roles"]["agent"].update(reasons=["refund", "bonus"]),
            ("roles.agent.reasons.1", "invalid_choice"),
            id="unknown-reason",
        ),
        pytest.param(
            lambda d: d["roles"]["agent"].update(reasons=["refund", "refund"]),
            ("roles.agent.reasons.1", "duplicate_reason"),
            id="duplicate-reason",
        ),
        pytest.param(
            lambda d: d["roles"]["agent"].pop("approve_max"),
            ("roles.agent.approve_max", "required"),
            id="missing-role-field",
        ),
        pytest.param(
            lambda d: d.pop("per_ticket_max"), ("per_ticket_max", "required"), id="missing-field"
        ),
        pytest.param(
            lambda d: d["per_recipient_daily"].update(count=0),
            ("per_recipient_daily.count", "out_of_range"),
            id="count-zero",
        ),
    ],
)
def test_invalid_documents(mutate: Mutation, expected: tuple[str, str]) -> None:
    assert expected in _errors(_doc(mutate))


def test_unknown_role_key_is_the_only_error() -> None:
    doc = _doc(lambda d: d["roles"]["agent"].update(max_per_week="1.00"))
    assert _errors(doc) == [("roles.agent.max_per_week", "unknown_field")]


def test_all_amount_errors_are_reported_together() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["roles"]["agent"]["request_max"]["CNY"] = "-1"
        d["roles"]["finance"]["daily_request_total"]["USD"] = "1.234"
        d["per_ticket_max"]["JPY"] = "5"

    assert _errors(_doc(mutate)) == [
        ("roles.agent.request_max.CNY", "invalid_amount"),
        ("roles.finance.daily_request_total.USD", "too_many_decimals"),
        ("per_ticket_max.JPY", "currency_not_listed"),
    ]


def test_error_detail_names_fields() -> None:
    with pytest.raises(ServiceError) as info:
        parse_policy_document(_doc(_set_agent_cny("1e3")))
    assert "roles.agent.request_max.CNY" in info.value.detail
    problem = info.value.to_problem()
    assert problem["errors"][0]["field"] == "roles.agent.request_max.CNY"


@pytest.mark.parametrize("data", [None, [], "policy", 3])
def test_non_object_documents_are_rejected(data: object) -> None:
    assert _errors(data) == [("body", "invalid_type")]


def test_unknown_field_message_names_the_field() -> None:
    with pytest.raises(ServiceError) as info:
        parse_policy_document(_doc(lambda d: d["roles"]["agent"].update(max_per_week="1")))
    assert info.value.errors[0].message == "Unknown field 'max_per_week'."


def test_zero_amounts_are_allowed() -> None:
    doc = _doc(lambda d: d["roles"]["agent"]["auto_approve_max"].update(CNY="0"))
    assert Policy.from_document(parse_policy_document(doc), 1).roles["agent"].auto_approve_max == {
        "CNY": 0,
        "USD": 700,
        "EUR": 700,
    }


def test_model_validate_applies_the_same_checks() -> None:
    # A route that takes PolicyDocumentIn as its body still gets the semantic checks.
    with pytest.raises(ValueError, match=r"roles\.agent\.request_max\.CNY"):
        PolicyDocumentIn.model_validate(_doc(_set_agent_cny("-1")))


# --- policy files -------------------------------------------------------------------------

_YAML_POLICY = """\
currencies: [CNY]
timezone: Asia/Shanghai
roles:
  agent:
    request_max: {CNY: "500.00"}
    auto_approve_max: {CNY: "50.00"}
    approve_max: null
    daily_request_total: {CNY: "2000.00"}
    reasons: [refund, compensation]
  supervisor:
    request_max: {CNY: "5000.00"}
    auto_approve_max: {CNY: "500.00"}
    approve_max: {CNY: "5000.00"}
    daily_request_total: {CNY: "20000.00"}
    reasons: null
dual_approval_over: {CNY: "10000.00"}
per_ticket_max: {CNY: "5000.00"}
per_recipient_daily: {count: 3, amount: {CNY: "5000.00"}}
duplicate_window_hours: 24
"""


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".YAML"])
def test_load_yaml_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"policy{suffix}"
    path.write_text(_YAML_POLICY, encoding="utf-8")
    doc = load_policy_file(path)
    assert doc.timezone == "Asia/Shanghai"
    assert list(doc.roles) == ["agent", "supervisor"]
    policy = Policy.from_document(doc, 1)
    assert policy.roles["agent"].request_max == {"CNY": 50_000}


def test_load_json_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(DEFAULT_POLICY_DOCUMENT), encoding="utf-8")
    doc = load_policy_file(str(path))
    assert doc == parse_policy_document(DEFAULT_POLICY_DOCUMENT)


def test_yaml_and_json_give_the_same_policy(tmp_path: Path) -> None:
    yaml_path = tmp_path / "p.yaml"
    yaml_path.write_text(_YAML_POLICY, encoding="utf-8")
    from_yaml = Policy.from_document(load_policy_file(yaml_path), 1)
    json_path = tmp_path / "p.json"
    body = {k: v for k, v in from_yaml.to_document().items() if k != "version"}
    json_path.write_text(json.dumps(body), encoding="utf-8")
    assert Policy.from_document(load_policy_file(json_path), 1) == from_yaml


def test_yaml_unquoted_amount_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(_YAML_POLICY.replace('{CNY: "500.00"}', "{CNY: 500.00}", 1), encoding="utf-8")
    with pytest.raises(PolicyFileError) as info:
        load_policy_file(path)
    assert [(e.field, e.code) for e in info.value.errors] == [
        ("roles.agent.request_max.CNY", "amount_not_string")
    ]
    assert "roles.agent.request_max.CNY" in str(info.value)


def test_invalid_json_file_reports_field_errors(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(_doc(lambda d: d.update(timezone="Nowhere/City"))), "utf-8")
    with pytest.raises(PolicyFileError) as info:
        load_policy_file(path)
    assert [(e.field, e.code) for e in info.value.errors] == [("timezone", "invalid_timezone")]


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("policy.toml", "currencies = []", "must end in"),
        ("policy.yaml", "roles: [unclosed", "cannot parse"),
        ("policy.json", "{not json", "cannot parse"),
        ("policy.yaml", "roles: {}\nroles: {}\n", "duplicate key"),
        ("policy.json", '{"roles": {}, "roles": {}}', "duplicate key"),
        ("policy.yaml", "!!python/object/apply:os.system ['true']", "cannot parse"),
    ],
)
def test_bad_policy_files(tmp_path: Path, name: str, text: str, match: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyFileError, match=match):
        load_policy_file(path)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="cannot read"):
        load_policy_file(tmp_path / "absent.yaml")
