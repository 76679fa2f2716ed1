"""Webhook delivery throughput: the real sender vs a bare httpx loop, same run, same receiver.

* Receiver: ``bench/webhook_receiver.py`` (bare ASGI, 204) under uvicorn in its own process.
* A: ``WebhookSender.run`` in this process on PostgreSQL, draining ``--deliveries`` pending
  deliveries (one event each of distinct payouts, enqueued through the real outbox): claim
  with SKIP LOCKED + lease, sign, SSRF-checked pinned POST, record outcome + attempt log.
* B (client-side ceiling, as issue 5 defines it): a bare httpx loop posting the same bodies,
  signed the same way, to the same receiver with the same concurrency, with keep-alive and
  with a new connection per request; the faster of the two is the ceiling.
* C (context, stricter than the issue asks): the same bare loop over the sender's own HTTP
  client (``webhooks/transport.py``) with nothing around it: what the sender's database work,
  SSRF checks and bookkeeping cost on top of its HTTP.

All alternate over ``--rounds`` (the order rotating each round); prints each rate and the
median ratios. Run: ``.venv/bin/python bench/webhook_delivery.py``.
Targets (issue 5): A >= 1,000 deliveries/s and A/B >= 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import run_against_receiver

from payoutsvc.auth.service import AuthService
from payoutsvc.config import Settings
from payoutsvc.crypto import generate_key, load_cipher
from payoutsvc.db.base import utcnow
from payoutsvc.db.engine import Database
from payoutsvc.ids import new_id
from payoutsvc.payouts.events import GENESIS_HASH, NewEvent
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.outbox import enqueue_deliveries, webhook_body
from payoutsvc.webhooks.repository import WebhookRepository
from payoutsvc.webhooks.sender import WebhookSender
from payoutsvc.webhooks.service import seal_secret
from payoutsvc.webhooks.signing import build_headers, generate_secret
from payoutsvc.webhooks.transport import PinnedHttp11Client

SNAPSHOT: dict[str, Any] = {
    "status": "succeeded",
    "ticket": {
        "system": "zendesk",
        "id": "48213",
        "url": "https://acme.zendesk.com/agent/tickets/48213",
    },
    "reason": "refund",
    "amount": "12.50",
    "amount_minor": 1250,
    "currency": "CNY",
    "recipient": {"type": "alipay", "account_masked": "138****8000", "name": "张*"},
    "requested_by": "agent-17",
    "description": "Price difference refund for order 9931",
    "metadata": {"order_id": "9931"},
    "required_approvals": 1,
    "approvals": [],
    "policy": None,
    "gateway": "sandbox",
    "gateway_reference": "sbx_0123456789",
    "gateway_status": "succeeded",
    "attempts": 1,
    "failure": None,
    "created_at": "2026-11-27T05:00:00.000Z",
    "updated_at": "2026-11-27T05:00:01.000Z",
}


async def seed(runtime: Runtime, url: str, count: int) -> str:
    """An integration, one endpoint, and ``count`` pending deliveries; returns the secret."""
    now = utcnow()
    async with runtime.db.transaction() as session:
        integration = await AuthService(session).create_integration(f"bench-{new_id('int')[-8:]}")
        endpoint_id = new_id("we")
        secret = generate_secret()
        await WebhookRepository(session).insert_endpoint(
            {
                "id": endpoint_id,
                "integration_id": integration.id,
                "url": url,
                "events": ["payout.*"],
                "description": "bench",
                "enabled": True,
                "secret_encrypted": seal_secret(runtime.cipher, endpoint_id, secret),
                "created_at": now,
                "updated_at": now,
            }
        )
    for start in range(0, count, 1000):
        events = []
        for _ in range(min(1000, count - start)):
            payout_id = new_id("po")
            events.append(
                NewEvent(
                    payout_id=payout_id,
                    integration_id=integration.id,
                    sequence=1,
                    type="payout.succeeded",
                    actor="executor",
                    data={},
                    at=now - timedelta(seconds=1),
                    prev_hash=GENESIS_HASH,
                    payout_snapshot={"id": payout_id, **SNAPSHOT},
                )
            )
        async with runtime.db.transaction() as session:
            await enqueue_deliveries(session, events)
    return secret


async def pending_count(runtime: Runtime) -> int:
    async with runtime.db.transaction(write=False) as session:
        pending, _ = await WebhookRepository(session).pending_summary()
    return pending


async def run_sender(runtime: Runtime, url: str, count: int, concurrency: int) -> float:
    await seed(runtime, url, count)
    sender = WebhookSender(runtime, concurrency=concurrency, batch_size=concurrency)
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(sender.run(stop))
    while await pending_count(runtime) > 0:
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    return count / elapsed


async def bodies_for(count: int) -> list[tuple[str, bytes]]:
    """The same kind of bodies the sender sends (built by the outbox), with their event ids."""
    events = []
    now = utcnow()
    for _ in range(count):
        payout_id = new_id("po")
        events.append(
            NewEvent(
                payout_id=payout_id,
                integration_id="int_bench",
                sequence=1,
                type="payout.succeeded",
                actor="executor",
                data={},
                at=now,
                prev_hash=GENESIS_HASH,
                payout_snapshot={"id": payout_id, **SNAPSHOT},
            )
        )
    return [(e.id, webhook_body(e).encode()) for e in events]


BARE_VARIANTS = ("httpx keep-alive", "httpx new-conn", "sender's client")


def bare_client(variant: str, concurrency: int) -> httpx.AsyncClient:
    reuse = variant == "httpx keep-alive"
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency if reuse else 0
    )
    return httpx.AsyncClient(limits=limits, trust_env=False, timeout=15)


async def run_bare(
    url: str, payloads: list[tuple[str, bytes]], concurrency: int, variant: str
) -> float:
    secret = generate_secret()
    queue = list(reversed(payloads))
    if variant == "sender's client":
        return await run_bare_pinned(url, queue, secret, concurrency)
    async with bare_client(variant, concurrency) as client:

        async def worker() -> None:
            while queue:
                event_id, body = queue.pop()
                headers = build_headers([secret], event_id, utcnow(), body)
                if variant == "httpx new-conn":
                    headers["connection"] = "close"
                response = await client.post(url, content=body, headers=headers)
                if response.status_code != 204:
                    raise RuntimeError(f"receiver answered {response.status_code}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(payloads) / (time.perf_counter() - started)


async def run_bare_pinned(
    url: str, queue: list[tuple[str, bytes]], secret: str, concurrency: int
) -> float:
    """The sender's HTTP client alone: same signing, no DNS/SSRF check, no database."""
    total = len(queue)
    target = httpx.URL(url)
    client = PinnedHttp11Client()

    async def worker() -> None:
        while queue:
            event_id, body = queue.pop()
            headers = build_headers([secret], event_id, utcnow(), body)
            reply = await client.post(
                scheme="http",
                address=str(target.host),
                port=int(target.port or 80),
                host_header=target.netloc.decode("ascii"),
                server_name=str(target.host),
                target=target.raw_path.decode("ascii"),
                headers=headers,
                body=body,
                max_response_bytes=4096,
                keep_alive=True,
            )
            if reply.status_code != 204:
                raise RuntimeError(f"receiver answered {reply.status_code}")

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - started)
    finally:
        await client.aclose()


