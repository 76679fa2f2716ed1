"""Each detector fires on a planted pattern and stays quiet on a realistic quiet day, on
SQLite and PostgreSQL; the scan is incremental and one scan at a time makes one anomaly."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from tests.review.support import (
    AGENTS,
    TODAY,
    WORKING_HOURS,
    Seeder,
    anomalies,
    quiet_history,
    scan,
    seeder,
    set_review_policy,
)


async def _quiet_world(client: httpx.AsyncClient, app: FastAPI) -> Seeder:
    seed = await seeder(client)
    await set_review_policy(client, working_hours=WORKING_HOURS)
    quiet_history(seed)
    await seed.commit(app)
    return seed


def _by_kind(found: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    result: dict[str, list[dict[str, Any]]] = {}
    for anomaly in found:
        result.setdefault(anomaly["kind"], []).append(anomaly)
    return result


async def test_a_quiet_day_raises_nothing(client: httpx.AsyncClient, app: FastAPI) -> None:
    await _quiet_world(client, app)
    result = await scan(app)
    assert result.new_payouts > 20  # today's activity was read
    assert result.new_approvals > 5
    assert await anomalies(client) == []


def _plant_patterns(seed: Seeder) -> dict[str, Any]:
    """One planted pattern per detector, on top of the quiet day."""
    noon = TODAY + timedelta(hours=12)
    planted: dict[str, Any] = {}
    # threshold_splitting: agent-1 pays one customer 48 + 49 + 47.50 (agent limit 50.00).
    customer = "splitcustomer01"
    planted["split"] = [
        seed.payout("agent-1", amount, noon + timedelta(minutes=i), recipient=customer)
        for i, amount in enumerate((4800, 4900, 4750))
    ]
    # recipient_many_tickets: one account paid on 5 tickets by 4 agents this week.
    mule = "muleaccount0001"
    planted["mule"] = [
        seed.payout(AGENTS[i % 4 + 1], 1000, TODAY - timedelta(days=i, hours=-11), recipient=mule)
        for i in range(5)
    ]
    # requester_velocity: agent-6 pays 30 refunds today (usually 3-8).
    planted["velocity"] = [
        seed.payout("agent-6", 1500, noon + timedelta(minutes=2 * i)) for i in range(30)
    ]
    # approver_concentration: fin-1 gives 12 of their 14 approvals this month to agent-2.
    for i in range(14):
        at = TODAY - timedelta(days=i * 2, hours=-14)
        requester = "agent-2" if i < 12 else AGENTS[i - 9]
        seed.approval(seed.payout(requester, 2000, at), "fin-1", at + timedelta(minutes=5))
    # off_hours: agent-3 requests at 03:12 and 03:40.
    planted["night"] = [
        seed.payout("agent-3", 900, TODAY + timedelta(hours=3, minutes=m)) for m in (12, 40)
    ]
    return planted


async def test_each_detector_fires_on_its_planted_pattern(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    seed = await _quiet_world(client, app)
    planted = _plant_patterns(seed)
    await seed.commit(app)
    await scan(app)
    found = _by_kind(await anomalies(client))
    assert sorted(found) == [
        "approver_concentration",
        "off_hours",
        "recipient_many_tickets",
        "requester_velocity",
        "threshold_splitting",
    ]
    split = found["threshold_splitting"]
    assert len(split) == 1
    assert split[0]["subjects"]["requester"] == "agent-1"
    assert split[0]["subjects"]["recipient_masked"] == "alipay 138****spli"
    assert sorted(split[0]["payout_ids"]) == sorted(planted["split"])
    assert "just under the agent auto-approval limit of 50.00 CNY" in split[0]["explanation"]
    assert "together 144.50 CNY" in split[0]["explanation"]

    [mule] = found["recipient_many_tickets"]
    assert sorted(mule["payout_ids"]) == sorted(planted["mule"])
    assert mule["subjects"]["recipient_masked"] == "alipay 138****mule"
    assert "muleaccount" not in str(mule)  # the fingerprint never shows
    assert "paid on 5 tickets by 4 requesters" in mule["explanation"]

    [velocity] = found["requester_velocity"]
    assert velocity["subjects"]["requester"] == "agent-6"
    assert set(planted["velocity"]) <= set(velocity["payout_ids"])

    [pair] = found["approver_concentration"]
    assert pair["subjects"] == {"approver": "fin-1", "requester": "agent-2", "share_percent": 85}
    assert len(pair["payout_ids"]) == 12

    [night] = found["off_hours"]
    assert night["subjects"]["requester"] == "agent-3"
    assert sorted(night["payout_ids"]) == sorted(planted["night"])
    assert "at 03:12, 03:40" in night["explanation"]
    assert all(a["status"] == "open" for a in await anomalies(client))


async def test_off_hours_is_silent_without_working_hours(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    seed = await seeder(client)
    quiet_history(seed, days=0)
    seed.payout("agent-3", 900, TODAY + timedelta(hours=3))
    await seed.commit(app)
    await scan(app)
    assert await anomalies(client, kind="off_hours") == []


async def test_a_later_scan_updates_the_open_anomaly(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    seed = await _quiet_world(client, app)
    _plant_patterns(seed)
    await seed.commit(app)
    await scan(app)
    [before] = await anomalies(client, kind="threshold_splitting")
    # A fourth piece an hour later: the same finding (requester, day, limit) grows.
    extra = seed.payout(
        "agent-1", 4900, TODAY + timedelta(hours=19, minutes=30), recipient="splitcustomer01"
    )
    await seed.commit(app)
    second = await scan(app, TODAY + timedelta(hours=21))
    assert second.new_payouts == 1  # only what is new was read
    [after] = await anomalies(client, kind="threshold_splitting")
    assert after["id"] == before["id"]
    assert extra in after["payout_ids"]
    assert len(after["payout_ids"]) == 4
    assert "together 193.50 CNY" in after["explanation"]
    # Nothing new: nothing is read, nothing changes.
    third = await scan(app, TODAY + timedelta(hours=22))
    assert (third.new_payouts, third.detected, third.updated) == (0, 0, 0)


async def test_two_workers_scanning_at_once_make_one_anomaly(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    seed = await _quiet_world(client, app)
    _plant_patterns(seed)
    await seed.commit(app)
    first, second = await asyncio.gather(scan(app), scan(app))
    # One scan read everything; the other waited on the watermark and found nothing new.
    assert sorted([first.new_payouts == 0, second.new_payouts == 0]) == [False, True]
    found = await anomalies(client)
    assert len(found) == 5
    assert len({(a["kind"], str(a["subjects"])) for a in found}) == 5
