"""`payoutsvc audit verify`: tampering directly in the database is caught and the first
altered, removed or inserted event is named."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, insert, select, update
from typer.testing import CliRunner

from payoutsvc.audit import AuditReport, checkpoint_if_due, record_checkpoint, verify_all
from payoutsvc.cli import app as cli_app
from payoutsvc.config import get_settings
from payoutsvc.db.base import utcnow
from payoutsvc.main import create_app
from payoutsvc.payouts.events import event_hash
from payoutsvc.payouts.models import AuditCheckpoint, Payout, PayoutApproval, PayoutEvent
from payoutsvc.webhooks.models import WebhookDelivery
from tests.conftest import ADMIN_KEY, ENCRYPTION_KEY, make_settings
from tests.helpers import new_integration_client
from tests.policy.support import approve, body, created, db, setup_world


async def _history(client: httpx.AsyncClient) -> dict[str, Any]:
    """A payout with three events: created, approved (by sup-1), canceled."""
    payout = await created(client, body("50.00"))
    assert (await approve(client, payout["id"], "sup-1")).status_code == 200
    canceled = await client.post(
        f"/v1/payouts/{payout['id']}/cancel", json={"operator_id": "agent-1", "reason": "x"}
    )
    assert canceled.status_code == 200, canceled.text
    return payout


def _key(app: FastAPI) -> bytes:
    key: bytes = app.state.runtime.audit_key
    return key


async def _verify(app: FastAPI) -> AuditReport:
    async with db(app).transaction(write=False) as session:
        return await verify_all(session, _key(app))


async def _event(app: FastAPI, payout_id: str, sequence: int) -> PayoutEvent:
    async with db(app).transaction() as session:
        return (
            await session.execute(
                select(PayoutEvent).where(
                    PayoutEvent.payout_id == payout_id, PayoutEvent.sequence == sequence
                )
            )
        ).scalar_one()


async def _sql(app: FastAPI, *statements: Any) -> None:
    async with db(app).transaction() as session:
        for statement in statements:
            await session.execute(statement)


def _rehash(event: PayoutEvent, key: bytes | None, **changes: Any) -> dict[str, Any]:
    """The row values of ``event`` changed by ``changes`` with a recomputed hash: what a
    careful forger writes (with the audit ``key`` if they stole it, else plain SHA-256)."""
    values = {
        "id": event.id,
        "payout_id": event.payout_id,
        "integration_id": event.integration_id,
        "sequence": event.sequence,
        "type": event.type,
        "actor": event.actor,
        "data": event.data,
        "at": event.at,
        "prev_hash": event.prev_hash,
        "hash_scheme": event.hash_scheme,
    }
    values.update(changes)
    values["hash"] = event_hash(
        payout_id=values["payout_id"],
        sequence=values["sequence"],
        type=values["type"],
        actor=values["actor"],
        at=values["at"],
        data=values["data"],
        prev_hash=values["prev_hash"],
        event_id=values["id"],
        key=key,
    )
    return values


@pytest.fixture
async def world(client: httpx.AsyncClient) -> dict[str, Any]:
    await setup_world(client)
    untouched = await _history(client)
    target = await _history(client)
    auto = await created(client, body("5.00"))
    return {"untouched": untouched, "target": target, "auto": auto}


async def test_an_intact_history_verifies(app: FastAPI, world: dict[str, Any]) -> None:
    report = await _verify(app)
    assert report.ok, [p.describe() for p in report.problems]
    assert (report.payouts_checked, report.events_checked) == (3, 3 + 3 + 2)


async def test_an_edited_event_is_named(app: FastAPI, world: dict[str, Any]) -> None:
    approved = await _event(app, world["target"]["id"], 2)
    forged = {**approved.data, "approver_role": "finance"}
    await _sql(app, update(PayoutEvent).where(PayoutEvent.id == approved.id).values(data=forged))
    report = await _verify(app)
    assert [(p.payout_id, p.kind, p.event_id, p.sequence) for p in report.problems] == [
        (world["target"]["id"], "altered", approved.id, 2)
    ]


async def test_an_edited_and_rehashed_event_is_named(app: FastAPI, world: dict[str, Any]) -> None:
    approved = await _event(app, world["target"]["id"], 2)
    values = _rehash(approved, _key(app), actor="fin-1")
    await _sql(app, update(PayoutEvent).where(PayoutEvent.id == approved.id).values(values))
    (problem,) = (await _verify(app)).problems
    assert (problem.kind, problem.event_id, problem.sequence) == ("altered", approved.id, 2)
    # The last event, re-hashed: the payout's head no longer matches it.
    canceled = await _event(app, world["untouched"]["id"], 3)
    await _sql(
        app,
        update(PayoutEvent)
        .where(PayoutEvent.id == canceled.id)
        .values(_rehash(canceled, _key(app), data={**canceled.data, "reason": "customer asked"})),
    )
    problems = {p.payout_id: p for p in (await _verify(app)).problems}
    assert (
        problems[world["untouched"]["id"]].kind,
        problems[world["untouched"]["id"]].event_id,
    ) == (
        "altered",
        canceled.id,
    )


async def test_a_deleted_event_is_named(app: FastAPI, world: dict[str, Any]) -> None:
    approved = await _event(app, world["target"]["id"], 2)
    await _sql(app, delete(PayoutEvent).where(PayoutEvent.id == approved.id))
    (problem,) = (await _verify(app)).problems
    assert (problem.payout_id, problem.kind, problem.sequence) == (
        world["target"]["id"],
        "removed",
        2,
    )
    assert "sequence 2 removed" in problem.describe()


async def test_a_deleted_last_event_is_caught_by_the_head(
    app: FastAPI, world: dict[str, Any]
) -> None:
    await _sql(
        app,
        delete(PayoutEvent).where(
            PayoutEvent.payout_id == world["auto"]["id"], PayoutEvent.sequence == 2
        ),
    )
    (problem,) = (await _verify(app)).problems
    assert (problem.payout_id, problem.kind, problem.sequence) == (
        world["auto"]["id"],
        "removed",
        2,
    )


async def test_an_appended_event_is_named(app: FastAPI, world: dict[str, Any]) -> None:
    last = await _event(app, world["target"]["id"], 3)
    forged = _rehash(
        last,
        _key(app),
        id="evt_forged000000000000000000",
        sequence=4,
        type="payout.approved",
        actor="fin-1",
        data={"status": "approved"},
        prev_hash=last.hash,
    )
    await _sql(app, insert(PayoutEvent).values(forged))
    (problem,) = (await _verify(app)).problems
    assert (problem.kind, problem.event_id, problem.sequence) == ("inserted", forged["id"], 4)


async def test_an_event_inserted_in_the_middle_is_named(
    app: FastAPI, world: dict[str, Any]
) -> None:
    pid = world["target"]["id"]
    first, second, third = [await _event(app, pid, n) for n in (1, 2, 3)]
    forged = _rehash(
        second,
        _key(app),
        id="evt_forged000000000000000001",
        actor="fin-1",
        data={"status": "approved", "comment": "fine"},
        prev_hash=first.hash,
    )
    await _sql(
        app,
        # Make room: the forger renumbers the later events (highest first: sequences are unique).
        update(PayoutEvent).where(PayoutEvent.id == third.id).values(sequence=4),
        update(PayoutEvent).where(PayoutEvent.id == second.id).values(sequence=3),
        insert(PayoutEvent).values(forged),
    )
    (problem,) = (await _verify(app)).problems
    assert (problem.kind, problem.event_id, problem.sequence) == ("inserted", forged["id"], 2)


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"amount_minor": 5_000_00}, "amount"),
        ({"status": "approved"}, "status"),
        ({"required_approvals": 0}, "amount"),
    ],
)
async def test_an_edited_payouts_row_is_caught(
    app: FastAPI, world: dict[str, Any], change: dict[str, Any], what: str
) -> None:
    pid = world["target"]["id"]
    await _sql(app, update(Payout).where(Payout.id == pid).values(**change))
    (problem,) = (await _verify(app)).problems
    assert (problem.payout_id, problem.kind) == (pid, "altered")
    assert what in problem.message
    assert "payouts row" in problem.message


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli_app, ["audit", "verify", *args])


async def test_the_cli_exits_non_zero_and_names_the_event(
    app: FastAPI, world: dict[str, Any], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYOUTSVC_DATABASE_URL", database_url)
    monkeypatch.setenv("PAYOUTSVC_ENCRYPTION_KEY", ENCRYPTION_KEY)
    get_settings.cache_clear()
    try:
        intact = await asyncio.to_thread(_cli)
        assert intact.exit_code == 0, intact.output
        assert "3 payouts, 8 events, 0 anomalies, 0 anomaly events checked: intact" in (
            intact.output
        )
        approved = await _event(app, world["target"]["id"], 2)
        await _sql(
            app,
            update(PayoutEvent).where(PayoutEvent.id == approved.id).values(actor="fin-1"),
        )
        broken = await asyncio.to_thread(_cli)
        assert broken.exit_code == 1, broken.output
        assert f"BROKEN {world['target']['id']}: event {approved.id} (sequence 2) altered" in (
            broken.output
        )
        one = await asyncio.to_thread(_cli, "--payout", world["untouched"]["id"], "--json")
        assert one.exit_code == 0, one.output
        assert '"payouts_checked": 1' in one.output
        missing = await asyncio.to_thread(_cli, "--payout", "po_missing")
        assert missing.exit_code == 2
    finally:
        get_settings.cache_clear()


# -- keyed chains: what a forger without the audit key cannot hide ----------------------------
async def _events(app: FastAPI, payout_id: str) -> list[PayoutEvent]:
    async with db(app).transaction() as session:
        query = (
            select(PayoutEvent)
            .where(PayoutEvent.payout_id == payout_id)
            .order_by(PayoutEvent.sequence)
        )
        return list((await session.execute(query)).scalars())


@pytest.mark.parametrize("scheme", ["hmac-sha256", "sha256"])
async def test_an_edit_rehashed_with_plain_sha256_is_named(
    app: FastAPI, world: dict[str, Any], scheme: str
) -> None:
    """The attack the unkeyed chain could not see: edit an event, recompute plain SHA-256
    hashes for it and every later event, move the head. Whether the forger leaves the row
    marked keyed or marks it plain (the pre-0009 scheme), the edit is named."""
    pid = world["target"]["id"]
    chain = await _events(app, pid)
    statements: list[Any] = []
    prev_hash = chain[0].hash
    for event in chain[1:]:
        changes: dict[str, Any] = {"prev_hash": prev_hash, "hash_scheme": scheme}
        if event.sequence == 2:
            changes["actor"] = "fin-1"
        values = _rehash(event, None, **changes)
        statements.append(update(PayoutEvent).where(PayoutEvent.id == event.id).values(values))
        prev_hash = values["hash"]
    statements.append(update(Payout).where(Payout.id == pid).values(last_event_hash=prev_hash))
    await _sql(app, *statements)
    (problem,) = (await _verify(app)).problems
    assert (problem.payout_id, problem.kind, problem.sequence) == (pid, "altered", 2)


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"description": "a different story"}, "description"),
        ({"metadata_": {"order": "forged"}}, "metadata"),
        ({"ticket_url": "https://evil.example/ticket"}, "ticket"),
        ({"failure_code": "gateway_declined"}, "failure"),
        ({"gateway_reference": "ref-forged"}, "gateway result"),
    ],
)
async def test_fields_outside_the_old_digest_are_sealed(
    app: FastAPI, world: dict[str, Any], change: dict[str, Any], what: str
) -> None:
    pid = world["target"]["id"]
    await _sql(app, update(Payout).where(Payout.id == pid).values(**change))
    (problem,) = (await _verify(app)).problems
    assert (problem.payout_id, problem.kind) == (pid, "altered")
    assert what in problem.message


async def test_an_edited_approval_row_is_named(app: FastAPI, world: dict[str, Any]) -> None:
    pid = world["target"]["id"]
    await _sql(
        app,
        update(PayoutApproval)
        .where(PayoutApproval.payout_id == pid)
        .values(operator_id="fin-1", comment="looks fine"),
    )
    (problem,) = (await _verify(app)).problems
    assert (problem.payout_id, problem.kind) == (pid, "altered")
    assert "approval rows" in problem.message


async def test_an_approval_without_its_required_approvers_is_unauthorized(
    app: FastAPI, world: dict[str, Any]
) -> None:
    """Even with the key, an approval that records fewer approvers than the payout needed
    does not pass the walk."""
    pid = world["target"]["id"]
    await _sql(app, update(Payout).where(Payout.id == pid).values(required_approvals=2))
    problems = (await _verify(app)).problems
    # The row edit itself is named first (payout_digest); the walk rule is checked below.
    assert [(p.payout_id, p.kind) for p in problems] == [(pid, "altered")]
    approved = await _event(app, pid, 2)
    forged = _rehash(approved, _key(app), data={**approved.data, "required_approvals": 2})
    chain = await _events(app, pid)
    relinked = _rehash(chain[2], _key(app), prev_hash=forged["hash"])
    await _sql(
        app,
        update(Payout).where(Payout.id == pid).values(required_approvals=1),
        update(PayoutEvent).where(PayoutEvent.id == approved.id).values(forged),
        update(PayoutEvent).where(PayoutEvent.id == chain[2].id).values(relinked),
        update(Payout).where(Payout.id == pid).values(last_event_hash=relinked["hash"]),
    )
    (problem,) = (await _verify(app)).problems
    assert (problem.payout_id, problem.kind, problem.sequence) == (pid, "unauthorized", 2)
    assert "1 distinct approval(s) recorded, 2 required" in problem.message


# -- checkpoints -------------------------------------------------------------------------------
async def _checkpoint(app: FastAPI) -> AuditCheckpoint:
    async with db(app).transaction() as session:
        return await record_checkpoint(session, _key(app), utcnow())


async def _delete_payout(app: FastAPI, payout_id: str) -> None:
    await _sql(
        app,
        delete(WebhookDelivery).where(WebhookDelivery.payout_id == payout_id),
        delete(PayoutEvent).where(PayoutEvent.payout_id == payout_id),
        delete(PayoutApproval).where(PayoutApproval.payout_id == payout_id),
        delete(Payout).where(Payout.id == payout_id),
    )


async def test_a_payout_deleted_after_a_checkpoint_is_named(
    app: FastAPI, world: dict[str, Any]
) -> None:
    await _checkpoint(app)
    assert (await _verify(app)).ok
    await _delete_payout(app, world["target"]["id"])
    report = await _verify(app)
    assert [(p.payout_id, p.kind) for p in report.problems] == [(world["target"]["id"], "removed")]
    assert "deleted since checkpoint" in report.problems[0].message
    assert report.payouts_checked == 2


async def test_a_cleanly_truncated_chain_is_caught_by_the_checkpoint(
    app: FastAPI, world: dict[str, Any]
) -> None:
    """Deleting the newest event and moving the head back (with the status the previous
    event recorded) leaves a self-consistent chain; only the checkpoint remembers it."""
    pid = world["target"]["id"]
    await _checkpoint(app)
    approved = await _event(app, pid, 2)
    await _sql(
        app,
        delete(PayoutEvent).where(PayoutEvent.payout_id == pid, PayoutEvent.sequence == 3),
        update(Payout)
        .where(Payout.id == pid)
        .values(status="approved", last_event_sequence=2, last_event_hash=approved.hash),
    )
    (problem,) = (await _verify(app)).problems
    assert (problem.payout_id, problem.kind, problem.sequence) == (pid, "removed", 3)


async def test_an_edited_checkpoint_is_not_trusted(app: FastAPI, world: dict[str, Any]) -> None:
    checkpoint = await _checkpoint(app)
    heads = {k: v for k, v in checkpoint.heads.items() if k != world["target"]["id"]}
    await _sql(
        app,
        update(AuditCheckpoint).where(AuditCheckpoint.id == checkpoint.id).values(heads=heads),
    )
    await _delete_payout(app, world["target"]["id"])
    (problem,) = (await _verify(app)).problems
    assert (problem.payout_id, problem.kind) == ("checkpoint", "altered")


async def test_the_worker_records_a_checkpoint_when_the_last_is_older_than_the_interval(
    app: FastAPI, world: dict[str, Any]
) -> None:
    now = utcnow()
    async with db(app).transaction() as session:
        first = await checkpoint_if_due(session, _key(app), now, 86400)
        again = await checkpoint_if_due(session, _key(app), now + timedelta(hours=23), 86400)
        later = await checkpoint_if_due(session, _key(app), now + timedelta(hours=25), 86400)
    assert first is not None
    assert again is None
    assert later is not None
    assert (first.payouts, first.events) == (3, 8)
    assert later.keyed_since == first.keyed_since  # carried over, not recomputed


def _cli_checkpoint() -> Any:
    return CliRunner().invoke(cli_app, ["audit", "checkpoint"])


async def test_the_checkpoint_command_prints_a_signed_checkpoint(
    app: FastAPI, world: dict[str, Any], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYOUTSVC_DATABASE_URL", database_url)
    monkeypatch.setenv("PAYOUTSVC_ENCRYPTION_KEY", ENCRYPTION_KEY)
    get_settings.cache_clear()
    try:
        result = await asyncio.to_thread(_cli_checkpoint)
        assert result.exit_code == 0, result.output
        printed = json.loads(result.output)
        assert (printed["payouts"], printed["events"]) == (3, 8)
        assert len(printed["signature"]) == 64
        assert len(printed["heads_sha256"]) == 64
        await _delete_payout(app, world["auto"]["id"])
        broken = await asyncio.to_thread(_cli)
        assert broken.exit_code == 1, broken.output
        assert f"BROKEN {world['auto']['id']}: event removed" in broken.output
        assert f"against checkpoint {printed['id']}" in broken.output
    finally:
        get_settings.cache_clear()


# -- the back office's endpoint ----------------------------------------------------------------
async def test_get_audit_verify_reports_for_admins_only(
    app: FastAPI, client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    intact = await client.get("/v1/audit/verify")
    assert intact.status_code == 200, intact.text
    assert intact.json()["ok"] is True
    assert (intact.json()["payouts_checked"], intact.json()["events_checked"]) == (3, 8)
    pid = world["target"]["id"]
    await _sql(app, update(Payout).where(Payout.id == pid).values(description="edited"))
    broken = (await client.get("/v1/audit/verify")).json()
    assert broken["ok"] is False
    assert [(p["payout_id"], p["kind"]) for p in broken["problems"]] == [(pid, "altered")]
    one = (await client.get("/v1/audit/verify", params={"payout_id": world["auto"]["id"]})).json()
    assert (one["ok"], one["payouts_checked"]) == (True, 1)
    reader = await new_integration_client(client, "auditless", ["payouts:read"])
    async with reader:
        denied = await reader.get("/v1/audit/verify")
    assert denied.status_code == 403, denied.text


async def test_payoutsvc_audit_key_replaces_the_derived_key(database_url: str) -> None:
    """With PAYOUTSVC_AUDIT_KEY set, the chain is keyed with it: the key derived from the
    encryption key (what a reader of the encryption key alone could compute) does not verify."""
    application = create_app(make_settings(database_url, audit_key="a-separate-audit-secret-" * 2))
    async with application.router.lifespan_context(application):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as client:
            await setup_world(client)
            await created(client, body("5.00"))
        runtime = application.state.runtime
        assert runtime.audit_key != runtime.cipher.audit_key
        async with db(application).transaction(write=False) as session:
            assert (await verify_all(session, runtime.audit_key)).ok
            derived = await verify_all(session, runtime.cipher.audit_key)
        assert [p.kind for p in derived.problems] == ["altered"]
