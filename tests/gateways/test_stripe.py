"""The Stripe Connect transfers adapter against a fake Stripe on loopback: wire format,
amounts, status mapping, webhook signatures, and every fault driven through the executor
with exactly one transfer per payout."""

from __future__ import annotations

import copy
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import structlog.testing
from pydantic import ValidationError

from payoutsvc.gateways.base import (
    InvalidCallback,
    InvalidSignature,
    NotDone,
    OutcomeUnknown,
    Rejected,
    TransferRequest,
    TransferState,
)
from payoutsvc.gateways.providers import MissingCredential
from payoutsvc.gateways.stripe import (
    DEFAULT_API_VERSION,
    StripeGateway,
    StripeSettings,
    create_gateway,
    minor_from_stripe,
    stripe_amount,
)
from payoutsvc.policy.document import DEFAULT_POLICY_DOCUMENT
from payoutsvc.runtime import Runtime
from tests.executor.conftest import AppFactory
from tests.executor.support import attempts_of
from tests.gateways.fake_stripe import FakeStripe
from tests.gateways.harness import (
    approved_payout_to,
    assert_paid_exactly_once,
    drain_all,
    executor_for,
    provider_app,
)

SECRET_KEY = "sk_test_51PayoutsvcFakeKey0123456789abcdefSECRET"
WEBHOOK_SECRET = "whsec_PayoutsvcFakeWebhookSecret0123456789"
API_VERSION = "2025-04-30.basil"


@pytest.fixture
def fake() -> FakeStripe:
    return FakeStripe(secret_key=SECRET_KEY, webhook_secret=WEBHOOK_SECRET)


@asynccontextmanager
async def gateway_on(fake: FakeStripe, **options: Any) -> AsyncIterator[StripeGateway]:
    async with fake.serve() as base_url:
        gateway = StripeGateway(
            secret_key=options.pop("secret_key", SECRET_KEY),
            webhook_secret=options.pop("webhook_secret", WEBHOOK_SECRET),
            base_url=base_url,
            timeout_seconds=0.3,
            **options,
        )
        try:
            yield gateway
        finally:
            await gateway.aclose()


