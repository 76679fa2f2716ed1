"""The worker's paced scan (review/scanner.py): chunk by chunk, each its own short
transaction, it finds what one whole scan finds; it sleeps between chunks in proportion to its
busy time, holds no lock while it sleeps, and a crash between chunks loses and duplicates
nothing."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from payoutsvc.ids import id_floor
from payoutsvc.review.repository import ReviewRepository
from payoutsvc.review.scanner import PacedScan
from payoutsvc.review.service import FIRST_SCAN_LOOKBACK, SCAN_LAG
from tests.api_support import db_session, scalar
from tests.review.support import SCAN_AT, anomalies
from tests.review.test_detectors import _plant_patterns, _quiet_world


class _Crash(Exception):
    """The worker dying between two chunks."""


def _summary(found: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return sorted((a["kind"], str(a["subjects"]), len(a["payout_ids"])) for a in found)


async def _window_payouts(app: FastAPI) -> int:
    """The payouts a first scan at SCAN_AT reads (its look-back, up to the lag)."""
    upper = SCAN_AT - SCAN_LAG
    count = await scalar(
        app,
        "SELECT count(*) FROM payouts WHERE id > :low AND id < :high",
        low=id_floor("po", int((upper - FIRST_SCAN_LOOKBACK).timestamp() * 1000)),
        high=id_floor("po", int(upper.timestamp() * 1000)),
    )
    return int(count)


async def _planted(client: httpx.AsyncClient, app: FastAPI) -> dict[str, Any]:
    seed = await _quiet_world(client, app)
    planted = _plant_patterns(seed)
    await seed.commit(app)
    return planted


async def test_a_paced_scan_finds_in_chunks_what_one_scan_finds(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    planted = await _planted(client, app)
    pauses: list[float] = []
    clock = itertools.count(step=0.5)  # every chunk "takes" 0.5 s

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        # Nothing is held between chunks: another worker locks the watermark at once.
        async with db_session(app) as session:
            await asyncio.wait_for(
                ReviewRepository(session).lock_watermark("po_0", SCAN_AT), timeout=5
            )

    scanner = PacedScan(
        app.state.runtime, max_duty=0.2, chunk_payouts=10, sleep=sleep, clock=lambda: next(clock)
    )
    result = await scanner.run(SCAN_AT)
    assert result.new_payouts > 60  # the quiet day and the patterns, all read
    chunks = -(-max(result.new_payouts + 1, result.new_approvals + 1) // 10)
    assert len(pauses) == chunks - 1
    # Busy 0.5 s a chunk at a duty of 0.2: 2 s asleep after each.
    assert pauses == [pytest.approx(2.0)] * len(pauses)
    found = await anomalies(client)
    assert sorted({a["kind"] for a in found}) == [
        "approver_concentration",
        "off_hours",
        "recipient_many_tickets",
        "requester_velocity",
        "threshold_splitting",
    ]
    by_kind = {a["kind"]: a for a in found}
    assert len(found) == 5
    assert sorted(by_kind["threshold_splitting"]["payout_ids"]) == sorted(planted["split"])
    assert set(planted["velocity"]) <= set(by_kind["requester_velocity"]["payout_ids"])
    assert sorted(by_kind["off_hours"]["payout_ids"]) == sorted(planted["night"])
    # Done: the next scan finds nothing new.
    again = await PacedScan(app.state.runtime, chunk_payouts=10).run(SCAN_AT)
    assert (again.new_payouts, again.new_approvals) == (0, 0)


async def test_a_crash_between_chunks_loses_and_duplicates_nothing(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await _planted(client, app)

    async def crash(seconds: float) -> None:
        raise _Crash

    with pytest.raises(_Crash):
        await PacedScan(app.state.runtime, chunk_payouts=10, sleep=crash).run(SCAN_AT)
    # The next scan goes on from the committed chunk.
    rest = await PacedScan(app.state.runtime, chunk_payouts=10, sleep=_no_pause).run(SCAN_AT)
    # Every payout of the scan's window read exactly once: 10 before the crash, the rest after.
    assert 10 + rest.new_payouts == await _window_payouts(app)
    crashed = _summary(await anomalies(client))
    assert len(crashed) == 5
    assert len({(kind, subjects) for kind, subjects, _ in crashed}) == 5


async def _no_pause(seconds: float) -> None:
    return None


async def test_two_workers_pacing_at_once_make_each_anomaly_once(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await _planted(client, app)
    runtime = app.state.runtime
    interval = timedelta(hours=1)
    first, second = await asyncio.gather(
        PacedScan(runtime, chunk_payouts=10, sleep=_no_pause).run(SCAN_AT, min_interval=interval),
        PacedScan(runtime, chunk_payouts=10, sleep=_no_pause).run(SCAN_AT, min_interval=interval),
    )
    # Whichever way their chunks interleaved, every payout was read once.
    assert first.new_payouts + second.new_payouts == await _window_payouts(app)
    found = _summary(await anomalies(client))
    assert len(found) == 5
    assert len({(kind, subjects) for kind, subjects, _ in found}) == 5
