"""API keys, scopes and integration isolation."""

from __future__ import annotations

import hashlib

import httpx
from fastapi import FastAPI

from tests.api_support import CaseFailures, assert_problem, new_payout, raw_bytes, table_dump
from tests.conftest import ADMIN_KEY
from tests.helpers import create_operator, new_integration_client, payout_body


def _with_key(client: httpx.AsyncClient, authorization: str | None) -> httpx.AsyncClient:
    headers = {} if authorization is None else {"Authorization": authorization}
    return httpx.AsyncClient(
        transport=client._transport, base_url=str(client.base_url), headers=headers
    )


async def test_missing_or_invalid_key_is_401(client: httpx.AsyncClient) -> None:
    failures = CaseFailures()
    for name, authorization in [
        ("missing", None),
        ("empty", ""),
        ("no-token", "Bearer"),
        ("unknown", "Bearer psk_not_a_real_key"),
        ("basic-scheme", f"Basic {ADMIN_KEY}"),
        ("no-scheme", ADMIN_KEY),
        ("altered", f"Bearer {ADMIN_KEY}x"),
    ]:
        async with _with_key(client, authorization) as anonymous:
            for method, path in [
                ("GET", "/v1/payouts"),
                ("POST", "/v1/payouts"),
                ("GET", "/v1/operators"),
            ]:
                with failures.case(f"{name} {method} {path}"):
                    response = await anonymous.request(
                        method, path, json=payout_body(), headers={"Idempotency-Key": "k"}
                    )
                    assert_problem(response, 401, "unauthorized")
                    assert response.headers["www-authenticate"] == "Bearer"
    failures.check()


async def test_a_revoked_key_stops_working_at_once(client: httpx.AsyncClient) -> None:
    integration = (await client.post("/v1/integrations", json={"name": "zendesk"})).json()
    created = await client.post(
        f"/v1/integrations/{integration['id']}/api-keys", json={"scopes": ["payouts:read"]}
    )
    key = created.json()
    async with _with_key(client, f"Bearer {key['key']}") as reader:
        assert (await reader.get("/v1/payouts")).status_code == 200
        revoked = await client.delete(f"/v1/integrations/{integration['id']}/api-keys/{key['id']}")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["revoked_at"] is not None
        assert_problem(await reader.get("/v1/payouts"), 401, "unauthorized")


async def test_missing_scope_is_403(client: httpx.AsyncClient) -> None:
    reader = ["payouts:read"]
    writer = ["payouts:write"]
    no_admin = ["payouts:write", "payouts:read", "payouts:approve"]
    failures = CaseFailures()
    for index, (scopes, method, path) in enumerate(
        [
            (reader, "POST", "/v1/payouts"),
            (reader, "POST", "/v1/payouts/po_x/cancel"),
            (writer, "GET", "/v1/payouts"),
            (writer, "GET", "/v1/payouts/po_x"),
            (writer, "GET", "/v1/payouts/po_x/events"),
            (no_admin, "GET", "/v1/operators"),
            (no_admin, "POST", "/v1/operators"),
            (no_admin, "PATCH", "/v1/operators/x"),
            (no_admin, "GET", "/v1/integrations"),
            (no_admin, "POST", "/v1/integrations"),
        ]
    ):
        async with await new_integration_client(client, f"limited-{index}", scopes) as limited:
            with failures.case(f"{scopes} {method} {path}"):
                response = await limited.request(
                    method, path, json={"operator_id": "x"}, headers={"Idempotency-Key": "k"}
                )
                assert_problem(response, 403, "insufficient_scope")
    failures.check()


async def test_a_write_only_key_creates_and_a_read_only_key_reads(
    client: httpx.AsyncClient,
) -> None:
    await create_operator(client, "agent-17", "agent")
    integration = (await client.post("/v1/integrations", json={"name": "zendesk"})).json()
    keys = {}
    for scope in ("payouts:write", "payouts:read"):
        made = await client.post(
            f"/v1/integrations/{integration['id']}/api-keys", json={"scopes": [scope]}
        )
        keys[scope] = made.json()["key"]
    async with (
        _with_key(client, f"Bearer {keys['payouts:write']}") as writer,
        _with_key(client, f"Bearer {keys['payouts:read']}") as reader,
    ):
        payout = await new_payout(writer)
        assert (await reader.get(f"/v1/payouts/{payout['id']}")).json() == payout


