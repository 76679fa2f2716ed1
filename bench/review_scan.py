"""Periodic review scan (issue 16): how long one scan takes over 1,000,000 payouts of history
with 10,000 new since the last scan, unpaced and paced as the worker runs it, and how much a
paced scan running beside payout creation slows creation down.

1. A scratch PostgreSQL database; `payoutsvc serve` (worker off) on it, with the create
   bench's generous policy and requesters (bench/create_payout.py ``prepare``).
2. History bulk-loaded with COPY (not the API): ``--history`` payouts over ``--days`` days
   up to an hour ago, 64 requesters, random customers and amounts, a tenth approved by one
   of 10 approvers; then ``--new`` payouts in the last hour (with a planted split pattern);
   the limit counters recounted; the scan's watermark set to where the new ones start.
3. The scan, timed in this process: unpaced (one transaction, commit included) and paced
   (review/scanner.py PacedScan at ``--duty``, default PAYOUTSVC_REVIEW_MAX_DUTY: chunks
   and sleeps). Target < 10 s for both.
4. Creation rate, alternating rounds without and with a paced scan running in a second
   process (it rewinds the watermark to the start of the new payouts and scans again, back
   to back, for the whole round, so every round overlaps scans):
   a. at saturation (wrk, unique tickets and recipients as the create bench): payouts/s;
   b. at a fixed offered rate below saturation (bench/paced_load.py, ``--offered`` of the
      saturated rate without a scan): payouts/s completed and latency p50/p99 from each
      request's scheduled time.
   Target: with >= 0.9 of without.

Run: `.venv/bin/python bench/review_scan.py [--history 1000000 --new 10000 --seconds 10
--rounds 2 --duty 0.1]` (wrk needed: apt-get install -y wrk). Heavy: run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, VENV_BIN, free_port, require_wrk, run_wrk, scratch_database, server
from bench.create_payout import API_KEY, REQUESTERS, prepare
from bench.paced_load import paced, payout_request

from payoutsvc.crypto import generate_key

APPROVERS = [f"bench-sup-{n}" for n in range(10)]
_COLUMNS = (
    "id",
    "integration_id",
    "status",
    "idempotency_key",
    "ticket_system",
    "ticket_id",
    "reason",
    "amount_minor",
    "currency",
    "recipient_type",
    "recipient_encrypted",
    "recipient_public",
    "recipient_fingerprint",
    "requested_by",
    "metadata",
    "required_approvals",
    "gateway",
    "gateway_idempotency_key",
    "attempts",
    "last_event_sequence",
    "last_event_hash",
    "created_at",
    "updated_at",
    "limit_day",
)


def _settings_env(url: str, key: str) -> dict[str, str]:
    return {
        "PAYOUTSVC_DATABASE_URL": url,
        "PAYOUTSVC_RUN_WORKER": "false",
        "PAYOUTSVC_BOOTSTRAP_API_KEY": API_KEY,
        "PAYOUTSVC_ENCRYPTION_KEY": key,
        "PAYOUTSVC_ENVIRONMENT": "production",
        "PAYOUTSVC_LOG_LEVEL": "WARNING",
        "PAYOUTSVC_RATE_LIMIT": "1000000/second",
        "PAYOUTSVC_RATE_LIMIT_BURST": "1000000",
    }


def _rows(
    rng: random.Random, integration: str, start: datetime, end: datetime, count: int, tag: str
) -> Iterator[tuple[object, ...]]:
    from payoutsvc.ids import new_id

    span = (end - start).total_seconds()
    for n in range(count):
        at = start + timedelta(seconds=span * n / count + rng.random())
        customer = f"{rng.randrange(2_000_000):07d}"
        day = int(datetime(at.year, at.month, at.day, tzinfo=UTC).timestamp())
        yield (
            new_id("po", int(at.timestamp() * 1000)),
            integration,
            "succeeded",
            f"{tag}-{n}",
            "bench",
            f"{tag}-t{n}",
            "refund",
            rng.randint(500, 3500),
            "CNY",
            "alipay",
            b"\x00",
            json.dumps({"type": "alipay", "account_masked": f"c***{customer[-4:]}@example.com"}),
            f"fp{customer}",
            f"bench-agent-{rng.randrange(REQUESTERS)}",
            "{}",
            1,
            "sandbox",
            f"{tag}-gw-{n}",
            1,
            1,
            "0" * 64,
            at,
            at,
            day,
        )


async def seed(url: str, history: int, new: int, days: int) -> str:
    """Bulk-load the history and the new payouts; returns the watermark the new ones start
    after, as "last payout id|last approval id" (the ``--watermark`` of the scan loop)."""
    import asyncpg

    from payoutsvc.db.engine import Database
    from payoutsvc.ids import id_floor
    from payoutsvc.policy.repository import PolicyRepository

    rng = random.Random(16)
    now = datetime.now(UTC)
    new_start, new_end = now - timedelta(hours=1), now - timedelta(minutes=2)
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        integration = await connection.fetchval("SELECT id FROM integrations LIMIT 1")
        began = time.monotonic()
        old = list(
            _rows(rng, integration, new_start - timedelta(days=days), new_start, history, "h")
        )
        fresh = list(_rows(rng, integration, new_start, new_end, new, "n"))
        # A planted pattern among the new: three payouts just under the 100.00 auto-approval.
        for i, amount in enumerate((9_600, 9_700, 9_800)):
            row = list(fresh[i * 10])
            row[7], row[13] = amount, "bench-agent-1"
            fresh[i * 10] = tuple(row)
        for rows in (old, fresh):
            await connection.copy_records_to_table("payouts", records=rows, columns=_COLUMNS)
        approvals = [
            (row[0], rng.choice(APPROVERS), "approved", row[21] + timedelta(minutes=5))
            for row in (*old, *fresh)
            if rng.random() < 0.1  # a tenth approved by a person
        ]
        approvals.sort(key=lambda a: a[3])
        await connection.copy_records_to_table(
            "payout_approvals",
            records=approvals,
            columns=("payout_id", "operator_id", "decision", "at"),
        )
        await connection.execute("ANALYZE")
        print(
            f"seeded {len(old) + len(fresh):,} payouts, {len(approvals):,} approvals "
            f"in {time.monotonic() - began:.0f} s"
        )
        watermark = id_floor("po", int(new_start.timestamp() * 1000))
        last_old_approval = await connection.fetchval(
            "SELECT COALESCE(MAX(id), 0) FROM payout_approvals WHERE at < $1", new_start
        )
        await connection.execute(
            "INSERT INTO review_watermark (id, last_payout_id, last_approval_id, scanned_at)"
            " VALUES (1, $1, $2, $3)",
            watermark,
            last_old_approval,
            new_start,
        )
    finally:
        await connection.close()
    database = Database.connect(url)
    async with database.transaction() as session:
        await PolicyRepository(session).rebuild_limit_counters()
    await database.dispose()
    return f"{watermark}|{last_old_approval}"


async def scan_loop(
    url: str, key: str, watermark: str, seconds: float, duty: float | None
) -> list[float]:
    """Scan over and over for ``seconds`` (each after rewinding the watermark), or once when
    ``seconds`` is 0; paced at ``duty`` as the worker runs it (None: unpaced, one
    transaction); returns each scan's duration."""
    from sqlalchemy import text

    from payoutsvc.config import Settings
    from payoutsvc.db.base import utcnow
    from payoutsvc.main import create_app
    from payoutsvc.review.scanner import PacedScan
    from payoutsvc.review.service import ReviewService

    for name, value in _settings_env(url, key).items():
        os.environ[name] = value
    app = create_app(Settings())
    durations: list[float] = []
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        deadline = time.monotonic() + seconds
        while True:
            payout_id, approval_id = watermark.split("|")
            async with runtime.db.transaction() as session:
                await session.execute(
                    text("UPDATE review_watermark SET last_payout_id = :p, last_approval_id = :a"),
                    {"p": payout_id, "a": int(approval_id)},
                )
            began = time.monotonic()
            if duty is None:
                async with runtime.db.transaction() as session:
                    result = await ReviewService(session, runtime).scan(utcnow())
            else:
                result = await PacedScan(runtime, max_duty=duty).run(utcnow())
            durations.append(time.monotonic() - began)
            if len(durations) == 1:
                print(
                    f"  scan read {result.new_payouts:,} new payouts, "
                    f"{result.new_approvals:,} new approvals; anomalies: "
                    f"{result.detected} new, {result.updated} updated",
                    file=sys.stderr,
                )
            if time.monotonic() >= deadline:
                return durations


