"""The Alipay adapter against a fake Alipay gateway on a loopback socket.

Unit level: request shape and RSA2 signature, answer verification over the raw response
text, status and error mapping, amounts and field limits, idempotent submits. Then every
fault driven through the real executor (exactly one booking each), notices through the
callback endpoint, and no secret or full account number in logs or API answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from payoutsvc.gateways.alipay import (
    BEIJING,
    AlipayGateway,
    AlipaySettings,
    CertificateMode,
    create_gateway,
    response_members,
)
from payoutsvc.gateways.alipay_cert import cert_sn, root_cert_sn
from payoutsvc.gateways.base import (
    InvalidCallback,
    InvalidSignature,
    NotDone,
    OutcomeUnknown,
    ProviderHold,
    Rejected,
    TransferRequest,
    TransferState,
)
from payoutsvc.gateways.providers import MissingCredential
from tests.executor.conftest import AppFactory
from tests.executor.support import attempts_of, events_by_payout, payout_rows
from tests.gateways.fake_alipay import (
    QUERY,
    TRANSFER,
    FakeAlipay,
    Fault,
    Script,
    make_certificates,
    pem_of,
    private_pem,
    public_pem,
)
from tests.gateways.harness import (
    approved_payout_to,
    assert_paid_exactly_once,
    drain_all,
    executor_for,
    provider_app,
    serve_asgi,
)

APP_ID = "2021000000000001"
# Test keys, generated once for the module: the app's, "Alipay's", and an impostor's.
APP_KEY, ALIPAY_KEY, IMPOSTOR_KEY = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)
)
# Certificate mode: the CA that issues both certificates, and Alipay's next signing key.
CA_KEY, ROTATED_KEY = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)
)
CERTS = make_certificates(
    app_key=APP_KEY, alipay_key=ALIPAY_KEY, rotated_key=ROTATED_KEY, ca_key=CA_KEY, app_id=APP_ID
)
# The client's timeout: the fake holds DELAY answers until the test ends. Short, yet long
# enough for a batch of concurrent calls on a busy machine (the fake shares the loop).
CLIENT_TIMEOUT = 2.0
CALLBACKS = "/v1/gateway-callbacks/alipay"


def transfer(
    amount_minor: int = 1250,
    *,
    account: str = "13800138000",
    name: str | None = "张三",
    currency: str = "CNY",
    key: str | None = None,
    description: str | None = "Price difference refund for order 9931",
) -> TransferRequest:
    return TransferRequest(
        payout_id="po_test",
        idempotency_key=key or uuid.uuid4().hex,
        amount_minor=amount_minor,
        currency=currency,
        recipient={"type": "alipay", "account": account, "name": name},
        description=description,
    )


def pem_body(pem: str) -> str:
    """A PEM's base64 body on one line, as the Alipay console hands keys out."""
    return "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))


@pytest.fixture
def fake() -> FakeAlipay:
    return FakeAlipay(
        app_id=APP_ID,
        app_public_key=APP_KEY.public_key(),
        key=ALIPAY_KEY,
        impostor_key=IMPOSTOR_KEY,
    )


@pytest.fixture
async def gateway_url(fake: FakeAlipay) -> AsyncIterator[str]:
    async with serve_asgi(fake.app) as base_url:
        yield f"{base_url}/gateway.do"
        fake.release()  # a held answer would keep the server from shutting down


@pytest.fixture
async def gateway(fake: FakeAlipay, gateway_url: str) -> AsyncIterator[AlipayGateway]:
    adapter = AlipayGateway(
        app_id=APP_ID,
        app_private_key=APP_KEY,
        alipay_public_key=fake.key.public_key(),
        gateway_url=gateway_url,
        timeout_seconds=CLIENT_TIMEOUT,
        notify_url="https://payouts.example.com/v1/gateway-callbacks/alipay",
    )
    yield adapter
    await adapter.aclose()


@pytest.fixture
def alipay_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake: FakeAlipay, gateway_url: str
) -> None:
    """The service's credentials: the private key as a file, Alipay's key inline (bare)."""
    key_file = tmp_path / "app_private_key.pem"
    key_file.write_text(private_pem(APP_KEY))
    monkeypatch.setenv("PAYOUTSVC_ALIPAY_APP_ID", APP_ID)
    monkeypatch.setenv("PAYOUTSVC_ALIPAY_APP_PRIVATE_KEY_FILE", str(key_file))
    monkeypatch.setenv("PAYOUTSVC_ALIPAY_PUBLIC_KEY", pem_body(fake.alipay_public_pem))
    monkeypatch.setenv("PAYOUTSVC_ALIPAY_GATEWAY_URL", gateway_url)
    monkeypatch.setenv("PAYOUTSVC_ALIPAY_TIMEOUT_SECONDS", str(CLIENT_TIMEOUT))


# -- request shape and signatures ---------------------------------------------------------


