"""Small builders shared by API tests, the one poll-with-deadline helper (``eventually``)
and a manual timer for the background loops (``ManualTimer``, ``let_time_pass``)."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from payoutsvc.db.base import utcnow
from payoutsvc.payouts import transitions
from payoutsvc.payouts.acting import Credential
from payoutsvc.payouts.approvals import ApprovalService
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


# -- operator-bound keys ------------------------------------------------------------------------
# What a person's own key holds in most tests: request, read and decide, not the back office.
OPERATOR_SCOPES: tuple[str, ...] = ("payouts:write", "payouts:read", "payouts:approve")
# Secrets of the bound keys made so far, per admin client, so each test makes one per operator.
_bound_keys: weakref.WeakKeyDictionary[httpx.AsyncClient, dict[tuple[str, tuple[str, ...]], str]]
_bound_keys = weakref.WeakKeyDictionary()


async def integration_id_of(client: httpx.AsyncClient, name: str = "default") -> str:
    """The id of the integration called ``name`` (the admin client's is ``default``)."""
    listed = await client.get("/v1/integrations", params={"limit": 200})
    assert listed.status_code == 200, listed.text
    ids = [i["id"] for i in listed.json()["data"] if i["name"] == name]
    assert ids, f"no integration named {name!r}"
    return str(ids[0])


async def operator_key(
    client: httpx.AsyncClient,
    operator_id: str,
    scopes: Sequence[str] = OPERATOR_SCOPES,
    integration: str = "default",
) -> str:
    """The secret of a key of ``integration`` bound to ``operator_id`` (made through the admin
    ``client`` on first use, then reused within the test)."""
    cache = _bound_keys.setdefault(client, {})
    wanted = (f"{integration}/{operator_id}", tuple(scopes))
    if wanted not in cache:
        integration_id = await integration_id_of(client, integration)
        created = await client.post(
            f"/v1/integrations/{integration_id}/api-keys",
            json={"scopes": list(scopes), "operator_id": operator_id},
        )
        assert created.status_code == 201, created.text
        assert created.json()["operator_id"] == operator_id
        cache[wanted] = str(created.json()["key"])
    return cache[wanted]


def made_operator_key(
    client: httpx.AsyncClient, operator_id: str, scopes: Sequence[str] = OPERATOR_SCOPES
) -> str | None:
    """The secret of ``operator_id``'s key if :func:`operator_key` made one in this test."""
    return _bound_keys.get(client, {}).get((f"default/{operator_id}", tuple(scopes)))


async def bearer_of(
    client: httpx.AsyncClient, operator_id: str, scopes: Sequence[str] = OPERATOR_SCOPES
) -> dict[str, str]:
    """Request headers that send ``operator_id``'s own key instead of the client's."""
    return {"Authorization": f"Bearer {await operator_key(client, operator_id, scopes)}"}


async def act_as(
    client: httpx.AsyncClient,
    operator_id: str,
    payout_id: str,
    action: str,
    body: dict[str, Any] | None = None,
    scopes: Sequence[str] = OPERATOR_SCOPES,
) -> httpx.Response:
    """POST /v1/payouts/{id}/{action} with ``operator_id``'s own key, naming them."""
    return await client.post(
        f"/v1/payouts/{payout_id}/{action}",
        json={"operator_id": operator_id, **(body or {})},
        headers=await bearer_of(client, operator_id, scopes),
    )


async def approve_as(
    client: httpx.AsyncClient, payout_id: str, operator_id: str, comment: str | None = None
) -> httpx.Response:
    """``operator_id`` approves with their own operator-bound key."""
    return await act_as(client, operator_id, payout_id, "approve", {"comment": comment})


async def reject_as(
    client: httpx.AsyncClient, payout_id: str, operator_id: str, reason: str | None = None
) -> httpx.Response:
    return await act_as(client, operator_id, payout_id, "reject", {"reason": reason})


async def resolve_as(
    client: httpx.AsyncClient,
    payout_id: str,
    operator_id: str,
    outcome: str,
    comment: str | None = None,
) -> httpx.Response:
    """``operator_id`` resolves with their own key; resolve needs scope ``admin``."""
    body = {"outcome": outcome, "comment": comment}
    return await act_as(client, operator_id, payout_id, "resolve", body, scopes=("admin",))


async def request_as(
    client: httpx.AsyncClient,
    operator_id: str,
    payload: dict[str, Any],
    key: str | None = None,
    scopes: Sequence[str] = OPERATOR_SCOPES,
) -> httpx.Response:
    """POST /v1/payouts with the requester's own key (so the policy may auto-approve it)."""
    return await client.post(
        "/v1/payouts",
        json={**payload, "requested_by": operator_id},
        headers={
            "Idempotency-Key": key or uuid.uuid4().hex,
            **await bearer_of(client, operator_id, scopes),
        },
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
    """Move a payout along ``targets``, one transaction each, as the service would. Approval
    goes through the approvals service (``actor`` approves), so the chain holds the evidence
    the executor and ``audit verify`` require."""
    for target in targets:
        if target is PayoutStatus.APPROVED:
            async with runtime.db.transaction() as session:
                await ApprovalService(session, runtime).approve(
                    Credential(bound_operator=actor, admin=False), payout_id, None, None, None
                )
            continue
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
