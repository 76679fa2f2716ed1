"""Stripe's own list of transfers (GET /v1/transfers by created range, page by page) and
the amount in its status answer, against the fake Stripe on loopback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from payoutsvc.gateways import stripe
from payoutsvc.gateways.base import OutcomeUnknown, TransferState
from payoutsvc.runtime import Runtime
from tests.executor.conftest import AppFactory
from tests.gateways.fake_stripe import FakeStripe
from tests.gateways.harness import drain_all
from tests.gateways.test_stripe import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    configure,
    gateway_on,
    pay,
    stripe_app,
    transfer_request,
)
from tests.reconciliation.support import result, runner, start


@pytest.fixture
def fake() -> FakeStripe:
    return FakeStripe(secret_key=SECRET_KEY, webhook_secret=WEBHOOK_SECRET)


async def test_the_list_follows_pages_and_keeps_to_the_period(
    fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stripe, "LIST_PAGE_SIZE", 2)
    account = fake.new_account()
    requests = [transfer_request(account, 1000 + i) for i in range(5)]
    async with gateway_on(fake) as gateway:
        for request in requests:
            await gateway.submit(request)
        ids = {fake.transfer_for(r.idempotency_key)["id"]: r for r in requests}
        earlier = next(iter(ids))
        fake.transfers[earlier]["created"] -= 7200  # booked two hours ago: outside the period
        now = datetime.now(UTC)
        listed = await gateway.list_transfers(now - timedelta(hours=1), now + timedelta(hours=1))

    assert sorted(t.reference for t in listed) == sorted(set(ids) - {earlier})
    for transfer in listed:
        request = ids[transfer.reference]
        assert transfer.idempotency_key == request.idempotency_key
        assert (transfer.amount_minor, transfer.currency) == (request.amount_minor, "USD")
        assert transfer.state is TransferState.SUCCEEDED
    pages = [s for s in fake.seen if s.method == "GET" and "created[gte]" in s.query]
    assert len(pages) == 2  # 4 transfers, 2 a page: the second page says has_more=false
    assert "starting_after" not in pages[0].query
    assert pages[1].query["starting_after"] == listed[1].reference  # newest first


async def test_a_failing_list_is_outcome_unknown_not_an_empty_list(fake: FakeStripe) -> None:
    async with gateway_on(fake, secret_key="sk_test_51WrongKeyWrongKeyWrongKey999") as gateway:
        now = datetime.now(UTC)
        with pytest.raises((OutcomeUnknown, stripe.NotDone)):
            await gateway.list_transfers(now - timedelta(hours=1), now)


async def test_the_status_answer_carries_the_amount_in_our_minor_units(fake: FakeStripe) -> None:
    account = fake.new_account()
    request = transfer_request(account, 1234, "USD")
    async with gateway_on(fake) as gateway:
        await gateway.submit(request)
        fake.transfer_for(request.idempotency_key)["amount"] = 1200  # changed at Stripe
        answer = await gateway.get_status(request.idempotency_key)
    assert (answer.amount_minor, answer.currency) == (1200, "USD")


async def test_a_stripe_reconciliation_finds_changes_made_at_stripe(
    fake: FakeStripe, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    account = fake.new_account()
    async with fake.serve() as base_url:
        configure(monkeypatch, tmp_path, base_url)
        app, client = await stripe_app(make_app)
        runtime: Runtime = app.state.runtime
        _kept, reduced, reversed_ = [
            await pay(client, runtime, account, a) for a in ("1.00", "2.00", "3.00")
        ]
        assert set((await drain_all(runtime)).values()) == {"succeeded"}
        transfers = {t["metadata"]["payout_id"]: t for t in fake.transfers.values()}
        transfers[reduced]["amount"] = 150  # changed at Stripe behind our back
        fake.reverse(transfers[reversed_]["id"])
        async with gateway_on(fake) as other:  # another integration of the platform
            await other.submit(transfer_request(account, 777))

        run_id = await start(client, "stripe")
        assert await runner(runtime).run_once() == run_id

    done = await result(client, run_id)
    assert done["summary"] == {
        "matched": 1,
        "status_mismatch": 1,
        "amount_mismatch": 1,
        "missing_at_gateway": 0,
        "unknown_to_us": 1,
        "unknown": 0,
    }
    by_kind = {item["kind"]: item for item in done["items"]}
    assert by_kind["amount_mismatch"]["payout_id"] == reduced
    assert by_kind["amount_mismatch"]["theirs"]["amount"] == "1.50"
    assert by_kind["status_mismatch"]["payout_id"] == reversed_
    assert by_kind["status_mismatch"]["theirs"]["status"] == "reversed"
    assert by_kind["unknown_to_us"]["theirs"]["amount"] == "7.77"
    assert done["gateway_calls"] == 4