def _creation_round(base: str, seconds: int, connections: int) -> float:
    script = ROOT / "bench" / "create_payout.lua"
    env = {"BENCH_API_KEY": API_KEY, "BENCH_REQUESTERS": str(REQUESTERS)}
    result = run_wrk(f"{base}/v1/payouts", script, connections, seconds, env)
    if result.get("errors") or result.get("non_2xx"):
        print(f"  wrk errors: {result}")
    return result["rps"]


def _offered_round(base: str, seconds: int, rate: float) -> tuple[float, float, float]:
    """Payouts/s completed, p50 and p99 latency (ms) at a fixed offered ``rate``."""
    host, port = base.removeprefix("http://").split(":")
    result = asyncio.run(
        paced(host, int(port), rate, seconds, payout_request(host, API_KEY, REQUESTERS))
    )
    if result.failures:
        print(f"  {result.failures} failed requests")
    done = len(result.latencies_ms) - result.failures
    return done / seconds, result.percentile(0.5), result.percentile(0.99)


def _with_scans(
    args: argparse.Namespace,
    url: str,
    key: str,
    watermark: str,
    measure: Callable[[], Any],
) -> tuple[Any, list[float]]:
    """``measure()`` while paced scans run back to back in a second process."""
    scanner = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--scan-loop",
            url,
            "--key",
            key,
            "--watermark",
            watermark,
            "--seconds",
            str(args.seconds + 7),
            "--duty",
            str(args.duty),
        ],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    # The scanner's startup (imports, pool: seconds of CPU on a busy machine) before the load,
    # so the round measures the scans and not the start of a Python process.
    time.sleep(6)
    measured = measure()
    out, _ = scanner.communicate(timeout=600)
    return measured, json.loads(out.decode().strip().splitlines()[-1])