def logged(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Everything logged: through stdlib logging once an app configured structlog, else
    structlog's default printer."""
    out = capsys.readouterr()
    return "\n".join((caplog.text, out.out, out.err))


def transfer_request(
    account: str,
    amount_minor: int = 1234,
    currency: str = "USD",
    *,
    key: str | None = None,
    description: str | None = "Refund for order 9931",
    recipient_type: str = "stripe_account",
) -> TransferRequest:
    return TransferRequest(
        payout_id="po_01jd5x0z3q8m4k2n7p9r6s5t4v",
        idempotency_key=key or uuid.uuid4().hex,
        amount_minor=amount_minor,
        currency=currency,
        recipient={"type": recipient_type, "account": account, "name": "Ada Lovelace"},
        description=description,
    )


# -- request shape and authentication ---------------------------------------------------------
async def test_submit_posts_a_form_encoded_transfer_under_the_payout_key(
    fake: FakeStripe,
) -> None:
    account = fake.new_account()
    request = transfer_request(account)
    async with gateway_on(fake) as gateway:  # no version given: the pinned default
        result = await gateway.submit(request)
    (create,) = fake.creates()
    assert create.headers["authorization"] == f"Bearer {SECRET_KEY}"
    assert create.headers["idempotency-key"] == request.idempotency_key
    assert create.headers["stripe-version"] == API_VERSION
    assert create.headers["content-type"] == "application/x-www-form-urlencoded"
    assert create.form == {
        "amount": "1234",
        "currency": "usd",
        "destination": account,
        "transfer_group": request.idempotency_key,
        "description": "Refund for order 9931",
        "metadata[payout_id]": request.payout_id,
        "metadata[payout_key]": request.idempotency_key,
    }
    transfer = fake.transfer_for(request.idempotency_key)
    assert result.state is TransferState.SUCCEEDED
    assert result.reference == transfer["id"]
    assert result.gateway_status == "succeeded"
    assert result.details == {"destination_payment": transfer["destination_payment"]}
    assert fake.booked_states() == {request.idempotency_key: ["succeeded"]}


async def test_a_wrong_secret_key_is_refused_and_books_nothing(
    fake: FakeStripe, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "sk_test_51WrongKeyWrongKeyWrongKey999"
    request = transfer_request(fake.new_account())
    with caplog.at_level(logging.INFO):
        async with gateway_on(fake, secret_key=wrong) as gateway:
            with pytest.raises(NotDone) as refused:
                await gateway.submit(request)
            with pytest.raises(NotDone):
                await gateway.get_status(request.idempotency_key)
    assert [s.status for s in fake.seen] == [401, 401]
    assert fake.transfers == {}
    logs = logged(caplog, capsys)
    assert "authentication_failed" in logs
    assert wrong not in logs
    assert wrong not in refused.value.message


async def test_basic_auth_with_the_key_as_user_is_what_the_fake_also_accepts(
    fake: FakeStripe,
) -> None:
    # The fake's auth check is real: it tells a right key from a wrong one either way.
    async with fake.serve() as base_url, httpx.AsyncClient(base_url=base_url) as http:
        ok = await http.get("/v1/transfers", auth=(SECRET_KEY, ""))
        bad = await http.get("/v1/transfers", auth=("sk_test_other", ""))
        none = await http.get("/v1/transfers")
    assert (ok.status_code, bad.status_code, none.status_code) == (200, 401, 401)


# -- amounts ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("minor", "currency", "units"),
    [
        (1234, "USD", 1234),
        (500, "JPY", 500),  # zero-decimal: yen, not "cents"
        (1, "KRW", 1),
        (500, "ISK", 50000),  # ISO whole krónur, Stripe two decimals
        (5120, "KWD", 5120),  # three decimals, last one 0
        (12300, "MGA", 123),  # ISO two decimals, Stripe whole ariary
        (5000, "UGX", 5000),
    ],
)
def test_amounts_are_sent_in_stripe_minor_units(minor: int, currency: str, units: int) -> None:
    assert stripe_amount(minor, currency) == units
    assert minor_from_stripe(units, currency) == minor


@pytest.mark.parametrize(("minor", "currency"), [(5125, "KWD"), (12345, "MGA")])
async def test_amounts_stripe_cannot_take_exactly_are_refused_unsent(
    fake: FakeStripe, minor: int, currency: str
) -> None:
    async with gateway_on(fake) as gateway:
        with pytest.raises(Rejected) as refused:
            await gateway.submit(transfer_request(fake.new_account(), minor, currency))
    assert refused.value.code == "amount_out_of_range"
    assert fake.seen == []


async def test_a_zero_decimal_currency_is_sent_as_whole_units(fake: FakeStripe) -> None:
    request = transfer_request(fake.new_account(), 500, "JPY")
    async with gateway_on(fake) as gateway:
        result = await gateway.submit(request)
    assert result.state is TransferState.SUCCEEDED
    (create,) = fake.creates()
    assert (create.form["amount"], create.form["currency"]) == ("500", "jpy")
    assert fake.transfer_for(request.idempotency_key)["amount"] == 500


# -- field limits -----------------------------------------------------------------------------
async def test_field_limits_and_defaults(fake: FakeStripe) -> None:
    long = transfer_request(fake.new_account(), description="x" * 6000)
    bare = transfer_request(fake.new_account(), description=None)
    async with gateway_on(fake) as gateway:
        assert (await gateway.submit(long)).state is TransferState.SUCCEEDED
        assert (await gateway.submit(bare)).state is TransferState.SUCCEEDED
        for wrong in (
            transfer_request("ba_1234567890"),
            transfer_request("acct_12 34"),
            transfer_request(fake.new_account(), recipient_type="alipay"),
        ):
            with pytest.raises(Rejected) as refused:
                await gateway.submit(wrong)
            assert refused.value.code == "recipient_account_invalid"
    first, second = fake.creates()
    assert first.form["description"] == "x" * 5000  # Stripe's limit
    assert second.form["description"] == f"payoutsvc payout {bare.payout_id}"
    assert len(fake.creates()) == 2  # the refused ones were never sent


# -- idempotency --------------------------------------------------------------------------------
async def test_a_duplicate_submit_is_replayed_as_the_same_transfer(fake: FakeStripe) -> None:
    request = transfer_request(fake.new_account())
    async with gateway_on(fake) as gateway:
        first = await gateway.submit(request)
        second = await gateway.submit(request)
    assert first.reference == second.reference
    assert [c.replayed for c in fake.creates()] == [False, True]
    assert fake.booked_states() == {request.idempotency_key: ["succeeded"]}


@pytest.mark.parametrize(
    ("fault", "gateway_status"),
    [("timeout_after_booking", "timeout"), ("reset_after_booking", "reset")],
)
async def test_a_lost_reply_then_a_resubmit_is_replayed_not_booked_again(
    fake: FakeStripe, fault: str, gateway_status: str
) -> None:
    request = transfer_request(fake.new_account(fault))
    async with gateway_on(fake) as gateway:
        with pytest.raises(OutcomeUnknown) as lost:
            await gateway.submit(request)
        again = await gateway.submit(request)
    assert lost.value.gateway_status == gateway_status
    assert again.state is TransferState.SUCCEEDED
    assert again.reference == fake.transfer_for(request.idempotency_key)["id"]
    assert fake.creates()[-1].replayed
    assert fake.booked_states() == {request.idempotency_key: ["succeeded"]}


async def test_the_same_key_with_other_parameters_is_outcome_unknown(fake: FakeStripe) -> None:
    account = fake.new_account()
    request = transfer_request(account)
    changed = transfer_request(account, 999, key=request.idempotency_key)
    async with gateway_on(fake) as gateway:
        await gateway.submit(request)
        with pytest.raises(OutcomeUnknown) as conflict:
            await gateway.submit(changed)
    assert conflict.value.gateway_status == "idempotency_error"
    assert fake.booked_states() == {request.idempotency_key: ["succeeded"]}


# -- error mapping ------------------------------------------------------------------------------
# (setup, what the adapter raises, our failure code, gateway_status, transfers booked)
ANSWERS: list[tuple[str, type[Exception], str | None, str, int]] = [
    ("unknown_account", Rejected, "recipient_account_invalid", "resource_missing", 0),
    (
        "no_capability",
        Rejected,
        "recipient_account_invalid",
        "insufficient_capabilities_for_transfer",
        0,
    ),
    ("no_balance", Rejected, "insufficient_funds", "balance_insufficient", 0),
    ("unknown_error", Rejected, "gateway_declined", "transfer_frobnicated", 0),
    ("unknown_error_retryable", OutcomeUnknown, None, "transfer_temporarily_blocked", 0),
    ("429", NotDone, None, "rate_limit", 0),
    ("409", OutcomeUnknown, None, "idempotency_error", 0),
    ("503", OutcomeUnknown, None, "http_503", 0),
    ("500_saved", OutcomeUnknown, None, "api_error", 0),
    ("500_after_booking", OutcomeUnknown, None, "api_error", 1),
    ("garbage_after_booking", OutcomeUnknown, None, "http_200", 1),
    ("mismatched_after_booking", OutcomeUnknown, None, "http_200", 1),
]


async def test_stripe_answers_map_to_what_the_executor_may_do(fake: FakeStripe) -> None:
    """One server for all cases (each is a payout of its own); the case names the failure."""
    fake.balance["eur"] = 1000
    async with gateway_on(fake) as gateway:
        for setup, error, code, gateway_status, booked in ANSWERS:
            currency = "EUR" if setup == "no_balance" else "USD"
            if setup == "unknown_account":
                account = "acct_NoSuchAccount123"
            elif setup in ("no_capability", "no_balance"):
                account = fake.new_account()
                if setup == "no_capability":
                    fake.no_transfers_capability.add(account)
            else:
                account = fake.new_account(setup)
            request = transfer_request(account, currency=currency)
            with pytest.raises(error) as raised:
                await gateway.submit(request)
            found = raised.value
            assert isinstance(found, Rejected | NotDone | OutcomeUnknown), setup
            assert (getattr(found, "code", None), found.gateway_status) == (
                code,
                gateway_status,
            ), setup
            assert len(fake.booked_states().get(request.idempotency_key, [])) == booked, setup
            assert account not in found.message, setup


async def test_a_saved_500_is_replayed_to_every_resubmit(fake: FakeStripe) -> None:
    request = transfer_request(fake.new_account("500_saved"))
    async with gateway_on(fake) as gateway:
        for _ in range(2):
            with pytest.raises(OutcomeUnknown):
                await gateway.submit(request)
        assert (await gateway.get_status(request.idempotency_key)).state is (
            TransferState.NOT_FOUND
        )
    assert [c.replayed for c in fake.creates()] == [False, True]
    assert fake.transfers == {}


# -- status -------------------------------------------------------------------------------------
async def test_status_by_group_and_by_reference(fake: FakeStripe) -> None:
    request = transfer_request(fake.new_account(), 1000)
    other = transfer_request(fake.new_account())
    async with gateway_on(fake) as gateway:
        missing = await gateway.get_status(request.idempotency_key)
        created = await gateway.submit(request)
        await gateway.submit(other)
        by_group = await gateway.get_status(request.idempotency_key)
        by_reference = await gateway.get_status(
            request.idempotency_key, reference=created.reference
        )
        # An id Stripe gave and no longer knows: another account or mode. Never "not found"
        # (a re-submit there would pay again), never looked up by group either.
        with pytest.raises(OutcomeUnknown, match="no longer knows"):
            await gateway.get_status(request.idempotency_key, reference="tr_NoSuchTransfer")
        fake.reverse(str(created.reference), 500)
        partly = await gateway.get_status(request.idempotency_key, reference=created.reference)
        fake.reverse(str(created.reference))
        reversed_ = await gateway.get_status(request.idempotency_key)
        with pytest.raises(OutcomeUnknown):
            await gateway.get_status(
                request.idempotency_key, reference=fake.transfer_for(other.idempotency_key)["id"]
            )
    assert missing.state is TransferState.NOT_FOUND
    for found in (by_group, by_reference):
        assert (found.state, found.reference, found.gateway_status) == (
            TransferState.SUCCEEDED,
            created.reference,
            "succeeded",
        )
    assert (partly.state, partly.gateway_status) == (TransferState.SUCCEEDED, "partially_reversed")
    assert partly.details is not None
    assert partly.details["amount_reversed"] == "5.00"
    assert (reversed_.state, reversed_.gateway_status, reversed_.failure_code) == (
        TransferState.FAILED,
        "reversed",
        "gateway_reversed",
    )
    assert [s.path for s in fake.seen if s.method == "GET"] == [
        "/v1/transfers",
        "/v1/transfers",
        f"/v1/transfers/{created.reference}",
        "/v1/transfers/tr_NoSuchTransfer",  # and no look by group after it
        f"/v1/transfers/{created.reference}",
        "/v1/transfers",
        f"/v1/transfers/{fake.transfer_for(other.idempotency_key)['id']}",
    ]
    assert fake.seen[0].query == {"transfer_group": request.idempotency_key, "limit": "10"}


async def test_status_trusts_only_transfers_under_the_key(fake: FakeStripe) -> None:
    fake.ignore_list_filter = True  # an API that ignored the filter must not pay us
    request = transfer_request(fake.new_account())
    async with gateway_on(fake) as gateway:
        await gateway.submit(transfer_request(fake.new_account()))
        assert (await gateway.get_status(request.idempotency_key)).state is (
            TransferState.NOT_FOUND
        )
        await gateway.submit(request)
        assert (await gateway.get_status(request.idempotency_key)).state is (
            TransferState.SUCCEEDED
        )
        twin = dict(fake.transfer_for(request.idempotency_key), id="tr_Twin")
        fake.transfers["tr_Twin"] = twin
        with pytest.raises(OutcomeUnknown) as doubled:
            await gateway.get_status(request.idempotency_key)
    assert doubled.value.gateway_status == "duplicate"


# -- webhooks -----------------------------------------------------------------------------------
async def test_webhook_signatures(fake: FakeStripe) -> None:
    request = transfer_request(fake.new_account())
    async with gateway_on(fake) as gateway:
        await gateway.submit(request)
        transfer = fake.transfer_for(request.idempotency_key)
        event = fake.event(transfer, "transfer.created")

        body, headers = fake.signed(event)
        notice = await gateway.parse_callback(headers, body)
        assert notice.idempotency_key == request.idempotency_key
        assert notice.notice_id == event["id"]
        assert (notice.result.state, notice.result.reference) == (
            TransferState.SUCCEEDED,
            transfer["id"],
        )
        # While a secret is rolled Stripe signs with both: any v1 matching is enough.
        body, headers = fake.signed(event, also_signed_with=("whsec_TheOldOne",))
        assert (await gateway.parse_callback(headers, body)).idempotency_key == (
            request.idempotency_key
        )

        now = int(time.time())
        forged: list[tuple[bytes, dict[str, str]]] = [
            fake.signed(event, secret="whsec_NotTheSecret"),
            fake.signed(event, timestamp=now - 301),
            fake.signed(event, timestamp=now + 301),
            (body + b" ", headers),
            (body, {}),
            (body, {"Stripe-Signature": headers["Stripe-Signature"].replace("v1=", "v0=")}),
            (body, {"Stripe-Signature": f"t=soon,v1={'0' * 64}"}),
        ]
        for forged_body, forged_headers in forged:
            with pytest.raises(InvalidSignature):
                await gateway.parse_callback(forged_headers, forged_body)

        reversed_event = fake.event(fake.reverse(transfer["id"]), "transfer.reversed")
        notice = await delivered(gateway, fake.signed(reversed_event))
        assert (notice.result.state, notice.result.failure_code) == (
            TransferState.FAILED,
            "gateway_reversed",
        )
        # Verified but about something else: acknowledged, matches no payout.
        other = dict(fake.event(transfer, "payout.paid"), data={"object": {"object": "payout"}})
        notice = await delivered(gateway, fake.signed(other))
        assert (notice.idempotency_key, notice.result.state) == ("", TransferState.PENDING)
        for malformed in (
            dict(event, data={"object": {"object": "transfer"}}),
            {"object": "list"},
        ):
            with pytest.raises(InvalidCallback) as bad:
                await delivered(gateway, fake.signed(malformed))
            assert not isinstance(bad.value, InvalidSignature)

    async with gateway_on(fake, webhook_secret=None) as unconfigured:
        with pytest.raises(InvalidSignature):
            await delivered(unconfigured, fake.signed(event))


async def test_an_event_rendered_in_another_api_version_is_read_and_flagged(
    fake: FakeStripe,
) -> None:
    """Stripe renders events in the webhook endpoint's version, not the request's pin."""
    account = fake.new_account()
    async with gateway_on(fake) as gateway:
        await gateway.submit(transfer_request(account))
        transfer = fake.transfer_for(fake.creates()[0].headers["idempotency-key"])
        pinned = fake.event(transfer, "transfer.created")
        with structlog.testing.capture_logs() as pinned_logs:
            notice = await delivered(gateway, fake.signed(pinned))
        assert notice.result.state is TransferState.SUCCEEDED
        assert pinned_logs == []
        older = dict(pinned, api_version="2024-06-20")
        with structlog.testing.capture_logs() as older_logs:
            notice = await delivered(gateway, fake.signed(older))
        assert notice.result.state is TransferState.SUCCEEDED
    [flagged] = older_logs
    assert flagged["event"] == "gateway.stripe.webhook_version_differs"
    assert flagged["event_version"] == "2024-06-20"
    assert flagged["pinned_version"] == DEFAULT_API_VERSION


async def delivered(gateway: StripeGateway, delivery: tuple[bytes, dict[str, str]]) -> Any:
    body, headers = delivery
    return await gateway.parse_callback(headers, body)


# -- settings -----------------------------------------------------------------------------------
async def test_settings_read_secrets_inline_or_from_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(MissingCredential):
        create_gateway(None)  # type: ignore[arg-type]
    monkeypatch.setenv("PAYOUTSVC_STRIPE_SECRET_KEY", "sk_test_inline")
    key_file = tmp_path / "key"
    key_file.write_text(SECRET_KEY + "\n")
    monkeypatch.setenv("PAYOUTSVC_STRIPE_SECRET_KEY_FILE", str(key_file))
    gateway = create_gateway(None)  # type: ignore[arg-type]
    assert isinstance(gateway, StripeGateway)
    assert gateway._headers["Authorization"] == f"Bearer {SECRET_KEY}"  # the file wins
    await gateway.aclose()
    assert StripeSettings().timeout_seconds == 15.0
    # Pinned by default: an upgrade of the account's default version changes nothing here.
    assert gateway._headers["Stripe-Version"] == DEFAULT_API_VERSION == API_VERSION
    monkeypatch.setenv("PAYOUTSVC_STRIPE_API_VERSION", "2025-09-30.clover")
    assert StripeSettings().api_version == "2025-09-30.clover"
    for version in ("latest", "", "2025-09-30 clover"):
        monkeypatch.setenv("PAYOUTSVC_STRIPE_API_VERSION", version)
        with pytest.raises(ValidationError):
            StripeSettings()
    monkeypatch.delenv("PAYOUTSVC_STRIPE_API_VERSION")
    assert StripeSettings().base_url == "https://api.stripe.com"
    for wrong in ("http://api.stripe.com", "ftp://127.0.0.1"):
        monkeypatch.setenv("PAYOUTSVC_STRIPE_BASE_URL", wrong)
        with pytest.raises(ValidationError):
            StripeSettings()
    monkeypatch.setenv("PAYOUTSVC_STRIPE_BASE_URL", "http://127.0.0.1:9/")
    assert StripeSettings().base_url == "http://127.0.0.1:9"


# -- through the executor -----------------------------------------------------------------------
def configure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, base_url: str, *, key: str = SECRET_KEY
) -> None:
    """Credentials as an operator sets them: the secret key from a file, the webhook
    secret inline."""
    key_file = tmp_path / "stripe_secret_key"
    key_file.write_text(key + "\n")
    monkeypatch.setenv("PAYOUTSVC_STRIPE_SECRET_KEY_FILE", str(key_file))
    monkeypatch.setenv("PAYOUTSVC_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("PAYOUTSVC_STRIPE_BASE_URL", base_url)
    monkeypatch.setenv("PAYOUTSVC_STRIPE_TIMEOUT_SECONDS", "0.3")


async def stripe_app(make_app: AppFactory, **overrides: Any) -> tuple[Any, httpx.AsyncClient]:
    return await provider_app(
        make_app, gateway="stripe", recipient_type="stripe_account", **overrides
    )


async def pay(
    client: httpx.AsyncClient, runtime: Runtime, account: str, amount: str, currency: str = "USD"
) -> str:
    recipient = {"type": "stripe_account", "account": account, "name": "Ada Lovelace"}
    payout = await approved_payout_to(client, runtime, recipient, amount, currency)
    return str(payout["id"])


async def payout(client: httpx.AsyncClient, payout_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/payouts/{payout_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def allow_yen(client: httpx.AsyncClient) -> None:
    """The built-in policy has no JPY: give every USD limit a yen twin (x150, whole yen)."""
    document = copy.deepcopy(DEFAULT_POLICY_DOCUMENT)
    document["currencies"].append("JPY")

    def add(node: Any) -> None:
        if isinstance(node, dict):
            if "USD" in node and isinstance(node["USD"], str):
                node["JPY"] = str(int(Decimal(node["USD"]) * 150))
            for value in list(node.values()):
                add(value)

    add(document)
    response = await client.put("/v1/policy", json=document)
    assert response.status_code == 200, response.text


async def test_definite_outcomes_through_the_executor(
    make_app: AppFactory, fake: FakeStripe, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake.balance["eur"] = 500
    async with fake.serve() as base_url:
        configure(monkeypatch, tmp_path, base_url)
        app, client = await stripe_app(make_app)
        runtime = app.state.runtime
        await allow_yen(client)
        dollars = await pay(client, runtime, fake.new_account(), "12.34")
        yen = await pay(client, runtime, fake.new_account(), "500", "JPY")
        unknown = await pay(client, runtime, "acct_NoSuchAccount123", "12.34")
        broke = await pay(client, runtime, fake.new_account(), "12.34", "EUR")
        odd = await pay(client, runtime, fake.new_account("unknown_error"), "12.34")
        final = await drain_all(runtime)
        assert await assert_paid_exactly_once(runtime, fake.booked_states()) == final
        results = {pid: await payout(client, pid) for pid in final}
    assert final == {
        dollars: "succeeded",
        yen: "succeeded",
        unknown: "failed",
        broke: "failed",
        odd: "failed",
    }
    assert {pid: (p["failure"] or {}).get("code") for pid, p in results.items()} == {
        dollars: None,
        yen: None,
        unknown: "recipient_account_invalid",
        broke: "insufficient_funds",
        odd: "gateway_declined",
    }
    for pid in (dollars, yen):
        transfer = next(t for t in fake.transfers.values() if t["metadata"]["payout_id"] == pid)
        assert results[pid]["gateway_reference"] == transfer["id"]
        assert results[pid]["gateway_status"] == "succeeded"
        assert results[pid]["gateway_details"] == {
            "destination_payment": transfer["destination_payment"]
        }
    yen_transfer = next(t for t in fake.transfers.values() if t["metadata"]["payout_id"] == yen)
    assert (yen_transfer["amount"], yen_transfer["currency"]) == (500, "jpy")
    assert all(c.headers["stripe-version"] == API_VERSION for c in fake.creates())


async def test_ambiguous_outcomes_end_with_one_transfer_or_review(
    make_app: AppFactory, fake: FakeStripe, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    paid = [
        ("timeout_after_booking",),
        ("reset_after_booking",),
        ("lost_and_unlisted",),  # the status query misses it: the resubmit is replayed
        ("503", "503"),
        ("500_after_booking",),
        ("429", "429"),
        ("409",),
        ("garbage_after_booking",),
        ("mismatched_after_booking",),
        ("unknown_error_retryable",),
    ]
    async with fake.serve() as base_url:
        configure(monkeypatch, tmp_path, base_url)
        app, client = await stripe_app(make_app)
        runtime = app.state.runtime
        accounts = {faults: fake.new_account(*faults) for faults in paid}
        payouts = {
            faults: await pay(client, runtime, account, "12.34")
            for faults, account in accounts.items()
        }
        spent = await pay(client, runtime, fake.new_account("500_saved"), "12.34")
        final = await drain_all(runtime)
        assert await assert_paid_exactly_once(runtime, fake.booked_states()) == final
        spent_payout = await payout(client, spent)
    assert final == {spent: "needs_review", **{pid: "succeeded" for pid in payouts.values()}}
    assert fake.transfers
    assert all(not t["reversed"] for t in fake.transfers.values())
    assert len(fake.transfers) == len(paid)
    # The lost-and-unlisted transfer was found only by resubmitting: Stripe replayed it.
    unlisted = fake.creates(accounts[("lost_and_unlisted",)])
    assert [c.replayed for c in unlisted] == [False, True]
    # A key whose first answer was a saved 500 stays spent: every resubmit is replayed.
    spent_creates = [c for c in fake.creates() if c.form["metadata[payout_id]"] == spent]
    assert len(spent_creates) > 1
    assert all(c.replayed for c in spent_creates[1:])
    assert spent_payout["gateway_status"] == "api_error"


async def test_a_transfer_reversed_before_success_fails_the_payout(
    make_app: AppFactory, fake: FakeStripe, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with fake.serve() as base_url:
        configure(monkeypatch, tmp_path, base_url)
        app, client = await stripe_app(make_app)
        runtime = app.state.runtime
        pid = await pay(client, runtime, fake.new_account("reversed_after_booking"), "12.34")
        final = await drain_all(runtime)
        assert await assert_paid_exactly_once(runtime, fake.booked_states()) == final
        result = await payout(client, pid)
    assert final == {pid: "failed"}
    assert result["failure"]["code"] == "gateway_reversed"
    assert result["gateway_status"] == "reversed"
    assert list(fake.booked_states().values()) == [["failed"]]


async def test_callbacks_finish_a_processing_payout_once_and_forgeries_change_nothing(
    make_app: AppFactory, fake: FakeStripe, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with fake.serve() as base_url:
        configure(monkeypatch, tmp_path, base_url)
        app, client = await stripe_app(make_app)
        runtime = app.state.runtime
        pid = await pay(client, runtime, fake.new_account("timeout_after_booking"), "12.34")
        executor, _clock, gateways = executor_for(runtime)
        try:
            await executor.run_once()  # the answer is lost: the payout stays processing
        finally:
            await gateways.aclose()
        assert (await payout(client, pid))["status"] == "processing"
        (transfer,) = fake.transfers.values()
        created = fake.event(transfer, "transfer.created")
        body, headers = fake.signed(created)

        async def deliver(body: bytes, headers: dict[str, str]) -> httpx.Response:
            return await client.post("/v1/gateway-callbacks/stripe", content=body, headers=headers)

        for forged in (
            fake.signed(created, secret="whsec_Forged"),
            fake.signed(created, timestamp=int(time.time()) - 400),
            (body, {"Content-Type": "application/json"}),
        ):
            refused = await deliver(*forged)
            assert refused.status_code == 401, refused.text
            assert refused.json()["code"] == "invalid_signature"
        assert (await payout(client, pid))["status"] == "processing"

        applied = await deliver(body, headers)
        duplicate = await deliver(body, headers)
        assert (applied.status_code, applied.json()["result"]) == (200, "applied")
        assert (duplicate.status_code, duplicate.json()["result"]) == (200, "duplicate")
        after = await payout(client, pid)
        assert (after["status"], after["gateway_reference"]) == ("succeeded", transfer["id"])
        final = await drain_all(runtime)
        assert await assert_paid_exactly_once(runtime, fake.booked_states()) == final
        assert final == {pid: "succeeded"}
        assert len(fake.creates()) == 1  # the executor never needed to ask again

        # The platform reverses it later: recorded, but a succeeded payout stays succeeded.
        reversal = fake.event(fake.reverse(transfer["id"]), "transfer.reversed")
        stale = await deliver(*fake.signed(reversal))
        assert stale.json()["result"] == "stale"
        assert (await payout(client, pid))["status"] == "succeeded"
        callbacks = [a for a in await attempts_of(runtime.db, pid) if a.operation == "callback"]
        assert [(a.outcome, a.gateway_status) for a in callbacks] == [
            ("succeeded", "succeeded"),
            ("succeeded", "succeeded"),
            ("failed", "reversed"),
        ]
        # Someone else's transfer: acknowledged, touches nothing.
        foreign = dict(transfer, id="tr_Foreign", transfer_group="ORDER_95", metadata={})
        unknown = await deliver(*fake.signed(fake.event(foreign, "transfer.created")))
        assert unknown.json()["result"] == "unknown_transfer"


async def test_no_secret_or_account_id_in_logs_or_answers(
    capsys: pytest.CaptureFixture[str],  # first: set up before the app, closed after it
    caplog: pytest.LogCaptureFixture,
    make_app: AppFactory,
    fake: FakeStripe,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    missing_account = "acct_NoSuchAccount123"  # Stripe's decline message names it
    async with fake.serve() as base_url:
        configure(monkeypatch, tmp_path, base_url)
        app, client = await stripe_app(make_app, log_level="INFO")
        runtime = app.state.runtime
        paid_account = fake.new_account("503")
        with caplog.at_level(logging.INFO):
            paid = await pay(client, runtime, paid_account, "12.34")
            declined = await pay(client, runtime, missing_account, "12.34")
            await drain_all(runtime)
            body, headers = fake.signed(
                fake.event(next(iter(fake.transfers.values())), "transfer.updated")
            )
            await client.post("/v1/gateway-callbacks/stripe", content=body, headers=headers)
        answers = [
            (await client.get(path)).text
            for pid in (paid, declined)
            for path in (f"/v1/payouts/{pid}", f"/v1/payouts/{pid}/attempts")
        ]
    assert json.loads(answers[0])["status"] == "succeeded"
    failure = json.loads(answers[2])["failure"]
    assert failure["code"] == "recipient_account_invalid"
    assert "No such destination: 'acc****" in failure["message"]  # the reason, masked
    assert json.loads(answers[3])["data"]  # the attempts were stored and are checked too
    logs = logged(caplog, capsys)
    assert "gateway.stripe.server_error" in logs  # the logs were captured at all
    for text in (*answers, logs):
        for secret in (SECRET_KEY, WEBHOOK_SECRET, paid_account, missing_account):
            assert secret not in text


async def test_a_wrong_secret_key_ends_in_review_without_booking(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    make_app: AppFactory,
    fake: FakeStripe,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    wrong = "sk_test_51RevokedKeyRevokedKey000"
    async with fake.serve() as base_url:
        configure(monkeypatch, tmp_path, base_url, key=wrong)
        app, client = await stripe_app(make_app)
        runtime = app.state.runtime
        pid = await pay(client, runtime, fake.new_account(), "12.34")
        final = await drain_all(runtime)
        assert await assert_paid_exactly_once(runtime, fake.booked_states()) == final
    assert final == {pid: "needs_review"}
    assert fake.transfers == {}
    assert {s.status for s in fake.seen} == {401}
    logs = logged(caplog, capsys)
    assert "authentication_failed" in logs
    assert wrong not in logs
