"""The executor pays only with evidence: a payout whose chain does not show a keyed approval
goes to needs_review (approval_evidence_missing) and nothing reaches the gateway."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, update

from payoutsvc.audit import verify_all
from payoutsvc.executor import evidence
from payoutsvc.executor.service import Executor
from payoutsvc.payouts.events import PLAIN_SCHEME, NewEvent, event_hash
from payoutsvc.payouts.models import Payout, PayoutEvent
from payoutsvc.runtime import Runtime
from tests.executor.support import (
    REQUESTER,
    FakeClock,
    approved_payout,
    attempts_of,
    drain,
    events_by_payout,
    payout_rows,
    transfers_by_payout,
    unique_body,
)

pytestmark = pytest.mark.usefixtures("operators")

# Over the requester's (a supervisor's) auto-approval limit: waits for a person.
NEEDS_APPROVAL = "900.00"


async def _pending(client: httpx.AsyncClient) -> dict[str, Any]:
    created = await client.post(
        "/v1/payouts",
        json=unique_body(NEEDS_APPROVAL),
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert created.status_code == 201, created.text
    payout: dict[str, Any] = created.json()
    assert payout["status"] == "pending_approval", payout
    return payout


async def _set(runtime: Runtime, payout_id: str, **values: Any) -> None:
    """What someone with write access to the database does."""
    async with runtime.db.transaction() as session:
        await session.execute(update(Payout).where(Payout.id == payout_id).values(**values))


async def _assert_refused(runtime: Runtime, payout_id: str) -> None:
    row = (await payout_rows(runtime.db))[payout_id]
    assert (row.status, row.failure_code) == ("needs_review", "approval_evidence_missing")
    assert payout_id not in await transfers_by_payout(runtime.db)  # nothing was sent
    assert await attempts_of(runtime.db, payout_id) == []  # not even a status query
    last = (await events_by_payout(runtime.db))[payout_id][-1]
    assert (last.type, last.data["reason"]) == ("payout.needs_review", "approval_evidence_missing")
    assert last.data["detail"]  # names why


async def test_a_payout_flipped_to_approved_in_the_database_is_not_paid(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    flipped = await _pending(client)
    honest = await approved_payout(client, runtime)
    await _set(runtime, flipped["id"], status="approved", next_attempt_at=clock.now)
    await drain(executor, clock)

    await _assert_refused(runtime, flipped["id"])
    assert (await payout_rows(runtime.db))[honest["id"]].status == "succeeded"
    async with runtime.db.transaction(write=False) as session:
        report = await verify_all(session, runtime.audit_key)
    assert [(p.payout_id, p.kind) for p in report.problems] == [(flipped["id"], "unauthorized")]
    assert "pending_approval" in report.problems[0].message


async def test_a_payout_flipped_to_processing_is_not_paid_on_the_retry_path(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    """The retry path (status query, then submit under the key) needs the same evidence."""
    flipped = await _pending(client)
    await _set(
        runtime,
        flipped["id"],
        status="processing",
        next_attempt_at=clock.now - timedelta(seconds=1),
        locked_by="gone/1",
        locked_until=clock.now - timedelta(seconds=1),
    )
    await drain(executor, clock)
    await _assert_refused(runtime, flipped["id"])


async def test_a_forged_plain_hash_approval_is_not_evidence(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor, clock: FakeClock
) -> None:
    """A forger who writes a well-formed payout.approved event (and the head) but hashes it
    without the audit key, as the pre-0009 chains were, is refused."""
    payout = await _pending(client)
    row = (await payout_rows(runtime.db))[payout["id"]]
    forged = NewEvent(
        payout_id=row.id,
        integration_id=row.integration_id,
        sequence=row.last_event_sequence + 1,
        type="payout.approved",
        actor="exec-fin",
        data={
            "status": "approved",
            "required_approvals": 1,
            "approvals": [{"operator_id": "exec-fin", "decision": "approved"}],
        },
        at=clock.now,
        prev_hash=row.last_event_hash,
        payout_snapshot={},
    )
    fields = {
        "payout_id": forged.payout_id,
        "sequence": forged.sequence,
        "type": forged.type,
        "actor": forged.actor,
        "at": forged.at,
        "data": forged.data,
        "prev_hash": forged.prev_hash,
    }
    digest = event_hash(**fields, event_id=forged.id, key=None)
    async with runtime.db.transaction() as session:
        await session.execute(
            insert(PayoutEvent).values(
                id=forged.id,
                integration_id=forged.integration_id,
                hash=digest,
                hash_scheme=PLAIN_SCHEME,
                **fields,
            )
        )
    await _set(
        runtime,
        row.id,
        status="approved",
        next_attempt_at=clock.now,
        last_event_sequence=forged.sequence,
        last_event_hash=digest,
    )
    await drain(executor, clock)
    await _assert_refused(runtime, row.id)
    last = (await events_by_payout(runtime.db))[row.id][-1]
    assert "valid keyed hash" in last.data["detail"]


def test_the_approval_rule_names_what_is_missing() -> None:
    """The content rule shared by the executor and audit verify."""
    one = [{"operator_id": "fin-1", "decision": "approved"}]
    two = [*one, {"operator_id": "fin-2", "decision": "approved"}]
    rule = evidence.approval_problem
    assert rule({"approvals": two, "required_approvals": 2}, "fin-2", "agent-1", 2) is None
    assert "1 distinct approval(s) recorded, 2 required" in str(
        rule({"approvals": [*one, *one], "required_approvals": 2}, "fin-1", "agent-1", 2)
    )
    assert "its own requester" in str(rule({"approvals": two}, "fin-2", "fin-1", 2))
    # The payouts row's requirement counts even if the event claims fewer.
    assert "2 required" in str(rule({"approvals": one, "required_approvals": 1}, "fin-1", "a", 2))
    assert rule({"auto_approved": True, "approvals": []}, "system", REQUESTER, 1) is None
    assert "instead of the policy" in str(rule({"auto_approved": True}, "fin-1", REQUESTER, 1))