async def test_transfer_request_shape_and_signature(
    gateway: AlipayGateway, fake: FakeAlipay
) -> None:
    request = transfer(1250)
    result = await gateway.submit(request)

    assert result.state is TransferState.SUCCEEDED
    assert result.reference == fake.orders[request.idempotency_key].order_id
    assert result.gateway_status == "SUCCESS"
    assert fake.refused == []  # the fake verified the RSA2 signature with the app's key
    (params,) = fake.requests
    assert {k: v for k, v in params.items() if k not in ("timestamp", "sign", "biz_content")} == {
        "app_id": APP_ID,
        "method": TRANSFER,
        "format": "JSON",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "version": "1.0",
        "notify_url": "https://payouts.example.com/v1/gateway-callbacks/alipay",
    }
    stamp = datetime.strptime(params["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
    assert abs(stamp - datetime.now(BEIJING)) < timedelta(minutes=1)
    assert json.loads(params["biz_content"]) == {
        "out_biz_no": request.idempotency_key,
        "trans_amount": "12.50",
        "product_code": "TRANS_ACCOUNT_NO_PWD",
        "biz_scene": "DIRECT_TRANSFER",
        "order_title": "Price difference refund for order 9931",
        "payee_info": {
            "identity": "13800138000",
            "identity_type": "ALIPAY_LOGON_ID",
            "name": "张三",
        },
    }


async def test_payee_identity_type_follows_the_account(
    gateway: AlipayGateway, fake: FakeAlipay
) -> None:
    cases = {
        "2088123412341234": "ALIPAY_USER_ID",
        "13800138000": "ALIPAY_LOGON_ID",
        "li.lei@example.com": "ALIPAY_LOGON_ID",
        "20881234123412345": "ALIPAY_LOGON_ID",  # 17 digits: not a user id
        # Alipay's documented open id example; open ids need no name (only logon ids do)
        "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5": "ALIPAY_OPEN_ID",
    }
    for account, kind in cases.items():
        await gateway.submit(
            transfer(account=account, name="张三" if kind == "ALIPAY_LOGON_ID" else None)
        )
    sent = {c["payee_info"]["identity"]: c["payee_info"] for c in fake.biz_contents(TRANSFER)}
    assert {account: payee["identity_type"] for account, payee in sent.items()} == cases


async def test_the_fake_refuses_a_request_not_signed_with_the_app_key(
    fake: FakeAlipay, gateway_url: str
) -> None:
    impostor = AlipayGateway(
        app_id=APP_ID,
        app_private_key=IMPOSTOR_KEY,
        alipay_public_key=fake.key.public_key(),
        gateway_url=gateway_url,
        timeout_seconds=CLIENT_TIMEOUT,
    )
    try:
        with pytest.raises(NotDone) as refused:
            await impostor.submit(transfer())
    finally:
        await impostor.aclose()
    assert refused.value.gateway_status == "isv.invalid-signature"
    assert fake.refused == ["isv.invalid-signature"]
    assert fake.booked == {}


async def test_answers_are_verified_over_their_raw_text(
    gateway: AlipayGateway, fake: FakeAlipay
) -> None:
    await gateway.submit(transfer())
    # The fake writes ": " and ", " and raw Chinese, unlike json.dumps(..., separators=(",",
    # ":")): the answer verified only because the adapter checked the text as received.
    (raw,) = fake.raw_answers
    members = response_members(raw)
    text, value = members["alipay_fund_trans_uni_transfer_response"]
    assert '": "' in text
    assert text != json.dumps(value, separators=(",", ":"))
    assert text != json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_response_members_cut_exact_text_and_refuse_ambiguity() -> None:
    body = '{ "a_response" :{"x": "\\u5f20 张" ,"n":[1, 2]} ,"sign":"c2ln"}'
    assert response_members(body) == {
        "a_response": ('{"x": "\\u5f20 张" ,"n":[1, 2]}', {"x": "张 张", "n": [1, 2]}),
        "sign": ('"c2ln"', "c2ln"),
    }
    for bad in ('{"a": 1, "a": 2}', '{"a": 1} trailing', "[1]", '{"a" 1}', ""):
        with pytest.raises(ValueError):  # noqa: PT011  (all ValueError by design)
            response_members(bad)


async def test_an_answer_with_a_bad_signature_is_never_a_success(
    gateway: AlipayGateway, fake: FakeAlipay
) -> None:
    fake.scripts["12.50"] = Script(fault=Fault.BAD_SIGNATURE)
    request = transfer(1250)
    with pytest.raises(OutcomeUnknown) as unknown:
        await gateway.submit(request)
    assert unknown.value.gateway_status == "bad_signature"
    # It was booked: the status query (properly signed) says so.
    assert (await gateway.get_status(request.idempotency_key)).state is TransferState.SUCCEEDED


async def test_an_answer_signed_by_anyone_but_alipay_is_not_trusted(
    fake: FakeAlipay, gateway_url: str
) -> None:
    wrong = AlipayGateway(
        app_id=APP_ID,
        app_private_key=APP_KEY,
        alipay_public_key=fake.impostor_key.public_key(),
        gateway_url=gateway_url,
    )
    try:
        with pytest.raises(OutcomeUnknown):
            await wrong.submit(transfer())
        with pytest.raises(OutcomeUnknown):
            await wrong.get_status(uuid.uuid4().hex)
    finally:
        await wrong.aclose()


# -- status and error mapping ---------------------------------------------------------------


async def test_transfer_statuses_map_to_ours(gateway: AlipayGateway, fake: FakeAlipay) -> None:
    expected = {
        "SUCCESS": (TransferState.SUCCEEDED, None),
        "DEALING": (TransferState.PENDING, None),
        "WAIT_PAY": (TransferState.PENDING, None),
        "INIT": (TransferState.PENDING, None),
        "FAIL": (TransferState.FAILED, "recipient_name_mismatch"),
        "REFUND": (TransferState.FAILED, "recipient_name_mismatch"),
        "CLOSED": (TransferState.FAILED, "gateway_declined"),
    }
    request = transfer()
    await gateway.submit(request)
    order = fake.orders[request.idempotency_key]
    order.error_code = "PAYEE_USER_INFO_ERROR"  # why a FAIL or REFUND failed
    for status, (state, failure_code) in expected.items():
        order.status = status
        result = await gateway.get_status(request.idempotency_key)
        assert (result.state, result.gateway_status, result.failure_code) == (
            state,
            status,
            failure_code,
        ), status
        assert result.reference == order.order_id
        assert bool(result.failure_message) is (state is TransferState.FAILED)


async def test_an_unknown_status_word_is_no_verdict(
    gateway: AlipayGateway, fake: FakeAlipay
) -> None:
    request = transfer()
    await gateway.submit(request)
    fake.orders[request.idempotency_key].status = "SOMETHING_NEW"
    with pytest.raises(OutcomeUnknown):
        await gateway.get_status(request.idempotency_key)


async def test_query_for_a_key_alipay_never_booked_is_not_found(
    gateway: AlipayGateway, fake: FakeAlipay
) -> None:
    key = uuid.uuid4().hex
    result = await gateway.get_status(key)
    assert (result.state, result.gateway_status) == (TransferState.NOT_FOUND, "ORDER_NOT_EXIST")
    (content,) = fake.biz_contents(QUERY)
    assert content == {
        "out_biz_no": key,
        "product_code": "TRANS_ACCOUNT_NO_PWD",
        "biz_scene": "DIRECT_TRANSFER",
    }


async def test_definite_declines_are_rejected_with_our_code(
    gateway: AlipayGateway, fake: FakeAlipay
) -> None:
    cases = {
        "PAYEE_NOT_EXIST": "recipient_account_invalid",
        "PAYEE_ACCOUNT_NOT_EXSIT": "recipient_account_invalid",
        "PAYEE_USERINFO_STATUS_ERROR": "recipient_account_invalid",
        "PAYEE_USER_INFO_ERROR": "recipient_name_mismatch",
        "PAYER_BALANCE_NOT_ENOUGH": "insufficient_funds",
        "EXCEED_LIMIT_SM_AMOUNT": "amount_out_of_range",
        "EXCEED_LIMIT_DM_MAX_AMOUNT": "amount_out_of_range",
        "PRODUCT_NOT_SIGN": "gateway_declined",
    }
    for n, (sub_code, failure_code) in enumerate(cases.items()):
        fake.scripts[f"12.{n:02d}"] = Script.decline(sub_code)
        with pytest.raises(Rejected) as rejected:
            await gateway.submit(transfer(1200 + n))
        assert (rejected.value.code, rejected.value.gateway_status) == (
            failure_code,
            sub_code,
        )
        assert sub_code in rejected.value.message
    assert fake.booked == {}


async def test_uncertain_and_unprocessed_answers(gateway: AlipayGateway, fake: FakeAlipay) -> None:
    cases: list[tuple[str, str, type[Exception]]] = [
        ("40004", "SYSTEM_ERROR", OutcomeUnknown),
        ("40004", "aop.ACQ.SYSTEM_ERROR", OutcomeUnknown),
        ("20000", "isp.unknow-error", OutcomeUnknown),
        ("40004", "A_SUB_CODE_NOBODY_KNOWS", OutcomeUnknown),
        ("40004", "PAYMENT_INFO_INCONSISTENCY", OutcomeUnknown),
        ("40004", "RESOURCE_LIMIT_EXCEED", NotDone),
        ("40002", "isv.invalid-app-id", NotDone),
        ("40006", "isv.insufficient-isv-permissions", NotDone),
    ]
    for n, (code, sub_code, error) in enumerate(cases):
        fake.scripts[f"12.{n:02d}"] = Script.decline(sub_code, code)
        with pytest.raises(error) as raised:
            await gateway.submit(transfer(1200 + n))
        assert type(raised.value) is error, sub_code
        assert getattr(raised.value, "gateway_status", None) == sub_code


async def test_a_refused_query_is_no_verdict(gateway: AlipayGateway, fake: FakeAlipay) -> None:
    request = transfer()
    await gateway.submit(request)
    for error in [
        ("40004", "INVALID_PARAMETER"),
        ("40004", "SYSTEM_ERROR"),
        ("20000", "isp.unknow-error"),
    ]:
        fake.query_error = error
        with pytest.raises(OutcomeUnknown) as unknown:
            await gateway.get_status(request.idempotency_key)
        assert type(unknown.value) is OutcomeUnknown  # never Rejected: a query declines nothing
        assert unknown.value.gateway_status == error[1]


async def test_server_errors_and_dropped_connections_are_unknown(
    gateway: AlipayGateway, fake: FakeAlipay
) -> None:
    fake.scripts["12.51"] = Script(fault=Fault.HTTP_5XX)
    fake.scripts["12.52"] = Script(fault=Fault.CUT)
    # (a held answer, "timeout", is timed in test_each_fault_ends_right_with_at_most_one_booking)
    for amount, status in ((1251, "http_502"), (1252, "reset")):
        with pytest.raises(OutcomeUnknown) as unknown:
            await gateway.submit(transfer(amount))
        assert unknown.value.gateway_status == status


# -- amounts and field limits -----------------------------------------------------------------


async def test_amounts_are_sent_in_yuan(gateway: AlipayGateway, fake: FakeAlipay) -> None:
    cases = {10: "0.10", 100: "1.00", 1250: "12.50", 123456789: "1234567.89"}
    for amount_minor in cases:
        await gateway.submit(transfer(amount_minor))
    assert [c["trans_amount"] for c in fake.biz_contents(TRANSFER)] == list(cases.values())


async def test_what_alipay_cannot_accept_is_rejected_without_a_call(
    gateway: AlipayGateway, fake: FakeAlipay
) -> None:
    cases = [
        (transfer(9), "amount_out_of_range"),
        (transfer(100_000_000 * 100 + 1), "amount_out_of_range"),
        (transfer(1250, currency="USD"), "currency_not_supported"),
        (transfer(1250, account=""), "recipient_account_invalid"),
        (transfer(1250, account="a" * 60 + "@example.com"), "recipient_account_invalid"),
        (transfer(1250, name=None), "recipient_name_mismatch"),
        (transfer(1250, name="名" * 129), "recipient_name_mismatch"),
    ]
    for request, code in cases:
        with pytest.raises(Rejected) as rejected:
            await gateway.submit(request)
        assert rejected.value.code == code, request
    assert fake.requests == []


async def test_field_limits_title_and_optional_name(
    gateway: AlipayGateway, fake: FakeAlipay
) -> None:
    await gateway.submit(transfer(description="退" * 200))
    await gateway.submit(transfer(description=None))
    await gateway.submit(transfer(account="2088123412341234", name=None))
    long_title, default_title, user_id = fake.biz_contents(TRANSFER)
    assert long_title["order_title"] == "退" * 128
    assert default_title["order_title"] == "Payout"
    assert user_id["payee_info"] == {
        "identity": "2088123412341234",
        "identity_type": "ALIPAY_USER_ID",
    }


async def test_a_duplicate_submit_returns_the_same_transfer(
    gateway: AlipayGateway, fake: FakeAlipay
) -> None:
    fake.scripts["12.50"] = Script(status="DEALING", then="SUCCESS")
    request = transfer(1250)
    first = await gateway.submit(request)
    second = await gateway.submit(request)
    assert first == second
    assert first.state is TransferState.PENDING
    assert fake.booked_states() == {request.idempotency_key: ["pending"]}
    # Same key, other content: Alipay refuses it, and the adapter draws no conclusion.
    with pytest.raises(OutcomeUnknown) as unknown:
        await gateway.submit(transfer(1251, key=request.idempotency_key))
    assert unknown.value.gateway_status == "PAYMENT_INFO_INCONSISTENCY"
    assert fake.booked_states() == {request.idempotency_key: ["pending"]}


# -- settings ---------------------------------------------------------------------------------


def test_settings_read_inline_or_file_credentials(tmp_path: Path, fake: FakeAlipay) -> None:
    private_file = tmp_path / "app.pem"
    private_file.write_text(private_pem(APP_KEY))
    public_file = tmp_path / "alipay.pem"
    public_file.write_text(fake.alipay_public_pem)
    for settings in (
        AlipaySettings(
            app_id=APP_ID,
            app_private_key=SecretStr(pem_body(private_pem(APP_KEY))),
            public_key=SecretStr(fake.alipay_public_pem),
        ),
        AlipaySettings(
            app_id=APP_ID, app_private_key_file=private_file, public_key_file=public_file
        ),
    ):
        adapter = AlipayGateway.from_settings(settings)
        assert adapter.name == "alipay"
        assert adapter.callback_reply is not None
        assert adapter.callback_reply.body == b"success"
    with pytest.raises(MissingCredential, match="PAYOUTSVC_ALIPAY_APP_PRIVATE_KEY"):
        AlipayGateway.from_settings(
            AlipaySettings(app_id=APP_ID, public_key=SecretStr(fake.alipay_public_pem))
        )
    with pytest.raises(MissingCredential, match="PAYOUTSVC_ALIPAY_APP_ID"):
        AlipayGateway.from_settings(AlipaySettings())


async def test_create_gateway_reads_the_environment(
    alipay_env: None, fake: FakeAlipay, gateway_url: str
) -> None:
    adapter = create_gateway(None)  # type: ignore[arg-type]  # the runtime is not needed
    try:
        assert (await adapter.submit(transfer())).state is TransferState.SUCCEEDED
    finally:
        await adapter.aclose()
    assert fake.requests[0]["app_id"] == APP_ID
    assert "notify_url" not in fake.requests[0]


# -- every fault through the real executor ----------------------------------------------------

RECIPIENT = {"type": "alipay", "account": "13900001111", "name": "张三"}


@dataclass(frozen=True)
class Case:
    script: Script  # what the fake does with the payout's transfer
    status: str  # the payout's final status
    failure_code: str | None = None
    booked: tuple[str, ...] = ("succeeded",)  # the fake's ledger under the payout's key
    first_answer: str = "SUCCESS"  # gateway_status of the first submit: the fault did hit


FAULTS: dict[str, Case] = {
    "success": Case(Script(), "succeeded"),
    "accepted-then-timeout": Case(Script(fault=Fault.DELAY), "succeeded", first_answer="timeout"),
    "accepted-then-dropped": Case(Script(fault=Fault.CUT), "succeeded", first_answer="reset"),
    "5xx-twice-before-booking": Case(
        Script(fault=Fault.HTTP_5XX, faults=2, fault_books=False),
        "succeeded",
        first_answer="http_502",
    ),
    "5xx-after-booking": Case(Script(fault=Fault.HTTP_5XX), "succeeded", first_answer="http_502"),
    "system-error-after-booking": Case(
        Script(fault=Fault.ERROR_CODE, sub_code="SYSTEM_ERROR"),
        "succeeded",
        first_answer="SYSTEM_ERROR",
    ),
    "unknown-code-after-booking": Case(
        Script(fault=Fault.ERROR_CODE, sub_code="NEW_CODE_NOBODY_KNOWS"),
        "succeeded",
        first_answer="NEW_CODE_NOBODY_KNOWS",
    ),
    "unknown-code-before-booking": Case(
        Script(fault=Fault.ERROR_CODE, sub_code="NEW_CODE_NOBODY_KNOWS", fault_books=False),
        "succeeded",
        first_answer="NEW_CODE_NOBODY_KNOWS",
    ),
    "throttled-once": Case(
        Script(fault=Fault.ERROR_CODE, sub_code="RESOURCE_LIMIT_EXCEED", fault_books=False),
        "succeeded",
        first_answer="RESOURCE_LIMIT_EXCEED",
    ),
    "bad-answer-signature-after-booking": Case(
        Script(fault=Fault.BAD_SIGNATURE), "succeeded", first_answer="bad_signature"
    ),
    "pending-then-success": Case(
        Script(status="DEALING", then="SUCCESS", polls=3), "succeeded", first_answer="DEALING"
    ),
    "pending-then-failure": Case(
        Script(status="DEALING", then="FAIL", error_code="PAYEE_USER_INFO_ERROR"),
        "failed",
        "recipient_name_mismatch",
        booked=("failed",),
        first_answer="DEALING",
    ),
    "declined-insufficient-funds": Case(
        Script.decline("PAYER_BALANCE_NOT_ENOUGH"),
        "failed",
        "insufficient_funds",
        booked=(),
        first_answer="PAYER_BALANCE_NOT_ENOUGH",
    ),
    "declined-account": Case(
        Script.decline("PAYEE_NOT_EXIST"),
        "failed",
        "recipient_account_invalid",
        booked=(),
        first_answer="PAYEE_NOT_EXIST",
    ),
}


async def test_each_fault_ends_right_with_at_most_one_booking(
    make_app: AppFactory, alipay_env: None, fake: FakeAlipay
) -> None:
    """One payout per fault (told apart by amount), all drained together by the executor."""
    app, client = await provider_app(make_app, gateway="alipay", recipient_type="alipay")
    runtime = app.state.runtime
    payout_of: dict[str, dict[str, Any]] = {}
    for n, (fault, case) in enumerate(FAULTS.items(), start=1):
        amount = f"10.{n:02d}"
        fake.scripts[amount] = case.script
        recipient = {**RECIPIENT, "account": f"1390000{n:04d}"}
        payout_of[fault] = await approved_payout_to(client, runtime, recipient, amount, "CNY")

    final = await drain_all(runtime)

    ledger = fake.booked_states()
    assert await assert_paid_exactly_once(runtime, ledger) == final
    for fault, case in FAULTS.items():
        payout = payout_of[fault]
        shown = (await client.get(f"/v1/payouts/{payout['id']}")).json()
        key = await gateway_key(runtime, payout["id"])
        assert (shown["status"], (shown["failure"] or {}).get("code")) == (
            case.status,
            case.failure_code,
        ), fault
        assert tuple(ledger.get(key, [])) == case.booked, fault
        attempts = await attempts_of(runtime.db, payout["id"])
        assert (attempts[0].operation, attempts[0].gateway_status) == (
            "submit",
            case.first_answer,
        ), fault
        if case.booked:
            assert shown["gateway_reference"] == fake.orders[key].order_id, fault


async def gateway_key(runtime: Any, payout_id: str) -> str:
    rows = await payout_rows(runtime.db)
    return str(rows[payout_id].gateway_idempotency_key)


# -- notices through the callback endpoint ----------------------------------------------------


async def test_notices_through_the_callback_endpoint(
    make_app: AppFactory, alipay_env: None, fake: FakeAlipay
) -> None:
    """Two payouts submitted once and left processing (Alipay answered DEALING): forged
    notices change nothing; verified ones finish them, once."""
    fake.scripts["10.00"] = Script(status="DEALING", then="SUCCESS", polls=100)
    fake.scripts["10.01"] = Script(status="DEALING", then="FAIL", polls=100)
    app, client = await provider_app(make_app, gateway="alipay", recipient_type="alipay")
    runtime = app.state.runtime
    paid = await approved_payout_to(client, runtime, RECIPIENT, "10.00", "CNY")
    declined = await approved_payout_to(client, runtime, RECIPIENT, "10.01", "CNY")
    executor, _clock, gateways = executor_for(runtime)
    try:
        assert await executor.run_once() == 2
    finally:
        await gateways.aclose()
    for payout in (paid, declined):
        shown = (await client.get(f"/v1/payouts/{payout['id']}")).json()
        assert (shown["status"], shown["gateway_status"]) == ("processing", "DEALING")
    key = await gateway_key(runtime, paid["id"])

    async def events() -> int:
        return len((await events_by_payout(runtime.db))[paid["id"]])

    before = await events()
    forged = {
        "another key": fake.notice(key, status="SUCCESS", key=fake.impostor_key),
        "status changed": fake.tampered_status_notice(key, "SUCCESS"),
        "no sign": fake.notice(key, status="SUCCESS", tamper={"sign": ""}),
        "not RSA2": fake.notice(key, status="SUCCESS", tamper={"sign_type": "RSA"}),
        "app_id changed": fake.notice(key, status="SUCCESS", tamper={"app_id": "20210099"}),
    }
    for what, body in forged.items():
        answer = await client.post(CALLBACKS, content=body)
        assert answer.status_code == 401, (what, answer.text)
    shown = (await client.get(f"/v1/payouts/{paid['id']}")).json()
    assert shown["status"] == "processing"
    assert await events() == before
    assert [a.operation for a in await attempts_of(runtime.db, paid["id"])] == ["submit"]

    fake.finish(key)
    notice = fake.notice(key, notify_id="2024010100222000000000000001")
    answer = await client.post(
        CALLBACKS,
        content=notice,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    assert (answer.status_code, answer.text) == (200, "success")
    assert answer.headers["content-type"].startswith("text/plain")
    shown = (await client.get(f"/v1/payouts/{paid['id']}")).json()
    assert (shown["status"], shown["gateway_reference"]) == ("succeeded", fake.orders[key].order_id)
    before = await events()
    duplicate = await client.post(CALLBACKS, content=notice)
    assert (duplicate.status_code, duplicate.text) == (200, "success")
    assert await events() == before

    declined_key = await gateway_key(runtime, declined["id"])
    fake.orders[declined_key].error_code = "PAYER_BALANCE_NOT_ENOUGH"
    fake.finish(declined_key)
    answer = await client.post(CALLBACKS, content=fake.notice(declined_key))
    assert (answer.status_code, answer.text) == (200, "success")
    shown = (await client.get(f"/v1/payouts/{declined['id']}")).json()
    assert (shown["status"], shown["failure"]["code"]) == ("failed", "insufficient_funds")
    assert await assert_paid_exactly_once(runtime, fake.booked_states()) == {
        paid["id"]: "succeeded",
        declined["id"]: "failed",
    }


async def test_malformed_notices(gateway: AlipayGateway, fake: FakeAlipay) -> None:
    request = transfer()
    await gateway.submit(request)
    key = request.idempotency_key
    with pytest.raises(InvalidSignature):
        await gateway.parse_callback({}, b"notify_id=1&msg_method=x")
    with pytest.raises(InvalidCallback):
        await gateway.parse_callback({}, b"a=1&a=2")
    with pytest.raises(InvalidCallback):
        await gateway.parse_callback({}, "名=1".encode())
    with pytest.raises(InvalidSignature):  # every field is signed: tampering shows
        await gateway.parse_callback({}, fake.notice(key, tamper={"msg_method": "a.b.c"}))
    with pytest.raises(InvalidCallback, match="msg_method"):
        await gateway.parse_callback({}, fake.notice(key, fields={"msg_method": "a.b.c"}))
    with pytest.raises(InvalidCallback, match="another app"):
        await gateway.parse_callback({}, fake.notice(key, fields={"app_id": "2021000000000999"}))
    with pytest.raises(InvalidCallback, match="biz_content"):
        await gateway.parse_callback({}, fake.notice(key, fields={"biz_content": "[1]"}))
    notice = await gateway.parse_callback({}, fake.notice(key, notify_id="n-1"))
    assert (notice.idempotency_key, notice.notice_id) == (key, "n-1")
    assert notice.result.state is TransferState.SUCCEEDED
    assert notice.result.reference == fake.orders[key].order_id
    pending = await gateway.parse_callback({}, fake.notice(key, status="SOMETHING_NEW"))
    assert (pending.result.state, pending.result.gateway_status) == (
        TransferState.PENDING,
        "SOMETHING_NEW",
    )


# -- no secrets or account numbers leak ----------------------------------------------------------


async def test_no_key_or_full_account_in_logs_or_answers(
    make_app: AppFactory, alipay_env: None, fake: FakeAlipay, caplog: pytest.LogCaptureFixture
) -> None:
    fake.scripts["10.01"] = Script(fault=Fault.BAD_SIGNATURE)  # logs a warning
    fake.scripts["10.02"] = Script.decline("PAYEE_NOT_EXIST")  # logs the failure
    fake.scripts["10.03"] = Script(fault=Fault.CUT)
    app, client = await provider_app(
        make_app, gateway="alipay", recipient_type="alipay", log_level="DEBUG"
    )
    # The app's logging setup replaced the root handlers: capture again, rendered the way
    # the service renders its log lines.
    root = logging.getLogger()
    caplog.handler.setFormatter(root.handlers[0].formatter)
    root.addHandler(caplog.handler)
    try:
        runtime = app.state.runtime
        accounts = ["13912345678", "wang.fang@example.com", "2088000011112222"]
        payouts = [
            await approved_payout_to(
                client, runtime, {"type": "alipay", "account": a, "name": "王芳"}, amount, "CNY"
            )
            for a, amount in zip(accounts, ("10.01", "10.02", "10.03"), strict=True)
        ]
        await drain_all(runtime)
        answer = await client.post(CALLBACKS, content=fake.notice(next(iter(fake.orders))))
        assert answer.text == "success"
        shown = [(await client.get(f"/v1/payouts/{p['id']}")).json() for p in payouts]
        stored = [
            {"request": a.request, "error": a.error, "status": a.gateway_status}
            for p in payouts
            for a in await attempts_of(runtime.db, p["id"])
        ]
    finally:
        root.removeHandler(caplog.handler)
    texts = {
        "logs": caplog.text,
        "payouts": json.dumps(shown, ensure_ascii=False),
        "attempts": json.dumps(stored, ensure_ascii=False, default=str),
    }
    # The logs were really captured, with the adapter's own lines among them.
    assert "alipay.response.unverified" in texts["logs"]
    assert "gateway.callback" in texts["logs"]
    secrets = private_pem(APP_KEY).splitlines()[1:-1]  # every line of the key's body
    for where, text in texts.items():
        for account in accounts:
            assert account not in text, (where, account)
        for secret in secrets:
            assert secret not in text, where
    assert re.search(r"139\*+5678", texts["payouts"])  # masked accounts are still shown


# -- certificate serial numbers -----------------------------------------------------------------


def _self_signed(
    name: x509.Name, key: Any, algorithm: hashes.HashAlgorithm, serial: int
) -> x509.Certificate:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, algorithm)
    )


def test_the_issuer_is_written_as_java_writes_it() -> None:
    """Java's X500Principal.getName() (RFC 2253) is what Alipay hashes: last RDN first, no
    spaces, ',' '+' '=' '#' escaped, edge spaces escaped, multi-valued RDNs joined by '+',
    attributes without an RFC 2253 keyword (emailAddress) as OID=#hex of their DER."""
    issuer = x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN")]),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iTrus Co.,Ltd.")]
            ),
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "支付"),
                    x509.NameAttribute(NameOID.LOCALITY_NAME, "A+B"),
                ]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.COMMON_NAME, " Root #1 = R1 ")]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.EMAIL_ADDRESS, "ca@example.com")]
            ),
        ]
    )
    certificate = _self_signed(issuer, CA_KEY, hashes.SHA256(), 2**70 + 5)
    email_der = bytes([0x16, len("ca@example.com")]) + b"ca@example.com"  # IA5String
    expected_issuer = (
        f"1.2.840.113549.1.9.1=#{email_der.hex()},"
        "CN=\\ Root \\#1 \\= R1\\ ,"
        "L=A\\+B+OU=支付,"  # a multi-valued RDN in its DER (sorted SET) order
        "O=iTrus Co.\\,Ltd.,"
        "C=CN"
    )
    expected = hashlib.md5((expected_issuer + str(2**70 + 5)).encode()).hexdigest()
    assert cert_sn(pem_of(certificate)) == expected


