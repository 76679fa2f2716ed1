"""Small builders shared by API tests, the one poll-with-deadline helper (``eventually``)
and a manual timer for the background loops (``ManualTimer``, ``let_time_pass``)."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from payoutsvc.db.base import utcnow
from payoutsvc.payouts import transitions
from payoutsvc.payouts.service import PayoutService
from payoutsvc.payouts.status import PayoutStatus
from payoutsvc.runtime import Runtime
from payoutsvc.work_loop import LoopTimer, first_of


def payout_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ticket": {
            "system": "zendesk",
            "id": "48213",
            "url": "https://acme.zendesk.com/agent/tickets/48213",
        },
        "reason": "refund",
        "amount": "12.50",
        "currency": "CNY",
        "recipient": {"type": "alipay", "account": "13800138000", "name": "张三"},
        "requested_by": "agent-17",
        "description": "Price difference refund for order 9931",
        "metadata": {"order_id": "9931"},
    }
    body.update(overrides)
    return body


async def create_operator(client: httpx.AsyncClient, operator_id: str, role: str) -> dict[str, Any]:
    response = await client.post("/v1/operators", json={"id": operator_id, "role": role})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def create_payout(
    client: httpx.AsyncClient, key: str | None = None, **overrides: Any
) -> httpx.Response:
    return await client.post(
        "/v1/payouts",
        json=payout_body(**overrides),
        headers={"Idempotency-Key": key or uuid.uuid4().hex},
    )


async def new_integration_client(
    client: httpx.AsyncClient, name: str, scopes: list[str]
) -> httpx.AsyncClient:
    """A client for a fresh integration holding only ``scopes`` (caller closes it)."""
    created = await client.post("/v1/integrations", json={"name": name})
    assert created.status_code == 201, created.text
    key = await client.post(
        f"/v1/integrations/{created.json()['id']}/api-keys", json={"scopes": scopes}
    )
    assert key.status_code == 201, key.text
    return httpx.AsyncClient(
        transport=client._transport,
        base_url=str(client.base_url),
        headers={"Authorization": f"Bearer {key.json()['key']}"},
    )


# The arrow each target is reached by when a test walks a payout along the lifecycle by hand
# (as the approval flow and the executor would), through the transitions module.
_ARROW_TO = {
    PayoutStatus.APPROVED: transitions.APPROVE,
    PayoutStatus.PROCESSING: transitions.CLAIM,
    PayoutStatus.SUCCEEDED: transitions.FINISH,
    PayoutStatus.FAILED: transitions.FINISH,
    PayoutStatus.NEEDS_REVIEW: transitions.FINISH,
    PayoutStatus.REJECTED: transitions.REJECT,
    PayoutStatus.CANCELED: transitions.CANCEL,
}


async def walk(runtime: Runtime, payout_id: str, *targets: PayoutStatus, actor: str) -> None:
    """Move a payout along ``targets``, one transaction each, as the service would."""
    for target in targets:
        lease = None
        if target is PayoutStatus.PROCESSING:
            lease = transitions.Lease(f"{actor}/test", utcnow() + timedelta(seconds=60))
        async with runtime.db.transaction() as session:
            await PayoutService(session, runtime).transition(
                payout_id,
                None,
                _ARROW_TO[target],
                target,
                actor=actor,
                event_data={},
                lease=lease,
            )


# -- waiting for a state ------------------------------------------------------------------------
async def eventually(
    predicate: Callable[[], Awaitable[object]] | Callable[[], object],
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` (plain or async) until it is truthy; fail after ``timeout`` seconds.
    The timeout only bounds a failing test: nothing is asserted about how fast it happened."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


# -- a background loop's time, moved by the test ----------------------------------------------
@dataclass(eq=False)
class _Sleeper:
    events: tuple[asyncio.Event, ...]
    deadline: float

    def asleep(self, now: float) -> bool:
        return now < self.deadline and not any(event.is_set() for event in self.events)


class ManualTimer(LoopTimer):
    """A loop timer that stands still until the test moves it: a loop's timed look happens
    only on ``advance``/``advance_to``, so whatever work starts meanwhile was started by a
    wake-up. ``utcnow`` is the matching wall clock for an Executor (real time plus however far
    the test moved this timer), so payouts approved in real time are still due to it."""

    def __init__(self) -> None:
        self._now = 0.0
        self._moved = asyncio.Event()
        self._sleepers: list[_Sleeper] = []
        self.requested: list[float] = []  # every timeout a loop asked for, in order

    def now(self) -> float:
        return self._now

    def utcnow(self) -> datetime:
        return utcnow() + timedelta(seconds=self._now)

    async def wait_any(self, events: Sequence[asyncio.Event], timeout: float) -> None:
        sleeper = _Sleeper(tuple(events), self._now + timeout)
        self.requested.append(timeout)
        self._sleepers.append(sleeper)
        try:
            while sleeper.asleep(self._now):
                await first_of((*events, self._moved), None)
        finally:
            self._sleepers.remove(sleeper)

    @property
    def asleep(self) -> bool:
        """Some loop waits for a wake-up or its next timed look, and neither has come yet."""
        return any(s.asleep(self._now) for s in self._sleepers)

    @property
    def next_deadline(self) -> float:
        """When the earliest pending timed look falls due."""
        return min(s.deadline for s in self._sleepers if s.asleep(self._now))

    def advance_to(self, when: float) -> None:
        self._now = max(self._now, when)
        self._moved.set()
        self._moved = asyncio.Event()

    def advance(self, seconds: float) -> None:
        self.advance_to(self._now + seconds)


async def let_time_pass(
    timer: ManualTimer, seconds: float, *, settled: Callable[[], bool] = lambda: True
) -> None:
    """Move ``timer`` on by ``seconds`` one timed look at a time, as real time would: each
    step waits until the loop sleeps (and ``settled()``: its work in flight is done), then
    jumps to its next deadline."""
    until = timer.now() + seconds
    while True:
        await eventually(lambda: timer.asleep and settled(), what="the loop to go to sleep")
        if timer.next_deadline > until:
            timer.advance_to(until)
            return
        timer.advance_to(timer.next_deadline)
