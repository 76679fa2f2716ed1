"""Executor drain: how fast `payoutsvc worker` processes pay a backlog, against pgqueuer.

On one scratch PostgreSQL database:

- **ours**: 5,000 approved payouts (bulk-inserted, each with its `payout.created` event and
  encrypted recipient) appear in one commit while 1, 2 or 4 idle `payoutsvc worker`
  processes wait; the clock runs from that commit until every payout is `succeeded`. The
  sandbox gateway adds 50 ms to every call. Afterwards the sandbox ledger must hold exactly
  one succeeded transfer per payout, booked under the payout's key.
- **peer**: 5,000 pgqueuer jobs whose handler sleeps 50 ms, drained by one pgqueuer
  process, timed the same way (enqueue commit → last job done).

Prints payouts/s per worker count and our one-worker rate as a ratio of pgqueuer's.
Targets: 1 worker ≥ 2,000/s and ≥ 0.33x pgqueuer; 2 workers ≥ 1.3x one; 4 no slower than 2;
nothing booked twice. Run: `.venv/bin/python bench/executor_drain.py [--payouts 5000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, ROOT, VENV_BIN, scratch_database
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from tests.executor.support import approved_rows

from payoutsvc.crypto import generate_key
from payoutsvc.db.base import utcnow
from payoutsvc.db.migrate import upgrade_to_head
from payoutsvc.db.signals import CHANNEL as SIGNALS_CHANNEL
from payoutsvc.gateways.models import SandboxTransfer
from payoutsvc.ids import new_id
from payoutsvc.payouts.models import Payout, PayoutEvent
from payoutsvc.payouts.repository import PAYOUTS_DUE

LATENCY_MS = 50
WORKER_COUNTS = (1, 2, 4)
# Our executor's knobs for the run (PAYOUTSVC_EXECUTOR_*); printed with the results.
EXECUTOR_ENV = {
    "PAYOUTSVC_EXECUTOR_BATCH_SIZE": "500",
    "PAYOUTSVC_EXECUTOR_CONCURRENCY": "1024",
    "PAYOUTSVC_WORKER_POLL_INTERVAL": "0.05",
}
PGQ_BATCH_SIZES = (10, 100)
PGQ_ENTRYPOINT = "sleep50"


async def reset_and_prepare(url: str) -> str:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "TRUNCATE payouts, payout_events, payout_attempts, sandbox_transfers,"
                    " sandbox_call_counters CASCADE"
                )
            )
            found = (
                await conn.execute(text("SELECT id FROM integrations WHERE name = 'bench'"))
            ).first()
            if found is not None:
                return str(found[0])
            integration_id = new_id("int")
            await conn.execute(
                text("INSERT INTO integrations (id, name, created_at) VALUES (:id, 'bench', :at)"),
                {"id": integration_id, "at": utcnow()},
            )
            return integration_id
    finally:
        await engine.dispose()


async def publish(url: str, payouts: list[dict[str, Any]], events: list[dict[str, Any]]) -> float:
    """Insert the backlog in one transaction; returns the time it became visible. Like an
    approval, the transaction announces approved payouts (db/signals.py): idle workers wake
    at once rather than at their next look of their own."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(Payout), payouts)
            await conn.execute(insert(PayoutEvent), events)
            await conn.execute(
                text("SELECT pg_notify(:channel, :name)"),
                {"channel": SIGNALS_CHANNEL, "name": PAYOUTS_DUE},
            )
        return time.time()
    finally:
        await engine.dispose()


async def wait_drained(url: str, count: int, timeout: float) -> float:
    """Wait until every payout succeeded; returns when the last one did (its commit's
    ``updated_at``), so the poll can be slow and cost the drain next to no database CPU."""
    engine = create_async_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            async with engine.connect() as conn:
                done, last = (
                    await conn.execute(
                        select(func.count(), func.max(Payout.updated_at)).where(
                            Payout.status == "succeeded"
                        )
                    )
                ).one()
            if done >= count:
                return float(last.timestamp())
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done}/{count} succeeded after {timeout}s")
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


