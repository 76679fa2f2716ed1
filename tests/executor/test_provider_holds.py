"""Pending is not unknown: a transfer the provider holds for a reason of its own.

WeChat Pay waits up to 24 h for the user to confirm, PayPal up to 30 days for the receiver to
claim, Alipay while a bank channel is still dealing. Such a payout must not use up the
unknown-outcome retry schedule and land in ``needs_review`` after minutes: it is checked on
the slow schedule until the provider's own deadline (see API.md, "Gateway callbacks and
operations"). The gateway here is the sandbox (so every booking is in its ledger and the
exactly-once checks apply) with the provider's answers scripted on top.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from payoutsvc.executor.service import Executor
from payoutsvc.gateways.base import (
    CallbackNotice,
    GatewayError,
    OutcomeUnknown,
    ProviderHold,
    Rejected,
    TransferRequest,
    TransferResult,
    TransferState,
)
from payoutsvc.gateways.registry import GatewayRegistry
from payoutsvc.gateways.sandbox import SandboxGateway
from payoutsvc.recipients.storage import unseal
from payoutsvc.runtime import Runtime
from tests.executor.conftest import AppFactory
from tests.executor.support import (
    FakeClock,
    approved_payout,
    assert_exactly_once,
    events_by_payout,
    payout_rows,
    setup_operators,
)

SCHEDULE = "1,1,1"  # three quick retries: a held payout must outlive them by far
CHECK_EVERY = 600.0
DAY = timedelta(hours=24)


def held(reason: str = "WAIT_USER_CONFIRM", **hold: Any) -> TransferResult:
    patience = hold.pop("patience", DAY)
    return TransferResult(
        TransferState.PENDING,
        gateway_status=reason,
        hold=ProviderHold(reason=reason, patience=patience, **hold),
    )


class ScriptedProvider:
    """The sandbox (which books for real, idempotently by key) with the provider's answer to
    each call replaced by the next scripted one, while any are left."""

    def __init__(self, inner: SandboxGateway) -> None:
        self.inner = inner
        self.name = inner.name
        self.callback_reply = inner.callback_reply
        self.script: list[TransferResult | GatewayError] = []
        self.operations: list[str] = []

    async def _answer(self, real: TransferResult) -> TransferResult:
        if not self.script:
            return real
        scripted = self.script.pop(0)
        if isinstance(scripted, GatewayError):
            raise scripted
        return scripted

    async def submit(self, request: TransferRequest) -> TransferResult:
        self.operations.append("submit")
        return await self._answer(await self.inner.submit(request))

    async def get_status(
        self, idempotency_key: str, *, reference: str | None = None
    ) -> TransferResult:
        self.operations.append("status")
        return await self._answer(await self.inner.get_status(idempotency_key, reference=reference))

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackNotice:
        return await self.inner.parse_callback(headers, body)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def setup(make_app: AppFactory) -> tuple[httpx.AsyncClient, Runtime]:
    app, client = await make_app(
        executor_retry_schedule=SCHEDULE, executor_hold_check_seconds=CHECK_EVERY
    )
    await setup_operators(client)
    return client, app.state.runtime


def executor_for(runtime: Runtime, clock: FakeClock) -> tuple[Executor, ScriptedProvider]:
    provider = ScriptedProvider(SandboxGateway(runtime.db))
    registry = GatewayRegistry(runtime, instances={"sandbox": provider})
    return Executor(runtime, registry, clock=clock, worker_id="holds"), provider


async def step(executor: Executor, clock: FakeClock, payout_id: str) -> dict[str, Any]:
    """Move the clock to the payout's next check, run the executor once, return the row."""
    row = (await payout_rows(executor.runtime.db))[payout_id]
    if row.next_attempt_at is not None and row.next_attempt_at > clock.now:
        clock.now = row.next_attempt_at
    await executor.run_once()
    after = (await payout_rows(executor.runtime.db))[payout_id]
    return {c: getattr(after, c) for c in ("status", "next_attempt_at", "gateway_hold_until")} | {
        "attempts": after.attempts,
        "gateway_status": after.gateway_status,
    }