def test_the_root_sn_joins_the_rsa_signed_roots_in_file_order() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Root {n}")]) for n in range(3)]
    first = _self_signed(names[0], CA_KEY, hashes.SHA512(), 11)  # any RSA digest counts
    skipped = _self_signed(names[1], ec_key, hashes.SHA256(), 12)  # ecdsa-with-SHA256
    last = _self_signed(names[2], CA_KEY, hashes.SHA256(), 13)
    sn = lambda dn, serial: hashlib.md5(f"{dn}{serial}".encode()).hexdigest()  # noqa: E731
    assert (
        root_cert_sn(pem_of(first, skipped, last)) == f"{sn('CN=Root 0', 11)}_{sn('CN=Root 2', 13)}"
    )
    # A file whose first certificate is the leaf: cert_sn reads that one, as the SDKs do.
    assert cert_sn(pem_of(last, first)) == sn("CN=Root 2", 13)


# -- certificate mode ---------------------------------------------------------------------------


@pytest.fixture
def cert_fake() -> FakeAlipay:
    return FakeAlipay(
        app_id=APP_ID,
        app_public_key=APP_KEY.public_key(),
        key=ALIPAY_KEY,
        impostor_key=IMPOSTOR_KEY,
        certificates=CERTS,
        rotated_key=ROTATED_KEY,
    )


