"""Operators (company-wide people) and integrations with their API keys."""

from __future__ import annotations

import httpx

from tests.api_support import assert_problem
from tests.helpers import create_operator


async def test_operator_lifecycle(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/v1/operators", json={"id": "agent-17", "role": "agent", "display_name": "Li Lei"}
    )
    assert created.status_code == 201, created.text
    operator = created.json()
    assert operator["id"] == "agent-17"
    assert operator["role"] == "agent"
    assert operator["display_name"] == "Li Lei"
    assert operator["disabled"] is False
    assert operator["created_at"] == operator["updated_at"]

    duplicate = await client.post("/v1/operators", json={"id": "agent-17", "role": "finance"})
    assert_problem(duplicate, 409, "operator_exists")
    assert (await client.get("/v1/operators/agent-17")).json() == operator

    patched = await client.patch(
        "/v1/operators/agent-17", json={"role": "supervisor", "display_name": "Li Lei (lead)"}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["role"] == "supervisor"
    assert patched.json()["display_name"] == "Li Lei (lead)"
    assert patched.json()["disabled"] is False
    assert patched.json()["updated_at"] >= operator["updated_at"]

    # Only the fields sent change.
    renamed = await client.patch("/v1/operators/agent-17", json={"display_name": None})
    assert renamed.json()["display_name"] is None
    assert renamed.json()["role"] == "supervisor"

    disabled = await client.patch("/v1/operators/agent-17", json={"disabled": True})
    assert disabled.json()["disabled"] is True
    enabled = await client.patch("/v1/operators/agent-17", json={"disabled": False})
    assert enabled.json()["disabled"] is False

    deleted = await client.delete("/v1/operators/agent-17")
    assert deleted.status_code == 200
    assert deleted.json()["disabled"] is True
    # Deleting disables: the operator stays for the audit trail.
    assert (await client.get("/v1/operators/agent-17")).json()["disabled"] is True


async def test_operator_errors(client: httpx.AsyncClient) -> None:
    await create_operator(client, "agent-17", "agent")
    assert_problem(await client.get("/v1/operators/ghost"), 404, "not_found")
    assert_problem(await client.patch("/v1/operators/ghost", json={"role": "x"}), 404, "not_found")
    assert_problem(await client.delete("/v1/operators/ghost"), 404, "not_found")
    for field in ("role", "disabled"):
        response = await client.patch("/v1/operators/agent-17", json={field: None})
        assert_problem(response, 422, "validation_failed", field=field)
    bad_role = await client.post("/v1/operators", json={"id": "x", "role": "Agent Smith"})
    assert_problem(bad_role, 422, "validation_failed", field="role")
    bad_id = await client.post("/v1/operators", json={"id": "-x", "role": "agent"})
    assert_problem(bad_id, 422, "validation_failed", field="id")
    missing = await client.post("/v1/operators", json={"id": "x"})
    assert_problem(missing, 422, "validation_failed", field="role", field_code="required")


async def test_operator_list_pagination(client: httpx.AsyncClient) -> None:
    ids = [f"op-{i}" for i in range(5)]
    for operator_id in reversed(ids):
        await create_operator(client, operator_id, "agent")
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await client.get("/v1/operators", params=params)
        assert page.status_code == 200, page.text
        seen += [o["id"] for o in page.json()["data"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids)
    everything = (await client.get("/v1/operators", params={"limit": 200})).json()
    assert [o["id"] for o in everything["data"]] == sorted(ids)
    assert everything["next_cursor"] is None
    for limit in (0, 201):
        response = await client.get("/v1/operators", params={"limit": limit})
        assert_problem(response, 422, "validation_failed", field="limit")
    assert_problem(
        await client.get("/v1/operators", params={"cursor": "???"}), 422, "invalid_cursor"
    )


async def test_integration_and_key_lifecycle(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/integrations", json={"name": "zendesk-prod"})
    assert created.status_code == 201, created.text
    integration = created.json()
    assert integration["id"].startswith("int_")
    assert integration["name"] == "zendesk-prod"
    assert_problem(
        await client.post("/v1/integrations", json={"name": "zendesk-prod"}),
        409,
        "integration_exists",
    )
    assert (await client.get(f"/v1/integrations/{integration['id']}")).json() == integration
    listed = (await client.get("/v1/integrations")).json()
    assert [i["name"] for i in listed["data"]] == ["zendesk-prod", "default"]

    base = f"/v1/integrations/{integration['id']}/api-keys"
    first = (await client.post(base, json={"scopes": ["payouts:read"]})).json()
    second = (await client.post(base, json={"scopes": ["admin", "payouts:write"]})).json()
    assert second["scopes"] == ["payouts:write", "admin"]
    keys = (await client.get(base)).json()["data"]
    assert [k["id"] for k in keys] == [second["id"], first["id"]]
    assert all(k["revoked_at"] is None for k in keys)
    assert all(k["integration_id"] == integration["id"] for k in keys)

    revoked = await client.delete(f"{base}/{first['id']}")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    states = {k["id"]: k["revoked_at"] for k in (await client.get(base)).json()["data"]}
    assert states[first["id"]] is not None
    assert states[second["id"]] is None

    async with httpx.AsyncClient(
        transport=client._transport,
        base_url=str(client.base_url),
        headers={"Authorization": f"Bearer {first['key']}"},
    ) as revoked_client:
        assert_problem(await revoked_client.get("/v1/payouts"), 401, "unauthorized")


async def test_integration_errors(client: httpx.AsyncClient) -> None:
    other = (await client.post("/v1/integrations", json={"name": "other"})).json()
    mine = (await client.post("/v1/integrations", json={"name": "mine"})).json()
    key = (
        await client.post(f"/v1/integrations/{mine['id']}/api-keys", json={"scopes": ["admin"]})
    ).json()
    missing = "int_00000000000000000000000000"
    assert_problem(await client.get(f"/v1/integrations/{missing}"), 404, "not_found")
    assert_problem(await client.get(f"/v1/integrations/{missing}/api-keys"), 404, "not_found")
    assert_problem(
        await client.post(f"/v1/integrations/{missing}/api-keys", json={"scopes": ["admin"]}),
        404,
        "not_found",
    )
    # A key is revoked only through its own integration.
    wrong_parent = await client.delete(f"/v1/integrations/{other['id']}/api-keys/{key['id']}")
    assert_problem(wrong_parent, 404, "not_found")
    assert_problem(
        await client.delete(f"/v1/integrations/{mine['id']}/api-keys/key_missing"),
        404,
        "not_found",
    )
    for scopes in ([], ["root"], "admin"):
        response = await client.post(
            f"/v1/integrations/{mine['id']}/api-keys", json={"scopes": scopes}
        )
        assert_problem(response, 422, "validation_failed")
    for name in ("", "-leading-dash", "x" * 101):
        response = await client.post("/v1/integrations", json={"name": name})
        assert_problem(response, 422, "validation_failed", field="name")