async def test_another_integrations_payout_answers_404_everywhere(
    client: httpx.AsyncClient,
) -> None:
    await create_operator(client, "agent-17", "agent")
    scopes = ["payouts:write", "payouts:read"]
    async with (
        await new_integration_client(client, "helpdesk-a", scopes) as desk_a,
        await new_integration_client(client, "helpdesk-b", scopes) as desk_b,
    ):
        mine = await new_payout(desk_a, 1)
        theirs = await new_payout(desk_b, 2)

        for path in (f"/v1/payouts/{theirs['id']}", f"/v1/payouts/{theirs['id']}/events"):
            problem = assert_problem(await desk_a.get(path), 404, "not_found")
            assert "helpdesk-b" not in str(problem)
        cancel = await desk_a.post(
            f"/v1/payouts/{theirs['id']}/cancel", json={"operator_id": "agent-17"}
        )
        assert_problem(cancel, 404, "not_found")
        assert (await desk_b.get(f"/v1/payouts/{theirs['id']}")).json()["status"] != "canceled"

        listed = (await desk_a.get("/v1/payouts")).json()["data"]
        assert [p["id"] for p in listed] == [mine["id"]]
        for query in ({"ticket_id": "48213"}, {"requested_by": "agent-17"}, {"limit": 200}):
            found = (await desk_a.get("/v1/payouts", params=query)).json()["data"]
            assert theirs["id"] not in {p["id"] for p in found}

    # The back office sees both.
    everything = (await client.get("/v1/payouts")).json()["data"]
    assert {mine["id"], theirs["id"]} <= {p["id"] for p in everything}
    assert (await client.get(f"/v1/payouts/{theirs['id']}")).status_code == 200
    assert (await client.get(f"/v1/payouts/{mine['id']}/events")).status_code == 200


async def test_an_admin_key_of_any_integration_sees_all(client: httpx.AsyncClient) -> None:
    await create_operator(client, "agent-17", "agent")
    desk = await new_integration_client(client, "helpdesk", ["payouts:write", "payouts:read"])
    finance = await new_integration_client(client, "finance-console", ["admin"])
    async with desk, finance:
        payout = await new_payout(desk)
        assert (await finance.get(f"/v1/payouts/{payout['id']}")).json() == payout
        listed = (await finance.get("/v1/payouts")).json()["data"]
        assert payout["id"] in {p["id"] for p in listed}


async def test_bootstrap_key_belongs_to_the_default_integration_with_every_scope(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    integrations = (await client.get("/v1/integrations")).json()["data"]
    default = next(i for i in integrations if i["name"] == "default")
    keys = (await client.get(f"/v1/integrations/{default['id']}/api-keys")).json()["data"]
    assert len(keys) == 1
    assert set(keys[0]["scopes"]) == {
        "payouts:write",
        "payouts:read",
        "payouts:approve",
        "payouts:release",
        "admin",
    }
    assert keys[0]["hint"].endswith(ADMIN_KEY[-4:])
    stored = await table_dump(app, "api_keys")
    assert ADMIN_KEY.encode() not in raw_bytes(stored)


async def test_an_api_key_secret_is_shown_once_and_stored_hashed(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    integration = (await client.post("/v1/integrations", json={"name": "zendesk"})).json()
    created = await client.post(
        f"/v1/integrations/{integration['id']}/api-keys",
        json={"scopes": ["payouts:read", "payouts:write"]},
    )
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["id"].startswith("key_")
    assert key["key"].startswith("psk_")
    assert len(key["key"]) >= 40
    assert key["scopes"] == ["payouts:write", "payouts:read"]

    listed = await client.get(f"/v1/integrations/{integration['id']}/api-keys")
    assert listed.status_code == 200
    assert key["key"] not in listed.text
    assert all("key" not in k for k in listed.json()["data"])
    assert [k["id"] for k in listed.json()["data"]] == [key["id"]]

    rows = await table_dump(app, "api_keys")
    assert key["key"].encode() not in raw_bytes(rows)
    assert hashlib.sha256(key["key"].encode()).hexdigest().encode() in raw_bytes(rows)


async def test_a_key_never_appears_in_error_answers(client: httpx.AsyncClient) -> None:
    secret = "psk_this_is_a_guess_" + "x" * 20
    async with _with_key(client, f"Bearer {secret}") as guesser:
        response = await guesser.get("/v1/payouts")
    assert response.status_code == 401
    assert secret not in response.text


async def test_a_non_admin_key_cannot_reach_another_integrations_keys(
    client: httpx.AsyncClient,
) -> None:
    async with await new_integration_client(
        client, "desk", ["payouts:write", "payouts:read", "payouts:approve"]
    ) as desk:
        default = (await client.get("/v1/integrations")).json()["data"]
        target = next(i for i in default if i["name"] == "default")
        response = await desk.get(f"/v1/integrations/{target['id']}/api-keys")
    assert_problem(response, 403, "insufficient_scope")
