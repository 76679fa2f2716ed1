"""The PayPal Payouts adapter against a fake PayPal served on loopback.

Unit level: the request on the wire, OAuth token handling, amounts and field limits, status
and error mapping, idempotency on sender_batch_id, webhook verification. Through the real
executor: each injected fault ends in the right payout status with exactly one booking, and
notices through ``POST /v1/gateway-callbacks/paypal``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from payoutsvc.gateways.base import (
    Gateway,
    InvalidCallback,
    InvalidSignature,
    NotDone,
    OutcomeUnknown,
    Rejected,
    TransferRequest,
    TransferState,
)
from payoutsvc.gateways.paypal import PayPalGateway, PayPalSettings, create_gateway
from payoutsvc.gateways.providers import MissingCredential
from payoutsvc.gateways.registry import registry_for
from payoutsvc.runtime import Runtime
from tests.executor.conftest import AppFactory
from tests.executor.support import active_count, attempts_of, events_by_payout, payout_rows
from tests.gateways.fake_paypal import FakePayPal, Scenario
from tests.gateways.harness import (
    approved_payout_to,
    assert_paid_exactly_once,
    drain_all,
    executor_for,
    provider_app,
    serve_asgi,
)
from tests.helpers import eventually

PAYOUTS = "/v1/payments/payouts"
TOKEN = "/v1/oauth2/token"
ENV = "PAYOUTSVC_PAYPAL_"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


class Dispatch:
    """The unit tests' one loopback server, pointed at each test's own fresh fake (a server
    per test would cost more than the tests themselves)."""

    def __init__(self) -> None:
        self.target: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.target(scope, receive, send)


@pytest.fixture(scope="module")
def shared_server() -> Iterator[tuple[Dispatch, str]]:
    dispatch = Dispatch()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(dispatch, log_level="warning", lifespan="off", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "fake PayPal did not start"
        assert time.monotonic() < deadline, "fake PayPal did not start in time"
        time.sleep(0.005)
    yield dispatch, f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def fake(signing_key: rsa.RSAPrivateKey, shared_server: tuple[Dispatch, str]) -> FakePayPal:
    """A fresh fake PayPal behind the shared server (unit tests)."""
    dispatch, base_url = shared_server
    paypal = FakePayPal(signing_key)
    paypal.base_url = base_url
    dispatch.target = paypal.app
    return paypal


@pytest.fixture
async def served(signing_key: rsa.RSAPrivateKey) -> AsyncIterator[FakePayPal]:
    """A fake PayPal served by the harness in the test's own loop (executor tests)."""
    paypal = FakePayPal(signing_key)
    async with serve_asgi(paypal.app) as base_url:
        paypal.base_url = base_url
        yield paypal


def gateway_for(fake: FakePayPal, **overrides: Any) -> PayPalGateway:
    options: dict[str, Any] = {
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "webhook_id": fake.webhook_id,
        "base_url": fake.base_url,
        "timeout_seconds": 5.0,
        **overrides,
    }
    return PayPalGateway(**options)


@pytest.fixture
async def gateway(fake: FakePayPal) -> AsyncIterator[PayPalGateway]:
    paypal = gateway_for(fake)
    yield paypal
    await paypal.aclose()


def receiver() -> str:
    return f"payee-{uuid.uuid4().hex[:12]}@example.com"


PAYER_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def payer_id() -> str:
    """A fresh PayPal payer id (13 characters of PayPal's alphabet, starting with a letter)."""
    rest = "".join(random.choice(PAYER_ID_ALPHABET) for _ in range(12))
    return random.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") + rest


def transfer(
    account: str | None = None,
    *,
    amount_minor: int = 1250,
    currency: str = "USD",
    key: str | None = None,
    description: str | None = "Refund for order 9931",
    recipient_type: str = "paypal",
) -> TransferRequest:
    return TransferRequest(
        payout_id=f"po_{uuid.uuid4().hex[:26]}",
        idempotency_key=key or uuid.uuid4().hex,
        amount_minor=amount_minor,
        currency=currency,
        recipient={"type": recipient_type, "account": account or receiver(), "name": None},
        description=description,
    )