async def test_a_payout_waiting_for_the_user_outlives_the_retry_schedule_then_succeeds(
    setup: tuple[httpx.AsyncClient, Runtime],
) -> None:
    client, runtime = setup
    clock = FakeClock()
    executor, provider = executor_for(runtime, clock)
    payout = await approved_payout(client, runtime)
    provider.script = [held()] + [held() for _ in range(12)]

    first = await step(executor, clock, payout["id"])
    started = clock.now  # when the provider first reported the hold
    assert first["status"] == "processing"
    assert first["gateway_status"] == "WAIT_USER_CONFIRM"
    assert first["gateway_hold_until"] == started + DAY
    # The next check is on the slow schedule, not a second away.
    assert first["next_attempt_at"] - clock.now >= timedelta(seconds=CHECK_EVERY * 0.79)

    for _ in range(12):  # four times the retry schedule's length
        row = await step(executor, clock, payout["id"])
        assert row["status"] == "processing", row
        assert row["gateway_hold_until"] == started + DAY  # the deadline never moves
    assert clock.now - started > timedelta(hours=1)

    shown = (await client.get(f"/v1/payouts/{payout['id']}")).json()
    assert shown["gateway_hold_until"] is not None
    shown_deadline = datetime.fromisoformat(shown["gateway_hold_until"])
    assert abs(shown_deadline - (started + DAY)) < timedelta(milliseconds=1)

    done = await step(executor, clock, payout["id"])  # the user confirmed: the sandbox's answer
    assert done["status"] == "succeeded"
    assert done["gateway_hold_until"] is None
    assert (await assert_exactly_once(runtime.db))[payout["id"]] == "succeeded"
    assert provider.operations.count("submit") == 1


async def test_plain_pending_still_goes_to_review_after_the_schedule(
    setup: tuple[httpx.AsyncClient, Runtime],
) -> None:
    """The control: without a hold, pending is unknown and the schedule ends in review."""
    client, runtime = setup
    clock = FakeClock()
    executor, provider = executor_for(runtime, clock)
    payout = await approved_payout(client, runtime)
    provider.script = [TransferResult(TransferState.PENDING, gateway_status="PROCESSING")] * 10
    statuses = [(await step(executor, clock, payout["id"]))["status"] for _ in range(4)]
    assert statuses == ["processing"] * 3 + ["needs_review"]


async def test_a_held_payout_goes_to_review_only_after_the_providers_deadline(
    setup: tuple[httpx.AsyncClient, Runtime],
) -> None:
    client, runtime = setup
    clock = FakeClock()
    executor, provider = executor_for(runtime, clock)
    payout = await approved_payout(client, runtime)
    # The provider says its clock started 23 h ago: one hour of patience is left.
    since = clock.now - timedelta(hours=23)
    deadline = since + DAY
    provider.script = [held(since=since) for _ in range(40)]

    seen: list[str] = []
    while clock.now < deadline:
        row = await step(executor, clock, payout["id"])
        seen.append(row["status"])
        assert row["gateway_hold_until"] == deadline
        if row["status"] == "processing":
            assert row["next_attempt_at"] <= deadline  # the last check falls on the deadline
    assert seen[:-1] == ["processing"] * (len(seen) - 1)
    assert seen[-1] == "needs_review"
    assert len(seen) >= 6  # every ~10 minutes for an hour, not once at the end
    review = [e for e in (await events_by_payout(runtime.db))[payout["id"]] if e.sequence > 3]
    assert review[-1].type == "payout.needs_review"
    assert review[-1].data["reason"] == "provider_deadline_passed"
    await assert_exactly_once(runtime.db)


async def test_once_held_an_inconclusive_check_keeps_the_slow_schedule(
    setup: tuple[httpx.AsyncClient, Runtime],
) -> None:
    """A user with hours left to confirm is no reason to give up on a timeout or two."""
    client, runtime = setup
    clock = FakeClock()
    executor, provider = executor_for(runtime, clock)
    payout = await approved_payout(client, runtime)
    provider.script = [held()] + [OutcomeUnknown("read timeout") for _ in range(6)]
    for _ in range(7):
        row = await step(executor, clock, payout["id"])
        assert row["status"] == "processing", row
    row = await step(executor, clock, payout["id"])
    assert row["status"] == "succeeded"
    await assert_exactly_once(runtime.db)


