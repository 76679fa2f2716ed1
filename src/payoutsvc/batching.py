"""Group commit: many concurrent callers, one database transaction per batch.

A caller hands in an item and awaits its own result; a background task writes everything
that is waiting as one batch. While a batch is being written the next one fills up, so under
load batches grow by themselves and an idle system still writes a lone item at once (no
timer, no added latency). The result is only delivered after the batch's transaction has
committed, which is what makes a batched write as durable as a write of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# flush(items) returns, per item, its result or the exception that caller should see.
Flush = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class GroupCommit(Generic[T, R]):
    def __init__(self, name: str, flush: Flush[T, R], *, max_batch: int) -> None:
        self._name = name
        self._flush = flush
        self._max_batch = max_batch
        # One batch in flight: the next one fills up meanwhile. Two overlapping flushes
        # would only halve each other's batches (more statements for the same rows).
        self._slots = asyncio.Semaphore(1)
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def submit(self, item: T) -> R:
        if self._closed:
            raise RuntimeError(f"{self._name} is closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"group-commit:{self._name}")
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._slots.acquire()
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                task = asyncio.create_task(self._write(batch))
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)

    async def _write(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
        except BaseException as exc:  # noqa: BLE001  (every waiter must hear about it)
            if not isinstance(exc, Exception):
                exc = RuntimeError(f"{self._name} flush interrupted")
            log.warning("group_commit.flush_failed", batch=self._name, error=repr(exc))
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._slots.release()
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def aclose(self) -> None:
        """Write what is waiting, then stop."""
        self._closed = True
        while self._pending or self._flushes:
            if self._flushes:
                await asyncio.gather(*self._flushes, return_exceptions=True)
            else:
                self._wakeup.set()
                await asyncio.sleep(0)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
