"""Migration 0009 on a database with history: the plain SHA-256 chains written before it
still verify as they were, new events on them are keyed, and a legacy approval is no evidence
for the executor."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any, cast

import httpx
from alembic import command
from sqlalchemy import Table, create_engine, insert, select

from payoutsvc.audit import verify_all
from payoutsvc.auth.models import Integration
from payoutsvc.db.base import utcnow
from payoutsvc.db.migrate import alembic_config, upgrade_to_head
from payoutsvc.executor.service import Executor
from payoutsvc.ids import new_id
from payoutsvc.main import create_app
from payoutsvc.payouts.events import GENESIS_HASH, event_hash, payout_digest
from payoutsvc.payouts.models import Payout, PayoutApproval, PayoutEvent
from tests.conftest import ADMIN_KEY, ENCRYPTION_KEY, make_settings
from tests.executor.support import approved_rows, payout_rows, transfers_by_payout
from tests.helpers import create_operator

_EVENT_COLUMNS_AT_0007 = (
    "id",
    "payout_id",
    "integration_id",
    "sequence",
    "type",
    "actor",
    "data",
    "at",
    "prev_hash",
    "hash",
)


def _legacy_chain(payout: dict[str, Any], steps: list[tuple[str, str, dict[str, Any]]]) -> list:
    """Events as the code before 0009 wrote them: plain SHA-256, the narrower digest."""
    events: list[dict[str, Any]] = []
    prev_hash = GENESIS_HASH
    for sequence, (type_, actor, data) in enumerate(steps, start=1):
        event = {
            "id": new_id("evt"),
            "payout_id": payout["id"],
            "integration_id": payout["integration_id"],
            "sequence": sequence,
            "type": type_,
            "actor": actor,
            "data": data,
            "at": payout["created_at"],
            "prev_hash": prev_hash,
        }
        event["hash"] = prev_hash = event_hash(
            payout_id=event["payout_id"],
            sequence=sequence,
            type=type_,
            actor=actor,
            at=event["at"],
            data=data,
            prev_hash=event["prev_hash"],
            event_id=event["id"],
            key=None,
        )
        events.append(event)
    payout.update(last_event_sequence=len(events), last_event_hash=prev_hash)
    return events


def _write_history(path: Path) -> dict[str, str]:
    """A pending payout and one approved by fin-1, written at revision 0007."""
    engine = create_engine(f"sqlite:///{path}")
    integration_id = new_id("int")
    rows, _ = approved_rows(
        integration_id,
        base64.urlsafe_b64decode(ENCRYPTION_KEY),
        [(1, 900_00), (2, 800_00)],
        actor="agent-1",
        ticket_system="zendesk",
        ticket_prefix="legacy-",
    )
    pending, approved = rows
    pending.update(status="pending_approval", next_attempt_at=None)
    created = {"required_approvals": 1, "payout_digest": payout_digest(pending, keyed=False)}
    events = _legacy_chain(
        pending, [("payout.created", "agent-1", {"status": "pending_approval", **created})]
    )
    approval = {"operator_id": "fin-1", "decision": "approved", "comment": None}
    stamp = approved["created_at"]
    events += _legacy_chain(
        approved,
        [
            (
                "payout.created",
                "agent-1",
                {
                    "status": "pending_approval",
                    "required_approvals": 1,
                    "payout_digest": payout_digest(approved, keyed=False),
                },
            ),
            (
                "payout.approved",
                "fin-1",
                {
                    "status": "approved",
                    "required_approvals": 1,
                    "approver_role": "finance",
                    "approvals": [{**approval, "at": stamp.isoformat()}],
                },
            ),
        ],
    )
    with engine.begin() as connection:
        connection.execute(
            insert(cast(Table, Integration.__table__)),
            [{"id": integration_id, "name": "default", "created_at": stamp}],
        )
        connection.execute(insert(cast(Table, Payout.__table__)), rows)
        connection.execute(
            insert(cast(Table, PayoutApproval.__table__)),
            [{**approval, "payout_id": approved["id"], "at": stamp}],
        )
        table = cast(Table, PayoutEvent.__table__)
        for event in events:
            # The 0007 table has no hash_scheme column: insert only the columns it has.
            connection.execute(insert(table).values({k: event[k] for k in _EVENT_COLUMNS_AT_0007}))
    engine.dispose()
    return {"pending": pending["id"], "approved": approved["id"]}


async def test_old_chains_verify_after_the_migration_and_grow_keyed(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(command.upgrade, alembic_config(url), "0007")
    ids = await asyncio.to_thread(_write_history, path)
    await asyncio.to_thread(upgrade_to_head, url)

    app = create_app(make_settings(url))
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        async with runtime.db.transaction(write=False) as session:
            report = await verify_all(session, runtime.audit_key)
            schemes = set((await session.execute(select(PayoutEvent.hash_scheme))).scalars())
        assert report.ok, [p.describe() for p in report.problems]
        assert (report.payouts_checked, report.events_checked, schemes) == (2, 3, {"sha256"})

        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as client:
            await create_operator(client, "agent-1", "agent")
            canceled = await client.post(
                f"/v1/payouts/{ids['pending']}/cancel",
                json={"operator_id": "agent-1", "reason": "after the upgrade"},
            )
            assert canceled.status_code == 200, canceled.text
        # A legacy approval carries no keyed hash: held for review, never sent.
        assert await Executor(runtime, clock=utcnow).run_once() == 1
        rows = await payout_rows(runtime.db)
        assert rows[ids["approved"]].status == "needs_review"
        assert rows[ids["approved"]].failure_code == "approval_evidence_missing"
        assert ids["approved"] not in await transfers_by_payout(runtime.db)

        async with runtime.db.transaction(write=False) as session:
            report = await verify_all(session, runtime.audit_key)
            schemes = set((await session.execute(select(PayoutEvent.hash_scheme))).scalars())
        assert report.ok, [p.describe() for p in report.problems]
        assert (report.payouts_checked, report.events_checked) == (2, 6)
        assert schemes == {"sha256", "hmac-sha256"}
