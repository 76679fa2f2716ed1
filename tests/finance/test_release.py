"""Manual release (API.md, Finance operations): a payout the policy's release section holds
waits in ``approved``, unpaid, until an operator who may release (and did not request it)
releases it; the executor's evidence check and audit verify demand that release."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import update

from payoutsvc.audit import verify_all
from payoutsvc.executor.service import Executor
from payoutsvc.payouts.acting import Credential
from payoutsvc.payouts.finance import FinanceService
from payoutsvc.payouts.models import Payout
from payoutsvc.runtime import Runtime
from tests.api_support import assert_problem
from tests.executor.support import (
    FakeClock,
    attempts_of,
    events_by_payout,
    payout_rows,
    transfers_by_payout,
    unique_body,
)
from tests.finance.conftest import (
    APPROVER,
    OTHER_RELEASER,
    RELEASER,
    REQUESTER,
    use_release,
)
from tests.helpers import act_as, approve_as, bearer_of, request_as

pytestmark = pytest.mark.usefixtures("operators")

RELEASE_SCOPES = ("payouts:release", "payouts:read")
SMALL = "12.34"  # within the requester's auto-approval limit
LARGE = "900.00"  # over it: an approver decides


async def _create(client: httpx.AsyncClient, amount: str = SMALL) -> dict[str, Any]:
    body = unique_body(amount)
    body.pop("requested_by")
    created = await request_as(client, REQUESTER, body)
    assert created.status_code == 201, created.text
    return dict(created.json())


async def release_as(
    client: httpx.AsyncClient, payout_id: str, operator_id: str, comment: str | None = None
) -> httpx.Response:
    return await act_as(
        client, operator_id, payout_id, "release", {"comment": comment}, scopes=RELEASE_SCOPES
    )


async def _status(client: httpx.AsyncClient, payout_id: str) -> dict[str, Any]:
    got = await client.get(f"/v1/payouts/{payout_id}")
    assert got.status_code == 200, got.text
    return dict(got.json())


async def test_nothing_is_paid_before_release_then_it_is(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    await use_release(client, {"mode": "manual", "manual_over": None})
    payout = await _create(client)
    assert payout["status"] == "approved"
    assert payout["release"] == {"required": True, "released_by": None, "released_at": None}

    for _ in range(3):
        assert await executor.run_once() == 0
        clock.advance(3600)
    assert (await _status(client, payout["id"]))["status"] == "approved"
    assert payout["id"] not in await transfers_by_payout(runtime.db)
    assert await attempts_of(runtime.db, payout["id"]) == []

    released = await release_as(client, payout["id"], RELEASER, "paid on ticket")
    assert released.status_code == 200, released.text
    view = released.json()
    assert view["status"] == "approved"
    assert view["release"]["required"] is True
    assert view["release"]["released_by"] == RELEASER
    assert view["release"]["released_at"] is not None

    assert await executor.run_once() == 1
    assert (await _status(client, payout["id"]))["status"] == "succeeded"
    assert len((await transfers_by_payout(runtime.db))[payout["id"]]) == 1
    types = [e.type for e in (await events_by_payout(runtime.db))[payout["id"]]]
    assert types == [
        "payout.created",
        "payout.approved",
        "payout.released",
        "payout.processing",
        "payout.succeeded",
    ]
    async with runtime.db.transaction(write=False) as session:
        report = await verify_all(session, runtime.audit_key)
    assert report.ok, report.problems


async def test_a_payout_approved_by_a_person_also_waits(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor
) -> None:
    await use_release(client, {"mode": "manual", "manual_over": None})
    payout = await _create(client, LARGE)
    assert payout["status"] == "pending_approval"
    approved = await approve_as(client, payout["id"], APPROVER)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert await executor.run_once() == 0
    assert (await release_as(client, payout["id"], RELEASER)).status_code == 200
    assert await executor.run_once() == 1
    assert (await _status(client, payout["id"]))["status"] == "succeeded"


async def test_self_release_is_refused(client: httpx.AsyncClient) -> None:
    await use_release(client, {"mode": "manual", "manual_over": None})
    body = unique_body(LARGE)
    body.pop("requested_by")
    created = await request_as(client, RELEASER, body)  # finance requests it itself
    assert created.status_code == 201, created.text
    payout = created.json()
    assert (await approve_as(client, payout["id"], APPROVER)).status_code == 200
    assert_problem(await release_as(client, payout["id"], RELEASER), 403, "self_release_forbidden")
    assert (await _status(client, payout["id"]))["release"]["released_by"] is None
    assert (await release_as(client, payout["id"], OTHER_RELEASER)).status_code == 200


async def test_a_role_without_can_release_is_refused(client: httpx.AsyncClient) -> None:
    await use_release(client, {"mode": "manual", "manual_over": None})
    payout = await _create(client)
    refused = await release_as(client, payout["id"], APPROVER)  # a supervisor
    assert_problem(refused, 403, "release_not_allowed")
    assert (await _status(client, payout["id"]))["release"]["released_by"] is None


async def test_an_integration_key_cannot_release_under_require_operator_key(
    client: httpx.AsyncClient,
) -> None:
    await use_release(client, {"mode": "manual", "manual_over": None})
    payout = await _create(client)
    refused = await client.post(
        f"/v1/payouts/{payout['id']}/release", json={"operator_id": RELEASER}
    )
    assert_problem(refused, 403, "operator_key_required")


async def test_release_of_a_canceled_payout_and_twice_are_409(
    client: httpx.AsyncClient, executor: Executor
) -> None:
    await use_release(client, {"mode": "manual", "manual_over": None})
    canceled = await _create(client)
    cancel = await client.post(
        f"/v1/payouts/{canceled['id']}/cancel",
        json={"operator_id": REQUESTER, "reason": "duplicate"},
        headers=await bearer_of(client, REQUESTER),
    )
    assert cancel.status_code == 200, cancel.text  # cancel still works before release
    assert_problem(
        await release_as(client, canceled["id"], RELEASER), 409, "invalid_status_transition"
    )

    payout = await _create(client)
    assert (await release_as(client, payout["id"], RELEASER)).status_code == 200
    assert_problem(
        await release_as(client, payout["id"], OTHER_RELEASER), 409, "invalid_status_transition"
    )
    assert (await _status(client, payout["id"]))["release"]["released_by"] == RELEASER
    # Released but not yet claimed: cancel still wins.
    cancel = await client.post(
        f"/v1/payouts/{payout['id']}/cancel",
        json={"operator_id": REQUESTER, "reason": "changed mind"},
        headers=await bearer_of(client, REQUESTER),
    )
    assert cancel.status_code == 200, cancel.text
    assert await executor.run_once() == 0


async def test_pending_approval_and_unheld_payouts_cannot_be_released(
    client: httpx.AsyncClient,
) -> None:
    await use_release(client, {"mode": "manual", "manual_over": None})
    pending = await _create(client, LARGE)
    assert_problem(
        await release_as(client, pending["id"], RELEASER), 409, "invalid_status_transition"
    )
    await use_release(client, {"mode": "auto", "manual_over": None})
    auto = await _create(client)
    assert auto["release"]["required"] is False
    assert_problem(await release_as(client, auto["id"], RELEASER), 409, "invalid_status_transition")


async def test_auto_mode_pays_at_once(
    client: httpx.AsyncClient, executor: Executor, runtime: Runtime
) -> None:
    payout = await _create(client)  # the built-in policy: release mode auto
    assert payout["release"] == {"required": False, "released_by": None, "released_at": None}
    assert await executor.run_once() == 1
    assert (await _status(client, payout["id"]))["status"] == "succeeded"


async def test_manual_over_holds_only_amounts_above_it(
    client: httpx.AsyncClient, executor: Executor
) -> None:
    await use_release(client, {"mode": "manual", "manual_over": {"CNY": "12.34"}})
    at_limit = await _create(client, "12.34")
    above = await _create(client, "12.35")
    assert at_limit["release"]["required"] is False
    assert above["release"]["required"] is True
    assert await executor.run_once() == 1
    assert (await _status(client, at_limit["id"]))["status"] == "succeeded"
    assert (await _status(client, above["id"]))["status"] == "approved"


async def test_policy_release_section_is_validated(client: httpx.AsyncClient) -> None:
    current = (await client.get("/v1/policy")).json()
    current.pop("version")
    assert current["release"] == {"mode": "auto", "manual_over": None}
    assert current["roles"]["finance"]["can_release"] is True
    assert current["roles"]["agent"]["can_release"] is False
    for release, field in (
        ({"mode": "auto", "manual_over": {"CNY": "10.00"}}, "release.manual_over"),
        ({"mode": "sometimes"}, "release.mode"),
        ({"mode": "manual", "manual_over": {"CNY": "ten"}}, "release.manual_over.CNY"),
        ({"mode": "manual", "manual_over": {"GBP": "10.00"}}, "release.manual_over.GBP"),
    ):
        refused = await client.put("/v1/policy", json={**current, "release": release})
        assert_problem(refused, 422, "validation_failed", field)
    # A role named finance may release unless its document says otherwise.
    finance = {k: v for k, v in current["roles"]["finance"].items() if k != "can_release"}
    roles = {**current["roles"], "finance": finance}
    put = await client.put("/v1/policy", json={**current, "roles": roles})
    assert put.status_code == 200, put.text
    assert put.json()["roles"]["finance"]["can_release"] is True


async def _set(runtime: Runtime, payout_id: str, **values: Any) -> None:
    """What someone with write access to the database does."""
    async with runtime.db.transaction() as session:
        await session.execute(update(Payout).where(Payout.id == payout_id).values(**values))


@pytest.mark.parametrize("attack", ["clear_required", "forge_release"])
async def test_a_database_edit_cannot_skip_the_release(
    client: httpx.AsyncClient,
    runtime: Runtime,
    executor: Executor,
    clock: FakeClock,
    attack: str,
) -> None:
    await use_release(client, {"mode": "manual", "manual_over": None})
    payout = await _create(client)
    if attack == "clear_required":
        await _set(runtime, payout["id"], release_required=False, next_attempt_at=clock.now)
    else:
        await _set(
            runtime,
            payout["id"],
            released_by=OTHER_RELEASER,
            released_at=clock.now,
            next_attempt_at=clock.now,
        )
    async with runtime.db.transaction(write=False) as session:
        report = await verify_all(session, runtime.audit_key)
    assert [p.payout_id for p in report.problems] == [payout["id"]]
    assert report.problems[0].kind == "altered"

    assert await executor.run_once() == 1
    row = (await payout_rows(runtime.db))[payout["id"]]
    assert (row.status, row.failure_code) == ("needs_review", "approval_evidence_missing")
    assert "release" in (row.failure_message or "")
    assert payout["id"] not in await transfers_by_payout(runtime.db)


async def test_the_batch_helper_can_release_through_the_service(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await use_release(client, {"mode": "manual", "manual_over": None})
    payout = await _create(client)
    async with runtime.db.transaction() as session:
        view = await FinanceService(session, runtime).release(
            Credential(bound_operator=RELEASER, admin=False), payout["id"], None, None, "batch"
        )
    assert view["release"]["released_by"] == RELEASER


async def test_clearing_release_required_while_pending_approval_still_needs_a_release(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor
) -> None:
    """The edit made before the approval: the approval takes the requirement from the sealed
    payout.created, not from the row, so the payout still waits (and can be released)."""
    await use_release(client, {"mode": "manual", "manual_over": None})
    payout = await _create(client, LARGE)
    assert payout["status"] == "pending_approval"
    await _set(runtime, payout["id"], release_required=False)

    approved = await approve_as(client, payout["id"], APPROVER)
    assert approved.status_code == 200, approved.text
    assert approved.json()["release"]["required"] is True
    assert await executor.run_once() == 0
    assert payout["id"] not in await transfers_by_payout(runtime.db)

    released = await release_as(client, payout["id"], RELEASER)
    assert released.status_code == 200, released.text
    assert await executor.run_once() == 1
    assert (await _status(client, payout["id"]))["status"] == "succeeded"
