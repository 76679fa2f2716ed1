"""What tracing costs on the create path, in-process (no network, no wrk), as ratios.

Three apps on their own scratch SQLite files, the same sequential `POST /v1/payouts` load
through `httpx.ASGITransport`, alternating rounds, this process's CPU time per payout:

- **off**: `PAYOUTSVC_OTEL_EXPORTER_OTLP_ENDPOINT` unset (the default);
- **fastapi-default**: off, but FastAPI's native telemetry left at its default (it then asks
  the global OpenTelemetry providers on every request whether it should trace): what the
  app cost before tracing.py switched it off;
- **on**: tracing on, spans exported to a discarding exporter (batch processor as in
  production), so the cost is making the spans, not shipping them.

Plus the micro-cost of the checks the traced places make when tracing is off.

    .venv/bin/python bench/tracing_overhead.py --payouts 300 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import timeit
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from payoutsvc import tracing
from payoutsvc.config import Settings
from payoutsvc.main import create_app

ADMIN_KEY = "psk_bench_admin_key_0123456789abcdef0123"
ENCRYPTION_KEY = "Y29tcG9zZS1kZW1vLWtleS1DSEFOR0UtTUUtMzJieSE="


class Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def settings(path: Path, traced: bool) -> Settings:
    return Settings(
        database_url=f"sqlite+aiosqlite:///{path}",
        run_worker=False,
        bootstrap_api_key=ADMIN_KEY,
        encryption_key=ENCRYPTION_KEY,
        log_format="json",
        log_level="WARNING",
        rate_limit="100000/second",
        rate_limit_burst=100000,
        otel_exporter_otlp_endpoint="http://127.0.0.1:4318" if traced else None,
    )


def body(n: int) -> dict[str, Any]:
    return {
        "ticket": {"system": "zendesk", "id": f"bench-{n}"},
        "reason": "refund",
        "amount": "12.50",
        "currency": "CNY",
        "recipient": {"type": "alipay", "account": f"139{n:08d}", "name": "张三"},
        "requested_by": "bench-sup",
        "description": "bench",
    }


async def run_round(app: Any, payouts: int, start: int) -> float:
    """CPU seconds per payout for ``payouts`` sequential creates."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://bench",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as client:
        cpu = time.process_time()
        for n in range(start, start + payouts):
            answer = await client.post(
                "/v1/payouts", json=body(n), headers={"Idempotency-Key": uuid.uuid4().hex}
            )
            assert answer.status_code == 201, answer.text
        return (time.process_time() - cpu) / payouts


async def main(payouts: int, rounds: int) -> None:
    tracing.span_exporter = lambda _endpoint: Discard()  # type: ignore[assignment]
    results: dict[str, list[float]] = {"off": [], "fastapi-default": [], "on": []}
    with tempfile.TemporaryDirectory() as scratch:
        apps = {}
        for name in results:
            app = create_app(settings(Path(scratch) / f"{name}.db", traced=name == "on"))
            if name == "fastapi-default":
                app._native_telemetry.config.update(
                    tracing=True, metrics=True, logs=True, operation_spans=True
                )
            apps[name] = app
        contexts = [app.router.lifespan_context(app) for app in apps.values()]
        for context in contexts:
            await context.__aenter__()
        try:
            for app in apps.values():  # warm-up, operator
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://bench",
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                ) as client:
                    await client.post(
                        "/v1/operators", json={"id": "bench-sup", "role": "supervisor"}
                    )
                await run_round(app, 30, 10_000_000)
            for r in range(rounds):
                order = list(apps) if r % 2 == 0 else list(reversed(apps))
                for name in order:
                    results[name].append(await run_round(apps[name], payouts, r * payouts))
        finally:
            for context in reversed(contexts):
                await context.__aexit__(None, None, None)
    for name in ("off", "fastapi-default"):
        enabled = apps[name]._native_telemetry.enabled
        took = timeit.timeit(enabled, number=1_000_000)
        print(f"FastAPI telemetry check per request, {name}: {took:.3f} µs")
    off = statistics.median(results["off"])
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:16s} CPU/payout {median * 1000:7.3f} ms  ratio to off {median / off:5.3f}")
    check = timeit.timeit(lambda: tracing.remember_payout(None, "po_x"), number=1_000_000)
    print(f"remember_payout(None, …): {check:.3f} µs per call (1e6 calls took {check:.2f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--payouts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    asyncio.run(main(options.payouts, options.rounds))
