"""Seeding payout history straight into the tables (as the benchmark does), and the review's
policy: detector tests need weeks of backdated activity the API cannot create."""

from __future__ import annotations

import copy
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import insert, text

from payoutsvc.ids import new_id
from payoutsvc.payouts.models import Payout, PayoutApproval
from payoutsvc.policy.document import DEFAULT_POLICY_DOCUMENT
from payoutsvc.review.service import ReviewService, ScanResult
from tests.api_support import db_session
from tests.helpers import create_operator, integration_id_of

# A Wednesday evening (UTC): "today" of the seeded histories; working hours 09:00-19:00.
TODAY = datetime(2026, 11, 25, tzinfo=UTC)
SCAN_AT = TODAY + timedelta(hours=20)
AGENTS = [f"agent-{i}" for i in range(1, 7)]
SUPERVISORS = ["sup-1", "sup-2", "sup-3"]
WORKING_HOURS = {"start": "09:00", "end": "19:00", "days": [1, 2, 3, 4, 5]}

_UPSERT_COUNTER = text(
    "INSERT INTO limit_counters (scope, subject, day, currency, payouts, amount_minor)"
    " VALUES (:scope, :subject, :day, :currency, 1, :amount)"
    " ON CONFLICT (scope, subject, day, currency) DO UPDATE SET"
    " payouts = limit_counters.payouts + 1,"
    " amount_minor = limit_counters.amount_minor + excluded.amount_minor"
)


@dataclass
class Seeder:
    """Rows to insert: payouts (with their limit counters) and approvals."""

    integration_id: str
    payouts: list[dict[str, Any]] = field(default_factory=list)
    approvals: list[dict[str, Any]] = field(default_factory=list)

    def payout(
        self,
        requester: str,
        amount_minor: int,
        at: datetime,
        *,
        recipient: str | None = None,
        ticket: str | None = None,
        status: str = "succeeded",
    ) -> str:
        payout_id = new_id("po", int(at.timestamp() * 1000))
        recipient = recipient or uuid.uuid4().hex
        self.payouts.append(
            {
                "id": payout_id,
                "integration_id": self.integration_id,
                "status": status,
                "idempotency_key": uuid.uuid4().hex,
                "ticket_system": "zendesk",
                "ticket_id": ticket or uuid.uuid4().hex[:10],
                "reason": "refund",
                "amount_minor": amount_minor,
                "currency": "CNY",
                "recipient_type": "alipay",
                "recipient_encrypted": b"sealed",
                "recipient_public": {"type": "alipay", "account_masked": "138****" + recipient[:4]},
                "recipient_fingerprint": recipient,
                "requested_by": requester,
                "metadata": {},
                "required_approvals": 1,
                "gateway": "sandbox",
                "gateway_idempotency_key": uuid.uuid4().hex,
                "attempts": 0,
                "last_event_sequence": 0,
                "last_event_hash": "0" * 64,
                "created_at": at,
                "updated_at": at,
                "limit_day": int(datetime.combine(at.date(), datetime.min.time(), UTC).timestamp()),
            }
        )
        return payout_id

    def approval(self, payout_id: str, approver: str, at: datetime) -> None:
        self.approvals.append(
            {"payout_id": payout_id, "operator_id": approver, "decision": "approved", "at": at}
        )

    async def commit(self, app: FastAPI) -> None:
        async with db_session(app) as session:
            if self.payouts:
                await session.execute(insert(Payout.__table__), self.payouts)
                counters = [
                    {
                        "scope": "requester",
                        "subject": p["requested_by"],
                        "day": p["limit_day"],
                        "currency": p["currency"],
                        "amount": p["amount_minor"],
                    }
                    for p in self.payouts
                ]
                await session.execute(_UPSERT_COUNTER, counters)
            if self.approvals:
                # In time order, as a live system numbers them.
                self.approvals.sort(key=lambda a: a["at"])
                await session.execute(insert(PayoutApproval), self.approvals)
        self.payouts.clear()
        self.approvals.clear()


async def seeder(client: httpx.AsyncClient) -> Seeder:
    for agent in AGENTS:
        await create_operator(client, agent, "agent")
    for supervisor in SUPERVISORS:
        await create_operator(client, supervisor, "supervisor")
    await create_operator(client, "fin-1", "finance")
    return Seeder(await integration_id_of(client))


def quiet_history(seed: Seeder, days: int = 30, *, today: bool = True) -> None:
    """A realistic quiet month: six agents paying 3-8 small refunds a weekday each, to
    distinct customers, at office hours; a third approved by a supervisor chosen at random."""
    rng = random.Random(16)
    for back in range(days, -1 if today else 0, -1):
        day = TODAY - timedelta(days=back)
        if day.isoweekday() > 5:  # weekends are quiet
            continue
        for agent in AGENTS:
            for _ in range(rng.randint(3, 8)):
                at = day + timedelta(hours=rng.randint(10, 17), minutes=rng.randint(0, 59))
                payout_id = seed.payout(agent, rng.randint(500, 3500), at)
                if rng.random() < 1 / 3:
                    approver = rng.choice(SUPERVISORS)
                    seed.approval(payout_id, approver, at + timedelta(minutes=rng.randint(1, 30)))


async def set_review_policy(client: httpx.AsyncClient, **review: Any) -> None:
    document = copy.deepcopy(DEFAULT_POLICY_DOCUMENT)
    document["review"].update(review)
    response = await client.put("/v1/policy", json=document)
    assert response.status_code == 200, response.text


async def scan(app: FastAPI, now: datetime = SCAN_AT) -> ScanResult:
    async with db_session(app) as session:
        return await ReviewService(session, app.state.runtime).scan(now)


async def anomalies(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/v1/anomalies", params={"limit": 200, **params})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])
