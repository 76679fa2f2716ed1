"""Batch create: a 1,000-item POST /v1/payout-batches in one request on PostgreSQL.

`payoutsvc serve` on a scratch PostgreSQL database (worker off, production JSON logging),
a policy whose limits the run cannot hit, one requester for every item (so every item
counts against the same daily counter, the batch's worst case). Each round posts one
1,000-item JSON batch and one 1,000-row CSV batch (distinct tickets and recipients) and
times each request; for scale, the same 1,000 payouts as single POST /v1/payouts over one
connection, one after another (what a helpdesk without batches would do). Prints seconds
per batch per round, the medians, and the batch's speed relative to the singles (target:
a 1,000-item batch well under 10 s).
Run: `.venv/bin/python bench/batch_create.py [--rounds 3 --items 1000]`.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import VENV_BIN, free_port, rss_mb, scratch_database, server
from bench.create_payout import CpuMeter

from payoutsvc.crypto import generate_key

API_KEY = "psk_bench_admin_key_000000000000"
REQUESTER = "bench-agent"
GENEROUS = {"CNY": "100000000.00"}


def prepare(http: httpx.Client) -> None:
    http.post("/v1/operators", json={"id": REQUESTER, "role": "supervisor"}).raise_for_status()
    document = http.get("/v1/policy").json()
    document.pop("version", None)
    document["roles"]["supervisor"].update(
        request_max=GENEROUS, auto_approve_max={"CNY": "100.00"}, daily_request_total=GENEROUS
    )
    document["per_ticket_max"] = GENEROUS
    document["per_recipient_daily"] = {"count": 100000, "amount": GENEROUS}
    document["approvals"] = {"require_operator_key": False}
    http.put("/v1/policy", json=document).raise_for_status()


def payout(tag: str, n: int) -> dict[str, Any]:
    return {
        "ticket": {"system": "zendesk", "id": f"{tag}-{n}"},
        "reason": "refund",
        "amount": "12.50",
        "currency": "CNY",
        "recipient": {"type": "paypal", "account": f"payee-{tag}-{n}@example.com"},
        "requested_by": REQUESTER,
        "metadata": {"order_id": str(n)},
    }


def as_csv(items: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    columns = ["item_key", "ticket.system", "ticket.id", "reason", "amount", "currency"]
    columns += ["recipient.type", "recipient.account", "requested_by", "metadata.order_id"]
    writer = csv.writer(out)
    writer.writerow(columns)
    for item in items:
        writer.writerow(
            [
                item["item_key"],
                item["ticket"]["system"],
                item["ticket"]["id"],
                item["reason"],
                item["amount"],
                item["currency"],
                item["recipient"]["type"],
                item["recipient"]["account"],
                item["requested_by"],
                item["metadata"]["order_id"],
            ]
        )
    return out.getvalue().encode()


def timed_batch(http: httpx.Client, tag: str, items: int, *, csv_upload: bool) -> float:
    body = [{"item_key": f"r{n}", **payout(tag, n)} for n in range(items)]
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    started = time.perf_counter()
    if csv_upload:
        headers["Content-Type"] = "text/csv"
        response = http.post("/v1/payout-batches", content=as_csv(body), headers=headers)
    else:
        response = http.post("/v1/payout-batches", json={"items": body}, headers=headers)
    elapsed = time.perf_counter() - started
    if response.status_code != 201 or response.json()["item_count"] != items:
        raise RuntimeError(f"batch failed: {response.status_code} {response.text[:500]}")
    return elapsed


def timed_singles(http: httpx.Client, tag: str, items: int) -> float:
    started = time.perf_counter()
    for n in range(items):
        response = http.post(
            "/v1/payouts", json=payout(tag, n), headers={"Idempotency-Key": uuid.uuid4().hex}
        )
        if response.status_code != 201:
            raise RuntimeError(f"single create failed: {response.text[:300]}")
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> None:
    with scratch_database("bench_batch") as url:
        port = free_port()
        env = {
            "PAYOUTSVC_DATABASE_URL": url,
            "PAYOUTSVC_RUN_WORKER": "false",
            "PAYOUTSVC_BOOTSTRAP_API_KEY": API_KEY,
            "PAYOUTSVC_ENCRYPTION_KEY": generate_key(),
            "PAYOUTSVC_LOG_FORMAT": "json",
            "PAYOUTSVC_RATE_LIMIT": "100000/second",
        }
        subprocess_migrate(env)
        argv = [str(VENV_BIN / "payoutsvc"), "serve", "--port", str(port)]
        base = f"http://127.0.0.1:{port}"
        with server(argv, env, f"{base}/readyz", "batch_create.log") as process:
            headers = {"Authorization": f"Bearer {API_KEY}"}
            with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
                prepare(http)
                timed_batch(http, "warm", 50, csv_upload=False)
                meter = CpuMeter(process.pid, url)
                json_s, csv_s, single_s, cpu = [], [], [], []
                for round_no in range(1, args.rounds + 1):
                    before = meter.snapshot()
                    json_s.append(timed_batch(http, f"j{round_no}", args.items, csv_upload=False))
                    cpu.append(meter.since(before))
                    csv_s.append(timed_batch(http, f"c{round_no}", args.items, csv_upload=True))
                    single_s.append(timed_singles(http, f"s{round_no}", args.items))
                    print(
                        f"round {round_no}: JSON batch {json_s[-1]:.2f} s (CPU: server "
                        f"{cpu[-1][0]:.2f} s, PostgreSQL {cpu[-1][1]:.2f} s), CSV batch "
                        f"{csv_s[-1]:.2f} s, {args.items} singles {single_s[-1]:.2f} s",
                        flush=True,
                    )
                rss = rss_mb(process.pid)
        j, c, s = (statistics.median(x) for x in (json_s, csv_s, single_s))
        server_cpu = statistics.median(x[0] for x in cpu)
        database_cpu = statistics.median(x[1] for x in cpu)
        print(f"\n{args.items}-item batch, median of {args.rounds}: JSON {j:.2f} s "
              f"({args.items / j:.0f} payouts/s; CPU server {server_cpu:.2f} s + PostgreSQL "
              f"{database_cpu:.2f} s), CSV {c:.2f} s; the same payouts one by one over one "
              f"connection: {s:.2f} s; batch/singles time ratio {j / s:.2f}; "
              f"server RSS {rss:.0f} MB; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} CPUs")  # fmt: skip


def subprocess_migrate(env: dict[str, str]) -> None:
    subprocess.run([str(VENV_BIN / "payoutsvc"), "migrate"], env={**os.environ, **env}, check=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--items", type=int, default=1000)
    run(parser.parse_args())
