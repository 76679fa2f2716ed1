"""Create-payout throughput: payoutsvc vs a same-stack ceiling app, A/B alternated.

Both run on PostgreSQL (one scratch database), one uvicorn process each, worker off, driven by
wrk with 64 connections and unique idempotency keys / tickets / recipients per request.
Prints req/s, p50/p99 per round and the median ratio. Run: `make bench` or
`.venv/bin/python bench/create_payout.py [--seconds 10 --rounds 3]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import httpx

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

from payoutsvc.crypto import generate_key

API_KEY = "psk_bench_admin_key_000000000000"
REQUESTERS = 64
GENEROUS = {"CNY": "100000000.00"}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    require_wrk()
    script = ROOT / "bench" / "create_payout.lua"
    with scratch_database("payoutsvc_bench") as url:
        service_port, ceiling_port = free_port(), free_port()
        service_env = {
            "PAYOUTSVC_DATABASE_URL": url,
            "PAYOUTSVC_RUN_WORKER": "false",
            "PAYOUTSVC_BOOTSTRAP_API_KEY": API_KEY,
            "PAYOUTSVC_ENCRYPTION_KEY": generate_key(),
            "PAYOUTSVC_ENVIRONMENT": "production",
            # The bench measures throughput, not the per-key limit (100/s by default).
            "PAYOUTSVC_RATE_LIMIT": "1000000/second",
            "PAYOUTSVC_RATE_LIMIT_BURST": "1000000",
        }
        import subprocess

        subprocess.run(
            [str(VENV_BIN / "payoutsvc"), "migrate"],
            env={**__import__("os").environ, **service_env},
            check=True,
        )
        service_base = f"http://127.0.0.1:{service_port}"
        ceiling_base = f"http://127.0.0.1:{ceiling_port}"
        with (
            server(
                [str(VENV_BIN / "payoutsvc"), "serve", "--port", str(service_port)],
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
            ),
        ):
            prepare(service_base)
            env = {"BENCH_API_KEY": API_KEY}
            for base in (service_base, ceiling_base):  # warm-up
                run_wrk(base, script, args.connections, 3, env)
            rows: list[tuple[int, str, dict[str, float]]] = []
            for round_no in range(1, args.rounds + 1):
                order = [("payoutsvc", service_base), ("ceiling", ceiling_base)]
                if round_no % 2 == 0:
                    order.reverse()
                for name, base in order:
                    rows.append(
                        (round_no, name, run_wrk(base, script, args.connections, args.seconds, env))
                    )
            service_rss = rss_mb(service.pid)
    print(
        f"\ncreate-payout, {args.connections} connections, "
        f"{args.seconds}s x {args.rounds} rounds (A/B alternated)"
    )
    print(
        f"{'round':>5} {'app':<10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>7} {'non-2xx':>8}"
    )
    for round_no, name, r in rows:
        print(
            f"{round_no:>5} {name:<10} {r['rps']:>9.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{r['errors']:>7.0f} {r['non_2xx']:>8.0f}"
        )
    ours = [r for _, n, r in rows if n == "payoutsvc"]
    ceiling = [r for _, n, r in rows if n == "ceiling"]
    ratio = statistics.median(o["rps"] for o in ours) / statistics.median(c["rps"] for c in ceiling)
    worst_p99 = max(o["p99_ms"] for o in ours)
    failures = sum(o["errors"] + o["non_2xx"] for o in ours)
    print(f"\nratio payoutsvc/ceiling (median req/s): {ratio:.2f}  (target >= 0.70)")
    print(f"payoutsvc worst p99: {worst_p99:.1f} ms  (target <= 100)")
    print(f"payoutsvc errors + non-2xx: {failures:.0f}  (target 0)")
    print(f"payoutsvc RSS after the run: {service_rss:.0f} MB  (target <= 200)")


if __name__ == "__main__":
    main()