def _alternate(
    args: argparse.Namespace,
    label: str,
    scan_args: tuple[str, str, str],
    measure: Callable[[], Any],
    show: Callable[[Any], str],
) -> tuple[list[Any], list[Any], list[float]]:
    """Rounds without and with scans, alternating which goes first, so both see the same
    background load of the machine."""
    without: list[Any] = []
    with_scan: list[Any] = []
    scans: list[float] = []
    for n in range(args.rounds):
        for mode in ("without", "with") if n % 2 == 0 else ("with", "without"):
            if mode == "without":
                without.append(measure())
                print(f"  {label} round {n + 1} without a scan: {show(without[-1])}", flush=True)
            else:
                measured, durations = _with_scans(args, *scan_args, measure)
                with_scan.append(measured)
                scans.extend(durations)
                print(
                    f"  {label} round {n + 1} with paced scans ({len(durations)} scans, "
                    f"{statistics.median(durations):.2f} s each): {show(measured)}",
                    flush=True,
                )
    return without, with_scan, scans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--offered", type=float, default=0.5, help="share of saturation")
    parser.add_argument("--duty", type=float, default=None, help="the scan's max duty")
    parser.add_argument("--scan-loop", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--watermark", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.duty is None:
        from payoutsvc.config import Settings

        args.duty = Settings.model_fields["review_max_duty"].default
    if args.scan_loop:
        durations = asyncio.run(
            scan_loop(args.scan_loop, args.key, args.watermark, args.seconds, args.duty)
        )
        print(json.dumps(durations))
        return
    require_wrk()
    key = generate_key()
    with scratch_database("payoutsvc_review_bench") as url:
        env = _settings_env(url, key)
        subprocess.run(
            [str(VENV_BIN / "payoutsvc"), "migrate"], env={**os.environ, **env}, check=True
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with server(
            [str(VENV_BIN / "payoutsvc"), "serve", "--port", str(port)],
            env,
            f"{base}/readyz",
            "review_service.log",
        ):
            prepare(base)
            watermark = asyncio.run(seed(url, args.history, args.new, args.days))
            [unpaced] = asyncio.run(scan_loop(url, key, watermark, 0, None))
            [paced_once] = asyncio.run(scan_loop(url, key, watermark, 0, args.duty))
            print(
                f"scan over {args.history:,} payouts with {args.new:,} new: {unpaced:.2f} s "
                f"unpaced, {paced_once:.2f} s paced at duty {args.duty} (target < 10 s)",
                flush=True,
            )
            scan_args = (url, key, watermark)
            saturated = _alternate(
                args,
                "saturation",
                scan_args,
                lambda: _creation_round(base, args.seconds, args.connections),
                lambda rate: f"{rate:.1f} payouts/s",
            )
            rate = args.offered * statistics.median(saturated[0])
            offered = _alternate(
                args,
                f"offered {rate:.0f}/s",
                scan_args,
                lambda: _offered_round(base, args.seconds, rate),
                lambda r: f"{r[0]:.1f} payouts/s, p50 {r[1]:.0f} ms, p99 {r[2]:.0f} ms",
            )
    without, with_scan, scans = saturated
    ratio = statistics.median(with_scan) / statistics.median(without)
    print(
        f"saturation: median {statistics.median(without):.1f}/s without, "
        f"{statistics.median(with_scan):.1f}/s with paced scans running: ratio {ratio:.2f} "
        "(target >= 0.90)"
    )
    o_without, o_with, o_scans = offered
    done_ratio = statistics.median(r[0] for r in o_with) / statistics.median(
        r[0] for r in o_without
    )
    p99 = (statistics.median(r[2] for r in o_without), statistics.median(r[2] for r in o_with))
    print(
        f"offered {rate:.0f}/s: completed ratio {done_ratio:.2f} (target >= 0.90); p99 "
        f"{p99[0]:.0f} ms without, {p99[1]:.0f} ms with paced scans"
    )
    scans += o_scans
    print(
        f"paced scans under load: median {statistics.median(scans):.2f} s, max {max(scans):.2f} s"
    )


if __name__ == "__main__":
    main()
