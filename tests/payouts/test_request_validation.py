"""Request bodies: unknown fields rejected at every level, missing fields named, limits held,
and every error rendered as RFC 9457 problem+json.

Each table runs against one app (see CaseFailures); a failure names its case.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.api_support import CaseFailures, assert_problem, new_payout, post_payout
from tests.helpers import create_operator, payout_body


def _with(path: str, value: Any) -> dict[str, Any]:
    """The example body with ``value`` set at the dotted ``path``."""
    body = payout_body()
    *parents, last = path.split(".")
    target = body
    for part in parents:
        target = target[part]
    target[last] = value
    return body


def _without(path: str) -> dict[str, Any]:
    body = payout_body()
    *parents, last = path.split(".")
    target = body
    for part in parents:
        target = target[part]
    del target[last]
    return body


async def _expect_422(
    client: httpx.AsyncClient, cases: list[tuple[str, Any, str, str | None]]
) -> None:
    """``cases``: (name, body, field, field code or None)."""
    failures = CaseFailures()
    for name, body, field, code in cases:
        with failures.case(name):
            response = await post_payout(client, body)
            assert_problem(response, 422, "validation_failed", field=field, field_code=code)
    failures.check()


async def test_unknown_fields_at_any_level_are_rejected(client: httpx.AsyncClient) -> None:
    paths = ["surprise", "ticket.priority", "recipient.bank_name", "recipient.routing_number"]
    await _expect_422(client, [(p, _with(p, "x"), p, "unknown_field") for p in paths])


async def test_missing_fields_are_named(client: httpx.AsyncClient) -> None:
    paths = [
        "ticket",
        "ticket.system",
        "ticket.id",
        "reason",
        "amount",
        "currency",
        "recipient",
        "recipient.account",
        "recipient.name",
        "requested_by",
    ]
    await _expect_422(client, [(p, _without(p), p, "required") for p in paths])


async def test_every_problem_in_the_body_is_listed(client: httpx.AsyncClient) -> None:
    body = payout_body(reason="gift", extra=1, description=None)
    body["metadata"] = {"": "x"}
    problem = assert_problem(await post_payout(client, body), 422, "validation_failed")
    # requested_by may be omitted with an operator-bound key, so a missing one is told once
    # the body is valid (the `required` case above), not in this list.
    assert {e["field"] for e in problem["errors"]} >= {"reason", "extra", "metadata"}


async def test_invalid_recipient_shapes(client: httpx.AsyncClient) -> None:
    cases: list[tuple[str, dict[str, Any], str, str | None]] = [
        ("unknown-type", {"type": "venmo", "account": "x", "name": "A"}, "recipient.type",
         "invalid_choice"),
        ("no-type", {"account": "13800138000", "name": "A"}, "recipient.type", "required"),
        ("empty-account", {"type": "alipay", "account": "", "name": "A"}, "recipient.account",
         "too_short"),
        ("numeric-account", {"type": "alipay", "account": 13800138000, "name": "A"},
         "recipient.account", "invalid_type"),
        ("wechat-without-app", {"type": "wechat", "account": "o" * 28, "name": "A"},
         "recipient.app_id", "required"),
        (
            "bad-account-type",
            {"type": "us_bank", "account": "12345678", "routing_number": "011000015",
             "account_type": "brokerage", "name": "A"},
            "recipient.account_type",
            "invalid_choice",
        ),
    ]  # fmt: skip
    await _expect_422(
        client,
        [(name, payout_body(recipient=r), field, code) for name, r, field, code in cases],
    )


async def test_a_recipient_that_cannot_be_paid_is_invalid_recipient(
    client: httpx.AsyncClient,
) -> None:
    await create_operator(client, "agent-17", "agent")
    bad = {"type": "alipay", "account": "12345", "name": "张三"}
    response = await post_payout(client, payout_body(recipient=bad))
    problem = assert_problem(response, 422, "invalid_recipient", field="recipient.account")
    assert "12345" not in response.text.replace(problem["type"], "")


async def test_field_constraints(client: httpx.AsyncClient) -> None:
    cases: list[tuple[str, Any, str | None]] = [
        ("reason", "gift", "invalid_choice"),
        ("reason", None, None),
        ("ticket.system", "", "too_short"),
        ("ticket.system", "has space", "invalid_format"),
        ("ticket.id", "x" * 129, "too_long"),
        ("ticket.url", "javascript:alert(1)", "invalid_format"),
        ("requested_by", "", "too_short"),
        ("requested_by", "x" * 65, "too_long"),
        ("description", "x" * 1001, "too_long"),
        ("ticket", "48213", "invalid_type"),
    ]
    await _expect_422(
        client,
        [
            (f"{field}={value!r:.20}", _with(field, value), field, code)
            for field, value, code in cases
        ],
    )


async def test_metadata_limits(client: httpx.AsyncClient) -> None:
    cases: list[tuple[str, Any, str, str]] = [
        ("51-keys", {f"k{i}": "v" for i in range(51)}, "metadata", "too_many_keys"),
        ("41-char-key", {"k" * 41: "v"}, "metadata", "invalid_key"),
        ("empty-key", {"": "v"}, "metadata", "invalid_key"),
        ("501-char-value", {"order_id": "v" * 501}, "metadata", "value_too_long"),
        ("nested", {"order_id": {"nested": "no"}}, "metadata.order_id", "invalid_type"),
        ("number", {"order_id": 9931}, "metadata.order_id", "invalid_type"),
        ("list", ["order_id"], "metadata", "invalid_type"),
    ]
    await _expect_422(
        client,
        [(name, payout_body(metadata=m), field, code) for name, m, field, code in cases],
    )


async def test_metadata_at_its_limits_is_accepted(client: httpx.AsyncClient) -> None:
    await create_operator(client, "agent-17", "agent")
    metadata = {f"{i:02d}".ljust(40, "k"): "v" * 500 for i in range(50)}
    payout = await new_payout(client, metadata=metadata)
    assert payout["metadata"] == metadata


async def test_malformed_json_is_400_problem(client: httpx.AsyncClient) -> None:
    failures = CaseFailures()
    for name, raw in [
        ("truncated", b"{bad json"),
        ("trailing-comma", b'{"amount": "1.00",}'),
        ("not-utf8", b"\xff\xfe"),
        ("binary", b"\x1e\xec\xbe\xa5\xff"),
    ]:
        with failures.case(name):
            response = await client.post(
                "/v1/payouts",
                content=raw,
                headers={"Idempotency-Key": "malformed", "Content-Type": "application/json"},
            )
            assert_problem(response, 400, "invalid_json")
    failures.check()


async def test_a_body_that_is_not_an_object(client: httpx.AsyncClient) -> None:
    failures = CaseFailures()
    for body in ([], "text", 42, None):
        with failures.case(repr(body)):
            assert_problem(await post_payout(client, body), 422, "validation_failed", field="body")
    with failures.case("empty"):
        empty = await client.post(
            "/v1/payouts",
            content=b"",
            headers={"Idempotency-Key": "empty", "Content-Type": "application/json"},
        )
        assert_problem(empty, 422, "validation_failed", field="body")
    failures.check()


async def test_other_resources_reject_unknown_and_invalid_fields(
    client: httpx.AsyncClient,
) -> None:
    await create_operator(client, "agent-17", "agent")
    failures = CaseFailures()
    for method, path, body in [
        ("POST", "/v1/operators", {"id": "a", "role": "agent", "extra": 1}),
        ("POST", "/v1/operators", {"id": "has space", "role": "agent"}),
        ("PATCH", "/v1/operators/agent-17", {"roles": "supervisor"}),
        ("POST", "/v1/integrations", {"name": "x", "owner": "me"}),
        ("POST", "/v1/integrations", {}),
        ("POST", "/v1/payouts/po_1/cancel", {"operator_id": "agent-17", "why": "x"}),
    ]:
        with failures.case(f"{method} {path} {body}"):
            response = await client.request(method, path, json=body)
            assert_problem(response, 422, "validation_failed")
    failures.check()


async def test_control_characters_in_text_are_refused_and_nothing_is_created(
    client: httpx.AsyncClient,
) -> None:
    """NUL cannot even be stored in PostgreSQL text: it must be a 422 naming the field,
    never a 500, in the body, in nested objects and maps, in actions and in query filters."""
    await create_operator(client, "agent-17", "agent")
    cases = [
        ("ticket.id", "482\x0013", "ticket.id"),
        ("description", "refund\x00", "description"),
        ("requested_by", "agent-17\x00", "requested_by"),
        ("recipient.name", "张\x1b三", "recipient.name"),
        ("metadata.order_id", "99\x0031", "metadata"),
        ("metadata", {"order\x00id": "9931"}, "metadata"),
    ]
    failures = CaseFailures()
    for path, value, field in cases:
        with failures.case(path):
            response = await post_payout(client, _with(path, value))
            assert_problem(
                response, 422, "validation_failed", field=field, field_code="control_character"
            )
    failures.check()
    listed = await client.get("/v1/payouts", params={"limit": 200})
    assert listed.json()["data"] == []  # nothing was created
    for name in ("ticket_id", "ticket_system", "requested_by"):
        answer = await client.get("/v1/payouts", params={name: "48213\x00"})
        assert_problem(answer, 422, "validation_failed", field_code="control_character")
    created = await new_payout(client)
    approve = await client.post(
        f"/v1/payouts/{created['id']}/approve", json={"operator_id": "sup\x00-2"}
    )
    assert_problem(approve, 422, "validation_failed", field="operator_id")
    assert (await client.get(f"/v1/payouts/{created['id']}%00")).status_code in (404, 422)


async def test_control_characters_are_refused_in_every_resources_text(
    client: httpx.AsyncClient,
) -> None:
    """Beyond payouts: operators, integrations, webhook endpoints and payout actions refuse
    NUL (PostgreSQL text cannot hold it) with 422 naming the field, never a 500."""
    await create_operator(client, "agent-17", "agent")
    created = await new_payout(client)
    endpoint = await client.post("/v1/webhook-endpoints", json={"url": "https://127.0.0.1:9/h"})
    assert endpoint.status_code == 201, endpoint.text
    cases = [
        ("POST", "/v1/operators", {"id": "sup-9", "role": "agent", "display_name": "Li\x00"}),
        ("PATCH", "/v1/operators/agent-17", {"display_name": "Li\x00Lei"}),
        ("POST", "/v1/integrations", {"name": "zen\x00desk"}),
        ("POST", "/v1/webhook-endpoints", {"url": "https://127.0.0.1:9/\x00"}),
        (
            "PATCH",
            f"/v1/webhook-endpoints/{endpoint.json()['id']}",
            {"description": "prod\x00"},
        ),
        (
            "POST",
            f"/v1/payouts/{created['id']}/cancel",
            {"operator_id": "agent-17", "reason": "withdrawn\x00"},
        ),
    ]
    failures = CaseFailures()
    for method, path, body in cases:
        with failures.case(f"{method} {path} {body}"):
            response = await client.request(method, path, json=body)
            assert_problem(response, 422, "validation_failed", field_code="control_character")
    failures.check()
