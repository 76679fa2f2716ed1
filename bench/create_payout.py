"""Create-payout throughput: payoutsvc vs a same-stack ceiling app, A/B alternated, in three
loads (issue 14), with the CPU each payout costs the server and PostgreSQL.

Both run on PostgreSQL (one scratch database), one uvicorn process each, worker off, driven by
wrk with unique idempotency keys / tickets / recipients per request. Loads:

1. 64 requesters (64 connections);
2. one requester (an automated compensation flow; every request counts against one
   requester's daily total);
3. one requester after 200,000 more of its payouts today (bulk-inserted, their limit
   counters recounted when the schema has them): the ratio to load 2 shows whether the
   cost of a check grows with the day.

Then one connection each, for CPU per payout without queueing, and the same alternating
rounds at a paced load of half the ceiling's rate (its p99 is the latency target). Prints
req/s, p50/p99, server and PostgreSQL CPU per payout per round, and the median ratios.
Run: `.venv/bin/python bench/create_payout.py [--seconds 10 --rounds 3]`;
`--app-root DIR` runs the payoutsvc of another checkout (its own `.venv`) for a before/after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    ROOT,
    VENV_BIN,
    free_port,
    require_wrk,
    rss_mb,
    run_wrk,
    scratch_database,
    server,
)
from bench.paced_load import paced, payout_request

from payoutsvc.crypto import generate_key

API_KEY = "psk_bench_admin_key_000000000000"
REQUESTERS = 64
SEEDED = 200_000
GENEROUS = {"CNY": "100000000.00"}
_TICK = os.sysconf("SC_CLK_TCK")


def prepare(base: str) -> None:
    """Operators for the wrk script, and (when the policy API exists) limits that a load test
    of unique tickets and recipients will not hit."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        for n in range(REQUESTERS):
            http.post("/v1/operators", json={"id": f"bench-agent-{n}", "role": "supervisor"})
        policy = http.get("/v1/policy")
        if policy.status_code == 200:
            document = policy.json()
            document.pop("version", None)
            document["roles"]["supervisor"].update(
                request_max=GENEROUS,
                auto_approve_max={"CNY": "100.00"},
                daily_request_total=GENEROUS,
            )
            document["per_ticket_max"] = GENEROUS
            document["per_recipient_daily"] = {"count": 100000, "amount": GENEROUS}
            # wrk sends one key naming many requesters, as a helpdesk trusted to vouch for its
            # agents does; with bound keys required, none of its payouts would auto-approve.
            document["approvals"] = {"require_operator_key": False}
            updated = http.put("/v1/policy", json=document)
            updated.raise_for_status()


# -- CPU accounting ------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def backend_pids(url: str) -> list[int]:
    """The PostgreSQL backends serving the scratch database (both apps use it). Retried: at
    full load the server may briefly refuse a new connection (max_connections)."""
    name = url.rsplit("/", 1)[1]
    admin = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
    query = f"SELECT pid FROM pg_stat_activity WHERE datname = '{name}'"
    for _ in range(20):
        done = subprocess.run(
            ["psql", f"{admin}/postgres", "-tAc", query], capture_output=True, text=True
        )
        if done.returncode == 0:
            return [int(line) for line in done.stdout.split()]
        time.sleep(0.25)
    raise RuntimeError(f"psql failed: {done.stderr}")


@dataclass
class CpuMeter:
    """CPU of the server process and of the database's backends over one run."""

    server_pid: int
    url: str

    def snapshot(self) -> tuple[float, dict[int, float]]:
        return cpu_seconds(self.server_pid), {p: cpu_seconds(p) for p in backend_pids(self.url)}

    def since(self, before: tuple[float, dict[int, float]]) -> tuple[float, float]:
        server, backends = self.snapshot()
        database = sum(cpu - before[1].get(pid, 0.0) for pid, cpu in backends.items())
        return server - before[0], database


# -- the seeded day ------------------------------------------------------------------------------
_SEED = """
INSERT INTO payouts (id, integration_id, status, idempotency_key, ticket_system, ticket_id,
    reason, amount_minor, currency, recipient_type, recipient_encrypted, recipient_public,
    recipient_fingerprint, requested_by, metadata, required_approvals, gateway,
    gateway_idempotency_key, attempts, last_event_sequence, last_event_hash, created_at,
    updated_at{day_column})
SELECT 'po_seed_' || g, :integration, 'succeeded', 'seed-' || g, 'seed', 't-' || g,
    'refund', 1250, 'CNY', 'alipay', '\\x00'::bytea, '{{}}'::json, md5('fp' || g),
    :requester, '{{}}'::json, 0, 'sandbox', 'seed-gw-' || g, 1, 1, md5('h' || g), :now, :now
    {day_value}
FROM generate_series(1, :count) AS g
"""


