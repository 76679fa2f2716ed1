"""The API's errors are classes, one per code: the single list of its error codes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from payoutsvc.errors import (
    InvalidStatusTransition,
    NotFound,
    SelfApprovalForbidden,
    ServiceError,
    error_classes,
    error_codes,
)
from payoutsvc.main import create_app
from tests.conftest import make_settings


def test_every_error_class_has_its_own_stable_code_and_an_error_status() -> None:
    classes = error_classes()
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes)), "two classes share a code"
    for cls in classes:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", cls.code), cls
        assert 400 <= cls.status < 600, cls
        assert cls.title, cls
        assert cls.title != ServiceError.title, cls
    assert error_codes()["invalid_status_transition"] is InvalidStatusTransition


def test_an_error_renders_its_class_status_and_code_with_the_details_given() -> None:
    problem = SelfApprovalForbidden("agent-17 requested it.").to_problem()
    assert problem["status"] == 403
    assert problem["code"] == "self_approval_forbidden"
    assert problem["detail"] == "agent-17 requested it."
    assert problem["type"].endswith("/self_approval_forbidden")
    assert NotFound("No payout 'po_x'.", title="Payout not found").to_problem()["title"] == (
        "Payout not found"
    )


@pytest.mark.parametrize(
    ("method", "path", "codes"),
    [
        ("post", "/v1/payouts/{payout_id}/approve", {"self_approval_forbidden", "not_found"}),
        ("post", "/v1/payouts/{payout_id}/cancel", {"invalid_status_transition"}),
        ("post", "/v1/payouts", {"idempotency_key_in_use", "policy_violation"}),
    ],
)
def test_the_openapi_document_lists_each_operations_error_codes(
    tmp_path: Any, method: str, path: str, codes: set[str]
) -> None:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"))
    responses = app.openapi()["paths"][path][method]["responses"]
    documented = " ".join(r.get("description", "") for r in responses.values())
    for code in codes:
        assert f"`{code}`" in documented, (path, code)
    known = set(error_codes())
    for mentioned in re.findall(r"`([a-z_]+)`:", documented):
        assert mentioned in known, mentioned
