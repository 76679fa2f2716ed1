"""Property-based contract test: schemathesis drives the real app (in-process, ASGI) from its
own OpenAPI document, with valid and invalid data, and checks every response against that
document. One test per operation; the whole module stays well under a minute."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from payoutsvc.main import create_app
from tests.conftest import ADMIN_KEY, make_settings

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_MODE = 6
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


@pytest.fixture(scope="module")
def api_schema(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One app for the module on a fresh SQLite copy; schemathesis runs its lifespan."""
    database = tmp_path_factory.mktemp("contract") / "contract.db"
    shutil.copy(sqlite_template, database)
    app = create_app(make_settings(f"sqlite+aiosqlite:///{database}"))
    config = SchemathesisConfig.from_dict({"suppress-health-check": ["all"]})
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    finally:
        schemathesis_asgi.shutdown_lifespans()


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
        case.call_and_validate(headers=AUTH, checks=CHECKS)

    check()