@pytest.fixture
async def cert_gateway_url(cert_fake: FakeAlipay) -> AsyncIterator[str]:
    async with serve_asgi(cert_fake.app) as base_url:
        yield f"{base_url}/gateway.do"
        cert_fake.release()


def cert_settings(gateway_url: str, **overrides: Any) -> AlipaySettings:
    values: dict[str, Any] = {
        "app_id": APP_ID,
        "app_private_key": SecretStr(private_pem(APP_KEY)),
        "app_cert": SecretStr(CERTS.app_cert),
        "alipay_cert": SecretStr(CERTS.alipay_cert),
        "alipay_root_cert": SecretStr(CERTS.alipay_root_cert),
        "gateway_url": gateway_url,
        "timeout_seconds": CLIENT_TIMEOUT,
        **overrides,
    }
    return AlipaySettings(**values)


@pytest.fixture
async def cert_gateway(cert_gateway_url: str) -> AsyncIterator[AlipayGateway]:
    adapter = AlipayGateway.from_settings(cert_settings(cert_gateway_url))
    yield adapter
    await adapter.aclose()


async def test_certificate_mode_requests_carry_the_certificate_sns(
    cert_gateway: AlipayGateway, cert_fake: FakeAlipay
) -> None:
    request = transfer()
    result = await cert_gateway.submit(request)
    assert result.state is TransferState.SUCCEEDED
    assert (await cert_gateway.get_status(request.idempotency_key)).state is (
        TransferState.SUCCEEDED
    )
    assert cert_fake.refused == []  # both calls passed the SN and signature checks
    for params in cert_fake.requests:
        assert params["app_cert_sn"] == CERTS.app_cert_sn
        assert params["alipay_root_cert_sn"] == CERTS.alipay_root_cert_sn
    # Alipay's answers named the certificate they were signed with.
    assert all(f'"alipay_cert_sn": "{CERTS.alipay_cert_sn}"' in a for a in cert_fake.raw_answers)


