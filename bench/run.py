"""`make bench`: every benchmark in this folder, one after another."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["create_payout.py", "executor_drain.py", "webhook_delivery.py", "batch_create.py"]

if __name__ == "__main__":
    for name in BENCHMARKS:
        path = HERE / name
        if path.exists():
            print(f"\n=== {name}", flush=True)
            subprocess.run([sys.executable, str(path)], check=True)
