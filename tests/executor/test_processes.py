"""Reliability with real processes: `payoutsvc serve` killed mid-batch and restarted, and
several `payoutsvc worker` processes sharing one PostgreSQL.

Slow (each starts real server processes, a few seconds apiece) and marked so
(``-m "not slow"`` skips them), but part of the default run: they are the proof that every
approved payout is paid exactly once across crashes and workers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from payoutsvc.db.engine import Database
from payoutsvc.executor.models import PayoutAttempt
from payoutsvc.payouts.models import Payout
from tests.conftest import ADMIN_KEY, ENCRYPTION_KEY
from tests.executor.support import (
    ACTIVE,
    APPROVER,
    DECLINE_ACCOUNT,
    DECLINE_FUNDS,
    FLAKY_5XX,
    PENDING_THEN_SUCCESS,
    REQUESTER,
    SUCCEED,
    TIMEOUT_AFTER_BOOKING,
    assert_exactly_once,
    insert_approved,
    unique_body,
)
from tests.helpers import bearer_of, eventually

pytestmark = pytest.mark.slow

PAYOUTSVC = str(Path(sys.executable).parent / "payoutsvc")
EXPECTED = {
    SUCCEED: ("succeeded", None),
    TIMEOUT_AFTER_BOOKING: ("succeeded", None),
    PENDING_THEN_SUCCESS: ("succeeded", None),
    FLAKY_5XX: ("succeeded", None),
    DECLINE_ACCOUNT: ("failed", "recipient_account_invalid"),
    DECLINE_FUNDS: ("failed", "insufficient_funds"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(database_url: str, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTSVC_")}
    env.update(
        PAYOUTSVC_DATABASE_URL=database_url,
        PAYOUTSVC_BOOTSTRAP_API_KEY=ADMIN_KEY,
        PAYOUTSVC_ENCRYPTION_KEY=ENCRYPTION_KEY,
        PAYOUTSVC_LOG_LEVEL="WARNING",
        PAYOUTSVC_LOG_FORMAT="json",
        PAYOUTSVC_WORKER_POLL_INTERVAL="0.05",
        PAYOUTSVC_RATE_LIMIT="100000/second",  # the tests burst far beyond a helpdesk
        PAYOUTSVC_RATE_LIMIT_BURST="100000",
        PAYOUTSVC_EXECUTOR_RETRY_SCHEDULE="0.1,0.1,0.2,0.2,0.3,0.3",
        # Short, so the restart takes over soon; calls time out at a third of it.
        PAYOUTSVC_EXECUTOR_LEASE_SECONDS="5",
    )
    env.update(overrides)
    return env


@contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_http_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited: {log.read_text()[-2000:]}"
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server not ready: {log.read_text()[-2000:]}")


def wait_log(log: Path, text: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"process exited: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"{text!r} never logged"
        time.sleep(0.05)


async def create_payouts(base: str, amounts: list[str]) -> list[str]:
    """Create payouts through the API (approving any the policy did not auto-approve)."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        for operator, role in ((REQUESTER, "supervisor"), (APPROVER, "finance")):
            answer = await http.post("/v1/operators", json={"id": operator, "role": role})
            assert answer.status_code in (201, 409), answer.text
        # Each person with their own operator-bound key, as require_operator_key wants.
        requester, approver = [await bearer_of(http, o) for o in (REQUESTER, APPROVER)]
        gate = asyncio.Semaphore(8)

        async def one(amount: str) -> str:
            async with gate:
                created = await http.post(
                    "/v1/payouts",
                    json=unique_body(amount),
                    headers={"Idempotency-Key": uuid.uuid4().hex, **requester},
                )
                assert created.status_code == 201, created.text
                payout = created.json()
                if payout["status"] == "pending_approval":
                    approved = await http.post(
                        f"/v1/payouts/{payout['id']}/approve",
                        json={"operator_id": APPROVER, "comment": "test"},
                        headers=approver,
                    )
                    assert approved.status_code == 200, approved.text
                return str(payout["id"])

        return list(await asyncio.gather(*(one(a) for a in amounts)))


async def count_by_status(db: Database) -> dict[str, int]:
    async with db.transaction(write=False) as session:
        rows = await session.execute(select(Payout.status, func.count()).group_by(Payout.status))
        return {status: int(n) for status, n in rows.all()}


async def wait_until(db: Database, done: Any, timeout: float) -> dict[str, int]:
    """The payouts' counts by status once ``done(counts)`` holds."""
    counts: dict[str, int] = {}

    async def reached() -> bool:
        nonlocal counts
        counts = await count_by_status(db)
        return bool(done(counts))

    try:
        await eventually(reached, timeout=timeout, interval=0.1)
    except AssertionError as stuck:
        raise AssertionError(f"stuck: {counts}") from stuck
    return counts


