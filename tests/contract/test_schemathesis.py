"""Property-based contract test: schemathesis drives the real app (in-process, ASGI) from its
own OpenAPI document, with valid and invalid data, and checks every response against that
document, and that the document is as strict as the validation (API.md, Conventions): data
the document forbids is refused, and data it allows is refused only by a business rule. One
test per operation, and a stateful test that follows the document's links from a created
payout to its actions; the whole module stays well under a minute and a half."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from payoutsvc.connectors.kinds import KINDS
from payoutsvc.main import create_app
from payoutsvc.payouts.schemas import EXAMPLE_REQUEST
from tests.conftest import ADMIN_KEY, make_settings

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}

# The only refusals of data the document allows, each a rule no schema can state: (status,
# problem code) -> why. Anything else refused (validation_failed above all) means the document
# is looser than the validation. Keep this short: an entry here hides a class of requests
# from positive_data_acceptance.
BUSINESS_RULE_REFUSALS: dict[tuple[int, str], str] = {
    (401, "invalid_signature"): "a gateway callback's signature is its credential",
    (403, "operator_key_required"): "the policy's approvals.require_operator_key: approving, "
    "rejecting, releasing, resolving and recording a payment need an operator-bound key",
    (404, "not_found"): "an id (payout, endpoint, operator…) nobody created",
    (409, "invalid_status_transition"): "the action is not allowed in the payout's status",
    (409, "integration_exists"): "the name is taken",
    (409, "operator_exists"): "the operator id is taken",
    (409, "recipient_already_blocked"): "the recipient is already on the blocklist",
    (422, "invalid_cursor"): "a cursor of the right shape that no page of this API handed out",
    (422, "invalid_recipient"): "account checksums (IBAN mod-97, ABA), country lengths, phone "
    "numbering plans, each provider's currencies and amount limits",
    (422, "policy_violation"): "the policy refuses the payout (unknown or disabled requester, "
    "role limits, reasons, currencies)",
    (422, "unknown_operator"): "an operator id that is not registered",
    (422, "webhook_url_refused"): "a webhook URL must resolve to public addresses (DNS decides)",
}
# Cross-field rules inside a 422 validation_failed, by (last part of the field, field code).
BUSINESS_RULE_FIELD_ERRORS: dict[tuple[str, str], str] = {
    ("amount", "too_many_decimals"): "how many decimals depends on the currency (JPY 0, KWD 3)",
    ("operator_id", "required"): "only an operator-bound key may leave out who acts",
    ("requested_by", "required"): "only an operator-bound key may leave out who requests",
    ("requested_by", "operator_active"): "a batch item's requester is a registered operator",
    ("failure_code", "required"): "a payment recorded as failed needs its failure code",
    ("reference", "required"): "a payment recorded as succeeded needs its bank reference",
    ("gateway", "unknown_gateway"): "only the gateways this deployment configures",
    ("items", "too_short"): "a text/csv batch (a plain string to the document) needs a row",
    **{
        (field, code): "a PATCH's credentials are its connector's kind's (the body names none)"
        for kind in KINDS.values()
        for field in kind.credential_fields
        for code in ("required", "unknown_field")
    },
}


# Operations with a rule JSON Schema has no words for, stated in the operation's description
# instead: refusals of their schema-valid data are not held against them (every other check
# still runs). Not a to-do list: anything a schema can say belongs in the schema.
UNSTATABLE_IN_SCHEMA: dict[str, str] = {
    "POST /v1/payout-batches": "a text/csv body: its rows are only a string to the document",
    "POST /v1/reconciliations": "a bank statement (CSV text): its header and rows are only a "
    "string to the document",
    "PUT /v1/policy": "JSON Schema's integer includes 10.0, which the strict policy refuses "
    '(it never reads 500.0 as 500); a float-free "integer" has no JSON Schema spelling',
}


@schemathesis.check
def refused_only_by_business_rules(ctx: Any, response: Any, case: Any) -> bool | None:
    """positive_data_acceptance lets the statuses of BUSINESS_RULE_REFUSALS through; this
    check narrows each status to its problem codes there."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code < 400:
        return None
    if case.operation.label in UNSTATABLE_IN_SCHEMA:
        return None
    problem = response.json() if response.status_code < 500 else {}
    code = problem.get("code")
    field_errors = {
        (error["field"].rsplit(".", 1)[-1], error["code"]) for error in problem.get("errors", [])
    }
    if code == "validation_failed" and field_errors <= set(BUSINESS_RULE_FIELD_ERRORS):
        return None
    if (response.status_code, code) not in BUSINESS_RULE_REFUSALS:
        raise AssertionError(
            f"{case.operation.label}: schema-valid data refused with {response.status_code} "
            f"{code!r}, which is no business rule: {response.text[:600]}"
        )
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    negative_data_rejection,
    refused_only_by_business_rules,
]
ACCEPTED_STATUSES = ["2xx", *sorted({str(status) for status, _ in BUSINESS_RULE_REFUSALS})]
EXAMPLES_PER_MODE = 6
STATEFUL_SCENARIOS = 40
HTTP_METHODS = {"get", "put", "post", "patch", "delete"}


