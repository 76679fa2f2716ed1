"""Helpdesk write-back throughput: ticket notes per second vs webhooks per second, same run,
same sender, same receiver (issue 17: notes/s >= 0.8x the webhook sender's rate).

* Receiver: ``bench/webhook_receiver.py`` (bare ASGI, 204 for any request) under uvicorn in
  its own process, standing in for the helpdesk API: the fastest helpdesk we can fake, so the
  figure is the connector's cost, not the fake's.
* Notes: a Zendesk connector target (``target_kind`` zendesk, zh-CN, status tags off: a
  tag write is a delivery of its own, one more request of the same kind) with
  ``--deliveries`` pending deliveries enqueued through the real outbox (one event each of
  distinct payouts on the connector's tickets), drained by ``WebhookSender.run`` with the
  connectors' renderers: claim, render the note (``PUT /api/v2/tickets/{id}``, basic auth),
  SSRF-checked pinned request, record outcome and attempt log.
* Webhooks: the same number of Standard Webhooks deliveries through the same sender
  (``bench/webhook_delivery.py``'s seeding).

Alternates over ``--rounds`` and prints each rate and the median ratio.
Run: ``.venv/bin/python bench/connector_writeback.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import run_against_receiver
from bench.webhook_delivery import (
    SNAPSHOT,
    pending_count,
    receiver_count,
    reset_receiver,
    seed,
)

from payoutsvc.auth.service import AuthService
from payoutsvc.config import Settings
from payoutsvc.connectors.kinds import RENDERERS
from payoutsvc.crypto import generate_key, load_cipher
from payoutsvc.db.base import utcnow
from payoutsvc.db.engine import Database
from payoutsvc.ids import new_id
from payoutsvc.payouts.events import GENESIS_HASH, NewEvent
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.outbox import enqueue_deliveries
from payoutsvc.webhooks.repository import WebhookRepository
from payoutsvc.webhooks.sender import WebhookSender
from payoutsvc.webhooks.service import seal_secret

CREDENTIALS = {"email": "bot@acme.example", "api_token": "t", "webhook_signing_secret": "s"}


async def seed_connector(runtime: Runtime, base_url: str, count: int) -> None:
    """An integration, one Zendesk connector target, ``count`` pending notes."""
    now = utcnow()
    async with runtime.db.transaction() as session:
        integration = await AuthService(session).create_integration(f"bench-{new_id('int')[-8:]}")
        target_id = new_id("hc")
        await WebhookRepository(session).insert_endpoint(
            {
                "id": target_id,
                "integration_id": integration.id,
                "url": base_url,
                "events": ["payout.*"],
                "enabled": True,
                "secret_encrypted": seal_secret(runtime.cipher, target_id, json.dumps(CREDENTIALS)),
                "target_kind": "zendesk",
                "target_options": {"locale": "zh-CN", "tags": False},
                "created_at": now,
                "updated_at": now,
            }
        )
    for start in range(0, count, 1000):
        events = []
        for number in range(start, min(start + 1000, count)):
            payout_id = new_id("po")
            ticket = {"system": target_id, "id": str(10000 + number), "url": None}
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
                    payout_snapshot={"id": payout_id, **SNAPSHOT, "ticket": ticket},
                )
            )
        async with runtime.db.transaction() as session:
            await enqueue_deliveries(session, events)


async def drain(runtime: Runtime, count: int, concurrency: int) -> float:
    sender = WebhookSender(
        runtime, concurrency=concurrency, batch_size=concurrency, renderers=RENDERERS
    )
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(sender.run(stop))
    while await pending_count(runtime) > 0:
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    return count / elapsed


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
    rates: dict[str, list[float]] = {"notes": [], "webhooks": []}
    try:
        for round_no in range(args.rounds):
            order = ["notes", "webhooks"] if round_no % 2 == 0 else ["webhooks", "notes"]
            for which in order:
                await reset_receiver(base)
                if which == "notes":
                    await seed_connector(runtime, base, args.deliveries)
                else:
                    await seed(runtime, f"{base}/hooks", args.deliveries)
                rate = await drain(runtime, args.deliveries, args.concurrency)
                received = (await receiver_count(base))["received"]
                if received != args.deliveries:
                    raise RuntimeError(f"receiver saw {received}, expected {args.deliveries}")
                rates[which].append(rate)
                print(f"round {round_no + 1} {which:>8}: {rate:7.0f} /s", flush=True)
    finally:
        await db.dispose()
    ratios = [n / w for n, w in zip(rates["notes"], rates["webhooks"], strict=True)]
    ratio = statistics.median(ratios)
    print(f"\n{args.deliveries} deliveries per run, concurrency {args.concurrency}, medians:")
    for name, values in rates.items():
        print(f"  {name:>8}: {statistics.median(values):7.0f} /s")
    per_round = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"  notes / webhooks: {ratio:.2f} (per round: {per_round})")
    print(f"target: notes/webhooks >= 0.8 {'met' if ratio >= 0.8 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    run_against_receiver(
        __doc__.split("\n\n")[0], "bench_connectors", "connector_receiver.log", main
    )