async def test_the_fake_refuses_fund_requests_without_the_right_certificate_sns(
    cert_fake: FakeAlipay, cert_gateway_url: str
) -> None:
    """What Alipay answers a public-key-mode transfer, or SNs it does not hold."""
    right = CertificateMode.from_pem(
        app_cert=CERTS.app_cert,
        alipay_cert=CERTS.alipay_cert,
        alipay_root_cert=CERTS.alipay_root_cert,
    )
    cases = {
        None: "isv.missing-app-cert-sn",  # public-key mode
        replace(right, app_cert_sn="0" * 32): "isv.app-cert-not-exist",
        replace(right, alipay_root_cert_sn="0" * 32): "isv.invalid-alipay-root-cert-sn",
    }
    for certificates, sub_code in cases.items():
        adapter = AlipayGateway(
            app_id=APP_ID,
            app_private_key=APP_KEY,
            alipay_public_key=ALIPAY_KEY.public_key(),
            gateway_url=cert_gateway_url,
            timeout_seconds=CLIENT_TIMEOUT,
            certificates=certificates,
        )
        try:
            with pytest.raises(NotDone) as refused:  # refused before any processing
                await adapter.submit(transfer())
        finally:
            await adapter.aclose()
        assert refused.value.gateway_status == sub_code
    assert cert_fake.refused == list(cases.values())
    assert cert_fake.booked == {}