# -- the request on the wire -------------------------------------------------------------------
async def test_submit_sends_one_item_batch_under_the_key(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    request = transfer()
    result = await gateway.submit(request)

    batch = fake.batch_for(request.idempotency_key)
    assert result.state is TransferState.PENDING
    assert result.reference == batch.payout_batch_id
    assert result.gateway_status == "PENDING"
    [token_call] = fake.calls("POST", TOKEN)
    assert token_call.body == b"grant_type=client_credentials"
    assert token_call.headers["content-type"] == "application/x-www-form-urlencoded"
    [create] = fake.calls("POST", PAYOUTS)
    assert create.headers["paypal-request-id"] == request.idempotency_key
    assert create.headers["authorization"] == f"Bearer {fake.issued_tokens[0]}"
    assert create.headers["content-type"] == "application/json"
    assert create.json() == {
        "sender_batch_header": {
            "sender_batch_id": request.idempotency_key,
            "recipient_type": "EMAIL",
            "email_subject": "You have a payout",
        },
        "items": [
            {
                "recipient_type": "EMAIL",
                "amount": {"value": "12.50", "currency": "USD"},
                "receiver": request.recipient["account"],
                "sender_item_id": request.payout_id,
                "note": "Refund for order 9931",
            }
        ],
    }


async def test_a_phone_number_is_sent_as_recipient_type_phone(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    request = transfer("+8613800138000", description=None)
    await gateway.submit(request)
    [create] = fake.calls("POST", PAYOUTS)
    body = create.json()
    assert body["sender_batch_header"]["recipient_type"] == "PHONE"
    assert body["items"][0]["recipient_type"] == "PHONE"
    assert body["items"][0]["receiver"] == "+8613800138000"
    assert "note" not in body["items"][0]


async def test_a_payer_id_is_sent_as_recipient_type_paypal_id(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    account = payer_id()
    request = transfer(account)
    result = await gateway.submit(request)
    assert result.state is TransferState.PENDING  # the fake checked the payer id's form
    [create] = fake.calls("POST", PAYOUTS)
    body = create.json()
    assert body["sender_batch_header"]["recipient_type"] == "PAYPAL_ID"
    assert body["items"][0]["recipient_type"] == "PAYPAL_ID"
    assert body["items"][0]["receiver"] == account


async def test_the_fake_refuses_what_paypal_refuses(fake: FakePayPal) -> None:
    """The checks the adapter's tests rely on: without them a broken adapter would pass."""
    good = transfer()
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        wrong = await http.post(
            TOKEN,
            content=b"grant_type=client_credentials",
            auth=(fake.client_id, "not-the-secret"),
        )
        assert wrong.status_code == 401
        no_token = await http.post(PAYOUTS, json={})
        assert no_token.status_code == 401
        token = (
            await http.post(
                TOKEN,
                content=b"grant_type=client_credentials",
                auth=(fake.client_id, fake.client_secret),
            )
        ).json()["access_token"]
        bad = {
            "sender_batch_header": {"sender_batch_id": good.idempotency_key},
            "items": [
                {
                    "recipient_type": "EMAIL",
                    "amount": {"value": "12.5", "currency": "USD"},
                    "receiver": "payee@example.com",
                }
            ],
        }
        refused = await http.post(PAYOUTS, json=bad, headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 400
        assert refused.json()["name"] == "VALIDATION_ERROR"
        assert refused.json()["details"][0]["field"] == "items[0].amount.value"
        not_a_payer_id = {
            "sender_batch_header": {"sender_batch_id": good.idempotency_key},
            "items": [
                {
                    "recipient_type": "PAYPAL_ID",
                    "amount": {"value": "12.50", "currency": "USD"},
                    "receiver": "payee@example.com",
                }
            ],
        }
        refused = await http.post(
            PAYOUTS, json=not_a_payer_id, headers={"Authorization": f"Bearer {token}"}
        )
        assert refused.status_code == 400
        assert refused.json()["details"][0]["field"] == "items[0].receiver"
    assert fake.batches == {}


async def test_the_fake_refuses_a_resend_while_the_first_is_in_flight(fake: FakePayPal) -> None:
    """PayPal "processes the first request and might fail the second request" when two
    arrive with the same PayPal-Request-Id: the fake always fails it, the hard case."""
    request = transfer()
    fake.script(str(request.recipient["account"]), Scenario(slow_after_booking=True, delay=0.5))
    paypal = gateway_for(fake)
    try:
        first = asyncio.create_task(paypal.submit(request))
        await eventually(lambda: fake.in_flight, what="the first send at the fake")
        second = gateway_for(fake)  # another process: knows nothing of the first send
        try:
            with pytest.raises(OutcomeUnknown) as refused:
                await second.submit(request)
        finally:
            await second.aclose()
        assert refused.value.gateway_status == "DUPLICATE_REQUEST_ID"
        assert (await first).state is TransferState.PENDING
    finally:
        await paypal.aclose()
    assert fake.concurrent_refusals == 1
    assert fake.booked_states() == {request.idempotency_key: ["pending"]}


# -- OAuth ---------------------------------------------------------------------------------------
async def test_the_token_is_cached_until_shortly_before_it_expires(fake: FakePayPal) -> None:
    fake.token_ttl = 600  # refreshed 300 s early (at most half its life)
    now = [1000.0]
    paypal = gateway_for(fake, clock=lambda: now[0])
    try:
        await paypal.submit(transfer())
        await paypal.submit(transfer())
        assert fake.token_requests == 1
        now[0] += 299
        await paypal.submit(transfer())
        assert fake.token_requests == 1
        now[0] += 2
        await paypal.submit(transfer())
        assert fake.token_requests == 2
        tokens = {r.headers["authorization"] for r in fake.calls("POST", PAYOUTS)}
        assert tokens == {f"Bearer {t}" for t in fake.issued_tokens}
    finally:
        await paypal.aclose()


async def test_concurrent_calls_share_one_token_refresh(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    results = await asyncio.gather(*(gateway.submit(transfer()) for _ in range(6)))
    assert fake.token_requests == 1
    assert len({r.reference for r in results}) == 6
    assert len(fake.batches) == 6


async def test_a_401_drops_the_token_and_retries_once(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    request = transfer()
    first = await gateway.submit(request)
    fake.expire_tokens()  # PayPal stopped honouring the cached token
    found = await gateway.get_status(request.idempotency_key, reference=first.reference)
    assert found.state is TransferState.SUCCEEDED
    assert fake.token_requests == 2
    shows = fake.calls("GET", f"{PAYOUTS}/{first.reference}")
    assert [r.headers["authorization"] for r in shows] == [
        f"Bearer {fake.issued_tokens[0]}",
        f"Bearer {fake.issued_tokens[1]}",
    ]


async def test_a_token_paypal_never_accepts_is_not_done(fake: FakePayPal) -> None:
    fake.token_ttl = 0  # every token is dead on arrival: every API call answers 401
    paypal = gateway_for(fake)
    try:
        with pytest.raises(NotDone):
            await paypal.submit(transfer())
    finally:
        await paypal.aclose()
    assert fake.token_requests == 2  # one retry with a fresh token, no more
    assert len(fake.calls("POST", PAYOUTS)) == 2
    assert fake.batches == {}


async def test_wrong_client_credentials_are_not_done_and_send_nothing(fake: FakePayPal) -> None:
    paypal = gateway_for(fake, client_secret="wrong")
    try:
        with pytest.raises(NotDone) as refused:
            await paypal.submit(transfer())
    finally:
        await paypal.aclose()
    assert "wrong" not in refused.value.message
    assert fake.calls("POST", PAYOUTS) == []


async def test_an_unreachable_paypal_is_not_done() -> None:
    paypal = PayPalGateway(
        client_id="id", client_secret="secret", base_url="http://127.0.0.1:9", timeout_seconds=1
    )
    try:
        with pytest.raises(NotDone):
            await paypal.submit(transfer())
    finally:
        await paypal.aclose()


# -- amounts and field limits --------------------------------------------------------------------
AMOUNTS = [
    (1250, "USD", "12.50"),
    (5, "USD", "0.05"),
    (100000, "EUR", "1000.00"),
    (1500, "JPY", "1500"),
    (150000, "HUF", "1500"),  # ISO says 2 decimals; PayPal takes whole forints only
    (120000, "TWD", "1200"),
]


async def test_amounts_are_major_unit_strings(fake: FakePayPal, gateway: PayPalGateway) -> None:
    for amount_minor, currency, value in AMOUNTS:
        request = transfer(amount_minor=amount_minor, currency=currency)
        result = await gateway.submit(request)
        assert result.state is TransferState.PENDING  # the fake accepted the format
        sent = fake.batch_for(request.idempotency_key).item["amount"]
        assert sent == {"value": value, "currency": currency}


REFUSED_BEFORE_SENDING = [
    (transfer(amount_minor=150050, currency="HUF"), "amount_out_of_range"),
    (transfer(amount_minor=1250, currency="KWD"), "currency_not_supported"),
    (transfer(f"{'a' * 120}@example.com"), "recipient_account_invalid"),
    (transfer("not-an-account"), "recipient_account_invalid"),
    (transfer("13800138000"), "recipient_account_invalid"),  # a phone without +country
    (transfer(recipient_type="alipay"), "recipient_account_invalid"),
    (transfer("7X3MBKQ9WZ2LO"), "recipient_account_invalid"),  # O: not a payer id character
    (transfer("2345678923456"), "recipient_account_invalid"),  # digits only: a bad phone
]


async def test_what_paypal_cannot_take_is_refused_before_sending(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    for case, (request, code) in enumerate(REFUSED_BEFORE_SENDING):
        with pytest.raises(Rejected) as refused:
            await gateway.submit(request)
        assert (case, refused.value.code) == (case, code)
    assert fake.calls("POST", PAYOUTS) == []


async def test_a_long_description_is_cut_to_paypals_note_limit(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    result = await gateway.submit(transfer(description="x" * 1500))
    assert result.state is TransferState.PENDING
    [create] = fake.calls("POST", PAYOUTS)
    assert create.json()["items"][0]["note"] == "x" * 1000


def test_settings_read_credentials_inline_or_from_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("CLIENT_ID", "CLIENT_SECRET", "WEBHOOK_ID"):
        monkeypatch.delenv(f"{ENV}{name}", raising=False)
        monkeypatch.delenv(f"{ENV}{name}_FILE", raising=False)
    monkeypatch.delenv(f"{ENV}BASE_URL", raising=False)
    with pytest.raises(MissingCredential):
        PayPalGateway.from_settings(PayPalSettings())
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cr3t-from-file\n", encoding="utf-8")
    monkeypatch.setenv(f"{ENV}CLIENT_ID", "client-inline")
    monkeypatch.setenv(f"{ENV}CLIENT_SECRET", "leftover-inline")
    monkeypatch.setenv(f"{ENV}CLIENT_SECRET_FILE", str(secret_file))
    settings = PayPalSettings()
    assert settings.base_url == "https://api-m.paypal.com"
    assert settings.timeout_seconds == 15.0
    built = PayPalGateway.from_settings(settings)
    assert built._basic == "Basic " + base64.b64encode(b"client-inline:s3cr3t-from-file").decode()
    assert "s3cr3t" not in repr(built)


# -- status mapping ------------------------------------------------------------------------------
ITEM_STATUSES = [
    ("SUCCESS", None, TransferState.SUCCEEDED, None),
    ("PENDING", None, TransferState.PENDING, None),
    ("UNCLAIMED", "RECEIVER_UNREGISTERED", TransferState.PENDING, None),
    ("ONHOLD", None, TransferState.PENDING, None),
    ("FAILED", "RECEIVER_ACCOUNT_INVALID", TransferState.FAILED, "recipient_account_invalid"),
    ("FAILED", "INSUFFICIENT_FUNDS", TransferState.FAILED, "insufficient_funds"),
    ("FAILED", None, TransferState.FAILED, "gateway_declined"),
    ("BLOCKED", None, TransferState.FAILED, "gateway_declined"),
    ("RETURNED", "RECEIVER_UNREGISTERED", TransferState.FAILED, "recipient_account_invalid"),
    ("REFUNDED", None, TransferState.FAILED, "gateway_declined"),
    ("REVERSED", None, TransferState.FAILED, "gateway_declined"),
    ("DENIED", None, TransferState.FAILED, "gateway_declined"),
    ("SOMETHING_NEW", None, TransferState.PENDING, None),  # never a success
]


async def test_item_status_mapping(fake: FakePayPal, gateway: PayPalGateway) -> None:
    for status, error, state, code in ITEM_STATUSES:
        request = transfer()
        submitted = await gateway.submit(request)
        fake.settle(request.idempotency_key, status, error)
        found = await gateway.get_status(request.idempotency_key, reference=submitted.reference)
        assert (status, error, found.state, found.failure_code) == (status, error, state, code)
        assert found.gateway_status == status
        assert found.reference == submitted.reference
        if state is TransferState.SUCCEEDED:
            batch = fake.batch_for(request.idempotency_key)
            assert found.details == {
                "payout_item_id": batch.payout_item_id,
                "transaction_id": batch.transaction_id,
            }


async def test_unclaimed_and_onhold_are_provider_holds_of_30_days(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    for status in ("UNCLAIMED", "ONHOLD"):
        request = transfer()
        submitted = await gateway.submit(request)
        fake.settle(request.idempotency_key, status, "RECEIVER_UNREGISTERED")
        batch = fake.batch_for(request.idempotency_key)
        batch.time_processed = "2026-03-01T10:17:41Z"
        found = await gateway.get_status(request.idempotency_key, reference=submitted.reference)
        assert (status, found.state) == (status, TransferState.PENDING)
        assert found.hold is not None, status
        assert found.hold.reason == status
        assert found.hold.patience == timedelta(days=30)
        assert found.hold.since == datetime(2026, 3, 1, 10, 17, 41, tzinfo=UTC)
        assert not found.hold.resend
        # The same through a notice.
        body, headers = fake.signed(fake.item_event(request.idempotency_key))
        notice = await gateway.parse_callback(headers, body)
        assert notice.result.hold == found.hold
    # Without an item time, the batch's time_created is PayPal's start.
    request = transfer()
    submitted = await gateway.submit(request)
    fake.settle(request.idempotency_key, "UNCLAIMED")
    batch = fake.batch_for(request.idempotency_key)
    batch.time_processed = ""
    batch.time_created = "2026-03-02T00:00:00Z"
    found = await gateway.get_status(request.idempotency_key, reference=submitted.reference)
    assert found.hold is not None
    assert found.hold.since == datetime(2026, 3, 2, tzinfo=UTC)
    # Ordinary pending is not a hold.
    for status in ("PENDING", "SOMETHING_NEW"):
        request = transfer()
        submitted = await gateway.submit(request)
        fake.settle(request.idempotency_key, status)
        found = await gateway.get_status(request.idempotency_key, reference=submitted.reference)
        assert (status, found.hold) == (status, None)


async def test_a_denied_batch_is_failed(fake: FakePayPal, gateway: PayPalGateway) -> None:
    request = transfer()
    submitted = await gateway.submit(request)
    fake.batch_for(request.idempotency_key).batch_status = "DENIED"
    found = await gateway.get_status(request.idempotency_key, reference=submitted.reference)
    assert (found.state, found.gateway_status, found.failure_code) == (
        TransferState.FAILED,
        "DENIED",
        "gateway_declined",
    )


async def test_status_without_a_reference_is_not_found_and_asks_nothing(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    found = await gateway.get_status(uuid.uuid4().hex)
    assert found.state is TransferState.NOT_FOUND
    assert [r for r in fake.requests if r.method == "GET"] == []
    # A batch PayPal named before and cannot show now (wrong account or base URL): never
    # "not found", which would let the executor submit again elsewhere.
    with pytest.raises(OutcomeUnknown, match="cannot show batch"):
        await gateway.get_status(uuid.uuid4().hex, reference="NOSUCHBATCH1")


async def test_a_status_query_that_fails_is_unknown(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    request = transfer()
    fake.script(str(request.recipient["account"]), Scenario(status_errors=1))
    submitted = await gateway.submit(request)
    with pytest.raises(OutcomeUnknown):
        await gateway.get_status(request.idempotency_key, reference=submitted.reference)
    again = await gateway.get_status(request.idempotency_key, reference=submitted.reference)
    assert again.state is TransferState.SUCCEEDED


# -- idempotency and untrusted answers -----------------------------------------------------------
async def test_a_duplicate_submit_replays_the_same_batch(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    request = transfer()
    first = await gateway.submit(request)
    second = await gateway.submit(request)
    assert second.reference == first.reference
    assert len(fake.calls("POST", PAYOUTS)) == 2
    assert fake.booked_states() == {request.idempotency_key: ["pending"]}


async def test_a_duplicate_without_replay_finds_the_batch_by_its_link(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    request = transfer()
    fake.script(str(request.recipient["account"]), Scenario(replay_request_id=False))
    first = await gateway.submit(request)
    second = await gateway.submit(request)
    assert second.reference == first.reference
    assert second.state is TransferState.SUCCEEDED  # read from GET, not the 400
    assert len(fake.calls("GET", f"{PAYOUTS}/{first.reference}")) == 1
    assert fake.booked_states() == {request.idempotency_key: ["succeeded"]}


async def test_a_duplicate_paypal_does_not_name_is_unknown(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    request = transfer()
    fake.script(
        str(request.recipient["account"]),
        Scenario(replay_request_id=False, duplicate_link=False),
    )
    await gateway.submit(request)
    with pytest.raises(OutcomeUnknown) as unknown:
        await gateway.submit(request)
    assert unknown.value.gateway_status == "SENDER_BATCH_ID_ALREADY_USED"
    assert fake.booked_states() == {request.idempotency_key: ["pending"]}


async def test_an_answer_about_another_batch_is_not_trusted(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    request = transfer()
    fake.script(str(request.recipient["account"]), Scenario(wrong_sender_batch_id=True))
    with pytest.raises(OutcomeUnknown):
        await gateway.submit(request)
    # A batch that succeeded under another key is never our success.
    other = transfer()
    theirs = await gateway.submit(other)
    fake.settle(other.idempotency_key, "SUCCESS")
    with pytest.raises(OutcomeUnknown):
        await gateway.get_status(request.idempotency_key, reference=theirs.reference)


async def test_a_created_answer_without_a_batch_is_unknown(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    request = transfer()
    fake.script(str(request.recipient["account"]), Scenario(refuse=(201, {"links": []})))
    with pytest.raises(OutcomeUnknown):
        await gateway.submit(request)


async def test_no_resend_under_the_key_sooner_than_the_timeout_after_a_timed_out_send(
    fake: FakePayPal,
) -> None:
    request = transfer()
    key = request.idempotency_key
    fake.script(str(request.recipient["account"]), Scenario(slow_after_booking=True, delay=0.4))
    now = [1000.0]
    paypal = gateway_for(fake, timeout_seconds=0.2, clock=lambda: now[0])
    try:
        with pytest.raises(OutcomeUnknown) as timed_out:
            await paypal.submit(request)
        assert timed_out.value.gateway_status == "timeout"
        # What the executor does next: ask, then (on NOT_FOUND) submit. Neither may send
        # while PayPal may still be working on the first request.
        now[0] += 0.19
        with pytest.raises(OutcomeUnknown) as waiting:
            await paypal.get_status(key)
        assert waiting.value.gateway_status == "resend_wait"
        with pytest.raises(OutcomeUnknown):
            await paypal.submit(request)
        assert len(fake.calls("POST", PAYOUTS)) == 1
        await eventually(lambda: not fake.in_flight, what="the fake to finish the first send")
        now[0] += 0.02  # one timeout after the timed-out send
        assert (await paypal.get_status(key)).state is TransferState.NOT_FOUND
        resent = await paypal.submit(request)
        assert resent.reference == fake.batch_for(key).payout_batch_id
    finally:
        await paypal.aclose()
    assert len(fake.calls("POST", PAYOUTS)) == 2
    assert fake.concurrent_refusals == 0
    assert fake.booked_states() == {key: ["pending"]}


async def test_a_concurrent_refusal_also_holds_resends_back(fake: FakePayPal) -> None:
    request = transfer()
    key = request.idempotency_key
    fake.script(str(request.recipient["account"]), Scenario(slow_after_booking=True, delay=0.5))
    now = [1000.0]
    first = gateway_for(fake)
    paypal = gateway_for(fake, timeout_seconds=0.2, clock=lambda: now[0])
    try:
        in_flight = asyncio.create_task(first.submit(request))  # another worker's send
        await eventually(lambda: fake.in_flight, what="the first send at the fake")
        with pytest.raises(OutcomeUnknown):
            await paypal.submit(request)  # DUPLICATE_REQUEST_ID
        with pytest.raises(OutcomeUnknown, match="not re-sent"):
            await paypal.get_status(key)
        await in_flight
        now[0] += 0.2
        assert (await paypal.get_status(key)).state is TransferState.NOT_FOUND
    finally:
        await first.aclose()
        await paypal.aclose()
    assert len(fake.calls("POST", PAYOUTS)) == 2


CREATE_ERRORS: list[tuple[int, dict[str, Any], type[Exception], str | None]] = [
    (422, {"name": "INSUFFICIENT_FUNDS"}, Rejected, "insufficient_funds"),
    (
        400,
        {
            "name": "VALIDATION_ERROR",
            "details": [{"field": "items[0].receiver", "issue": "Receiver is invalid"}],
        },
        Rejected,
        "recipient_account_invalid",
    ),
    (
        400,
        {
            "name": "VALIDATION_ERROR",
            "details": [{"field": "items[0].amount.value", "issue": "Value is invalid."}],
        },
        Rejected,
        "amount_out_of_range",
    ),
    (
        422,
        {
            "name": "UNPROCESSABLE_ENTITY",
            "details": [{"issue": "CURRENCY_NOT_SUPPORTED_FOR_RECEIVER"}],
        },
        Rejected,
        "currency_not_supported",
    ),
    (422, {"name": "SELF_PAY_NOT_ALLOWED"}, Rejected, "recipient_account_invalid"),
    (422, {"name": "RECEIVER_REFUSED"}, Rejected, "currency_not_supported"),
    (
        400,
        {
            "name": "INVALID_REQUEST",
            "details": [{"field": "items[0].receiver", "issue": "INVALID_PARAMETER_VALUE"}],
        },
        Rejected,
        "recipient_account_invalid",
    ),
    # PayPal pays an unregistered or unconfirmed receiver as an UNCLAIMED item; an answer
    # naming it is no proof that nothing was booked.
    (422, {"name": "RECEIVER_UNREGISTERED"}, OutcomeUnknown, None),
    (422, {"name": "RECEIVER_ACCOUNT_LIMITATION"}, OutcomeUnknown, None),  # held, not refused
    # About the request id, not the payment: a re-send while the first is in flight.
    (422, {"name": "DUPLICATE_REQUEST_ID"}, OutcomeUnknown, None),
    (400, {"name": "DUPLICATE_REQUEST_ID"}, OutcomeUnknown, None),
    (422, {"name": "PAYPAL_REQUEST_ID_PREVIOUSLY_USED"}, OutcomeUnknown, None),
    (
        422,
        {"name": "UNPROCESSABLE_ENTITY", "details": [{"issue": "DUPLICATE_REQUEST_ID"}]},
        OutcomeUnknown,
        None,
    ),
    (
        400,
        {
            "name": "VALIDATION_ERROR",
            "details": [
                {"field": "items[0].receiver", "issue": "Receiver is invalid"},
                {"field": "PayPal-Request-Id", "location": "header", "issue": "In use."},
            ],
        },
        OutcomeUnknown,
        None,
    ),
    (400, {"name": "USER_BUSINESS_ERROR"}, OutcomeUnknown, None),
    (400, {"name": "VALIDATION_ERROR"}, OutcomeUnknown, None),  # no detail: about what?
    (
        400,
        {
            "name": "VALIDATION_ERROR",
            "details": [{"field": "sender_batch_header.email_subject", "issue": "Too long."}],
        },
        OutcomeUnknown,
        None,
    ),
    (403, {"name": "AUTHORIZATION_ERROR"}, NotDone, None),
    # Any issue about our (always well-formed) sender_batch_id may be a duplicate, however
    # PayPal words it: never a final refusal that could leave a paid batch "failed".
    (
        400,
        {
            "name": "VALIDATION_ERROR",
            "details": [{"field": "sender_batch_header.sender_batch_id", "issue": "In use."}],
        },
        OutcomeUnknown,
        None,
    ),
    # Not on the closed list of documented refusals: never a failure.
    (400, {"name": "SOMETHING_NEVER_SEEN"}, OutcomeUnknown, None),
    (422, {"name": "SOMETHING_NEVER_SEEN"}, OutcomeUnknown, None),
    (429, {"name": "RATE_LIMIT_REACHED"}, NotDone, None),
    (500, {"name": "INTERNAL_SERVER_ERROR"}, OutcomeUnknown, None),
    (503, {}, OutcomeUnknown, None),
    (418, {"name": "I_AM_A_TEAPOT"}, OutcomeUnknown, None),
    (404, {"name": "NOT_FOUND"}, OutcomeUnknown, None),
]


async def test_error_answers_to_create(fake: FakePayPal, gateway: PayPalGateway) -> None:
    for status, body, error, code in CREATE_ERRORS:
        request = transfer()
        fake.script(str(request.recipient["account"]), Scenario(refuse=(status, body)))
        with pytest.raises(error) as raised:
            await gateway.submit(request)
        assert (status, type(raised.value)) == (status, error)
        if code is not None:
            assert isinstance(raised.value, Rejected)
            assert (status, raised.value.code) == (status, code)
    assert fake.batches == {}


# -- webhooks (unit) -----------------------------------------------------------------------------
async def booked(fake: FakePayPal, gateway: PayPalGateway) -> TransferRequest:
    request = transfer()
    await gateway.submit(request)
    return request


ITEM_EVENTS = [
    ("SUCCESS", None, TransferState.SUCCEEDED, None),
    ("UNCLAIMED", "RECEIVER_UNREGISTERED", TransferState.PENDING, None),
    ("ONHOLD", None, TransferState.PENDING, None),
    ("FAILED", "RECEIVER_ACCOUNT_INVALID", TransferState.FAILED, "recipient_account_invalid"),
    ("BLOCKED", None, TransferState.FAILED, "gateway_declined"),
    ("RETURNED", None, TransferState.FAILED, "gateway_declined"),
]


async def test_a_verified_item_event_becomes_a_notice(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    for status, error, state, code in ITEM_EVENTS:
        request = await booked(fake, gateway)
        fake.settle(request.idempotency_key, status, error)
        event = fake.item_event(request.idempotency_key)
        body, headers = fake.signed(event)
        notice = await gateway.parse_callback(headers, body)
        assert notice.idempotency_key == request.idempotency_key
        assert notice.notice_id == event["id"]
        assert (status, notice.result.state, notice.result.failure_code) == (status, state, code)
        assert notice.result.reference == fake.batch_for(request.idempotency_key).payout_batch_id
        verify = fake.calls("POST", "/v1/notifications/verify-webhook-signature")[-1]
        sent = verify.json()
        assert sent["webhook_id"] == fake.webhook_id
        assert sent["webhook_event"] == event
        assert sent["transmission_sig"] == headers["PAYPAL-TRANSMISSION-SIG"]
    assert fake.verifications == ["SUCCESS"] * len(ITEM_EVENTS)


async def test_batch_events(fake: FakePayPal, gateway: PayPalGateway) -> None:
    """A final result in a notice is checked with PayPal (its signature covers only a CRC32
    of the body): the batch the fake booked is paid, so a DENIED notice about it counts as
    what PayPal answers, not as what it claims."""
    for batch_status, state in (
        ("DENIED", TransferState.SUCCEEDED),
        ("SUCCESS", TransferState.PENDING),
    ):
        request = await booked(fake, gateway)
        body, headers = fake.signed(fake.batch_event(request.idempotency_key, batch_status))
        notice = await gateway.parse_callback(headers, body)
        assert (notice.idempotency_key, notice.result.state) == (request.idempotency_key, state)


async def test_forged_and_tampered_events_are_invalid_signatures(
    fake: FakePayPal, gateway: PayPalGateway, other_key: rsa.RSAPrivateKey
) -> None:
    request = await booked(fake, gateway)
    fake.settle(request.idempotency_key, "FAILED", "RECEIVER_ACCOUNT_INVALID")
    event = fake.item_event(request.idempotency_key)
    forged = fake.signed(event, key=other_key)
    other_webhook = fake.signed(event, webhook_id="SOMEONEELSESWEBHOOK")
    body, headers = fake.signed(event)
    tampered = body.replace(b'"transaction_status":"FAILED"', b'"transaction_status":"SUCCESS"')
    assert tampered != body
    for forged_body, forged_headers in (forged, other_webhook, (tampered, headers)):
        with pytest.raises(InvalidSignature):
            await gateway.parse_callback(forged_headers, forged_body)
    assert fake.verifications == ["FAILURE", "FAILURE", "FAILURE"]
    missing = {k: v for k, v in headers.items() if k != "PAYPAL-TRANSMISSION-SIG"}
    with pytest.raises(InvalidSignature):
        await gateway.parse_callback(missing, body)
    assert len(fake.verifications) == 3  # nothing to ask PayPal about
    unconfigured = gateway_for(fake, webhook_id=None)
    try:
        with pytest.raises(InvalidSignature):
            await unconfigured.parse_callback(headers, body)
    finally:
        await unconfigured.aclose()


async def test_malformed_and_foreign_events_are_invalid_callbacks(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    request = await booked(fake, gateway)
    _, headers = fake.signed(fake.item_event(request.idempotency_key))
    with pytest.raises(InvalidCallback) as not_json:
        await gateway.parse_callback(headers, b"not json")
    assert not isinstance(not_json.value, InvalidSignature)
    foreign = {"id": "WH-1", "event_type": "CHECKOUT.ORDER.APPROVED", "resource": {"id": "1"}}
    with pytest.raises(InvalidCallback):
        await gateway.parse_callback(*reversed(fake.signed(foreign)))
    anonymous = fake.item_event(request.idempotency_key)
    del anonymous["resource"]["sender_batch_id"]
    with pytest.raises(InvalidCallback):
        await gateway.parse_callback(*reversed(fake.signed(anonymous)))
    assert fake.verifications == []  # refused before PayPal's verify API was asked


async def test_an_unavailable_verification_is_not_a_bad_signature(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    request = await booked(fake, gateway)
    body, headers = fake.signed(fake.item_event(request.idempotency_key))
    fake.verify_status = 503
    with pytest.raises(OutcomeUnknown):
        await gateway.parse_callback(headers, body)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_a_notice_outside_the_transmission_window_is_refused_unasked(
    fake: FakePayPal, gateway: PayPalGateway
) -> None:
    request = await booked(fake, gateway)
    event = fake.item_event(request.idempotency_key)
    now = datetime.now(UTC)
    for moment in (now - timedelta(minutes=6), now + timedelta(minutes=6)):
        body, headers = fake.signed(event, transmission_time=iso(moment))
        with pytest.raises(InvalidSignature, match="TRANSMISSION-TIME"):
            await gateway.parse_callback(headers, body)
    body, headers = fake.signed(event, transmission_time="yesterday")
    with pytest.raises(InvalidSignature):
        await gateway.parse_callback(headers, body)
    assert fake.verifications == []  # PayPal's verify API was never asked
    body, headers = fake.signed(event, transmission_time=iso(now - timedelta(minutes=4)))
    notice = await gateway.parse_callback(headers, body)
    assert notice.idempotency_key == request.idempotency_key
    assert fake.verifications == ["SUCCESS"]


async def test_a_redelivered_notice_is_answered_from_memory(
    fake: FakePayPal, gateway: PayPalGateway, other_key: rsa.RSAPrivateKey
) -> None:
    request = await booked(fake, gateway)
    fake.settle(request.idempotency_key, "SUCCESS")
    event = fake.item_event(request.idempotency_key)
    body, headers = fake.signed(event)
    first = await gateway.parse_callback(headers, body)
    again = await gateway.parse_callback(headers, body)
    assert again == first
    assert fake.verifications == ["SUCCESS"]
    # Same transmission headers, other bytes: not the verified notice, so PayPal is asked.
    tampered = body.replace(b'"transaction_status":"SUCCESS"', b'"transaction_status":"FAILED"')
    for _ in range(2):
        with pytest.raises(InvalidSignature):
            await gateway.parse_callback(headers, tampered)
    forged_body, forged_headers = fake.signed(event, key=other_key)
    for _ in range(3):
        with pytest.raises(InvalidSignature):
            await gateway.parse_callback(forged_headers, forged_body)
    # One call per distinct transmission, however often each was sent.
    assert fake.verifications == ["SUCCESS", "FAILURE", "FAILURE"]


async def test_verify_calls_are_bounded_per_minute(fake: FakePayPal) -> None:
    now = [1000.0]
    paypal = gateway_for(fake, verify_per_minute=3, clock=lambda: now[0])
    try:
        request = await booked(fake, paypal)
        notices = [fake.signed(fake.item_event(request.idempotency_key)) for _ in range(4)]
        for body, headers in notices[:3]:
            await paypal.parse_callback(headers, body)
        with pytest.raises(NotDone) as throttled:  # answered 503: PayPal sends it again
            await paypal.parse_callback(notices[3][1], notices[3][0])
        assert not isinstance(throttled.value, InvalidCallback)
        assert throttled.value.gateway_status == "verify_throttled"
        assert len(fake.verifications) == 3
        await paypal.parse_callback(notices[0][1], notices[0][0])  # known: no call needed
        foreign = {"id": "WH-1", "event_type": "CHECKOUT.ORDER.APPROVED", "resource": {}}
        with pytest.raises(InvalidCallback):  # cheap checks still answer at once
            await paypal.parse_callback(*reversed(fake.signed(foreign)))
        now[0] += 60
        await paypal.parse_callback(notices[3][1], notices[3][0])
    finally:
        await paypal.aclose()
    assert len(fake.verifications) == 4


# -- through the executor ------------------------------------------------------------------------
async def paypal_app(
    make_app: AppFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fake: FakePayPal,
    *,
    timeout: float = 5.0,
    **overrides: Any,
) -> tuple[Any, httpx.AsyncClient, Runtime]:
    secret = tmp_path / "paypal-client-secret"
    secret.write_text(fake.client_secret + "\n", encoding="utf-8")
    monkeypatch.setenv(f"{ENV}CLIENT_ID", fake.client_id)
    monkeypatch.delenv(f"{ENV}CLIENT_SECRET", raising=False)
    monkeypatch.setenv(f"{ENV}CLIENT_SECRET_FILE", str(secret))
    monkeypatch.setenv(f"{ENV}WEBHOOK_ID", fake.webhook_id)
    monkeypatch.setenv(f"{ENV}BASE_URL", fake.base_url)
    monkeypatch.setenv(f"{ENV}TIMEOUT_SECONDS", str(timeout))
    app, client = await provider_app(
        make_app, gateway="paypal", recipient_type="paypal", **overrides
    )
    return app, client, app.state.runtime


async def pay(
    client: httpx.AsyncClient, runtime: Runtime, account: str, amount: str = "12.34"
) -> tuple[str, str]:
    """An approved payout to ``account``: (payout id, its gateway idempotency key)."""
    payout = await approved_payout_to(
        client, runtime, {"type": "paypal", "account": account}, amount, "USD"
    )
    assert payout["gateway"] == "paypal"
    row = (await payout_rows(runtime.db))[payout["id"]]
    return payout["id"], row.gateway_idempotency_key


async def test_faults_end_in_the_right_status_with_exactly_one_booking(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, served: FakePayPal
) -> None:
    _app, client, runtime = await paypal_app(make_app, monkeypatch, tmp_path, served)
    cases: dict[str, tuple[Scenario, str, str | None]] = {
        "ok": (Scenario(), "succeeded", None),
        "pending_then_success": (
            Scenario(pending_polls=3, pending_status="UNCLAIMED"),
            "succeeded",
            None,
        ),
        "5xx_then_success": (Scenario(errors_before_booking=2), "succeeded", None),
        "5xx_after_booking": (Scenario(error_after_booking=True), "succeeded", None),
        "status_5xx": (Scenario(status_errors=2), "succeeded", None),
        # An error name PayPal does not document as a refusal, or one about the request id:
        # never "failed" (PayPal might be paying it); needs_review once the schedule is spent.
        "unknown_error": (
            Scenario(refuse=(400, {"name": "BRAND_NEW_ERROR"})),
            "needs_review",
            None,
        ),
        "request_id_refused": (
            Scenario(refuse=(422, {"name": "PAYPAL_REQUEST_ID_PREVIOUSLY_USED"})),
            "needs_review",
            None,
        ),
        "insufficient_funds": (
            Scenario(refuse=(422, {"name": "INSUFFICIENT_FUNDS", "message": "Add funds."})),
            "failed",
            "insufficient_funds",
        ),
        "item_failed": (
            Scenario(final_status="FAILED", final_error="RECEIVER_ACCOUNT_INVALID"),
            "failed",
            "recipient_account_invalid",
        ),
        "batch_denied": (
            Scenario(final_status="FAILED", final_batch_status="DENIED"),
            "failed",
            "gateway_declined",
        ),
        "never_settles": (Scenario(final_status=None), "needs_review", None),
        "unknown_item_status": (Scenario(final_status="MYSTERY"), "needs_review", None),
        "duplicate_unnamed": (
            Scenario(error_after_booking=True, duplicate_link=False),
            "needs_review",
            None,
        ),
    }
    payouts: dict[str, tuple[str, str]] = {}
    for name, (scenario, _, _) in cases.items():
        account = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
        served.script(account, scenario)
        payouts[name] = await pay(client, runtime, account)
    cases["payer_id"] = (Scenario(), "succeeded", None)  # recipient_type PAYPAL_ID
    payouts["payer_id"] = await pay(client, runtime, payer_id())

    final = await drain_all(runtime)

    rows = await payout_rows(runtime.db)
    for name, (_, status, code) in cases.items():
        payout_id, _ = payouts[name]
        assert (name, final[payout_id]) == (name, status)
        assert (name, rows[payout_id].failure_code) == (name, code)
    assert await assert_paid_exactly_once(runtime, served.booked_states()) == final
    booked = served.booked_states()
    for name in ("unknown_error", "request_id_refused", "insufficient_funds"):
        assert payouts[name][1] not in booked, name  # refused: nothing booked
    payer_batch = served.batch_for(payouts["payer_id"][1])
    assert payer_batch.item["recipient_type"] == "PAYPAL_ID"
    assert booked[payouts["duplicate_unnamed"][1]] == ["pending"]
    assert served.posts[payouts["5xx_then_success"][1]] == 3
    ok_id, ok_key = payouts["ok"]
    assert rows[ok_id].gateway_reference == served.batch_for(ok_key).payout_batch_id
    assert rows[ok_id].gateway_status == "SUCCESS"


# Enough retries for a payout to wait out the adapter's re-send pause in real time.
PATIENT_SCHEDULE = {"executor_retry_schedule": ",".join(["1"] * 40)}


async def drain_in_real_time(runtime: Runtime, *, pause: float = 0.1) -> dict[str, str]:
    """Like ``drain_all``, but real time passes between rounds (``pause``), as it does
    between retries in production: the adapter's wait before a re-send is real time."""
    executor, clock, gateways = executor_for(runtime)
    step = max(executor.schedule) * 1.3 + executor.lease.total_seconds()
    deadline = time.monotonic() + 20
    try:
        while True:
            if await executor.run_once() == 0:
                if await active_count(runtime.db) == 0:
                    break
                await asyncio.sleep(pause)
                clock.advance(step)
            assert time.monotonic() < deadline, "payouts still active after draining"
    finally:
        await gateways.aclose()
    return {pid: row.status for pid, row in (await payout_rows(runtime.db)).items()}


def posts_under(fake: FakePayPal, key: str) -> list[Any]:
    return [c for c in fake.calls("POST", PAYOUTS) if c.headers["paypal-request-id"] == key]


async def test_accepted_then_timeout_is_resolved_with_the_same_key(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, served: FakePayPal
) -> None:
    _app, client, runtime = await paypal_app(
        make_app, monkeypatch, tmp_path, served, timeout=0.3, **PATIENT_SCHEDULE
    )
    replayed, found = f"replay-{uuid.uuid4().hex[:8]}@example.com", receiver()
    # PayPal answers after our timeout, but before we may re-send (one more timeout).
    served.script(replayed, Scenario(slow_after_booking=True, delay=0.45))
    served.script(found, Scenario(slow_after_booking=True, delay=0.45, replay_request_id=False))
    replayed_id, replayed_key = await pay(client, runtime, replayed)
    found_id, found_key = await pay(client, runtime, found)

    final = await drain_in_real_time(runtime)

    assert final == {replayed_id: "succeeded", found_id: "succeeded"}
    assert await assert_paid_exactly_once(runtime, served.booked_states()) == final
    for payout_id, key in ((replayed_id, replayed_key), (found_id, found_key)):
        mine = [c for c in served.calls("POST", PAYOUTS) if c.headers["paypal-request-id"] == key]
        assert len(mine) == 2  # the timed-out one and its re-submit, same key
        assert {c.json()["sender_batch_header"]["sender_batch_id"] for c in mine} == {key}
        attempts = await attempts_of(runtime.db, payout_id)
        assert (attempts[0].operation, attempts[0].outcome) == ("submit", "unknown")
        assert attempts[0].gateway_status == "timeout"
    assert served.posts[replayed_key] == 1  # the second POST was answered from the replay
    assert served.posts[found_key] == 2  # ... this one by the duplicate answer and a GET
    assert served.concurrent_refusals == 0  # no re-send raced the first request


async def test_a_resend_paypal_refuses_as_concurrent_never_fails_the_payout(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, served: FakePayPal
) -> None:
    """The tracker's case: PayPal books the first create but answers after our timeout;
    the re-send reaches PayPal while it is still working on the first, and PayPal answers
    422 DUPLICATE_REQUEST_ID. The payout must end succeeded, paid once, never failed."""
    timeout = 0.3
    _app, client, runtime = await paypal_app(
        make_app, monkeypatch, tmp_path, served, timeout=timeout, **PATIENT_SCHEDULE
    )
    account = receiver()
    served.script(account, Scenario(slow_after_booking=True, delay=1.0))
    payout_id, key = await pay(client, runtime, account)

    final = await drain_in_real_time(runtime)

    assert final == {payout_id: "succeeded"}
    assert await assert_paid_exactly_once(runtime, served.booked_states()) == final
    assert served.concurrent_refusals >= 1  # the race really happened
    attempts = await attempts_of(runtime.db, payout_id)
    refused = [a for a in attempts if a.gateway_status == "DUPLICATE_REQUEST_ID"]
    assert refused
    assert all(a.outcome == "unknown" for a in refused)
    assert next(a.gateway_status for a in attempts if a.operation == "submit") == "timeout"
    # Never re-sent sooner than one timeout after a send whose answer was lost or refused.
    sent = posts_under(served, key)
    assert len(sent) >= 3
    assert all(b.at - a.at >= timeout for a, b in itertools.pairwise(sent))
    events = (await events_by_payout(runtime.db))[payout_id]
    assert "failed" not in [e.data["status"] for e in events]


async def test_notices_over_the_verify_bound_are_answered_503_and_applied_later(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, served: FakePayPal
) -> None:
    monkeypatch.setenv(f"{ENV}VERIFY_PER_MINUTE", "1")
    _app, client, runtime = await paypal_app(make_app, monkeypatch, tmp_path, served)
    paid, other = receiver(), receiver()
    for account in (paid, other):
        served.script(account, Scenario(final_status=None))  # settles only by notice
    paid_id, paid_key = await pay(client, runtime, paid)
    other_id, other_key = await pay(client, runtime, other)
    executor, _clock, gateways = executor_for(runtime)
    try:
        assert await executor.run_once() == 2
    finally:
        await gateways.aclose()
    url = "/v1/gateway-callbacks/paypal"
    served.settle(paid_key, "SUCCESS")
    served.settle(other_key, "SUCCESS")
    stale_body, stale_headers = served.signed(
        served.item_event(paid_key), transmission_time=iso(datetime.now(UTC) - timedelta(hours=1))
    )
    stale = await client.post(url, content=stale_body, headers=stale_headers)
    assert stale.status_code == 401, stale.text
    first = await client.post(url, content=b"", headers={})
    assert first.status_code == 401  # no transmission headers: nothing to ask PayPal
    body, headers = served.signed(served.item_event(paid_key))
    applied = await client.post(url, content=body, headers=headers)
    assert applied.json()["result"] == "applied"
    other_body, other_headers = served.signed(served.item_event(other_key))
    throttled = await client.post(url, content=other_body, headers=other_headers)
    assert throttled.status_code == 503, throttled.text  # PayPal delivers it again later
    assert throttled.json()["code"] == "gateway_unavailable"
    duplicate = await client.post(url, content=body, headers=headers)
    assert duplicate.json()["result"] == "duplicate"  # from memory, within the bound
    assert served.verifications == ["SUCCESS"]
    statuses = {pid: row.status for pid, row in (await payout_rows(runtime.db)).items()}
    assert statuses == {paid_id: "succeeded", other_id: "processing"}
    await assert_paid_exactly_once(runtime, served.booked_states())
    await registry_for(runtime).aclose()


async def test_callbacks_finish_a_processing_payout_once(
    make_app: AppFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    served: FakePayPal,
    other_key: rsa.RSAPrivateKey,
) -> None:
    _app, client, runtime = await paypal_app(make_app, monkeypatch, tmp_path, served)
    paid, declined, unclaimed = receiver(), receiver(), receiver()
    for account in (paid, declined, unclaimed):
        served.script(account, Scenario(final_status=None))  # settles only by notice
    paid_id, paid_key = await pay(client, runtime, paid)
    declined_id, declined_key = await pay(client, runtime, declined)
    unclaimed_id, unclaimed_key = await pay(client, runtime, unclaimed)
    executor, _clock, gateways = executor_for(runtime)
    try:
        assert await executor.run_once() == 3
    finally:
        await gateways.aclose()

    async def status_of(payout_id: str) -> dict[str, Any]:
        response = await client.get(f"/v1/payouts/{payout_id}")
        assert response.status_code == 200
        return dict(response.json())

    async def events_of(payout_id: str) -> list[Any]:
        return list((await client.get(f"/v1/payouts/{payout_id}/events")).json()["data"])

    assert (await status_of(paid_id))["status"] == "processing"
    served.settle(paid_key, "SUCCESS")
    event = served.item_event(paid_key)
    body, headers = served.signed(event)
    url = "/v1/gateway-callbacks/paypal"

    forged_body, forged_headers = served.signed(event, key=other_key)
    forged = await client.post(url, content=forged_body, headers=forged_headers)
    tampered = await client.post(url, content=body.replace(b"SUCCESS", b"SUCCESs"), headers=headers)
    unsigned = {k: v for k, v in headers.items() if not k.startswith("PAYPAL-TRANSMISSION-SIG")}
    missing = await client.post(url, content=body, headers=unsigned)
    for answer in (forged, tampered, missing):
        assert answer.status_code == 401, answer.text
        assert answer.json()["code"] == "invalid_signature"
    assert (await status_of(paid_id))["status"] == "processing"
    served.verify_status = 503  # PayPal cannot verify now: not a 401, so PayPal sends it again
    unverified = await client.post(url, content=body, headers=headers)
    assert unverified.status_code == 503
    assert unverified.json()["code"] == "gateway_unavailable"
    assert (await status_of(paid_id))["status"] == "processing"
    served.verify_status = None

    applied = await client.post(url, content=body, headers=headers)
    assert applied.status_code == 200, applied.text
    assert applied.json() == {"received": True, "result": "applied"}
    after = await status_of(paid_id)
    assert after["status"] == "succeeded"
    assert after["gateway_reference"] == served.batch_for(paid_key).payout_batch_id
    history = await events_of(paid_id)

    duplicate = await client.post(url, content=body, headers=headers)
    assert duplicate.json() == {"received": True, "result": "duplicate"}
    assert await status_of(paid_id) == after
    assert await events_of(paid_id) == history

    served.settle(declined_key, "FAILED", "RECEIVER_ACCOUNT_INVALID")
    body, headers = served.signed(served.item_event(declined_key))
    assert (await client.post(url, content=body, headers=headers)).json()["result"] == "applied"
    failed = await status_of(declined_id)
    assert failed["status"] == "failed"
    assert failed["failure"]["code"] == "recipient_account_invalid"

    served.settle(unclaimed_key, "UNCLAIMED", "RECEIVER_UNREGISTERED")
    body, headers = served.signed(served.item_event(unclaimed_key))
    assert (await client.post(url, content=body, headers=headers)).json()["result"] == "recorded"
    assert (await status_of(unclaimed_id))["status"] == "processing"
    await assert_paid_exactly_once(runtime, served.booked_states())

    # A notice claiming a paid item failed (a body forged to the genuine delivery's CRC32
    # verifies just as well) is checked with PayPal, whose answer (paid) is what counts.
    contradicting = served.item_event(paid_key, "PAYMENT.PAYOUTS-ITEM.FAILED")
    contradicting["resource"]["transaction_status"] = "FAILED"
    body, headers = served.signed(contradicting)
    reads = len(served.calls("GET", f"/v1/payments/payouts/{after['gateway_reference']}"))
    checked = await client.post(url, content=body, headers=headers)
    assert checked.json() == {"received": True, "result": "duplicate"}
    assert len(served.calls("GET", f"/v1/payments/payouts/{after['gateway_reference']}")) > reads
    assert await status_of(paid_id) == after
    await registry_for(runtime).aclose()


async def test_no_secret_or_account_in_logs_or_responses(
    make_app: AppFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    served: FakePayPal,
    signing_key: rsa.RSAPrivateKey,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    _app, client, runtime = await paypal_app(
        make_app, monkeypatch, tmp_path, served, log_level="DEBUG"
    )
    paid = f"very.private.person-{uuid.uuid4().hex[:6]}@example.com"
    refused = f"refused-{uuid.uuid4().hex[:6]}@example.com"
    served.script(refused, Scenario(refuse=(422, {"name": "INSUFFICIENT_FUNDS"})))
    paid_id, paid_key = await pay(client, runtime, paid)
    refused_id, _ = await pay(client, runtime, refused)
    final = await drain_all(runtime)
    assert final == {paid_id: "succeeded", refused_id: "failed"}
    body, headers = served.signed(served.item_event(paid_key))
    notice = await client.post("/v1/gateway-callbacks/paypal", content=body, headers=headers)
    assert notice.json()["result"] == "duplicate"
    await registry_for(runtime).aclose()

    shown = []
    for payout_id in (paid_id, refused_id):
        shown.append((await client.get(f"/v1/payouts/{payout_id}")).text)
        shown.append((await client.get(f"/v1/payouts/{payout_id}/attempts")).text)
        shown.append(repr([vars(a) for a in await attempts_of(runtime.db, payout_id)]))
    captured = capsys.readouterr()
    logs = captured.err + captured.out + caplog.text
    assert "gateway.paypal.token_fetched" in logs  # the capture did see the adapter's lines
    pem = signing_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    secrets = [
        served.client_secret,
        *served.issued_tokens,
        base64.b64encode(f"{served.client_id}:{served.client_secret}".encode()).decode(),
        pem.splitlines()[1],
        paid,
        refused,
    ]
    assert len(served.issued_tokens) >= 2
    for text in (logs, *shown):
        for secret in secrets:
            assert secret not in text
    assert "v***@example.com" in shown[0]  # the masked account is what is shown
    assert json.loads(shown[0])["gateway_status"] == "SUCCESS"


async def test_create_gateway_is_registered_under_paypal(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, served: FakePayPal
) -> None:
    _app, _client, runtime = await paypal_app(make_app, monkeypatch, tmp_path, served)
    registry = registry_for(runtime)
    assert registry.is_configured("paypal")
    adapter = registry.get("paypal")
    assert isinstance(adapter, PayPalGateway)
    assert isinstance(adapter, Gateway)
    assert adapter.name == "paypal"
    direct = create_gateway(runtime)
    try:
        result = await direct.submit(transfer())
        assert result.state is TransferState.PENDING
    finally:
        await direct.aclose()
        await registry.aclose()


# -- provider holds through the executor ---------------------------------------------------------
async def check_at_next_attempt(executor: Any, clock: Any, payout_id: str) -> Any:
    """Move the clock to the payout's next check, run the executor once, return the row."""
    row = (await payout_rows(executor.runtime.db))[payout_id]
    if row.next_attempt_at is not None and row.next_attempt_at > clock.now:
        clock.now = row.next_attempt_at
    await executor.run_once()
    return (await payout_rows(executor.runtime.db))[payout_id]


async def test_an_unclaimed_payout_waits_paypals_30_days_not_the_retry_schedule(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, served: FakePayPal
) -> None:
    _app, client, runtime = await paypal_app(
        make_app, monkeypatch, tmp_path, served, executor_hold_check_seconds=86400
    )
    claimed, never, held = receiver(), receiver(), receiver()
    served.script(claimed, Scenario(final_status=None, pending_status="UNCLAIMED"))
    served.script(never, Scenario(final_status=None, pending_status="UNCLAIMED"))
    served.script(held, Scenario(final_status=None, pending_status="ONHOLD"))
    claimed_id, claimed_key = await pay(client, runtime, claimed)
    never_id, never_key = await pay(client, runtime, never)
    held_id, _ = await pay(client, runtime, held)
    executor, clock, gateways = executor_for(runtime)
    try:
        await executor.run_once()  # submitted: batch PENDING, item not known yet
        held_ids = (claimed_id, never_id, held_id)
        # Twice the retry schedule's length of checks. Each round checks all three at the
        # latest of their next checks, so a round moves the clock at most one jittered
        # hold interval (1.2 days) and the rounds stay well inside PayPal's 30 days
        # (checking them one by one let the staggered waits add up past it).
        for _ in range(2 * len(executor.schedule)):
            rows = await payout_rows(runtime.db)
            clock.now = max(clock.now, *(rows[p].next_attempt_at for p in held_ids))
            await executor.run_once()
            rows = await payout_rows(runtime.db)
            for payout_id in held_ids:
                assert rows[payout_id].status == "processing", (payout_id, rows[payout_id].status)
        assert min(rows[p].attempts for p in held_ids) > len(executor.schedule)
        for payout_id, key in ((claimed_id, claimed_key), (never_id, never_key)):
            assert rows[payout_id].gateway_status == "UNCLAIMED"
            sent = datetime.fromisoformat(served.batch_for(key).time_processed)
            assert rows[payout_id].gateway_hold_until == sent + timedelta(days=30)
        assert rows[held_id].gateway_status == "ONHOLD"
        assert rows[held_id].gateway_hold_until is not None

        # The receiver claims it: PayPal's notice settles the held payout at once.
        served.settle(claimed_key, "SUCCESS")
        body, headers = served.signed(served.item_event(claimed_key))
        notice = await client.post("/v1/gateway-callbacks/paypal", content=body, headers=headers)
        assert notice.json()["result"] == "applied"

        # Never claimed: only once PayPal's 30 days are over does it need a human.
        while (row := await check_at_next_attempt(executor, clock, never_id)).status == (
            "processing"
        ):
            assert clock.now <= row.gateway_hold_until
        assert row.status == "needs_review"
        assert clock.now >= row.gateway_hold_until
    finally:
        await gateways.aclose()
        await registry_for(runtime).aclose()
    review = [e for e in (await events_by_payout(runtime.db))[never_id] if e.actor == "executor"]
    assert review[-1].data["reason"] == "provider_deadline_passed"
    statuses = await assert_paid_exactly_once(runtime, served.booked_states())
    assert statuses[claimed_id] == "succeeded"