async def verify_ledger(url: str, count: int) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            transfers = (
                await conn.execute(select(func.count()).select_from(SandboxTransfer))
            ).scalar_one()
            doubled = (
                await conn.execute(
                    select(SandboxTransfer.payout_id)
                    .group_by(SandboxTransfer.payout_id)
                    .having(func.count() > 1)
                )
            ).all()
            mismatched = (
                await conn.execute(
                    select(func.count())
                    .select_from(Payout)
                    .join(SandboxTransfer, SandboxTransfer.payout_id == Payout.id)
                    .where(
                        (SandboxTransfer.idempotency_key != Payout.gateway_idempotency_key)
                        | (SandboxTransfer.id != Payout.gateway_reference)
                        | (SandboxTransfer.status != "succeeded")
                    )
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    if transfers != count or doubled or mismatched:
        raise RuntimeError(
            f"ledger check failed: {transfers} transfers for {count} payouts, "
            f"{len(doubled)} payouts booked twice, {mismatched} mismatched"
        )


def start_workers(url: str, key: str, count: int) -> list[tuple[subprocess.Popen[bytes], Path]]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **EXECUTOR_ENV,
        "PAYOUTSVC_DATABASE_URL": url,
        "PAYOUTSVC_ENCRYPTION_KEY": key,
        "PAYOUTSVC_SANDBOX_LATENCY_MS": str(LATENCY_MS),
        "PAYOUTSVC_LOG_FORMAT": "json",
        "PAYOUTSVC_ENVIRONMENT": "production",
    }
    workers = []
    for n in range(count):
        log_path = RESULTS / f"executor_drain_worker{n}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(VENV_BIN / "payoutsvc"), "worker"], env=env, stdout=log, stderr=log, cwd=ROOT
            )
        workers.append((process, log_path))
    deadline = time.monotonic() + 60
    for process, log_path in workers:
        while "executor.started" not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start; see {log_path}")
            time.sleep(0.05)
    return workers


