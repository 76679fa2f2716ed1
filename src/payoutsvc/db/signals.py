"""Wake-ups for background loops when a transaction made work due ("deliveries are due").

A writer marks its transaction with :func:`signal_on_commit`; once it commits, the loops of
this process waiting on that name wake at once, and on PostgreSQL so do the loops of every
other process (the transaction also runs ``pg_notify``, which PostgreSQL delivers only on
commit). A loop can then sleep long between looks at an idle queue instead of polling the
database many times a second from every worker.

A wake-up is a hint, never the only path to the work: a loop still looks on its own now and
then (retries fall due with nobody writing), and while other processes' commits cannot reach
it (:attr:`Signals.reliable` is false: SQLite, or the PostgreSQL listener is down) it looks
at its normal poll interval; its own process's commits still wake it at once.

The listener holds one connection of the process's pool for as long as it lives, and needs
a real session: behind PgBouncer in transaction mode, LISTEN seems to work but nothing
arrives (loops would then look only every few seconds), so point it at PostgreSQL or a
session-mode pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

log = structlog.get_logger(__name__)

CHANNEL = "payoutsvc_signals"
_PENDING = "payoutsvc.signals"  # session.info key: names to announce once it commits
_QUEUED = "payoutsvc.signals.queued"  # names whose NOTIFY is already queued in the transaction
_NOTIFY = text("SELECT pg_notify(:channel, :name)")
# The longest an idle loop waits between looks of its own while wake-ups can reach it: how
# late a retry or an expired lease is noticed, or work whose wake-up got lost.
IDLE_LOOK_MAX_SECONDS = 2.0
KEEPALIVE_SECONDS = 10.0  # a silently dead listener connection is noticed within ~2x this
RECONNECT_MAX_SECONDS = 30.0


def signal_on_commit(session: AsyncSession, name: str) -> None:
    """Wake the loops waiting on ``name`` once this session's transaction commits."""
    session.info.setdefault(_PENDING, set()).add(name)


def take_pending(session: AsyncSession) -> set[str]:
    names: set[str] = session.info.pop(_PENDING, set())
    return names


def queue_notify_in_statement(session: AsyncSession) -> list[str]:
    """The pending wake-ups, for a statement that queues their NOTIFY itself (db/bulk.py
    ``folded_writes``): the commit then fires them in this process without notifying again."""
    names = take_pending(session)
    session.info.setdefault(_QUEUED, set()).update(names)
    return sorted(names)


def take_queued(session: AsyncSession) -> set[str]:
    """The wake-ups whose NOTIFY a statement already queued (:func:`queue_notify_in_statement`)."""
    names: set[str] = session.info.pop(_QUEUED, set())
    return names


async def notify_others(session: AsyncSession, names: set[str]) -> None:
    """PostgreSQL: queue the notifications inside the transaction (sent at its commit)."""
    for name in sorted(names):
        await session.execute(_NOTIFY, {"channel": CHANNEL, "name": name})


class Signals:
    """The named wake-ups of one process, fed by its own commits and, on PostgreSQL, by a
    LISTEN connection for everybody else's. Each waiting loop subscribes its own event."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        reconnect_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._engine = engine
        self._reconnect_sleep = reconnect_sleep  # tests record the back-off instead of waiting
        self._postgres = engine.dialect.name == "postgresql"
        self._subscribers: dict[str, list[asyncio.Event]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listening = False

    @property
    def reliable(self) -> bool:
        """Whether a commit in any other process reaches this one: PostgreSQL while the
        listener is up. Never on SQLite: nothing stops a second process on the same file
        (say `payoutsvc worker` beside `serve`), and its commits would go unannounced."""
        return self._listening

    def subscribe(self, name: str) -> asyncio.Event:
        """An event set by every later wake-up on ``name``; the subscriber clears it."""
        event = asyncio.Event()
        self._subscribers.setdefault(name, []).append(event)
        return event

    def unsubscribe(self, name: str, event: asyncio.Event) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._subscribers[name].remove(event)

    def fire(self, names: Iterable[str]) -> None:
        for name in names:
            for event in self._subscribers.get(name, ()):
                event.set()

    def start(self) -> None:
        """Start listening for other processes' commits (PostgreSQL; idempotent)."""
        if self._postgres and self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="db-signals-listener")

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, name: str) -> None:
        self.fire((name,))

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        delay = 1.0  # before the next attempt; doubles while attempts keep failing quickly
        while True:
            started = loop.time()
            try:
                connection = await self._engine.connect()  # held for as long as it lives
            except Exception as exc:  # noqa: BLE001  (the listener must outlive any outage)
                log.warning("db.signals.connect_failed", error=repr(exc), retry_in=delay)
            else:
                try:
                    raw = await connection.get_raw_connection()
                    await self._serve(raw.driver_connection)
                except Exception as exc:  # noqa: BLE001  (reconnect whatever broke it)
                    log.warning("db.signals.listener_lost", error=repr(exc))
                finally:
                    self._listening = False
                    with contextlib.suppress(Exception):
                        await connection.invalidate()  # never hand a LISTENing one back
                    with contextlib.suppress(Exception):
                        await connection.close()
            if loop.time() - started > KEEPALIVE_SECONDS:
                delay = 1.0  # it had been working: try again soon
            await self._reconnect_sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def _serve(self, connection: Any) -> None:
        """Listen on one connection until it is lost (checked every KEEPALIVE_SECONDS)."""
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        await connection.add_listener(CHANNEL, self._on_notification)
        self._listening = True
        # Whatever was announced while nobody listened: every waiting loop looks once now.
        self.fire(list(self._subscribers))
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), KEEPALIVE_SECONDS)
            if not lost.is_set():
                await asyncio.wait_for(connection.execute("SELECT 1"), KEEPALIVE_SECONDS)
