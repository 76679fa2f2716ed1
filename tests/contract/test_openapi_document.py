"""The OpenAPI document: committed copy in sync with the app, and every operation documented
well enough to run the service from /docs alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from payoutsvc.main import create_app

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
HTTP_METHODS = {"get", "put", "post", "patch", "delete"}
PROBLEM_REF = "#/components/schemas/Problem"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    # Through JSON, as clients and the committed file see it.
    return dict(json.loads(json.dumps(create_app().openapi())))


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield f"{method.upper()} {path}", operation


def _drift(committed: dict[str, Any], generated: dict[str, Any]) -> str:
    def labels(doc: dict[str, Any]) -> set[str]:
        return {label for label, _ in _operations(doc)}

    lines = [f"+ {x}" for x in sorted(labels(generated) - labels(committed))]
    lines += [f"- {x}" for x in sorted(labels(committed) - labels(generated))]
    changed = [
        label
        for label, operation in _operations(generated)
        if label in labels(committed) and operation != dict(_operations(committed)).get(label)
    ]
    lines += [f"~ {x}" for x in changed]
    schemas = set(generated.get("components", {}).get("schemas", {}))
    old_schemas = set(committed.get("components", {}).get("schemas", {}))
    lines += [f"schema +{x}" for x in sorted(schemas - old_schemas)]
    lines += [f"schema -{x}" for x in sorted(old_schemas - schemas)]
    return "\n".join(lines[:40]) or "(top-level fields differ)"


def test_committed_document_matches_the_app(document: dict[str, Any]) -> None:
    assert COMMITTED.is_file(), "openapi/openapi.json is missing: run `make openapi` and commit it"
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert committed == document, (
        "openapi/openapi.json differs from the app's schema; run `make openapi` and commit the "
        "result.\n" + _drift(committed, document)
    )


def test_every_operation_has_a_summary_and_a_description(document: dict[str, Any]) -> None:
    missing = [
        f"{label}: {field}"
        for label, operation in _operations(document)
        for field in ("summary", "description")
        if not str(operation.get(field, "")).strip()
    ]
    assert not missing, "undocumented operations:\n" + "\n".join(missing)


def _expected_errors(operation: dict[str, Any]) -> set[str]:
    parameters = operation.get("parameters", [])
    expected = set()
    if operation.get("security"):
        expected |= {"401", "403"}
    if any(p["in"] == "path" for p in parameters):
        expected.add("404")
    if parameters or "requestBody" in operation:
        expected.add("422")
    if "requestBody" in operation:
        expected.add("400")
    return expected


def test_every_operation_documents_its_error_responses(document: dict[str, Any]) -> None:
    problems = []
    for label, operation in _operations(document):
        responses = operation.get("responses", {})
        if not any(code.startswith("2") for code in responses):
            problems.append(f"{label}: no success response")
        missing = _expected_errors(operation) - set(responses)
        if missing:
            problems.append(f"{label}: errors {sorted(missing)} not documented")
        for code, response in responses.items():
            if not response.get("description"):
                problems.append(f"{label} {code}: no description")
            if code.startswith("4"):
                content = response.get("content", {})
                if set(content) != {"application/problem+json"}:
                    problems.append(f"{label} {code}: content {sorted(content)}")
                elif (
                    content["application/problem+json"].get("schema", {}).get("$ref") != PROBLEM_REF
                ):
                    problems.append(f"{label} {code}: not the Problem schema")
    assert not problems, "\n".join(problems)


def test_every_api_operation_requires_a_key_except_callbacks(document: dict[str, Any]) -> None:
    """Everything under /v1 needs `Authorization: Bearer`; gateway callbacks are verified by
    their gateway's signature instead, and a connector's inbound triggers by the helpdesk's
    (API.md, Helpdesk connectors); the operational endpoints need nothing."""
    open_operations = {
        label
        for label, operation in _operations(document)
        if label.split(" ", 1)[1].startswith("/v1/")
        and not operation.get("security")
        and "/gateway-callbacks/" not in label
        and label != "POST /v1/connectors/{connector_id}/inbound"
    }
    assert not open_operations, sorted(open_operations)
    for label in ("GET /healthz", "GET /readyz", "GET /metrics"):
        operation = dict(_operations(document))[label]
        assert not operation.get("security"), label


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def test_request_bodies_have_examples(document: dict[str, Any]) -> None:
    """Swagger UI's "Try it out" starts from these; an empty editor helps nobody."""
    missing = []
    for label, operation in _operations(document):
        media = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if media is None or "example" in media or "examples" in media:
            continue
        schema = _resolve(document, media.get("schema", {}))
        if "example" in schema or "examples" in schema:
            continue
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        described = all(
            any(k in spec for k in ("examples", "example", "default", "enum", "const", "$ref"))
            for name, spec in properties.items()
            if name in required
        )
        if not required or not described:
            missing.append(label)
    assert not missing, "request bodies without an example:\n" + "\n".join(missing)


def test_the_payout_schema_shows_the_contract(document: dict[str, Any]) -> None:
    create = document["paths"]["/v1/payouts"]["post"]
    idempotency = [p for p in create["parameters"] if p["name"] == "Idempotency-Key"]
    assert idempotency, "POST /v1/payouts must document its Idempotency-Key header"
    assert idempotency[0]["in"] == "header"
    payout = _resolve(document, create["responses"]["201"]["content"]["application/json"]["schema"])
    for field in ("id", "status", "amount", "amount_minor", "currency", "recipient", "policy"):
        assert field in payout["properties"], field
    recipient = _resolve(document, payout["properties"]["recipient"])
    assert "account_masked" in recipient["properties"]
    assert "account" not in recipient["properties"]