def stop_workers(workers: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for process, _ in workers:
        process.send_signal(signal.SIGTERM)
    for process, _ in workers:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a PostgreSQL backend that just exited
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def postgres_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def drain_ours(url: str, key: str, workers: int, count: int) -> float:
    integration_id = asyncio.run(reset_and_prepare(url))
    payouts, events = approved_rows(
        integration_id,
        base64.urlsafe_b64decode(key),
        # 1000 + n % 900 minor units is never a sandbox special case (994-999).
        [(n, 1000 + (n % 900)) for n in range(count)],
        actor="bench",
        ticket_system="bench",
    )
    running = start_workers(url, key, workers)
    pids = [p.pid for p, _ in running]
    try:
        started = asyncio.run(publish(url, payouts, events))
        cpu_before, pg_before = cpu_seconds(pids), cpu_seconds(postgres_pids())
        finished = asyncio.run(wait_drained(url, count, timeout=300))
        cpu, pg = cpu_seconds(pids) - cpu_before, cpu_seconds(postgres_pids()) - pg_before
    finally:
        stop_workers(running)
    asyncio.run(verify_ledger(url, count))
    print(
        f"    {workers} worker(s): {finished - started:.2f} s wall, worker CPU "
        f"{1e6 * cpu / count:.0f} µs/payout, PostgreSQL CPU {1e6 * pg / count:.0f} µs/payout",
        flush=True,
    )
    return count / (finished - started)


# -- pgqueuer, the peer -------------------------------------------------------------------
def pgqueuer_consumer(dsn: str, count: int, batch_size: int) -> None:
    """Runs in its own process: drain ``count`` jobs, print the time the last one finished."""
    import asyncpg
    from pgqueuer import QueueManager
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.queries import Queries

    async def run() -> None:
        connection = await asyncpg.connect(dsn)
        manager = QueueManager(Queries(AsyncpgDriver(connection)))
        done = 0
        finished_at = 0.0

        @manager.entrypoint(PGQ_ENTRYPOINT)
        async def sleep50(job: Job) -> None:
            nonlocal done, finished_at
            await asyncio.sleep(LATENCY_MS / 1000)
            done += 1
            if done == count:
                finished_at = time.time()
                manager.shutdown.set()

        print("ready", flush=True)
        await manager.run(batch_size=batch_size, dequeue_timeout=datetime.timedelta(seconds=0.05))
        print(json.dumps({"finished_at": finished_at, "done": done}), flush=True)

    asyncio.run(run())


def drain_pgqueuer(dsn: str, count: int, batch_size: int) -> float:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    async def clear_and_install() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            queries = Queries(AsyncpgDriver(connection))
            if not await queries.has_table("pgqueuer"):
                await queries.install()
            await connection.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")
        finally:
            await connection.close()

    async def enqueue() -> float:
        connection = await asyncpg.connect(dsn)
        try:
            queries = Queries(AsyncpgDriver(connection))
            await queries.enqueue([PGQ_ENTRYPOINT] * count, [None] * count, [0] * count)
            return time.time()
        finally:
            await connection.close()

    asyncio.run(clear_and_install())
    consumer = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--pgqueuer-consumer",
            dsn,
            "--payouts",
            str(count),
            "--pgq-batch",
            str(batch_size),
        ],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert consumer.stdout is not None
    if consumer.stdout.readline().strip() != b"ready":
        raise RuntimeError("pgqueuer consumer did not start")
    time.sleep(1.0)  # let it reach its first (empty) dequeue, as our workers are idle
    started = asyncio.run(enqueue())
    out, _ = consumer.communicate(timeout=300)
    result = json.loads(out.decode().strip().splitlines()[-1])
    if result["done"] != count:
        raise RuntimeError(f"pgqueuer drained {result['done']}/{count}")
    return count / (result["finished_at"] - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--payouts", type=int, default=5000)
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternate A and B this many times; medians"
    )
    parser.add_argument(
        "--batch", type=int, default=int(EXECUTOR_ENV["PAYOUTSVC_EXECUTOR_BATCH_SIZE"])
    )
    parser.add_argument(
        "--concurrency", type=int, default=int(EXECUTOR_ENV["PAYOUTSVC_EXECUTOR_CONCURRENCY"])
    )
    parser.add_argument("--pgqueuer-consumer", metavar="DSN", help=argparse.SUPPRESS)
    parser.add_argument("--pgq-batch", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pgqueuer_consumer:
        pgqueuer_consumer(args.pgqueuer_consumer, args.payouts, args.pgq_batch)
        return

    EXECUTOR_ENV["PAYOUTSVC_EXECUTOR_BATCH_SIZE"] = str(args.batch)
    EXECUTOR_ENV["PAYOUTSVC_EXECUTOR_CONCURRENCY"] = str(args.concurrency)
    key = generate_key()
    ours: dict[int, list[float]] = {n: [] for n in WORKER_COUNTS}
    peer: list[float] = []
    with scratch_database("payoutsvc_bench_exec") as url:
        upgrade_to_head(url)
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        print(
            f"executor drain: {args.payouts} payouts, sandbox latency {LATENCY_MS} ms, "
            f"{' '.join(f'{k}={v}' for k, v in EXECUTOR_ENV.items())}",
            flush=True,
        )
        # A and B alternate (the machines are shared and their load drifts); each round
        # runs every worker count once and pgqueuer at each batch size, keeping its best.
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}", flush=True)
            for workers in WORKER_COUNTS:
                ours[workers].append(drain_ours(url, key, workers, args.payouts))
                print(
                    f"  payoutsvc, {workers} worker(s): {ours[workers][-1]:8.0f} payouts/s "
                    "(ledger: one transfer per payout)",
                    flush=True,
                )
            rates = {b: drain_pgqueuer(dsn, args.payouts, b) for b in PGQ_BATCH_SIZES}
            for batch, rate in rates.items():
                print(f"  pgqueuer, 1 process, batch {batch}: {rate:8.0f} jobs/s", flush=True)
            peer.append(max(rates.values()))
    one, two, four = (statistics.median(ours[n]) for n in WORKER_COUNTS)
    best = statistics.median(peer)
    print(f"results (median of {args.rounds} round(s)):")
    checks = [
        ("1 worker", f"{one:8.0f}/s", ">= 2000/s", one >= 2000),
        ("1 worker / pgqueuer", f"{one / best:8.2f}x", ">= 0.33x", one / best >= 0.33),
        ("2 workers / 1", f"{two / one:8.2f}x", ">= 1.3x", two / one >= 1.3),
        ("4 workers / 2", f"{four / two:8.2f}x", ">= 1.0x", four >= two),
    ]
    for name, value, target, ok in checks:
        print(f"  {name:<20} {value}  target {target:<10} {'OK' if ok else 'MISS'}")
    print(f"  (pgqueuer {best:.0f} jobs/s; no payout booked twice in any run)")


if __name__ == "__main__":
    main()