async def test_an_answer_signed_by_an_unconfigured_alipay_certificate_is_unknown(
    cert_gateway: AlipayGateway, cert_fake: FakeAlipay, caplog: pytest.LogCaptureFixture
) -> None:
    """Alipay rotated its certificate: the answer names a new SN. Not trusted (OutcomeUnknown,
    never Rejected), and the log says what to configure."""
    cert_fake.scripts["12.50"] = Script(fault=Fault.ROTATED_CERT)
    request = transfer(1250)
    with caplog.at_level(logging.ERROR), pytest.raises(OutcomeUnknown) as unknown:
        await cert_gateway.submit(request)
    assert type(unknown.value) is OutcomeUnknown
    assert unknown.value.gateway_status == "unknown_alipay_cert"
    assert CERTS.rotated_alipay_cert_sn in unknown.value.message
    assert "alipay.response.unknown_certificate" in caplog.text
    assert "PAYOUTSVC_ALIPAY_ALIPAY_CERT" in caplog.text
    # It was booked: the status query, signed with the configured certificate, says so.
    assert (await cert_gateway.get_status(request.idempotency_key)).state is (
        TransferState.SUCCEEDED
    )
    # The configured SN with another key's signature is no better.
    cert_fake.scripts["12.51"] = Script(fault=Fault.BAD_SIGNATURE)
    with pytest.raises(OutcomeUnknown) as forged:
        await cert_gateway.submit(transfer(1251))
    assert forged.value.gateway_status == "bad_signature"


async def test_certificate_mode_refuses_answers_naming_no_certificate(
    fake: FakeAlipay, gateway_url: str
) -> None:
    """An answer without alipay_cert_sn (here: a public-key-mode gateway) is unverifiable."""
    adapter = AlipayGateway.from_settings(cert_settings(gateway_url))
    try:
        with pytest.raises(OutcomeUnknown) as unknown:
            await adapter.submit(transfer())
    finally:
        await adapter.aclose()
    assert unknown.value.gateway_status == "no_alipay_cert_sn"


