"""Payout export: rows/s and peak RSS of `GET /v1/payouts/export` for 100,000 payouts on
PostgreSQL, against a same-machine ceiling.

On one scratch PostgreSQL database holding `--rows` payouts (one real payout copied by one
`INSERT … SELECT`, tests/finance/export_support.py):

- **ours**: the export the endpoint streams (`PayoutExport`: keyset pages of 1,000, masked
  cells, CSV with a BOM, or an openpyxl write-only XLSX), run in a process of its own
  (tests/finance/export_child.py) so its peak RSS (VmHWM) is the export's alone;
- **ceiling**: the same columns read by one asyncpg server-side cursor and written raw by
  `csv.writer` (no masking, formatting, paging or approvers), in a process of its own too.

Prints rows/s, seconds, peak RSS per format, and ours / ceiling for CSV. Target: peak RSS
< 150 MiB for 100,000 rows (flat: the same for 10,000). Run:
`.venv/bin/python bench/export_payouts.py [--rows 100000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, scratch_database
from tests.finance.export_support import measure_in_subprocess_args, parse_measured, seed_payouts

from payoutsvc.db.engine import Database
from payoutsvc.db.migrate import upgrade_to_head

_CEILING = """
import asyncio, csv, io, json, sys, time
import asyncpg

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

async def main(dsn):
    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    rows = size = 0
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    async with conn.transaction():
        async for record in conn.cursor(
            "SELECT id, status, created_at, updated_at, ticket_system, ticket_id, reason,"
            " amount_minor, currency, recipient_type, recipient_public, requested_by,"
            " description, release_required, released_by, released_at, gateway,"
            " gateway_reference, gateway_status, failure_code, attempts"
            " FROM payouts ORDER BY id DESC", prefetch=1000
        ):
            writer.writerow(record)
            rows += 1
            if rows % 1000 == 0:
                size += len(buffer.getvalue().encode()); buffer.seek(0); buffer.truncate()
    size += len(buffer.getvalue().encode())
    seconds = time.perf_counter() - started
    await conn.close()
    print(json.dumps({"rows": rows, "bytes": size, "seconds": round(seconds, 3),
                      "peak_rss_mib": round(peak(), 1)}))

asyncio.run(main(sys.argv[1]))
"""


def _run(command: list[str]) -> dict[str, Any]:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return parse_measured(done.stdout)


async def _seed(url: str, rows: int) -> None:
    db = Database.connect(url)
    try:
        await seed_payouts(db, rows)
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with scratch_database("payoutsvc_bench_export") as url:
        upgrade_to_head(url)
        asyncio.run(_seed(url, args.rows))
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        results = {
            "csv": _run(measure_in_subprocess_args(url, "csv")),
            "xlsx": _run(measure_in_subprocess_args(url, "xlsx")),
            "ceiling_csv": _run([sys.executable, "-c", _CEILING, dsn]),
        }
    for name, measured in results.items():
        rate = args.rows / measured["seconds"] if measured["seconds"] else 0.0
        measured["rows_per_second"] = round(rate)
        print(
            f"{name:12} {measured['seconds']:8.2f} s  {rate:9.0f} rows/s  "
            f"peak RSS {measured['peak_rss_mib']:6.1f} MiB  {measured['bytes'] / 2**20:7.1f} MiB"
        )
    ratio = results["csv"]["rows_per_second"] / max(results["ceiling_csv"]["rows_per_second"], 1)
    print(f"csv / ceiling: {ratio:.2f}x; peak RSS target < 150 MiB")
    print(json.dumps({"rows": args.rows, **results, "csv_over_ceiling": round(ratio, 3)}))


if __name__ == "__main__":
    main()
