"""`payoutsvc worker`: the executor and webhook sender without the HTTP API."""

from __future__ import annotations

import asyncio
import signal

import structlog

from payoutsvc.background import BackgroundLoops
from payoutsvc.config import Settings
from payoutsvc.crypto import load_cipher
from payoutsvc.db.engine import Database
from payoutsvc.logging import configure_logging
from payoutsvc.runtime import Runtime
from payoutsvc.workers import start_background_work

log = structlog.get_logger(__name__)


async def run_worker(settings: Settings) -> None:
    configure_logging(settings)
    db = Database.connect(settings.database_url)
    loops = BackgroundLoops()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        runtime = Runtime(settings=settings, db=db, cipher=load_cipher(settings))
        start_background_work(runtime, loops, run_worker=True)
        log.info("worker.started", database=db.dialect)
        await stop.wait()
        log.info("worker.stopping")
    finally:
        await loops.stop()
        await db.dispose()