def test_certificate_mode_settings(tmp_path: Path) -> None:
    files = {}
    for name in ("app_cert", "alipay_cert", "alipay_root_cert"):
        files[name] = tmp_path / f"{name}.crt"
        files[name].write_text(getattr(CERTS, name))
    from_files = AlipaySettings(
        app_id=APP_ID,
        app_private_key=SecretStr(private_pem(APP_KEY)),
        # Alipay's public key is ignored in certificate mode: the certificate carries it.
        public_key=SecretStr(pem_body(public_pem(IMPOSTOR_KEY))),
        app_cert_file=files["app_cert"],
        alipay_cert_file=files["alipay_cert"],
        alipay_root_cert_file=files["alipay_root_cert"],
    )
    for settings in (from_files, cert_settings("http://127.0.0.1:9/gateway.do")):
        adapter = AlipayGateway.from_settings(settings)
        assert adapter.certificates == CertificateMode(
            app_cert_sn=CERTS.app_cert_sn,
            alipay_root_cert_sn=CERTS.alipay_root_cert_sn,
            alipay_cert_sn=CERTS.alipay_cert_sn,
        )
    # Half-configured certificate mode waits for the rest, never falls back to public keys.
    half = cert_settings(
        "http://127.0.0.1:9/gateway.do",
        alipay_root_cert=None,
        public_key=SecretStr(pem_body(public_pem(ALIPAY_KEY))),
    )
    with pytest.raises(MissingCredential, match="PAYOUTSVC_ALIPAY_ALIPAY_ROOT_CERT"):
        AlipayGateway.from_settings(half)
    with pytest.raises(MissingCredential, match="PAYOUTSVC_ALIPAY_APP_CERT"):
        AlipayGateway.from_settings(
            cert_settings("http://127.0.0.1:9/gateway.do", app_cert=SecretStr(""))
        )
    # The app certificate of another key would make every request fail Alipay's check.
    with pytest.raises(MissingCredential, match="not the certificate of"):
        AlipayGateway.from_settings(
            cert_settings("http://127.0.0.1:9/gateway.do", app_cert=SecretStr(CERTS.alipay_cert))
        )
    with pytest.raises(MissingCredential, match="cannot be read"):
        AlipayGateway.from_settings(
            cert_settings("http://127.0.0.1:9/gateway.do", alipay_cert=SecretStr("not a cert"))
        )
    # Without certificates: public-key mode, as before.
    plain = AlipayGateway.from_settings(
        AlipaySettings(
            app_id=APP_ID,
            app_private_key=SecretStr(private_pem(APP_KEY)),
            public_key=SecretStr(pem_body(public_pem(ALIPAY_KEY))),
        )
    )
    assert plain.certificates is None


# -- notices: both signing contents ----------------------------------------------------------------


async def test_notices_verify_with_or_without_sign_type_and_skip_empty_values(
    gateway: AlipayGateway, fake: FakeAlipay
) -> None:
    request = transfer()
    await gateway.submit(request)
    key = request.idempotency_key
    bodies = {
        "without sign_type": fake.notice(key),
        "with sign_type": fake.notice(key, sign_type_signed=True),
        "an empty field, not signed": fake.notice(key, fields={"auth_app_id": ""}),
        "both": fake.notice(key, fields={"auth_app_id": ""}, sign_type_signed=True),
        "an empty field, signed (Java's V1 content)": fake.notice(
            key, fields={"auth_app_id": ""}, empty_values_signed=True
        ),
    }
    for what, body in bodies.items():
        notice = await gateway.parse_callback({}, body)
        assert notice.result.state is TransferState.SUCCEEDED, what
    # Still every non-empty field is covered: tampering shows in either content.
    for sign_type_signed in (False, True):
        tampered = fake.notice(key, sign_type_signed=sign_type_signed, tamper={"version": "9"})
        with pytest.raises(InvalidSignature):
            await gateway.parse_callback({}, tampered)
    with pytest.raises(InvalidSignature):  # a value filled in after signing
        await gateway.parse_callback(
            {}, fake.notice(key, fields={"auth_app_id": ""}, tamper={"auth_app_id": "x"})
        )


async def test_certificate_mode_notices_verify_with_the_configured_certificate(
    cert_gateway: AlipayGateway, cert_fake: FakeAlipay
) -> None:
    request = transfer()
    await cert_gateway.submit(request)
    key = request.idempotency_key
    notice = await cert_gateway.parse_callback({}, cert_fake.notice(key, sign_type_signed=True))
    assert notice.result.state is TransferState.SUCCEEDED
    for other in (IMPOSTOR_KEY, ROTATED_KEY):
        with pytest.raises(InvalidSignature):
            await cert_gateway.parse_callback({}, cert_fake.notice(key, key=other))


# -- DEALING is a provider hold -----------------------------------------------------------------


async def test_dealing_is_a_hold_with_configurable_patience(
    fake: FakeAlipay, gateway_url: str, gateway: AlipayGateway
) -> None:
    fake.scripts["12.50"] = Script(status="DEALING", then="SUCCESS", polls=100)
    request = transfer(1250)
    default = ProviderHold(reason="DEALING", patience=timedelta(hours=48))
    submitted = await gateway.submit(request)
    assert (submitted.state, submitted.hold) == (TransferState.PENDING, default)
    assert (await gateway.get_status(request.idempotency_key)).hold == default
    notice = await gateway.parse_callback({}, fake.notice(request.idempotency_key))
    assert (notice.result.state, notice.result.hold) == (TransferState.PENDING, default)
    # PAYOUTSVC_ALIPAY_DEALING_PATIENCE_HOURS
    configured = AlipayGateway.from_settings(
        AlipaySettings(
            app_id=APP_ID,
            app_private_key=SecretStr(private_pem(APP_KEY)),
            public_key=SecretStr(fake.alipay_public_pem),
            gateway_url=gateway_url,
            dealing_patience_hours=6,
        )
    )
    try:
        held = await configured.get_status(request.idempotency_key)
    finally:
        await configured.aclose()
    assert held.hold == ProviderHold(reason="DEALING", patience=timedelta(hours=6))
    # Other in-flight states are no hold; finished ones never are.
    order = fake.orders[request.idempotency_key]
    for status in ("INIT", "WAIT_PAY", "SUCCESS", "FAIL"):
        order.status = status
        assert (await gateway.get_status(request.idempotency_key)).hold is None, status


# -- certificate mode through the real executor ----------------------------------------------------


@pytest.fixture
def alipay_cert_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cert_fake: FakeAlipay, cert_gateway_url: str
) -> None:
    """Certificate mode from the environment: certificates as files, no Alipay public key."""
    key_file = tmp_path / "app_private_key.pem"
    key_file.write_text(private_pem(APP_KEY))
    monkeypatch.setenv("PAYOUTSVC_ALIPAY_APP_ID", APP_ID)
    monkeypatch.setenv("PAYOUTSVC_ALIPAY_APP_PRIVATE_KEY_FILE", str(key_file))
    for name in ("app_cert", "alipay_cert", "alipay_root_cert"):
        path = tmp_path / f"{name}.crt"
        path.write_text(getattr(CERTS, name))
        monkeypatch.setenv(f"PAYOUTSVC_ALIPAY_{name.upper()}_FILE", str(path))
    monkeypatch.setenv("PAYOUTSVC_ALIPAY_GATEWAY_URL", cert_gateway_url)
    monkeypatch.setenv("PAYOUTSVC_ALIPAY_TIMEOUT_SECONDS", str(CLIENT_TIMEOUT))


