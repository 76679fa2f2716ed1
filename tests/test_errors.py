"""Every error is problem+json, unhandled ones included; every response has X-Request-Id."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from payoutsvc.config import Settings
from payoutsvc.main import create_app
from tests.api_support import CaseFailures, assert_problem
from tests.conftest import ADMIN_KEY

GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
SECRET_DETAIL = "connection string postgres://user:hunter2@db"


@pytest.fixture
async def failing_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The real app plus one test-only route that fails the way a bug would."""
    app = create_app(settings)

    @app.get("/test-only/boom")
    async def boom() -> None:
        raise RuntimeError(SECRET_DETAIL)

    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def failing_client(failing_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=failing_app, raise_app_exceptions=False),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as http:
        yield http


async def test_unhandled_exception_is_500_problem_without_internals(
    failing_client: httpx.AsyncClient,
) -> None:
    response = await failing_client.get("/test-only/boom", headers={"X-Request-Id": "trace-42"})
    problem = assert_problem(response, 500, "internal_error")
    assert problem["errors"] == []
    assert "X-Request-Id" in problem["detail"]
    for leak in ("Traceback", "RuntimeError", "hunter2", "boom", ".py"):
        assert leak not in response.text
    assert response.headers["x-request-id"] == "trace-42"
    # The service keeps answering afterwards.
    assert (await failing_client.get("/healthz")).status_code == 200


async def test_unknown_route_is_404_problem(client: httpx.AsyncClient) -> None:
    for path in ("/v1/nothing-here", "/v2/payouts", "/v1/payouts/po_1/unknown-action"):
        response = await client.get(path)
        assert_problem(response, 404, "not_found")
        assert GENERATED_ID.match(response.headers["x-request-id"])


async def test_wrong_method_is_405_problem_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v1/payouts")
    assert_problem(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    assert_problem(await client.put("/v1/payouts/po_1/cancel"), 405, "method_not_allowed")


async def test_a_valid_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    failures = CaseFailures()
    for request_id in [
        "req-123",
        "01HZX3K5V2:abc.def_9",
        "a" * 128,
        "550e8400-e29b-41d4-a716-446655440000",
    ]:
        for path in ("/healthz", "/v1/payouts", "/v1/payouts/po_missing", "/v1/nowhere"):
            with failures.case(f"{request_id[:20]} {path}"):
                response = await client.get(path, headers={"X-Request-Id": request_id})
                assert response.headers["x-request-id"] == request_id
    failures.check()


async def test_a_missing_or_invalid_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    failures = CaseFailures()
    for request_id in [None, "", "has space", "a" * 129, "semi;colon", "<script>", "ünïcode"]:
        headers = {} if request_id is None else {"X-Request-Id": request_id.encode()}
        with failures.case(repr(request_id)[:20]):
            seen = set()
            for path in ("/healthz", "/v1/payouts"):
                response = await client.get(path, headers=headers)
                generated = response.headers["x-request-id"]
                assert GENERATED_ID.match(generated), generated
                seen.add(generated)
            assert len(seen) == 2  # a fresh id per request
    failures.check()


async def test_auth_and_validation_errors_carry_the_request_id(
    client: httpx.AsyncClient,
) -> None:
    anonymous = await client.get(
        "/v1/payouts", headers={"Authorization": "", "X-Request-Id": "anon-1"}
    )
    assert anonymous.status_code == 401
    assert anonymous.headers["x-request-id"] == "anon-1"
    invalid = await client.get("/v1/payouts?limit=0", headers={"X-Request-Id": "bad-limit"})
    assert invalid.status_code == 422
    assert invalid.headers["x-request-id"] == "bad-limit"
