"""`payoutsvc worker`: the executor and webhook sender without the HTTP API."""

from __future__ import annotations

import asyncio
import signal

import structlog

from payoutsvc.background import BackgroundLoops
from payoutsvc.config import Settings
from payoutsvc.crypto import load_cipher
from payoutsvc.db.engine import Database
from payoutsvc.heap import settle_startup_heap
from payoutsvc.logging import configure_logging
from payoutsvc.runtime import Runtime
from payoutsvc.tracing import build_tracing
from payoutsvc.workers import start_background_work

log = structlog.get_logger(__name__)

try:
    import uvloop
except ImportError:  # not on every platform; the standard loop works, only slower
    pass
else:
    # `payoutsvc worker` imports this module right before asyncio.run(run_worker(...)), so
    # the policy set here gives the worker the same event loop `payoutsvc serve` gets from
    # uvicorn: markedly less CPU per awaited call, and the executor awaits a lot of them.
    uvloop.install()


async def run_worker(settings: Settings) -> None:
    configure_logging(settings)
    tracing = build_tracing(settings)
    db = Database.connect(settings.database_url, pool_size=settings.db_pool_size)
    if tracing is not None:
        tracing.instrument(db)
    loops = BackgroundLoops()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        runtime = Runtime(settings=settings, db=db, cipher=load_cipher(settings), tracing=tracing)
        start_background_work(runtime, loops, run_worker=True)
        settle_startup_heap()
        log.info("worker.started", database=db.dialect)
        await stop.wait()
        # SIGTERM: the executor stops claiming, lets in-flight gateway calls finish for a
        # grace period, writes their results and releases the leases of the rest.
        log.info("worker.stopping")
    finally:
        await loops.stop()
        await db.dispose()
        if tracing is not None:
            tracing.shutdown()
