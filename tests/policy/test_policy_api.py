"""GET/PUT /v1/policy: versions, strict validation, the initial policy, every process."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from sqlalchemy import delete, func, select

from payoutsvc.config import Settings
from payoutsvc.db.engine import Database
from payoutsvc.main import create_app
from payoutsvc.policy.document import DEFAULT_POLICY_DOCUMENT, parse_policy_document
from payoutsvc.policy.models import PolicyVersion
from payoutsvc.policy.repository import PolicyRepository
from payoutsvc.policy.router import DUAL_APPROVAL_EXAMPLE
from payoutsvc.policy.service import ensure_initial_policy
from tests.conftest import ADMIN_KEY, make_settings
from tests.helpers import new_integration_client, request_as
from tests.policy.support import TEST_POLICY, body, db, policy, setup_world, use_policy

BUILT_IN_APPROVALS = {"approvals": {"require_operator_key": True}}
# A PUT without a review section gets the built-in thresholds (review/detectors.py).
BUILT_IN_REVIEW = {"review": DEFAULT_POLICY_DOCUMENT["review"]}


def with_defaults(document: dict[str, Any]) -> dict[str, Any]:
    """A PUT document as GET shows it: the optional sections and role flags filled in
    (approvals, release, review, and can_release: true only for a role named finance)."""
    roles = {
        name: {"can_release": name == "finance", **role} for name, role in document["roles"].items()
    }
    return {
        **BUILT_IN_APPROVALS,
        "release": {"mode": "auto", "manual_over": None},
        **BUILT_IN_REVIEW,
        **document,
        "roles": roles,
    }


async def test_require_operator_key_is_on_unless_a_put_turns_it_off(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/v1/policy")).json()["approvals"] == {"require_operator_key": True}
    trusting = policy(approvals={"require_operator_key": False})
    put = await client.put("/v1/policy", json=trusting)
    assert put.json() == {"version": 2, **with_defaults(trusting)}
    for wrong in ({"require_operator_key": "no"}, {"require_operator_key": True, "other": 1}):
        refused = await client.put("/v1/policy", json=policy(approvals=wrong))
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"].startswith("approvals.")


async def test_the_built_in_policy_is_version_1(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/policy")
    assert response.status_code == 200, response.text
    assert response.json() == {"version": 1, **DEFAULT_POLICY_DOCUMENT}


async def test_each_put_is_a_new_immutable_version(client: httpx.AsyncClient) -> None:
    put = await client.put("/v1/policy", json=TEST_POLICY)
    assert put.status_code == 200, put.text
    # The optional approvals section takes its built-in value when a PUT leaves it out.
    assert put.json() == {"version": 2, **with_defaults(TEST_POLICY)}
    assert (await client.get("/v1/policy")).json() == put.json()
    again = await client.put("/v1/policy", json=policy(duplicate_window_hours=0))
    assert again.json()["version"] == 3
    first = await client.get("/v1/policy/versions/1")
    assert first.json() == {"version": 1, **DEFAULT_POLICY_DOCUMENT}
    assert (await client.get("/v1/policy/versions/2")).json() == put.json()
    missing = await client.get("/v1/policy/versions/4")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"


async def test_amounts_are_stored_in_canonical_form(client: httpx.AsyncClient) -> None:
    document = policy(per_ticket_max={"CNY": "3000"})
    put = await client.put("/v1/policy", json=document)
    assert put.status_code == 200, put.text
    assert put.json()["per_ticket_max"] == {"CNY": "3000.00"}


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        (
            lambda d: d["roles"]["agent"].update(limit={"CNY": "1.00"}),
            "roles.agent.limit",
            "unknown_field",
        ),
        (
            lambda d: d["roles"]["agent"]["request_max"].update(CNY="-1.00"),
            "roles.agent.request_max.CNY",
            "invalid_amount",
        ),
        (
            lambda d: d["roles"]["agent"]["request_max"].update(CNY="1.001"),
            "roles.agent.request_max.CNY",
            "too_many_decimals",
        ),
        (
            lambda d: d["roles"]["agent"]["request_max"].update(CNY=100),
            "roles.agent.request_max.CNY",
            "amount_not_string",
        ),
        (
            lambda d: d["per_ticket_max"].update(XYZ="1.00"),
            "per_ticket_max.XYZ",
            "unknown_currency",
        ),
        (
            lambda d: d["per_ticket_max"].update(EUR="1.00"),
            "per_ticket_max.EUR",
            "currency_not_listed",
        ),
        (lambda d: d.update(timezone="Mars/Olympus"), "timezone", "invalid_timezone"),
        (
            lambda d: d["roles"].update({"Bad Role": d["roles"]["agent"]}),
            "roles.Bad Role",
            "invalid_role_name",
        ),
        (lambda d: d.pop("per_ticket_max"), "per_ticket_max", "required"),
        (lambda d: d.update(extra=True), "extra", "unknown_field"),
        (lambda d: d.update(version="3"), "version", "invalid_type"),
    ],
)
async def test_invalid_documents_are_refused_field_by_field(
    client: httpx.AsyncClient, change: Any, field: str, code: str
) -> None:
    document = copy.deepcopy(TEST_POLICY)
    change(document)
    response = await client.put("/v1/policy", json=document)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_failed"
    assert (field, code) in {(e["field"], e["code"]) for e in problem["errors"]}, problem
    assert (await client.get("/v1/policy")).json()["version"] == 1


async def test_put_needs_json_and_the_admin_scope(client: httpx.AsyncClient) -> None:
    garbled = await client.put(
        "/v1/policy", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert garbled.status_code == 400
    assert garbled.json()["code"] == "invalid_json"
    not_an_object = await client.put("/v1/policy", json=["CNY"])
    assert not_an_object.status_code == 422
    writer = await new_integration_client(client, "helpdesk", ["payouts:write", "payouts:read"])
    async with writer:
        assert (await writer.get("/v1/policy")).status_code == 403
        assert (await writer.put("/v1/policy", json=TEST_POLICY)).status_code == 403


async def test_a_stale_version_is_a_conflict(client: httpx.AsyncClient) -> None:
    current = (await client.get("/v1/policy")).json()
    edited = copy.deepcopy(current)
    edited["duplicate_window_hours"] = 12
    assert (await client.put("/v1/policy", json=edited)).json()["version"] == 2
    stale = copy.deepcopy(current)
    stale["duplicate_window_hours"] = 48
    conflict = await client.put("/v1/policy", json=stale)  # still says version 1
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "policy_version_conflict"
    assert (await client.get("/v1/policy")).json()["duplicate_window_hours"] == 12
    stale["version"] = 2
    assert (await client.put("/v1/policy", json=stale)).json()["version"] == 3


async def test_the_dual_approval_example_is_a_valid_document() -> None:
    parse_policy_document(copy.deepcopy(DUAL_APPROVAL_EXAMPLE))


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
async def test_the_initial_policy_comes_from_the_policy_file(
    database_url: str, tmp_path: Path, suffix: str
) -> None:
    document = policy(timezone="Asia/Shanghai")
    path = tmp_path / f"policy{suffix}"
    path.write_text(yaml.safe_dump(document) if suffix == ".yaml" else json.dumps(document))
    app = create_app(make_settings(database_url, policy_file=path))
    async with app.router.lifespan_context(app), _admin(app) as http:
        response = await http.get("/v1/policy")
    assert response.json() == {"version": 1, **with_defaults(document)}


async def test_a_broken_policy_file_stops_startup(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("currencies: [CNY]\nroles: {}\n")
    app = create_app(make_settings(database_url, policy_file=path))
    with pytest.raises(ValueError, match="roles"):
        async with app.router.lifespan_context(app):
            pass


async def test_replicas_starting_together_create_version_1_once(
    app: FastAPI, settings: Settings
) -> None:
    async with db(app).transaction() as session:
        await session.execute(delete(PolicyVersion))
    replicas = [Database.connect(settings.database_url) for _ in range(4)]
    try:
        await asyncio.gather(*(ensure_initial_policy(r, settings) for r in replicas))
    finally:
        for replica in replicas:
            await replica.dispose()
    async with db(app).transaction() as session:
        versions = (
            await session.execute(select(func.count(), func.max(PolicyVersion.version)))
        ).one()
    assert tuple(versions) == (1, 1)


async def test_a_put_applies_to_the_next_request_in_every_process(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await setup_world(client)
    other_process = create_app(settings)
    async with (
        other_process.router.lifespan_context(other_process),
        _admin(other_process) as replica,
    ):
        # The replica decides (and caches) under the current version ...
        first = (await request_as(replica, "sup-1", body("50.00", "sup-1"))).json()
        assert first["status"] == "approved"
        # ... and sees a PUT made elsewhere on its very next request.
        stricter = copy.deepcopy(TEST_POLICY)
        stricter["roles"]["supervisor"]["auto_approve_max"] = {"CNY": "10.00", "USD": "10.00"}
        version = (await client.put("/v1/policy", json=stricter)).json()["version"]
        second = (await request_as(replica, "sup-1", body("50.00", "sup-1"))).json()
    assert second["status"] == "pending_approval"
    assert second["policy"]["version"] == version
    assert {r["rule"] for r in second["policy"]["reasons"]} == {"role_auto_approve_limit"}


async def test_openapi_documents_the_policy_with_examples(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    put = document["paths"]["/v1/policy"]["put"]
    content = put["requestBody"]["content"]["application/json"]
    assert set(content["examples"]) == {"default", "dual_approval"}
    properties = content["schema"]["properties"]
    assert {"currencies", "roles", "dual_approval_over", "timezone", "version"} <= set(properties)
    role = properties["roles"]["additionalProperties"]
    assert "approve_max" in role["properties"]
    assert "$ref" not in json.dumps(content["schema"])
    get = document["paths"]["/v1/policy"]["get"]["responses"]["200"]["content"]
    assert get["application/json"]["example"]["version"] == 1


def _admin(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )


async def test_a_replica_deciding_under_a_stale_day_counts_the_payout_under_the_new_one(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    """A replica caches the policy; a PUT elsewhere moves the policy day (its timezone). The
    replica's next payout is counted under the new day only: the counters it first added
    to under its cached day are taken back (on PostgreSQL it counts in together with
    reading the facts, before it can know the policy moved)."""
    await setup_world(client)
    other_process = create_app(settings)
    async with (
        other_process.router.lifespan_context(other_process),
        _admin(other_process) as replica,
    ):
        first = await request_as(replica, "sup-1", body("50.00", "sup-1"))
        assert first.status_code == 201, first.text
        version = await use_policy(client, policy(timezone="Pacific/Kiritimati"))
        second = await request_as(replica, "sup-1", body("60.00", "sup-1"))
        assert second.status_code == 201, second.text
        assert second.json()["policy"]["version"] == version
    async with db(app).transaction() as session:
        repo = PolicyRepository(session)
        stored, recounted = await repo.limit_counters(), await repo.recount_limit_counters()
    assert stored == recounted
    # The PUT recounted the day's payouts under the new day, where the second one joined them.
    requester = {key: totals for key, totals in stored.items() if key[0] == "requester"}
    assert list(requester.values()) == [(2, 11_000)], stored
