"""Run as ``python -m tests.finance.export_child <database url> <csv|xlsx>``: export every
payout through :class:`~payoutsvc.payouts.export.PayoutExport` (what the endpoint streams),
count and discard the bytes, and print one JSON line: rows (CSV), bytes, seconds, and the
peak RSS in MiB (VmHWM) before and after. Imports only what the export needs, so the
figure is the export's, not a test runner's (tests/finance/test_export.py,
bench/export_payouts.py)."""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import cast

from payoutsvc.db.engine import Database
from payoutsvc.payouts.export import ExportFormat, PayoutExport


def _rss_mib() -> float:
    """This process's peak RSS: Linux's VmHWM (``ru_maxrss`` would include the parent's
    before the exec, which it keeps), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure(url: str, fmt: ExportFormat) -> dict[str, float]:
    db = Database.connect(url, pool_size=2)
    try:
        baseline = _rss_mib()
        started = time.perf_counter()
        size = newlines = 0
        async for chunk in PayoutExport(db, None, {}).chunks(fmt):
            size += len(chunk)
            newlines += chunk.count(b"\n")
        seconds = time.perf_counter() - started
    finally:
        await db.dispose()
    return {
        "rows": newlines - 1 if fmt == "csv" else -1,  # xlsx is zipped: not counted here
        "bytes": size,
        "seconds": round(seconds, 3),
        "baseline_rss_mib": round(baseline, 1),
        "peak_rss_mib": round(_rss_mib(), 1),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure(sys.argv[1], cast(ExportFormat, sys.argv[2])))))