async def seed_day(url: str, requester: str, count: int) -> None:
    """``count`` succeeded payouts of ``requester`` created now, in one statement, and (when
    the schema keeps limit counters) the counters recounted so they include them."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    now = datetime.now(UTC)
    # The bench policy keeps UTC days: today's counters are keyed by UTC midnight.
    day = int(now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
    async with engine.begin() as connection:
        counters = await connection.scalar(text("SELECT to_regclass('limit_counters') IS NOT NULL"))
        integration = await connection.scalar(text("SELECT id FROM integrations LIMIT 1"))
        sql = _SEED.format(
            day_column=", limit_day" if counters else "",
            day_value=", :day" if counters else "",
        )
        params = {"integration": integration, "requester": requester, "now": now, "count": count}
        await connection.execute(text(sql), {**params, **({"day": day} if counters else {})})
    await engine.dispose()
    if counters:
        from payoutsvc.db.engine import Database
        from payoutsvc.policy.repository import PolicyRepository

        database = Database.connect(url)
        async with database.transaction() as session:
            await PolicyRepository(session).rebuild_limit_counters()
        await database.dispose()
    # A day that filled up over hours was vacuumed and analysed as it grew; 200,000 rows
    # inserted at once are not, and autovacuum would pick them up 30-60 s into the next
    # rounds and slow whichever app runs then (seen: rounds 2-3 of the seeded load slower).
    vacuum = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with vacuum.connect() as connection:
        tables = "payouts, limit_counters" if counters else "payouts"
        await connection.execute(text(f"VACUUM ANALYZE {tables}"))
    await vacuum.dispose()


# -- runs ------------------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    base: str
    meter: CpuMeter


@dataclass
class Result:
    load: str
    round_no: int
    app: str
    rps: float
    p50_ms: float
    p99_ms: float
    failures: float
    server_ms: float  # CPU per payout
    database_ms: float


def measure(
    target: Target, load: str, round_no: int, connections: int, seconds: int, env: dict[str, str]
) -> Result:
    script = ROOT / "bench" / "create_payout.lua"
    before = target.meter.snapshot()
    r = run_wrk(target.base, script, connections, seconds, env)
    server, database = target.meter.since(before)
    done = max(r["rps"] * seconds, 1.0)
    return Result(
        load,
        round_no,
        target.name,
        r["rps"],
        r["p50_ms"],
        r["p99_ms"],
        r["errors"] + r["non_2xx"],
        1000 * server / done,
        1000 * database / done,
    )


def alternate(
    targets: list[Target],
    load: str,
    rounds: int,
    connections: int,
    seconds: int,
    env: dict[str, str],
) -> list[Result]:
    """``rounds`` rounds of ``load`` by wrk."""
    return [
        measure(target, load, round_no, connections, seconds, env)
        for round_no, target in turns(targets, rounds)
    ]


def turns(targets: list[Target], rounds: int) -> Iterator[tuple[int, Target]]:
    """(round, app) for ``rounds`` rounds, the order of the apps flipping every round."""
    for round_no in range(1, rounds + 1):
        for target in targets if round_no % 2 else reversed(targets):
            yield round_no, target


def median_of(results: list[Result], load: str, app: str, pick: Callable[[Result], float]) -> float:
    return statistics.median(pick(r) for r in results if r.load == load and r.app == app)


LOADS = ("64 requesters", "one requester", f"one requester after {SEEDED:,} payouts")


def run_loads(targets: list[Target], url: str, args: argparse.Namespace) -> list[Result]:
    """The loads in order; the day is seeded last, so every other load sees a fresh day."""
    env = {"BENCH_API_KEY": API_KEY}
    for target in targets:  # warm-up
        run_wrk(target.base, ROOT / "bench" / "create_payout.lua", args.connections, 3, env)
    many, one = {**env, "BENCH_REQUESTERS": "64"}, {**env, "BENCH_REQUESTERS": "1"}
    results = alternate(targets, LOADS[0], args.rounds, args.connections, args.seconds, many)
    results += alternate(targets, LOADS[1], args.rounds, args.connections, args.seconds, one)
    results += alternate(targets, "1 connection", 1, 1, args.seconds, many)
    # Latency at a load both can carry: half the ceiling's rate with 64 requesters.
    rate = median_of(results, LOADS[0], "ceiling", lambda r: r.rps) / 2
    results += [
        measure_paced(target, round_no, rate, args.seconds)
        for round_no, target in turns(targets, args.rounds)
    ]
    asyncio.run(seed_day(url, "bench-agent-0", SEEDED))
    results += alternate(targets, LOADS[2], args.rounds, args.connections, args.seconds, one)
    return results


PACED = "paced at half the ceiling"


def measure_paced(target: Target, round_no: int, rate: float, seconds: int) -> Result:
    host, port = target.base.removeprefix("http://").split(":")
    build = payout_request(host, API_KEY, REQUESTERS)
    before = target.meter.snapshot()
    # On uvloop, as wrk2 would be in C: the generator's own CPU competes with the server's
    # for this machine's cores.
    paced_result = uvloop.run(paced(host, int(port), rate, seconds, build))
    server, database = target.meter.since(before)
    done = max(len(paced_result.latencies_ms), 1)
    return Result(
        PACED,
        round_no,
        target.name,
        done / seconds,
        paced_result.percentile(0.5),
        paced_result.percentile(0.99),
        paced_result.failures,
        1000 * server / done,
        1000 * database / done,
    )


def _server_ms(result: Result) -> float:
    return result.server_ms


def _database_ms(result: Result) -> float:
    return result.database_ms


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\ncreate-payout, {args.connections} connections, {args.seconds}s x {args.rounds} rounds"
    )
    print(
        f"{'load':<34} {'round':>5} {'app':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'fail':>5} {'srv ms':>7} {'pg ms':>6}"
    )
    for r in results:
        print(
            f"{r.load:<34} {r.round_no:>5} {r.app:<10} {r.rps:>8.1f} {r.p50_ms:>8.1f} "
            f"{r.p99_ms:>8.1f} {r.failures:>5.0f} {r.server_ms:>7.2f} {r.database_ms:>6.2f}"
        )
    print("\nmedians (CPU per payout in ms)")
    for load in (*LOADS, "1 connection", PACED):
        ours = median_of(results, load, "payoutsvc", lambda r: r.rps)
        ceiling = median_of(results, load, "ceiling", lambda r: r.rps)
        cpu = {
            (app, kind): median_of(results, load, app, pick)
            for app in ("payoutsvc", "ceiling")
            for kind, pick in (("server", _server_ms), ("pg", _database_ms))
        }
        print(
            f"{load:<34} payoutsvc {ours:8.1f}/s ceiling {ceiling:8.1f}/s "
            f"ratio {ours / ceiling:.2f}  server {cpu['payoutsvc', 'server']:.2f}"
            f" pg {cpu['payoutsvc', 'pg']:.2f} | ceiling server {cpu['ceiling', 'server']:.2f}"
            f" pg {cpu['ceiling', 'pg']:.2f}"
        )
    before = median_of(results, LOADS[1], "payoutsvc", lambda r: r.rps)
    after = median_of(results, LOADS[2], "payoutsvc", lambda r: r.rps)
    print(f"\nafter {SEEDED:,} payouts / before: {after / before:.2f}  (target >= 0.9)")
    paced_p99 = median_of(results, PACED, "payoutsvc", lambda r: r.p99_ms)
    print(f"payoutsvc p99 at half the ceiling's rate: {paced_p99:.1f} ms  (target <= 50)")
    failures = sum(r.failures for r in results if r.app == "payoutsvc")
    print(f"payoutsvc errors + non-2xx: {failures:.0f}  (target 0)")


def service_environment(database_url: str) -> dict[str, str]:
    """How `payoutsvc serve` runs under the benchmarks: production logging, worker off."""
    return {
        "PAYOUTSVC_DATABASE_URL": database_url,
        "PAYOUTSVC_RUN_WORKER": "false",
        "PAYOUTSVC_BOOTSTRAP_API_KEY": API_KEY,
        "PAYOUTSVC_ENCRYPTION_KEY": generate_key(),
        "PAYOUTSVC_ENVIRONMENT": "production",
        # The bench measures throughput, not the per-key limit (100/s by default).
        "PAYOUTSVC_RATE_LIMIT": "1000000/second",
        "PAYOUTSVC_RATE_LIMIT_BURST": "1000000",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--app-root", type=Path, default=ROOT, help="checkout whose payoutsvc runs")
    args = parser.parse_args()
    require_wrk()
    app_bin = args.app_root / ".venv" / "bin" if args.app_root != ROOT else VENV_BIN
    with scratch_database("payoutsvc_bench") as url:
        service_port, ceiling_port = free_port(), free_port()
        service_env = service_environment(url)
        subprocess.run(
            [str(app_bin / "payoutsvc"), "migrate"], env={**os.environ, **service_env}, check=True
        )
        service_base = f"http://127.0.0.1:{service_port}"
        ceiling_base = f"http://127.0.0.1:{ceiling_port}"
        with (
            server(
                [str(app_bin / "payoutsvc"), "serve", "--port", str(service_port)],
                service_env,
                f"{service_base}/readyz",
                "service.log",
            ) as service,
            server(
                [
                    str(VENV_BIN / "uvicorn"),
                    "bench.ceiling_app:app",
                    "--port",
                    str(ceiling_port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                {"CEILING_DATABASE_URL": url},
                f"{ceiling_base}/docs",
                "ceiling.log",
            ) as ceiling,
        ):
            prepare(service_base)
            targets = [
                Target("payoutsvc", service_base, CpuMeter(service.pid, url)),
                Target("ceiling", ceiling_base, CpuMeter(ceiling.pid, url)),
            ]
            results = run_loads(targets, url, args)
            service_rss = rss_mb(service.pid)
    report(results, args)
    print(f"payoutsvc RSS after the run: {service_rss:.0f} MB  (target <= 200)")


if __name__ == "__main__":
    main()
