"""Shared plumbing for the benchmarks: throwaway PostgreSQL databases, free ports, server
processes and their readiness, wrk output parsing."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def psql(sql: str) -> None:
    subprocess.run(
        ["psql", f"{PG_ADMIN_URL}/postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True,
    )


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one run; yields its asyncpg URL, dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{int(time.time())}"
    psql(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_ADMIN_URL.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    finally:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def server(
    argv: list[str], env: dict[str, str], ready_url: str, log_name: str
) -> Iterator[subprocess.Popen[bytes]]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / log_name, "wb") as log:
        process = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=log, stderr=log, cwd=ROOT
        )
        try:
            wait_ready(ready_url, process)
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see bench/results/")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/sec, p50/p99 latency (ms) and error counts from `wrk --latency` output."""
    result: dict[str, float] = {"errors": 0.0, "non_2xx": 0.0}
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(line.split()[1])
        elif re.match(r"^50(\.0+)?%", line):
            result["p50_ms"] = _ms(line.split()[1])
        elif re.match(r"^99(\.0+)?%", line):
            result["p99_ms"] = _ms(line.split()[1])
        elif line.startswith("Non-2xx or 3xx responses:"):
            result["non_2xx"] = float(line.split(":")[1])
        elif line.startswith("Socket errors:"):
            result["errors"] = float(sum(int(n) for n in re.findall(r"\d+", line)))
    return result


def run_wrk(
    url: str, script: Path, connections: int, seconds: int, env: dict[str, str]
) -> dict[str, float]:
    completed = subprocess.run(
        # wrk needs at least one connection per thread.
        [
            "wrk",
            f"-t{min(2, connections)}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return parse_wrk(completed.stdout)


def require_wrk() -> None:
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        sys.exit("wrk is needed: apt-get install -y wrk (Debian's package)")


def run_against_receiver(
    description: str,
    database_prefix: str,
    log_name: str,
    main: Callable[[argparse.Namespace, str, str], Awaitable[int]],
) -> None:
    """The delivery benchmarks' entry point: their options, a migrated scratch database,
    ``bench/webhook_receiver.py`` on a free port, then ``main(args, database_url, base)``
    on uvloop (as the sender runs in production: `payoutsvc worker` installs it, uvicorn
    picks it for `serve`); exits with its result."""
    import uvloop

    from payoutsvc.db.migrate import upgrade_to_head

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--deliveries", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with scratch_database(database_prefix) as url:
        upgrade_to_head(url)
        receiver_argv = [
            str(VENV_BIN / "uvicorn"),
            "bench.webhook_receiver:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        with server(receiver_argv, {}, f"{base}/count", log_name):
            uvloop.install()
            sys.exit(asyncio.run(main(arguments, url, base)))
