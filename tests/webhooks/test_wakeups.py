"""Wake-ups: a commit that makes deliveries due wakes idle senders at once, in this process
and (PostgreSQL) in every other; a rollback wakes nobody; an idle sender looks at the
database less and less often; a killed listener loses no webhook and comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from payoutsvc.db.engine import Database
from payoutsvc.db.signals import IDLE_LOOK_MAX_SECONDS, Signals, signal_on_commit
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.sender import WebhookSender
from tests.helpers import create_operator, create_payout
from tests.webhooks.conftest import create_endpoint, eventually
from tests.webhooks.receiver import Receiver


@pytest.fixture
async def other_process_db(database_url: str) -> AsyncIterator[Database]:
    """A second Database on the same data, standing in for another process."""
    db = Database.connect(database_url)
    try:
        yield db
    finally:
        await db.dispose()


async def _signal_then_fail(db: Database, name: str) -> None:
    async with db.transaction() as session:
        signal_on_commit(session, name)
        raise RuntimeError("rolled back")


async def test_a_commit_wakes_subscribers_once_committed_and_a_rollback_does_not(
    backend: str, database_url: str, other_process_db: Database
) -> None:
    writer = Database.connect(database_url)
    try:
        other_process_db.signals.start()
        mine = writer.signals.subscribe("deliveries")
        theirs = other_process_db.signals.subscribe("deliveries")
        if backend == "postgres":
            await eventually(lambda: other_process_db.signals.reliable, timeout=5, what="listener")
            theirs.clear()  # (a listener that starts wakes everyone once: it may have missed some)
        else:
            assert not other_process_db.signals.reliable  # other processes go unannounced

        with pytest.raises(RuntimeError):
            await _signal_then_fail(writer, "deliveries")
        async with writer.transaction() as session:
            signal_on_commit(session, "something-else")
        await asyncio.sleep(0.3)
        assert not mine.is_set()
        assert not theirs.is_set()

        async with writer.transaction() as session:
            signal_on_commit(session, "deliveries")
            await asyncio.sleep(0.1)
            assert not mine.is_set(), "woken before the commit"
            assert not theirs.is_set(), "woken before the commit"
        assert mine.is_set()
        if backend == "postgres":
            await eventually(theirs.is_set, timeout=2, what="the other process's wake-up")
    finally:
        await writer.dispose()


def _counting_looks(sender: WebhookSender) -> list[float]:
    """Record when the sender looks at the queue."""
    looks: list[float] = []
    original = sender.claim

    async def claim(limit: int) -> Any:
        looks.append(time.monotonic())
        return await original(limit)

    sender.claim = claim  # type: ignore[method-assign]
    return looks


async def test_an_idle_sender_looks_rarely_yet_sends_a_new_webhook_at_once(
    backend: str,
    client: httpx.AsyncClient,
    runtime: Runtime,
    receiver: Receiver,
    other_process_db: Database,
) -> None:
    """On PostgreSQL the sender runs on another Database, as in a separate worker process;
    on SQLite (one process is its scale) beside the API in the same one."""
    await create_operator(client, "agent-17", "agent")
    await create_endpoint(client, receiver.url("/hooks"), ["payout.created"])
    sender_db = other_process_db if backend == "postgres" else runtime.db
    sender = WebhookSender(Runtime(settings=runtime.settings, db=sender_db, cipher=runtime.cipher))
    looks = _counting_looks(sender)
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    try:
        if backend == "postgres":
            await eventually(lambda: sender_db.signals.reliable, timeout=5, what="listener")
            idle_from = len(looks)
            await asyncio.sleep(3.5)
            # At the 0.05 s poll interval that would be ~70 looks.
            idle_looks = len(looks) - idle_from
            assert idle_looks <= 10, f"an idle sender looked {idle_looks} times in 3.5 s"
            # It now waits IDLE_LOOK_MAX_SECONDS between looks of its own. Right after one
            # of them, a new payout's webhook still goes out as soon as the payout commits.
            seen = len(looks)
            await eventually(lambda: len(looks) > seen, timeout=IDLE_LOOK_MAX_SECONDS + 1)
        else:
            # SQLite: another process's commits would go unannounced, so an idle sender
            # looks every poll interval; the API's commits beside it still wake it.
            await asyncio.sleep(0.5)
        created_at = time.monotonic()
        response = await create_payout(client)
        assert response.status_code == 201, response.text
        await eventually(lambda: len(receiver.received("/hooks")) == 1, what="the webhook")
        latency = time.monotonic() - created_at
        assert latency < IDLE_LOOK_MAX_SECONDS / 2, f"webhook took {latency:.2f} s"
    finally:
        stop.set()
        await running
        await sender.aclose()


async def _listener_pids(runtime: Runtime) -> set[int]:
    async with runtime.db.transaction() as session:
        rows = await session.execute(
            text(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN %'"
            )
        )
        return {int(pid) for (pid,) in rows.all()}


async def test_a_killed_listener_loses_no_webhook_and_comes_back(
    backend: str,
    client: httpx.AsyncClient,
    runtime: Runtime,
    receiver: Receiver,
    other_process_db: Database,
) -> None:
    if backend != "postgres":
        pytest.skip("the cross-process listener is PostgreSQL's")
    await create_operator(client, "agent-17", "agent")
    await create_endpoint(client, receiver.url("/hooks"), ["payout.created"])
    sender = WebhookSender(
        Runtime(settings=runtime.settings, db=other_process_db, cipher=runtime.cipher)
    )
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    try:
        await eventually(lambda: other_process_db.signals.reliable, timeout=5, what="listener")
        (listener,) = await _listener_pids(runtime)
        await asyncio.sleep(2.5)  # the sender has backed off to its longest idle wait
        async with runtime.db.transaction() as session:
            await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": listener})
        # The listener waits a second before reconnecting; meanwhile the sender knows that
        # other processes' commits cannot reach it and looks every poll interval.
        await eventually(lambda: not other_process_db.signals.reliable, what="the loss noticed")
        created_at = time.monotonic()
        response = await create_payout(client)
        assert response.status_code == 201, response.text
        await eventually(lambda: len(receiver.received("/hooks")) == 1, what="the webhook")
        assert time.monotonic() - created_at < IDLE_LOOK_MAX_SECONDS / 2

        async def replaced() -> bool:
            pids = await _listener_pids(runtime)
            return bool(pids) and listener not in pids and other_process_db.signals.reliable

        await eventually(replaced, timeout=10, what="a new listener")
        created_at = time.monotonic()
        response = await create_payout(client)
        assert response.status_code == 201, response.text
        await eventually(lambda: len(receiver.received("/hooks")) == 2, what="the next webhook")
        assert time.monotonic() - created_at < IDLE_LOOK_MAX_SECONDS / 2
    finally:
        stop.set()
        await running
        await sender.aclose()


async def test_a_listener_that_keeps_failing_retries_ever_more_slowly(
    backend: str, other_process_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend != "postgres":
        pytest.skip("the cross-process listener is PostgreSQL's")
    attempts: list[float] = []

    async def refused(self: Signals, connection: Any) -> None:
        attempts.append(time.monotonic())
        raise RuntimeError("LISTEN refused")

    monkeypatch.setattr(Signals, "_serve", refused)
    other_process_db.signals.start()
    await asyncio.sleep(3.5)
    # Attempts at 0, 1 and 3 s (the wait doubles), not one per connect round trip.
    assert 2 <= len(attempts) <= 3, attempts
    assert not other_process_db.signals.reliable
