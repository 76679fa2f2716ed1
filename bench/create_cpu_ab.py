"""Server CPU per create payout, two checkouts interleaved: a before/after that the machine's
drift cannot fake.

On a shared VM the same code's CPU per request moves by 20-40 % from one minute to the next,
so two runs of `create_payout.py` minutes apart cannot show a 5 % change. Here both servers
(`payoutsvc serve` of each checkout, each on its own scratch database, worker off, as
`create_payout.py` sets them up) run at once and take turns: short wrk bursts (one server at
a time, the order flipping every pair), each burst's CPU from `/proc/<pid>/stat`. Prints each
checkout's CPU per payout over all its bursts and the median per-pair ratio (second / first).

Both run with this checkout's `.venv` and `PYTHONPATH=<checkout>/src`, so a checkout needs no
environment of its own (only code: `git worktree add /tmp/before <rev>`).
Run: `.venv/bin/python bench/create_cpu_ab.py /tmp/before . [--connections 1] [--pairs 10]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, VENV_BIN, free_port, require_wrk, scratch_database, server
from bench.create_payout import API_KEY, REQUESTERS, cpu_seconds, prepare, service_environment

SCRIPT = ROOT / "bench" / "create_payout.lua"


def burst(base: str, connections: int, seconds: int) -> int:
    """Requests completed by one wrk burst against ``base``."""
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(SCRIPT), base],
        env={**os.environ, "BENCH_API_KEY": API_KEY, "BENCH_REQUESTERS": str(REQUESTERS)},
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split(" requests in ")[0].split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkouts", nargs=2, type=Path, help="first (before), second (after)")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=3, help="length of one burst")
    parser.add_argument("--pairs", type=int, default=10)
    args = parser.parse_args()
    require_wrk()
    with contextlib.ExitStack() as stack:
        servers: list[tuple[str, int]] = []
        for checkout in args.checkouts:
            env = {
                **service_environment(stack.enter_context(scratch_database("payoutsvc_ab"))),
                "PYTHONPATH": str(checkout.resolve() / "src"),
            }
            cli = str(VENV_BIN / "payoutsvc")
            subprocess.run([cli, "migrate"], env={**os.environ, **env}, check=True)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            process = stack.enter_context(
                server([cli, "serve", "--port", str(port)], env, f"{base}/readyz", f"ab-{port}.log")
            )
            prepare(base)
            burst(base, args.connections, 2)  # warm-up
            servers.append((base, process.pid))
        cpu = [0.0, 0.0]
        requests = [0, 0]
        per_burst: list[list[float]] = [[], []]
        for pair in range(args.pairs):
            for index in (0, 1) if pair % 2 == 0 else (1, 0):
                base, pid = servers[index]
                before = cpu_seconds(pid)
                completed = burst(base, args.connections, args.seconds)
                spent = cpu_seconds(pid) - before
                cpu[index] += spent
                requests[index] += completed
                per_burst[index].append(spent / completed * 1000)
    for index, checkout in enumerate(args.checkouts):
        print(
            f"{checkout}: {cpu[index] / requests[index] * 1000:.2f} ms of server CPU per payout"
            f" over {requests[index]} payouts"
        )
    ratios = [after / before for before, after in zip(*per_burst, strict=True)]
    print(
        f"second / first, median of {len(ratios)} pairs: {statistics.median(ratios):.3f}"
        f" (pairs {min(ratios):.2f}-{max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