async def test_a_transfer_stuck_in_flight_is_resent_on_the_slow_schedule_after_the_retries(
    setup: tuple[httpx.AsyncClient, Runtime],
) -> None:
    """WeChat Pay: a bill stuck in ACCEPTED/PROCESSING may be re-sent under its out_bill_no.
    It is an ordinary in-flight state first (the normal schedule, status queries only), and
    only a bill still stuck after the schedule goes on the slow schedule, re-sent each time."""
    client, runtime = setup
    clock = FakeClock()
    executor, provider = executor_for(runtime, clock)
    payout = await approved_payout(client, runtime)
    stuck = held("PROCESSING", after_schedule=True, resend=True)
    provider.script = [stuck for _ in range(9)]

    rows = [await step(executor, clock, payout["id"]) for _ in range(4)]
    assert [r["gateway_hold_until"] is None for r in rows] == [True, True, True, False]
    assert all(r["status"] == "processing" for r in rows)
    assert provider.operations == ["submit", "status", "status", "status"]

    provider.operations.clear()
    for _ in range(2):
        row = await step(executor, clock, payout["id"])
        assert row["status"] == "processing"
    assert provider.operations == ["status", "submit", "status", "submit"]

    row = await step(executor, clock, payout["id"])  # script used up: the sandbox's success
    assert row["status"] == "succeeded"
    final = await assert_exactly_once(runtime.db)
    assert final[payout["id"]] == "succeeded"


# -- what an earlier answer of the provider rules out ---------------------------------------------
async def test_not_found_for_a_transfer_the_provider_acknowledged_is_never_a_second_submit(
    setup: tuple[httpx.AsyncClient, Runtime],
) -> None:
    """Once the provider gave its reference, "no such transfer" means we asked the wrong
    account, app or host (a configuration change), not that it was never booked."""
    client, runtime = setup
    clock = FakeClock()
    executor, provider = executor_for(runtime, clock)
    payout = await approved_payout(client, runtime)
    not_found = TransferResult(TransferState.NOT_FOUND)
    provider.script = [TransferResult(TransferState.PENDING, reference="bill-123")]
    provider.script += [not_found for _ in range(10)]
    statuses = [(await step(executor, clock, payout["id"]))["status"] for _ in range(4)]
    assert statuses == ["processing"] * 3 + ["needs_review"]
    assert provider.operations == ["submit", "status", "status", "status"]
    row = (await payout_rows(runtime.db))[payout["id"]]
    assert row.gateway_reference == "bill-123"
    await assert_exactly_once(runtime.db)


async def test_a_refused_resend_does_not_fail_a_transfer_the_status_query_found(
    setup: tuple[httpx.AsyncClient, Runtime],
) -> None:
    client, runtime = setup
    clock = FakeClock()
    executor, provider = executor_for(runtime, clock)
    payout = await approved_payout(client, runtime)
    stuck = held("PROCESSING", after_schedule=True, resend=True)
    provider.script = [stuck for _ in range(4)]  # submit + the three scheduled checks
    rows = [await step(executor, clock, payout["id"]) for _ in range(4)]
    assert rows[-1]["gateway_hold_until"] is not None  # on the slow schedule now
    provider.script = [stuck, Rejected("gateway_declined", "bill already exists"), stuck]
    row = await step(executor, clock, payout["id"])
    assert provider.operations[-2:] == ["status", "submit"]
    assert row["status"] == "processing", row
    await assert_exactly_once(runtime.db)


async def test_a_provider_message_quoting_the_payee_is_stored_masked(
    setup: tuple[httpx.AsyncClient, Runtime],
) -> None:
    client, runtime = setup
    clock = FakeClock()
    executor, provider = executor_for(runtime, clock)
    payout = await approved_payout(client, runtime)
    account = await full_account_of(runtime, payout["id"])
    provider.script = [Rejected("recipient_account_invalid", f"Receiver {account} is ineligible")]
    row = await step(executor, clock, payout["id"])
    assert row["status"] == "failed"
    shown = (await client.get(f"/v1/payouts/{payout['id']}")).json()
    attempts = (await client.get(f"/v1/payouts/{payout['id']}/attempts")).text
    for text in (str(shown), attempts):
        assert account not in text
    assert "Receiver 139" in shown["failure"]["message"]  # the message itself is kept


async def full_account_of(runtime: Runtime, payout_id: str) -> str:
    row = (await payout_rows(runtime.db))[payout_id]
    recipient = unseal(runtime.cipher, row.recipient_encrypted, payout_id)
    return str(recipient["account"])
