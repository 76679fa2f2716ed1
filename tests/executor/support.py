"""Builders and probes shared by the executor tests."""

from __future__ import annotations

import base64
import itertools
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import httpx
from sqlalchemy import Table, func, insert, select

from payoutsvc.auth.models import Integration
from payoutsvc.crypto import RecipientCipher, derive_audit_key, derive_fingerprint_key
from payoutsvc.db.base import utcnow
from payoutsvc.db.engine import Database
from payoutsvc.db.signals import signal_on_commit
from payoutsvc.executor.models import PayoutAttempt
from payoutsvc.executor.service import Executor
from payoutsvc.gateways.base import (
    CallbackNotice,
    Gateway,
    NotDone,
    OutcomeUnknown,
    TransferRequest,
    TransferResult,
)
from payoutsvc.gateways.models import SandboxTransfer
from payoutsvc.ids import new_id
from payoutsvc.payouts import transitions
from payoutsvc.payouts.acting import Credential
from payoutsvc.payouts.approvals import ApprovalService
from payoutsvc.payouts.events import KEYED_SCHEME, hash_of, payout_digest
from payoutsvc.payouts.models import Payout, PayoutEvent
from payoutsvc.payouts.repository import PAYOUTS_DUE
from payoutsvc.payouts.status import ALLOWED_TRANSITIONS, PayoutStatus
from payoutsvc.recipients.storage import public_view, seal
from payoutsvc.recipients.validation import recipient_fingerprint
from payoutsvc.runtime import Runtime
from tests.helpers import create_operator, payout_body

REQUESTER = "exec-sup"  # a supervisor: small amounts may be auto-approved by the policy
APPROVER = "exec-fin"
ACTIVE = (PayoutStatus.APPROVED.value, PayoutStatus.PROCESSING.value)

# Amounts per sandbox behaviour (minor units % 1000), all small enough for auto-approval.
SUCCEED = "12.34"
DECLINE_ACCOUNT = "9.99"
TIMEOUT_AFTER_BOOKING = "9.98"
PENDING_THEN_SUCCESS = "9.97"
DECLINE_FUNDS = "9.96"
FLAKY_5XX = "9.95"
NEVER_RESOLVES = "9.94"

_unique = itertools.count(int.from_bytes(os.urandom(3), "big"))


async def setup_operators(client: httpx.AsyncClient) -> None:
    await create_operator(client, REQUESTER, "supervisor")
    await create_operator(client, APPROVER, "finance")


def unique_body(amount: str, **overrides: Any) -> dict[str, Any]:
    """A payout body no policy rule links to another (own ticket, own recipient)."""
    n = next(_unique) % 10**8
    return payout_body(
        amount=amount,
        ticket={"system": "zendesk", "id": f"exec-{n}"},
        recipient={"type": "alipay", "account": f"139{n:08d}", "name": "张三"},
        requested_by=REQUESTER,
        **overrides,
    )


async def approve_if_pending(runtime: Runtime, payout: dict[str, Any]) -> dict[str, Any]:
    """The policy may auto-approve at creation; otherwise approve as an approver would."""
    if payout["status"] != PayoutStatus.PENDING_APPROVAL.value:
        return payout
    # Through the approvals service, so the chain holds the approval the executor checks.
    async with runtime.db.transaction() as session:
        return await ApprovalService(session, runtime).approve(
            Credential(bound_operator=APPROVER, admin=False), payout["id"], None, None, None
        )


