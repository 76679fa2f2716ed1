"""`payoutsvc audit verify` and GET /v1/audit/verify walk the anomalies' keyed chains too:
an edited, re-hashed or deleted anomaly event, or an edited anomalies row, is named like a
broken payout history; untouched anomalies verify clean."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from payoutsvc.audit import AuditReport, _signature, _signed_part, record_checkpoint, verify_all
from payoutsvc.cli import app as cli_app
from payoutsvc.config import get_settings
from payoutsvc.db.base import utcnow
from payoutsvc.payouts.events import event_hash
from payoutsvc.payouts.models import AuditCheckpoint, Payout, PayoutApproval
from payoutsvc.policy.models import LimitCounter
from payoutsvc.review.models import Anomaly, AnomalyEvent
from tests.api_support import db_session
from tests.conftest import ENCRYPTION_KEY
from tests.helpers import bearer_of
from tests.review.support import TODAY, anomalies, scan, seeder

NOON = TODAY + timedelta(hours=12)


@pytest.fixture
async def found(client: httpx.AsyncClient, app: FastAPI) -> dict[str, str]:
    """Two anomalies (threshold splitting by agent-1 and agent-2), the first reviewed: three
    anomaly events in all. The seeded payouts carry no histories of their own (the API did
    not create them), so they are removed once scanned: the walk then sees anomalies only."""
    seed = await seeder(client)
    for requester, at in (("agent-1", NOON), ("agent-2", NOON + timedelta(hours=1))):
        for i, amount in enumerate((4800, 4900, 4750)):
            seed.payout(requester, amount, at + timedelta(minutes=i))
    await seed.commit(app)
    await scan(app)
    reviewed, other = (a["id"] for a in await anomalies(client))
    fin = await bearer_of(client, "fin-1", ("admin",))
    answer = await client.post(
        f"/v1/anomalies/{reviewed}/review",
        json={"operator_id": "fin-1", "outcome": "confirmed", "comment": "Split refund."},
        headers=fin,
    )
    assert answer.status_code == 200, answer.text
    async with db_session(app) as session:
        for table in (PayoutApproval, LimitCounter, Payout):
            await session.execute(delete(table))
    return {"reviewed": reviewed, "other": other}


async def _verify(app: FastAPI) -> AuditReport:
    async with db_session(app) as session:
        return await verify_all(session, app.state.runtime.audit_key)


async def _events(app: FastAPI, anomaly_id: str) -> list[AnomalyEvent]:
    async with db_session(app) as session:
        query = (
            select(AnomalyEvent)
            .where(AnomalyEvent.anomaly_id == anomaly_id)
            .order_by(AnomalyEvent.sequence)
        )
        return list((await session.execute(query)).scalars())


async def _sql(app: FastAPI, *statements: Any) -> None:
    async with db_session(app) as session:
        for statement in statements:
            await session.execute(statement)


def _named(report: AuditReport) -> list[tuple[str, str, str | None, int | None]]:
    return [(p.payout_id, p.kind, p.event_id, p.sequence) for p in report.problems]


async def test_untouched_anomaly_histories_verify(
    client: httpx.AsyncClient, app: FastAPI, found: dict[str, str]
) -> None:
    report = await _verify(app)
    assert report.ok, [p.describe() for p in report.problems]
    assert (report.anomalies_checked, report.anomaly_events_checked) == (2, 3)
    answer = await client.get("/v1/audit/verify")
    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"] is True
    assert (answer.json()["anomalies_checked"], answer.json()["anomaly_events_checked"]) == (2, 3)


async def test_an_edited_anomaly_event_is_named(
    client: httpx.AsyncClient, app: FastAPI, found: dict[str, str]
) -> None:
    _, reviewed = await _events(app, found["reviewed"])
    # Someone turns the confirmation into a dismissal in the history.
    forged = {**reviewed.data, "outcome": "dismissed"}
    await _sql(app, update(AnomalyEvent).where(AnomalyEvent.id == reviewed.id).values(data=forged))
    assert _named(await _verify(app)) == [(found["reviewed"], "altered", reviewed.id, 2)]
    answer = (await client.get("/v1/audit/verify")).json()
    assert answer["ok"] is False
    assert [(p["payout_id"], p["anomaly_id"], p["kind"]) for p in answer["problems"]] == [
        (found["reviewed"], found["reviewed"], "altered")
    ]


async def test_an_anomaly_event_rehashed_without_the_key_is_named(
    app: FastAPI, found: dict[str, str]
) -> None:
    (detected,) = await _events(app, found["other"])
    data = {**detected.data, "explanation": "Nothing to see."}
    plain = event_hash(
        payout_id=detected.anomaly_id,
        sequence=detected.sequence,
        type=detected.type,
        actor=detected.actor,
        at=detected.at,
        data=data,
        prev_hash=detected.prev_hash,
        event_id=detected.id,
        key=b"not the audit key",
    )
    await _sql(
        app,
        update(AnomalyEvent).where(AnomalyEvent.id == detected.id).values(data=data, hash=plain),
    )
    assert _named(await _verify(app)) == [(found["other"], "altered", detected.id, 1)]


async def test_a_deleted_anomaly_event_is_named(app: FastAPI, found: dict[str, str]) -> None:
    detected, reviewed = await _events(app, found["reviewed"])
    await _sql(app, delete(AnomalyEvent).where(AnomalyEvent.id == detected.id))
    (problem,) = (await _verify(app)).problems
    assert (problem.payout_id, problem.owner, problem.kind, problem.sequence) == (
        found["reviewed"],
        "anomaly",
        "removed",
        1,
    )
    # The last one: the anomalies row's head still expects it.
    await _sql(app, delete(AnomalyEvent).where(AnomalyEvent.id == reviewed.id))
    (problem,) = (await _verify(app)).problems
    assert (problem.kind, problem.sequence) == ("removed", 1)
    (only,) = await _events(app, found["other"])
    await _sql(app, delete(AnomalyEvent).where(AnomalyEvent.id == only.id))
    assert {(p.payout_id, p.kind) for p in (await _verify(app)).problems} == {
        (found["reviewed"], "removed"),
        (found["other"], "removed"),
    }


async def test_an_edited_anomalies_row_is_named(app: FastAPI, found: dict[str, str]) -> None:
    _, reviewed = await _events(app, found["reviewed"])
    # Someone reopens a confirmed anomaly by editing its row.
    await _sql(
        app, update(Anomaly).where(Anomaly.id == found["reviewed"]).values(status="dismissed")
    )
    (problem,) = (await _verify(app)).problems
    assert (problem.payout_id, problem.kind, problem.event_id) == (
        found["reviewed"],
        "altered",
        reviewed.id,
    )
    assert "status" in problem.message


async def test_the_cli_names_a_broken_anomaly_history(
    app: FastAPI, found: dict[str, str], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYOUTSVC_DATABASE_URL", database_url)
    monkeypatch.setenv("PAYOUTSVC_ENCRYPTION_KEY", ENCRYPTION_KEY)
    get_settings.cache_clear()
    try:
        _, reviewed = await _events(app, found["reviewed"])
        edit = update(AnomalyEvent).where(AnomalyEvent.id == reviewed.id).values(actor="x")
        await _sql(app, edit)
        broken = await asyncio.to_thread(CliRunner().invoke, cli_app, ["audit", "verify"])
        assert broken.exit_code == 1, broken.output
        assert f"BROKEN {found['reviewed']}: event {reviewed.id} (sequence 2) altered" in (
            broken.output
        )
        assert "2 anomalies, 3 anomaly events checked" in broken.output
    finally:
        get_settings.cache_clear()


async def _checkpoint(app: FastAPI) -> None:
    async with db_session(app) as session:
        await record_checkpoint(session, app.state.runtime.audit_key, utcnow())


async def test_an_anomaly_deleted_with_its_events_after_a_checkpoint_is_named(
    client: httpx.AsyncClient, app: FastAPI, found: dict[str, str]
) -> None:
    await _checkpoint(app)
    assert (await _verify(app)).ok
    # Someone with database access removes a confirmed finding and its whole history: no
    # chain is left to show a gap, only the checkpoint remembers it.
    await _sql(
        app,
        delete(AnomalyEvent).where(AnomalyEvent.anomaly_id == found["reviewed"]),
        delete(Anomaly).where(Anomaly.id == found["reviewed"]),
    )
    (problem,) = (await _verify(app)).problems
    assert (problem.payout_id, problem.owner, problem.kind) == (
        found["reviewed"],
        "anomaly",
        "removed",
    )
    assert "the anomaly and its events were deleted since checkpoint" in problem.message
    answer = (await client.get("/v1/audit/verify")).json()
    assert [(p["anomaly_id"], p["kind"]) for p in answer["problems"]] == [
        (found["reviewed"], "removed")
    ]


async def test_a_review_undone_after_a_checkpoint_is_named(
    app: FastAPI, found: dict[str, str]
) -> None:
    detected, reviewed = await _events(app, found["reviewed"])
    await _checkpoint(app)
    # The confirmation is erased and the row put back as it was before it: the chain that
    # is left is whole and matches its row, so only the checkpoint's head shows the loss.
    async with db_session(app) as session:
        anomaly = await session.get(Anomaly, found["reviewed"])
        assert anomaly is not None
        before_review = {
            "status": "open",
            "reviewed_by": None,
            "reviewed_at": None,
            "review_comment": None,
            "last_event_sequence": 1,
            "last_event_hash": detected.hash,
            "updated_at": detected.at,
        }
    await _sql(
        app,
        delete(AnomalyEvent).where(AnomalyEvent.id == reviewed.id),
        update(Anomaly).where(Anomaly.id == found["reviewed"]).values(**before_review),
    )
    (problem,) = (await _verify(app)).problems
    assert (problem.payout_id, problem.owner, problem.kind, problem.sequence) == (
        found["reviewed"],
        "anomaly",
        "removed",
        2,
    )


async def test_a_checkpoint_from_before_anomalies_were_recorded_flags_none(
    app: FastAPI, found: dict[str, str]
) -> None:
    await _checkpoint(app)
    # A checkpoint recorded by a version that kept payout heads only.
    async with db_session(app) as session:
        checkpoint = (
            (await session.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc())))
            .scalars()
            .first()
        )
        assert checkpoint is not None
        assert {found["reviewed"], found["other"]} <= set(checkpoint.heads)
        payout_heads = {k: v for k, v in checkpoint.heads.items() if not k.startswith("an_")}
        checkpoint.heads = payout_heads
        checkpoint.signature = _signature(app.state.runtime.audit_key, _signed_part(checkpoint))
    report = await _verify(app)
    assert report.ok, [p.describe() for p in report.problems]