async def assert_final(db: Database, ids: list[str], amounts: list[str]) -> None:
    await assert_exactly_once(db)
    async with db.transaction(write=False) as session:
        rows = {
            p.id: p
            for p in (await session.execute(select(Payout).where(Payout.id.in_(ids)))).scalars()
        }
    for pid, amount in zip(ids, amounts, strict=True):
        assert (rows[pid].status, rows[pid].failure_code) == EXPECTED[amount], (pid, amount)


@pytest.fixture
async def db(database_url: str) -> Any:
    database = Database.connect(database_url)
    yield database
    await database.dispose()


async def test_serve_killed_mid_batch_pays_every_payout_exactly_once_after_restart(
    database_url: str, db: Database, tmp_path: Path
) -> None:
    amounts = list(EXPECTED) * 34  # 204 payouts, every terminal sandbox behaviour
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    argv = [PAYOUTSVC, "serve", "--port", str(port)]
    slow = service_env(
        database_url,
        PAYOUTSVC_SANDBOX_LATENCY_MS="400",
        PAYOUTSVC_EXECUTOR_CONCURRENCY="8",
        PAYOUTSVC_EXECUTOR_BATCH_SIZE="4",
    )
    with process(argv, slow, log) as first:
        wait_http_ready(base, first, log)
        ids = await create_payouts(base, amounts)
        at_kill = await wait_until(db, lambda c: c.get("succeeded", 0) >= 10, timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait()
    # Killed mid-batch: some payouts held by the dead process, some never touched.
    assert at_kill.get("processing", 0) > 0, at_kill
    assert sum(at_kill.get(s, 0) for s in ACTIVE) > 50, at_kill
    async with db.transaction(write=False) as session:
        orphaned = (
            (
                await session.execute(
                    select(Payout.id).where(
                        Payout.status == "processing", Payout.locked_by.is_not(None)
                    )
                )
            )
            .scalars()
            .all()
        )
    assert orphaned, "nothing was in flight when the process died"

    fast = service_env(database_url, PAYOUTSVC_SANDBOX_LATENCY_MS="10")
    with process(argv, fast, log) as second:
        wait_http_ready(base, second, log)
        await wait_until(db, lambda c: not any(c.get(s) for s in ACTIVE), timeout=90)

    await assert_final(db, ids, amounts)
    # The payouts the dead process held were taken over by the new one, which asked the
    # gateway first (status by key) instead of sending them again.
    async with db.transaction(write=False) as session:
        calls = (
            (
                await session.execute(
                    select(PayoutAttempt)
                    .where(PayoutAttempt.payout_id.in_(orphaned))
                    .order_by(PayoutAttempt.started_at)
                )
            )
            .scalars()
            .all()
        )
    dead = f":{first.pid}:"
    for pid in orphaned:
        after_restart = [c for c in calls if c.payout_id == pid and dead not in (c.worker or "")]
        assert [c.operation for c in after_restart][:1] == ["status"], pid


async def test_three_workers_share_the_queue_and_pay_each_payout_once(
    backend: str, database_url: str, db: Database, tmp_path: Path
) -> None:
    if backend != "postgres":
        pytest.skip("scale-out is a PostgreSQL deployment (SQLite: one process is its scale)")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api_log = tmp_path / "api.log"
    env = service_env(
        database_url,
        PAYOUTSVC_SANDBOX_LATENCY_MS="20",
        PAYOUTSVC_EXECUTOR_BATCH_SIZE="20",
        PAYOUTSVC_EXECUTOR_CONCURRENCY="40",
        PAYOUTSVC_LOG_LEVEL="INFO",
    )
    api_env = {**env, "PAYOUTSVC_RUN_WORKER": "false"}
    with process([PAYOUTSVC, "serve", "--port", str(port)], api_env, api_log) as api:
        wait_http_ready(base, api, api_log)
        logs = [tmp_path / f"worker{n}.log" for n in range(3)]
        with (
            process([PAYOUTSVC, "worker"], env, logs[0]) as w0,
            process([PAYOUTSVC, "worker"], env, logs[1]) as w1,
            process([PAYOUTSVC, "worker"], env, logs[2]) as w2,
        ):
            for worker, worker_log in zip((w0, w1, w2), logs, strict=True):
                wait_log(worker_log, "executor.started", worker)
            # Some through the API, the bulk inserted (the API would take long to create them
            # on a small machine, and this test is about the workers).
            amounts = [SUCCEED, TIMEOUT_AFTER_BOOKING, FLAKY_5XX] * 10 + [SUCCEED] * 480
            ids = await create_payouts(base, amounts[:30])
            ids += await insert_approved(db, ENCRYPTION_KEY, [1234] * 480)
            await wait_until(db, lambda c: not any(c.get(s) for s in ACTIVE), timeout=120)

    await assert_final(db, ids, amounts)
    async with db.transaction(write=False) as session:
        workers = (await session.execute(select(PayoutAttempt.worker))).scalars().all()
    assert len({w.split("/")[0] for w in workers if w}) == 3