async def approved_payout(
    client: httpx.AsyncClient, runtime: Runtime, amount: str = SUCCEED
) -> dict[str, Any]:
    created = await client.post(
        "/v1/payouts", json=unique_body(amount), headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    assert created.status_code == 201, created.text
    payout = await approve_if_pending(runtime, created.json())
    assert payout["status"] == PayoutStatus.APPROVED.value, payout
    return payout


@dataclass
class FakeClock:
    """The executor's notion of now; tests move it instead of sleeping."""

    now: datetime = field(default_factory=utcnow)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def active_count(db: Database) -> int:
    async with db.transaction(write=False) as session:
        result = await session.execute(
            select(func.count()).select_from(Payout).where(Payout.status.in_(ACTIVE))
        )
        return int(result.scalar_one())


async def drain(executor: Executor, clock: FakeClock, *, max_rounds: int = 200) -> None:
    """Run executor steps, moving the clock past every wait, until nothing is active."""
    step = max(executor.schedule) * 1.3 + executor.lease.total_seconds()
    for _ in range(max_rounds):
        if await executor.run_once() == 0:
            if await active_count(executor.runtime.db) == 0:
                return
            clock.advance(step)
    raise AssertionError("payouts still active after draining")


async def statuses(db: Database) -> dict[str, str]:
    async with db.transaction(write=False) as session:
        result = await session.execute(select(Payout.id, Payout.status))
        return {pid: status for pid, status in result.all()}


async def payout_rows(db: Database) -> dict[str, Payout]:
    async with db.transaction(write=False) as session:
        return {p.id: p for p in (await session.execute(select(Payout))).scalars()}


async def transfers_by_payout(db: Database) -> dict[str, list[SandboxTransfer]]:
    async with db.transaction(write=False) as session:
        found: dict[str, list[SandboxTransfer]] = {}
        for transfer in (await session.execute(select(SandboxTransfer))).scalars():
            found.setdefault(transfer.payout_id, []).append(transfer)
        return found


async def events_by_payout(db: Database) -> dict[str, list[PayoutEvent]]:
    async with db.transaction(write=False) as session:
        found: dict[str, list[PayoutEvent]] = {}
        query = select(PayoutEvent).order_by(PayoutEvent.payout_id, PayoutEvent.sequence)
        for event in (await session.execute(query)).scalars():
            found.setdefault(event.payout_id, []).append(event)
        return found


async def attempts_of(db: Database, payout_id: str) -> list[PayoutAttempt]:
    async with db.transaction(write=False) as session:
        query = (
            select(PayoutAttempt)
            .where(PayoutAttempt.payout_id == payout_id)
            .order_by(PayoutAttempt.started_at, PayoutAttempt.id)
        )
        return list((await session.execute(query)).scalars())


def walk_is_allowed(statuses_seen: list[str]) -> bool:
    """True if each status follows the previous along an arrow of API.md."""
    return all(
        PayoutStatus(after) in ALLOWED_TRANSITIONS[PayoutStatus(before)]
        for before, after in itertools.pairwise(statuses_seen)
    )


async def assert_exactly_once(db: Database) -> dict[str, str]:
    """The invariants every executor test ends with; returns the final statuses.

    - each succeeded payout has exactly one sandbox transfer, booked under its own key and
      succeeded; no payout has more than one transfer; failed/canceled payouts have none
      that succeeded;
    - every payout's event chain walks only along allowed arrows, and each status was
      entered at most once (no duplicate processing/succeeded events).
    """
    payouts = await payout_rows(db)
    transfers = await transfers_by_payout(db)
    events = await events_by_payout(db)
    for pid, payout in payouts.items():
        booked = transfers.get(pid, [])
        assert len(booked) <= 1, f"{pid} booked {len(booked)} times"
        for transfer in booked:
            assert transfer.idempotency_key == payout.gateway_idempotency_key
        if payout.status == PayoutStatus.SUCCEEDED.value:
            assert [t.status for t in booked] == ["succeeded"], (pid, booked)
            assert payout.gateway_reference == booked[0].id
        if payout.status in (PayoutStatus.FAILED.value, PayoutStatus.CANCELED.value):
            assert all(t.status != "succeeded" for t in booked), pid
        walk = [status for status, _ in itertools.groupby(e.data["status"] for e in events[pid])]
        assert walk_is_allowed(walk), (pid, walk)
        executor_steps = [e.type for e in events[pid] if e.actor == "executor"]
        assert len(executor_steps) == len(set(executor_steps)), (pid, executor_steps)
        assert walk[-1] == payout.status, (pid, walk, payout.status)
        sequences = [e.sequence for e in events[pid]]
        assert sequences == list(range(1, len(sequences) + 1)), (pid, sequences)
    return {pid: p.status for pid, p in payouts.items()}


class FaultyGateway:
    """Wraps a gateway and injects transport faults, as a flaky network would.

    Each queued fault applies to the next call: ``refused`` (NotDone, nothing sent),
    ``timeout`` (OutcomeUnknown, nothing sent), ``lost_reply`` (the call reaches the gateway,
    then the answer is lost: OutcomeUnknown).
    """

    def __init__(self, inner: Gateway) -> None:
        self.inner = inner
        self.name = inner.name
        self.callback_reply = inner.callback_reply
        self.faults: list[str] = []
        self.calls = 0

    async def _fault(self, call: Callable[[], Any]) -> TransferResult:
        self.calls += 1
        fault = self.faults.pop(0) if self.faults else None
        if fault == "refused":
            raise NotDone("connection refused", gateway_status="refused")
        if fault == "timeout":
            raise OutcomeUnknown("read timeout", gateway_status="timeout")
        result: TransferResult = await call()
        if fault == "lost_reply":
            raise OutcomeUnknown("connection reset after sending", gateway_status="reset")
        return result

    async def submit(self, request: TransferRequest) -> TransferResult:
        return await self._fault(lambda: self.inner.submit(request))

    async def get_status(
        self, idempotency_key: str, *, reference: str | None = None
    ) -> TransferResult:
        return await self._fault(
            lambda: self.inner.get_status(idempotency_key, reference=reference)
        )

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackNotice:
        return await self.inner.parse_callback(headers, body)

    async def aclose(self) -> None:
        await self.inner.aclose()


def approved_rows(
    integration_id: str,
    key: bytes,
    accounts_and_amounts: Iterable[tuple[int, int]],
    *,
    actor: str,
    ticket_system: str,
    ticket_prefix: str = "",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Approved payouts as the API would have stored them (encrypted recipient, created
    event heading the chain) and their events, as Core rows for the payouts and
    payout_events tables. Shared by tests and bench/executor_drain.py for volumes the API
    would take long to create. ``accounts_and_amounts`` gives (account number, amount)."""
    cipher, fingerprint_key = RecipientCipher(key), derive_fingerprint_key(key)
    audit_key = derive_audit_key(key)
    now = utcnow()
    payouts: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for n, amount_minor in accounts_and_amounts:
        payout_id = new_id("po")
        recipient = {"type": "alipay", "account": f"139{n:08d}", "name": "张三"}
        payouts.append(
            {
                "id": payout_id,
                "integration_id": integration_id,
                "status": "approved",
                "idempotency_key": uuid.uuid4().hex,
                "ticket_system": ticket_system,
                "ticket_id": f"{ticket_prefix}{n}",
                "ticket_url": None,
                "reason": "refund",
                "amount_minor": amount_minor,
                "currency": "CNY",
                "recipient_type": "alipay",
                "recipient_encrypted": seal(cipher, recipient, payout_id),
                "recipient_public": public_view(recipient),
                "recipient_fingerprint": recipient_fingerprint(recipient, fingerprint_key),
                "requested_by": actor,
                "description": None,
                "metadata": {},
                "required_approvals": 1,
                "policy": None,
                "policy_version": None,
                "gateway": "sandbox",
                "gateway_idempotency_key": uuid.uuid4().hex,
                "gateway_reference": None,
                "gateway_status": None,
                "gateway_details": None,
                "gateway_hold_until": None,
                "attempts": 0,
                "failure_code": None,
                "failure_message": None,
                "next_attempt_at": now,
                "locked_until": None,
                "locked_by": None,
                "created_at": now,
                "updated_at": now,
            }
        )
        events.extend(_auto_approved_chain(payouts[-1], audit_key))
    return payouts, events


def _auto_approved_chain(values: dict[str, Any], audit_key: bytes) -> list[dict[str, Any]]:
    """The events the create path writes for a payout the policy auto-approved (created,
    then payout.approved by the policy), keyed as the executor's evidence check expects;
    sets the payout's chain head in ``values``."""
    created, _ = transitions.open_chain(
        values,
        actor=str(values["requested_by"]),
        data={"required_approvals": 0, "payout_digest": payout_digest(values)},
        snapshot={},
        key=audit_key,
    )
    approval = transitions.move(
        transitions.APPROVE,
        {
            **values,
            "status": "pending_approval",
            "last_event_sequence": 1,
            "last_event_hash": hash_of(created, audit_key),
        },
        PayoutStatus.APPROVED,
        actor="system",
        data={"auto_approved": True, "approvals": []},
        at=values["created_at"],
        present=lambda _after: {},
        key=audit_key,
    )
    values["last_event_sequence"] = approval.head.sequence
    values["last_event_hash"] = approval.head.hash
    return [
        {
            "id": event.id,
            "payout_id": event.payout_id,
            "integration_id": event.integration_id,
            "sequence": event.sequence,
            "type": event.type,
            "actor": event.actor,
            "data": event.data,
            "at": event.at,
            "prev_hash": event.prev_hash,
            "hash": hash_of(event, audit_key),
            "hash_scheme": KEYED_SCHEME,
        }
        for event in (created, approval.event)
    ]


async def insert_approved(db: Database, encryption_key: str, amounts_minor: list[int]) -> list[str]:
    """Bulk-insert approved payouts (see approved_rows) into the test database."""
    async with db.transaction() as session:
        integration_id = (
            await session.execute(select(Integration.id).where(Integration.name == "default"))
        ).scalar_one()
        payouts, events = approved_rows(
            integration_id,
            base64.urlsafe_b64decode(encryption_key),
            [(next(_unique) % 10**8, amount) for amount in amounts_minor],
            actor=REQUESTER,
            ticket_system="zendesk",
            ticket_prefix="bulk-",
        )
        await session.execute(insert(cast(Table, Payout.__table__)), payouts)
        await session.execute(insert(cast(Table, PayoutEvent.__table__)), events)
        signal_on_commit(session, PAYOUTS_DUE)  # as approvals announce themselves
    return [p["id"] for p in payouts]