CERT_FAULTS: dict[str, Case] = {
    "success": Case(Script(), "succeeded"),
    "rotated-cert-answer-after-booking": Case(
        Script(fault=Fault.ROTATED_CERT), "succeeded", first_answer="unknown_alipay_cert"
    ),
    "rotated-cert-answer-before-booking": Case(
        Script(fault=Fault.ROTATED_CERT, fault_books=False),
        "succeeded",
        first_answer="unknown_alipay_cert",
    ),
    "pending-then-success": Case(
        Script(status="DEALING", then="SUCCESS", polls=2), "succeeded", first_answer="DEALING"
    ),
    "declined-account": Case(
        Script.decline("PAYEE_NOT_EXIST"),
        "failed",
        "recipient_account_invalid",
        booked=(),
        first_answer="PAYEE_NOT_EXIST",
    ),
}


async def test_certificate_mode_through_the_executor_pays_exactly_once(
    make_app: AppFactory, alipay_cert_env: None, cert_fake: FakeAlipay
) -> None:
    app, client = await provider_app(make_app, gateway="alipay", recipient_type="alipay")
    runtime = app.state.runtime
    payout_of: dict[str, dict[str, Any]] = {}
    open_id = "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5"
    for n, (fault, case) in enumerate(CERT_FAULTS.items(), start=1):
        amount = f"10.{n:02d}"
        cert_fake.scripts[amount] = case.script
        recipient = {**RECIPIENT, "account": open_id if n == 1 else f"1390000{n:04d}"}
        payout_of[fault] = await approved_payout_to(client, runtime, recipient, amount, "CNY")

    final = await drain_all(runtime)

    ledger = cert_fake.booked_states()
    assert await assert_paid_exactly_once(runtime, ledger) == final
    assert cert_fake.refused == []  # every request carried the right SNs
    for fault, case in CERT_FAULTS.items():
        payout = payout_of[fault]
        shown = (await client.get(f"/v1/payouts/{payout['id']}")).json()
        key = await gateway_key(runtime, payout["id"])
        assert (shown["status"], (shown["failure"] or {}).get("code")) == (
            case.status,
            case.failure_code,
        ), fault
        assert tuple(ledger.get(key, [])) == case.booked, fault
        attempts = await attempts_of(runtime.db, payout["id"])
        assert attempts[0].gateway_status == case.first_answer, fault
    open_id_payee = cert_fake.biz_contents(TRANSFER)[0]["payee_info"]
    assert open_id_payee["identity_type"] == "ALIPAY_OPEN_ID"


# -- DEALING through the real executor: a hold, not an unknown outcome ---------------------------

HOLD_CHECK_SECONDS = 600.0
PATIENCE_HOURS = 2


async def test_dealing_is_held_on_the_slow_schedule_until_alipays_patience_runs_out(
    make_app: AppFactory,
    alipay_env: None,
    fake: FakeAlipay,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three payouts Alipay answers DEALING: one stays DEALING (needs_review only once the
    configured patience has passed, never after the quick retry schedule), one finishes
    after more status checks than the retry schedule has steps, one is settled by Alipay's
    notice in the middle of its hold. At most one booking each."""
    monkeypatch.setenv("PAYOUTSVC_ALIPAY_DEALING_PATIENCE_HOURS", str(PATIENCE_HOURS))
    fake.scripts["10.01"] = Script(status="DEALING", then="SUCCESS", polls=10**6)  # stuck
    fake.scripts["10.02"] = Script(status="DEALING", then="SUCCESS", polls=9)  # > 6 retries
    fake.scripts["10.03"] = Script(status="DEALING", then="SUCCESS", polls=10**6)  # notice
    app, client = await provider_app(
        make_app,
        gateway="alipay",
        recipient_type="alipay",
        executor_hold_check_seconds=HOLD_CHECK_SECONDS,
    )
    runtime = app.state.runtime
    stuck, slow, noticed = [
        await approved_payout_to(client, runtime, RECIPIENT, amount, "CNY")
        for amount in ("10.01", "10.02", "10.03")
    ]
    executor, clock, gateways = executor_for(runtime)
    started = clock.now
    deadline = started + timedelta(hours=PATIENCE_HOURS)
    try:
        assert await executor.run_once() == 3
        rows = await payout_rows(runtime.db)
        for payout in (stuck, slow, noticed):
            row = rows[payout["id"]]
            assert (row.status, row.gateway_status) == ("processing", "DEALING")
            # The slow schedule (give or take the executor's jitter), not the 1 s retries.
            assert row.next_attempt_at - clock.now >= timedelta(seconds=HOLD_CHECK_SECONDS / 2)
            assert abs(row.gateway_hold_until - deadline) < timedelta(seconds=5)
        shown = (await client.get(f"/v1/payouts/{stuck['id']}")).json()
        assert shown["gateway_hold_until"] is not None

        checks = 0
        while (await payout_rows(runtime.db))[stuck["id"]].status == "processing":
            due = min(
                r.next_attempt_at
                for r in (await payout_rows(runtime.db)).values()
                if r.status == "processing" and r.next_attempt_at is not None
            )
            clock.now = max(clock.now, due)
            await executor.run_once()
            checks += 1
            if checks == 3:  # Alipay finishes the third one and says so
                key = await gateway_key(runtime, noticed["id"])
                fake.finish(key)
                answer = await client.post(CALLBACKS, content=fake.notice(key))
                assert (answer.status_code, answer.text) == (200, "success")
            assert checks < 100
    finally:
        await gateways.aclose()

    final = {
        p["id"]: (await client.get(f"/v1/payouts/{p['id']}")).json() for p in (stuck, slow, noticed)
    }
    assert final[slow["id"]]["status"] == "succeeded"
    assert final[noticed["id"]]["status"] == "succeeded"
    assert final[stuck["id"]]["status"] == "needs_review"
    assert clock.now >= deadline  # not before Alipay's patience ran out
    review = (await events_by_payout(runtime.db))[stuck["id"]][-1]
    assert (review.type, review.data["reason"]) == (
        "payout.needs_review",
        "provider_deadline_passed",
    )
    # Far more status checks than the unknown-outcome schedule (6 steps) would have allowed.
    assert len(await attempts_of(runtime.db, stuck["id"])) > 6
    ledger = fake.booked_states()
    await assert_paid_exactly_once(runtime, ledger)
    for payout in (stuck, slow, noticed):
        assert len(ledger[await gateway_key(runtime, payout["id"])]) == 1
