"""Periodic background work of a process, with a clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class BackgroundLoops:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    @property
    def stopping(self) -> asyncio.Event:
        return self._stopping

    def every(self, name: str, interval: float, step: Callable[[], Awaitable[object]]) -> None:
        """Run ``step`` every ``interval`` seconds until stopped; a failing step is logged
        and retried next time, never fatal."""

        async def loop() -> None:
            while not self._stopping.is_set():
                try:
                    await step()
                except Exception:
                    log.exception("background.step_failed", loop=name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=interval)

        self._tasks.append(asyncio.create_task(loop(), name=name))

    def start(self, name: str, run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
        """Start a long-running component that watches the stop event itself."""
        self._tasks.append(asyncio.create_task(run(self._stopping), name=name))

    async def stop(self, grace_seconds: float = 10.0) -> None:
        self._stopping.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