def _cases() -> list[tuple[str, GenerationMode]]:
    """(operation, mode) pairs from the app's document (reading it needs no database).
    Invalid data needs some input to be invalid in: operations without any get none."""
    cases = []
    for path, item in create_app().openapi()["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            label = f"{method.upper()} {path}"
            cases.append((label, GenerationMode.POSITIVE))
            if operation.get("parameters") or "requestBody" in operation:
                cases.append((label, GenerationMode.NEGATIVE))
    return sorted(cases)


def _schema_on_a_fresh_database(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The app on a fresh SQLite copy, as schemathesis sees it; schemathesis runs its lifespan."""
    database = tmp_path_factory.mktemp("contract") / "contract.db"
    shutil.copy(sqlite_template, database)
    app = create_app(make_settings(f"sqlite+aiosqlite:///{database}"))
    config = SchemathesisConfig.from_dict(
        {
            "suppress-health-check": ["all"],
            # The key as configuration, not forced onto every call: negative cases that drop
            # the Authorization header then really go without it.
            "headers": AUTH,
            "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED_STATUSES}},
            # Only the document's own links: the stateful test is about them.
            "phases": {"stateful": {"inference": {"algorithms": []}}},
        }
    )
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    finally:
        schemathesis_asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def api_schema(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One app for the per-operation tests."""
    yield from _schema_on_a_fresh_database(sqlite_template, tmp_path_factory)


@pytest.fixture
def fresh_api_schema(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """An app of its own, untouched by the fuzzing above (which replaces the policy)."""
    yield from _schema_on_a_fresh_database(sqlite_template, tmp_path_factory)


@pytest.mark.parametrize(("label", "mode"), _cases())
def test_operation_conforms_to_the_schema(
    api_schema: Any, label: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_MODE,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    check()


# What the stateful test must reach through the links of POST /v1/payouts's 201.
LINKED_ACTIONS = ("POST /v1/payouts/{payout_id}/approve", "POST /v1/payouts/{payout_id}/cancel")


def test_links_lead_from_a_created_payout_to_its_actions(fresh_api_schema: Any) -> None:
    """Schemathesis' state machine, built from the document's links only (no inference),
    creates payouts and follows the links to the actions on them; the test counts the calls
    that used a created payout's id, so it cannot pass without following the links."""
    register = fresh_api_schema.find_operation_by_label("POST /v1/operators")
    agent = {"id": "agent-17", "role": "agent", "display_name": "Li Lei"}
    register.Case(body=agent).call(headers=AUTH)

    created: set[str] = set()
    reached: Counter[str] = Counter()
    # The payout, and the actions the test is about: fewer transitions, shorter runs.
    scope = r"^/v1/payouts(/\{payout_id\}(/(approve|cancel))?)?$"
    in_scope = fresh_api_schema.include(path_regex=scope).exclude(method="GET", path="/v1/payouts")
    base = in_scope.as_state_machine()

    class PayoutLinks(base):  # type: ignore[misc, valid-type]
        def before_call(self, case: Any) -> None:
            if case.operation.label == "POST /v1/payouts":
                # Generated bodies almost never name a registered operator and a recipient
                # whose checksum holds; this one is valid and above the agent's auto-approval
                # limit, so the payout waits for approval and both actions apply.
                case.body = {**EXAMPLE_REQUEST, "amount": "100.00"}
                case.headers = {**(case.headers or {}), "Idempotency-Key": uuid4().hex}

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            # Explicitly, so that the ignored_auth check knows the call carried the key.
            return {"headers": AUTH}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            if case.operation.label == "POST /v1/payouts" and response.status_code == 201:
                created.add(json.loads(response.content)["id"])
            if (case.path_parameters or {}).get("payout_id") in created:
                reached[case.operation.label] += 1

    PayoutLinks.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=5,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    assert created, "no payout was created"
    missing = [label for label in LINKED_ACTIONS if not reached[label]]
    assert not missing, f"links never followed to {missing}; reached {dict(reached)}"