async def receiver_count(base: str) -> dict[str, int]:
    async with httpx.AsyncClient() as client:
        return dict((await client.get(f"{base}/count")).json())


async def reset_receiver(base: str) -> None:
    async with httpx.AsyncClient() as client:
        await client.post(f"{base}/reset")


async def main(args: argparse.Namespace, database_url: str, base: str) -> int:
    settings = Settings(
        database_url=database_url,
        webhook_allow_private=True,
        encryption_key=generate_key(),
        worker_poll_interval=0.05,
        log_level="WARNING",
    )
    db = Database.connect(database_url, pool_size=10)
    runtime = Runtime(settings=settings, db=db, cipher=load_cipher(settings))
    url = f"{base}/hooks"
    rates: dict[str, list[float]] = {name: [] for name in ("sender", *BARE_VARIANTS)}
    try:
        payloads = await bodies_for(args.deliveries)
        names = list(rates)
        for round_no in range(args.rounds):
            order = names[round_no % len(names) :] + names[: round_no % len(names)]
            for which in order:
                await reset_receiver(base)
                if which == "sender":
                    rate = await run_sender(runtime, url, args.deliveries, args.concurrency)
                    counts = await receiver_count(base)
                    if counts["distinct_ids"] != args.deliveries:
                        raise RuntimeError(f"receiver saw {counts}, expected {args.deliveries}")
                else:
                    rate = await run_bare(url, payloads, args.concurrency, which)
                rates[which].append(rate)
                print(f"round {round_no + 1} {which:>15}: {rate:7.0f} /s", flush=True)
    finally:
        await db.dispose()
    httpx_ceilings = [
        max(a, b) for a, b in zip(rates["httpx keep-alive"], rates["httpx new-conn"], strict=True)
    ]
    ratios = [a / c for a, c in zip(rates["sender"], httpx_ceilings, strict=True)]
    own_client = statistics.median(
        a / c for a, c in zip(rates["sender"], rates["sender's client"], strict=True)
    )
    sender = statistics.median(rates["sender"])
    ratio = statistics.median(ratios)
    print(f"\n{args.deliveries} deliveries per run, concurrency {args.concurrency}, medians:")
    for name, values in rates.items():
        print(f"  {name:>15}: {statistics.median(values):7.0f} /s")
    per_round = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"  sender / bare httpx loop (the ceiling): {ratio:.2f} (per round: {per_round})")
    print(f"  sender / bare loop over the sender's own client (context): {own_client:.2f}")
    print(
        f"targets: sender >= 1000/s {'met' if sender >= 1000 else 'MISSED'}; "
        f"sender/ceiling >= 0.5 {'met' if ratio >= 0.5 else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    run_against_receiver(__doc__.split("\n\n")[0], "bench_webhooks", "webhook_receiver.log", main)
