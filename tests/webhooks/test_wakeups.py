"""Wake-ups: a commit that makes deliveries due wakes idle senders at once, in this process
and (PostgreSQL) in every other; a rollback wakes nobody; an idle sender looks at the
database less and less often; a killed listener loses no webhook and comes back.

Senders run on a ManualTimer: a timed look happens only when a test moves it, so a webhook
that goes out while it stands still went out because of a wake-up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from payoutsvc.db.engine import Database
from payoutsvc.db.signals import (
    IDLE_LOOK_MAX_SECONDS,
    RECONNECT_MAX_SECONDS,
    Signals,
    signal_on_commit,
)
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.sender import WebhookSender
from tests.helpers import ManualTimer, create_operator, create_payout, eventually, let_time_pass
from tests.webhooks.conftest import create_endpoint
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
        probe = other_process_db.signals.subscribe("probe")
        if backend == "postgres":
            await eventually(lambda: other_process_db.signals.reliable, what="listener")
            theirs.clear()  # (a listener that starts wakes everyone once: it may have missed some)
        else:
            assert not other_process_db.signals.reliable  # other processes go unannounced

        async def all_announced_so_far_arrived() -> None:
            """PostgreSQL delivers notifications in commit order: once a probe committed now
            has reached the other process, whatever was committed before it has too."""
            if backend != "postgres":
                return  # nothing crosses processes; this process's wake-ups are synchronous
            probe.clear()
            async with writer.transaction() as session:
                signal_on_commit(session, "probe")
            await eventually(probe.is_set, what="the probe")

        with pytest.raises(RuntimeError):
            await _signal_then_fail(writer, "deliveries")
        async with writer.transaction() as session:
            signal_on_commit(session, "something-else")
        await all_announced_so_far_arrived()
        assert not mine.is_set()
        assert not theirs.is_set()

        async with writer.transaction() as session:
            signal_on_commit(session, "deliveries")
            await all_announced_so_far_arrived()  # (from another connection)
            assert not mine.is_set(), "woken before the commit"
            assert not theirs.is_set(), "woken before the commit"
        assert mine.is_set()
        if backend == "postgres":
            await eventually(theirs.is_set, what="the other process's wake-up")
    finally:
        await writer.dispose()


def _counting_looks(sender: WebhookSender) -> list[int]:
    """Count the sender's looks at the queue (one list entry per look)."""
    looks: list[int] = []
    original = sender.claim

    async def claim(limit: int) -> Any:
        looks.append(len(looks))
        return await original(limit)

    sender.claim = claim  # type: ignore[method-assign]
    return looks


async def test_an_idle_sender_looks_rarely_yet_a_wake_up_alone_sends_a_new_webhook(
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
    timer = ManualTimer()
    sender = WebhookSender(
        Runtime(settings=runtime.settings, db=sender_db, cipher=runtime.cipher), timer=timer
    )
    poll = sender.settings.worker_poll_interval
    looks = _counting_looks(sender)
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    try:
        if backend == "postgres":
            await eventually(lambda: sender_db.signals.reliable, what="listener")
            await eventually(lambda: timer.asleep, what="the sender to go idle")
            idle_from = len(looks)
            await let_time_pass(timer, 3.5, settled=lambda: sender.idle)
            # At the 0.05 s poll interval that would be 70 looks.
            idle_looks = len(looks) - idle_from
            assert idle_looks <= 10, f"an idle sender looked {idle_looks} times in 3.5 s"
            assert timer.requested[-1] == IDLE_LOOK_MAX_SECONDS
        else:
            # SQLite: another process's commits would go unannounced, so an idle sender
            # looks every poll interval; the API's commits beside it still wake it.
            await eventually(lambda: timer.asleep, what="the sender to go idle")
            idle_from = len(looks)
            await let_time_pass(timer, 10 * poll, settled=lambda: sender.idle)
            idle_looks = len(looks) - idle_from
            assert 9 <= idle_looks <= 10, f"{idle_looks} looks in 10 poll intervals"
        # The timer stands still from here on: the sender's next timed look never comes, so
        # only the payout's commit can get its webhook sent.
        response = await create_payout(client)
        assert response.status_code == 201, response.text
        await eventually(lambda: len(receiver.received("/hooks")) == 1, what="the webhook")
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
    timer = ManualTimer()
    sender = WebhookSender(
        Runtime(settings=runtime.settings, db=other_process_db, cipher=runtime.cipher),
        timer=timer,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    try:
        await eventually(lambda: other_process_db.signals.reliable, what="listener")
        (listener,) = await _listener_pids(runtime)
        # The sender backs off to its longest idle wait, then its timer stands still: no
        # timed look comes from here on, only wake-ups.
        await let_time_pass(timer, 2 * IDLE_LOOK_MAX_SECONDS + 1)
        assert timer.requested[-1] == IDLE_LOOK_MAX_SECONDS
        async with runtime.db.transaction() as session:
            await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": listener})
        await eventually(lambda: not other_process_db.signals.reliable, what="the loss noticed")
        # This payout's notification reaches nobody; the listener that comes back wakes every
        # loop once (it may have missed something), and the sender finds the webhook then.
        response = await create_payout(client)
        assert response.status_code == 201, response.text
        await eventually(lambda: len(receiver.received("/hooks")) == 1, what="the webhook")

        async def replaced() -> bool:
            pids = await _listener_pids(runtime)
            return bool(pids) and listener not in pids and other_process_db.signals.reliable

        await eventually(replaced, what="a new listener")
        response = await create_payout(client)
        assert response.status_code == 201, response.text
        await eventually(lambda: len(receiver.received("/hooks")) == 2, what="the next webhook")
    finally:
        stop.set()
        await running
        await sender.aclose()


async def test_a_listener_that_keeps_failing_retries_ever_more_slowly(
    backend: str, other_process_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend != "postgres":
        pytest.skip("the cross-process listener is PostgreSQL's")
    attempts = 0
    waits: list[float] = []
    enough = 7

    async def refused(self: Signals, connection: Any) -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("LISTEN refused")

    async def recorded_sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) >= enough:
            await asyncio.Event().wait()  # the test has seen enough: wait until closed

    monkeypatch.setattr(Signals, "_serve", refused)
    signals = Signals(other_process_db.write_engine, reconnect_sleep=recorded_sleep)
    signals.start()
    try:
        await eventually(lambda: len(waits) >= enough, what="the listener's attempts")
        # The wait between attempts doubles up to its cap, not one attempt per connect
        # round trip; and nothing ever counts as listening.
        assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, RECONNECT_MAX_SECONDS, RECONNECT_MAX_SECONDS]
        assert attempts == enough
        assert not signals.reliable
    finally:
        await signals.aclose()
