"""The WeChat Pay merchant-transfer adapter against a fake WeChat Pay on loopback.

Unit-level tests drive the adapter directly; the executor tests drive payouts through the
real executor and the callback endpoint, and end with the exactly-once checks against the
fake's own ledger.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

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
from payoutsvc.gateways.wechatpay import (
    TRANSFER_PATH,
    WechatPayConfig,
    WechatPayGateway,
    WechatPaySettings,
    config_from,
    create_gateway,
)
from payoutsvc.runtime import Runtime
from tests.executor.conftest import AppFactory
from tests.executor.support import attempts_of, payout_rows
from tests.gateways.fake_wechatpay import FakeWechatPay, Plan, WechatKeys, serve_fake
from tests.gateways.harness import (
    approved_payout_to,
    assert_paid_exactly_once,
    drain_all,
    executor_for,
    provider_app,
)

ENV = "PAYOUTSVC_WECHATPAY_"
DESCRIPTION = "Price difference refund for order 9931 (ticket 48213)"
_AUTH_HEADER = re.compile(
    r'^WECHATPAY2-SHA256-RSA2048 mchid="(?P<mchid>\d+)",nonce_str="(?P<nonce>\w+)",'
    r'signature="(?P<signature>[A-Za-z0-9+/=]+)",timestamp="(?P<ts>\d+)",'
    r'serial_no="(?P<serial>\w+)"$'
)


@pytest.fixture(scope="module")
def keys() -> WechatKeys:
    return WechatKeys.generate()


@pytest.fixture(scope="module")
def intruder() -> WechatKeys:
    """Keys of someone who is neither the merchant nor WeChat Pay."""
    return WechatKeys.generate()


def new_openid() -> str:
    return "o" + uuid.uuid4().hex[:27]  # 28 characters, as WeChat's openids


def new_key() -> str:
    return uuid.uuid4().hex


def set_env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    keys: WechatKeys,
    base_url: str,
    *,
    files: bool = True,
    timeout: float = 0.3,
    private_key_pem: str | None = None,
) -> None:
    """The adapter's credentials, as files (the ``_FILE`` variants) or inline."""
    private_pem = private_key_pem or keys.merchant_private_pem
    monkeypatch.setenv(ENV + "MCHID", keys.mchid)
    monkeypatch.setenv(ENV + "MERCHANT_SERIAL_NO", keys.merchant_serial_no)
    monkeypatch.setenv(ENV + "PUBLIC_KEY_ID", keys.public_key_id)
    monkeypatch.setenv(ENV + "BASE_URL", base_url)
    monkeypatch.setenv(ENV + "TIMEOUT_SECONDS", str(timeout))
    secrets = {
        "PRIVATE_KEY": private_pem,
        "APIV3_KEY": keys.apiv3_key,
        "PUBLIC_KEY": keys.platform_public_pem,
    }
    for name, value in secrets.items():
        if files:
            path = tmp_path / f"wechatpay_{name.lower()}.pem"
            path.write_text(value + "\n", encoding="utf-8")
            monkeypatch.setenv(ENV + name + "_FILE", str(path))
        else:
            monkeypatch.setenv(ENV + name, value)


@dataclass
class Wx:
    fake: FakeWechatPay
    gateway: WechatPayGateway
    keys: WechatKeys
    base_url: str = ""

    def transfer(
        self,
        amount_minor: int = 1234,
        *,
        currency: str = "CNY",
        key: str | None = None,
        openid: str | None = None,
        name: str | None = "张三",
        description: str | None = DESCRIPTION,
    ) -> TransferRequest:
        return TransferRequest(
            payout_id="po_test",
            idempotency_key=key or new_key(),
            amount_minor=amount_minor,
            currency=currency,
            recipient={
                "type": "wechat",
                "account": openid or new_openid(),
                "name": name,
                "app_id": self.keys.app_id,
            },
            description=description,
        )


@pytest.fixture(scope="module")
def base_config(keys: WechatKeys, tmp_path_factory: pytest.TempPathFactory) -> WechatPayConfig:
    """The adapter's configuration read from the environment (``_FILE`` variants) once per
    module: loading an RSA private key validates it, a noticeable cost per test."""
    with pytest.MonkeyPatch.context() as patch:
        set_env(patch, tmp_path_factory.mktemp("wechatpay"), keys, "http://unused")
        return config_from(WechatPaySettings())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(
    keys: WechatKeys, base_config: WechatPayConfig
) -> AsyncIterator[tuple[FakeWechatPay, WechatPayGateway, str]]:
    """One fake server and one adapter for the unit tests: a uvicorn shutdown costs ~0.2 s
    and a new httpx client (its TLS context) ~0.1 s; the adapter keeps no state between
    calls, and the fake is reset before each test."""
    fake = FakeWechatPay(keys)
    async with serve_fake(fake) as base_url:
        gateway = WechatPayGateway(replace(base_config, base_url=base_url))
        try:
            yield fake, gateway, base_url
        finally:
            await gateway.aclose()


@pytest.fixture
def wx(keys: WechatKeys, shared: tuple[FakeWechatPay, WechatPayGateway, str]) -> Wx:
    fake, gateway, base_url = shared
    fake.reset()
    return Wx(fake, gateway, keys, base_url)


# Unit tests share the module's event loop, where the shared fake server runs.
unit = pytest.mark.asyncio(loop_scope="module")


def decrypt_oaep_sha1(key: rsa.RSAPrivateKey, value: str) -> str:
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    return key.decrypt(base64.b64decode(value), oaep).decode()


# -- requests ------------------------------------------------------------------------------
@unit
async def test_submit_sends_a_signed_transfer_with_the_documented_fields(wx: Wx) -> None:
    request = wx.transfer(1234)
    result = await wx.gateway.submit(request)

    [seen] = wx.fake.submits()
    assert seen.signature_ok
    assert seen.path == TRANSFER_PATH
    auth = _AUTH_HEADER.match(seen.headers["authorization"])
    assert auth is not None, seen.headers["authorization"]
    assert auth["mchid"] == wx.keys.mchid
    assert auth["serial"] == wx.keys.merchant_serial_no
    assert abs(int(auth["ts"]) - time.time()) < 60
    assert seen.headers["accept"] == "application/json"
    assert "wechatpay-serial" not in seen.headers  # nothing encrypted below 2000 CNY
    body = seen.json()
    assert body == {
        "appid": wx.keys.app_id,
        "out_bill_no": request.idempotency_key,
        "transfer_scene_id": "1000",
        "openid": request.recipient["account"],
        "transfer_amount": 1234,
        "transfer_remark": DESCRIPTION[:32],
        "transfer_scene_report_infos": [
            {"info_type": "活动名称", "info_content": "客服工单补偿"},
            {"info_type": "奖励说明", "info_content": "客服处理工单时发放的补偿款"},
        ],
    }
    bill = wx.fake.bills[request.idempotency_key]
    assert result.state is TransferState.PENDING
    assert result.gateway_status == "WAIT_USER_CONFIRM"
    assert result.reference == bill.transfer_bill_no
    assert result.details == {
        "package_info": bill.package_info,
        "mch_id": wx.keys.mchid,
        "app_id": wx.keys.app_id,
    }


@unit
@pytest.mark.parametrize(
    ("amount_minor", "description", "remark"),
    [
        (30, None, "客服补偿"),  # the smallest WeChat transfer; the default remark
        (1234, "  line one\n line two  ", "line one line two"),
        (99_999_99, "x" * 40, "x" * 32),
    ],
)
async def test_amount_in_fen_and_remark_limits(
    wx: Wx, amount_minor: int, description: str | None, remark: str
) -> None:
    request = wx.transfer(amount_minor, description=description, name="李四")
    await wx.gateway.submit(request)
    bill = wx.fake.bills[request.idempotency_key]
    assert (bill.amount, bill.remark) == (amount_minor, remark)


@unit
async def test_user_name_is_encrypted_with_the_platform_key_from_2000_cny(wx: Wx) -> None:
    request = wx.transfer(200_000, name="张三")
    await wx.gateway.submit(request)
    [seen] = wx.fake.submits()
    encrypted = seen.json()["user_name"]
    assert "张三" not in encrypted
    assert decrypt_oaep_sha1(wx.keys.platform, encrypted) == "张三"
    assert seen.headers["wechatpay-serial"] == wx.keys.public_key_id
    assert wx.fake.bills[request.idempotency_key].user_name == "张三"
    # Just below the threshold the name is not sent (nor required).
    small = wx.transfer(199_999, name="张三")
    await wx.gateway.submit(small)
    assert "user_name" not in wx.fake.submits()[-1].json()


@unit
@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"currency": "USD"}, "currency_not_supported"),
        ({"amount_minor": 29}, "amount_out_of_range"),
        ({"openid": "not an openid!"}, "recipient_account_invalid"),
        ({"key": "key-with-dashes-is-no-bill-number"}, "invalid_idempotency_key"),
        ({"amount_minor": 200_000, "name": None}, "recipient_name_required"),
    ],
)
async def test_local_refusals_send_nothing(wx: Wx, overrides: dict[str, Any], code: str) -> None:
    with pytest.raises(Rejected) as refused:
        await wx.gateway.submit(wx.transfer(**overrides))
    assert refused.value.code == code
    assert wx.fake.requests == []


@unit
async def test_the_fake_refuses_a_bad_merchant_signature(
    wx: Wx, base_config: WechatPayConfig, intruder: WechatKeys
) -> None:
    # A body other than the one signed.
    signed_for = b'{"out_bill_no":"a"}'
    async with httpx.AsyncClient(base_url=wx.base_url) as http:
        answer = await http.post(
            TRANSFER_PATH,
            content=b'{"out_bill_no":"b"}',
            headers={
                "Authorization": wx.gateway.authorization("POST", TRANSFER_PATH, signed_for),
                "Content-Type": "application/json",
                "User-Agent": "test",
            },
        )
    assert answer.status_code == 401
    assert answer.json()["code"] == "SIGN_ERROR"
    # An adapter holding another merchant key: refused, nothing booked, never trusted.
    impostor = WechatPayGateway(
        replace(base_config, base_url=wx.base_url, private_key=intruder.merchant)
    )
    try:
        with pytest.raises(OutcomeUnknown, match="401 SIGN_ERROR"):
            await impostor.submit(wx.transfer())
    finally:
        await impostor.aclose()
    assert wx.fake.bad_signatures == 2
    assert wx.fake.ledger == []


# -- answers -------------------------------------------------------------------------------
@unit
@pytest.mark.parametrize("fault", ["bad_signature", "unsigned", "wrong_serial"])
async def test_an_answer_that_does_not_verify_is_never_trusted(wx: Wx, fault: str) -> None:
    request = wx.transfer()
    wx.fake.plan(
        request.recipient["account"] or "",
        Plan(initial_state="SUCCESS", submit_faults=[fault], query_faults=[fault]),
    )
    with pytest.raises(OutcomeUnknown) as unknown:
        await wx.gateway.submit(request)
    assert unknown.value.gateway_status == "unverified"
    assert wx.fake.booked_states() == {request.idempotency_key: ["succeeded"]}
    with pytest.raises(OutcomeUnknown):
        await wx.gateway.get_status(request.idempotency_key)
    # A signed answer settles it.
    found = await wx.gateway.get_status(request.idempotency_key)
    assert found.state is TransferState.SUCCEEDED


@unit
async def test_a_not_found_answer_must_be_signed_too(wx: Wx) -> None:
    wx.fake.next_query_faults = ["unsigned"]
    with pytest.raises(OutcomeUnknown):
        await wx.gateway.get_status(new_key())
    found = await wx.gateway.get_status(new_key())
    assert (found.state, found.gateway_status) == (TransferState.NOT_FOUND, "NOT_FOUND")


@unit
@pytest.mark.parametrize(
    ("state", "fail_reason", "expected", "failure_code"),
    [
        ("ACCEPTED", None, TransferState.PENDING, None),
        ("PROCESSING", None, TransferState.PENDING, None),
        ("WAIT_USER_CONFIRM", None, TransferState.PENDING, None),
        ("TRANSFERING", None, TransferState.PENDING, None),
        ("CANCELING", None, TransferState.PENDING, None),
        ("A_STATE_ADDED_LATER", None, TransferState.PENDING, None),
        ("SUCCESS", None, TransferState.SUCCEEDED, None),
        ("FAIL", "NAME_NOT_CORRECT", TransferState.FAILED, "recipient_name_mismatch"),
        ("FAIL", "OPENID_INVALID", TransferState.FAILED, "recipient_account_invalid"),
        ("FAIL", "ACCOUNT_FROZEN", TransferState.FAILED, "recipient_account_invalid"),
        ("FAIL", "TRANSFER_QUOTA_EXCEED", TransferState.FAILED, "amount_out_of_range"),
        ("FAIL", "DAY_RECEIVED_QUOTA_EXCEED", TransferState.FAILED, "recipient_limit_exceeded"),
        ("FAIL", "OVERDUE_CLOSE", TransferState.FAILED, "transfer_expired"),
        ("FAIL", "SOMETHING_NEW", TransferState.FAILED, "gateway_declined"),
        ("FAIL", None, TransferState.FAILED, "gateway_declined"),
        ("CANCELLED", "MCH_CANCEL", TransferState.FAILED, "transfer_canceled"),
        ("CANCELLED", None, TransferState.FAILED, "transfer_canceled"),
    ],
)
async def test_each_wechat_state_maps_to_ours(
    wx: Wx,
    state: str,
    fail_reason: str | None,
    expected: TransferState,
    failure_code: str | None,
) -> None:
    request = wx.transfer()
    submitted = await wx.gateway.submit(request)
    wx.fake.set_state(request.idempotency_key, state, fail_reason)
    found = await wx.gateway.get_status(request.idempotency_key, reference=submitted.reference)
    assert (found.state, found.gateway_status, found.failure_code) == (
        expected,
        state,
        failure_code,
    )
    assert found.reference == submitted.reference
    if fail_reason and expected is TransferState.FAILED:
        assert found.failure_message is not None
        assert fail_reason in found.failure_message


@unit
async def test_a_transfer_failed_at_once_is_failed(wx: Wx) -> None:
    request = wx.transfer()
    wx.fake.plan(
        request.recipient["account"] or "",
        Plan(initial_state="FAIL", fail_reason="REAL_NAME_CHECK_FAIL"),
    )
    result = await wx.gateway.submit(request)
    assert (result.state, result.failure_code) == (
        TransferState.FAILED,
        "recipient_account_invalid",
    )


@unit
async def test_duplicate_submit_returns_the_same_transfer(wx: Wx) -> None:
    request = wx.transfer(250_000, name="王五")  # the encrypted name differs every time
    first = await wx.gateway.submit(request)
    again = await wx.gateway.submit(request)
    assert again.reference == first.reference
    assert again.details == first.details
    assert wx.fake.booked_states() == {request.idempotency_key: ["pending"]}
    assert len(wx.fake.submits()) == 2


@unit
async def test_a_reused_number_with_other_parameters_resolves_to_the_existing_bill(
    wx: Wx,
) -> None:
    request = wx.transfer()
    first = await wx.gateway.submit(request)
    changed = TransferRequest(
        payout_id=request.payout_id,
        idempotency_key=request.idempotency_key,
        amount_minor=request.amount_minor,
        currency="CNY",
        recipient=request.recipient,
        description="another remark",
    )
    found = await wx.gateway.submit(changed)  # 400 INVALID_REQUEST, then the query
    assert (found.state, found.reference) == (TransferState.PENDING, first.reference)
    assert len(wx.fake.queries()) == 1
    assert len(wx.fake.ledger) == 1


@unit
@pytest.mark.parametrize(
    ("fault", "error", "code", "booked"),
    [
        ("error:403:NOT_ENOUGH", Rejected, "insufficient_funds", False),
        ("error:400:PARAM_ERROR", Rejected, "gateway_declined", False),
        ("error:403:NO_AUTH", Rejected, "gateway_declined", False),
        ("error:400:APPID_MCHID_NOT_MATCH", Rejected, "gateway_declined", False),
        ("429", NotDone, None, False),
        ("500", OutcomeUnknown, None, False),
        ("500_after_booking", OutcomeUnknown, None, True),
        ("unknown_error", OutcomeUnknown, None, False),
        ("timeout_after_booking", OutcomeUnknown, None, True),
    ],
)
async def test_error_answers_map_to_what_the_executor_may_do(
    wx: Wx, fault: str, error: type[Exception], code: str | None, booked: bool
) -> None:
    request = wx.transfer()
    wx.fake.plan(request.recipient["account"] or "", Plan(submit_faults=[fault]))
    with pytest.raises(error) as raised:
        await wx.gateway.submit(request)
    if code is not None:
        assert isinstance(raised.value, Rejected)
        assert raised.value.code == code
        # A refusal is final only once a query shows no bill under the number.
        assert [q.path.rsplit("/", 1)[-1] for q in wx.fake.queries()] == [request.idempotency_key]
    assert (request.idempotency_key in wx.fake.booked_states()) is booked


@unit
async def test_a_refusal_whose_confirming_query_fails_stays_unknown(wx: Wx) -> None:
    request = wx.transfer()
    wx.fake.plan(request.recipient["account"] or "", Plan(submit_faults=["error:403:NOT_ENOUGH"]))
    wx.fake.next_query_faults = ["500"]
    with pytest.raises(OutcomeUnknown, match="NOT_ENOUGH"):
        await wx.gateway.submit(request)


@unit
async def test_specific_refusals_from_wechat_messages(wx: Wx) -> None:
    openid = new_openid()
    wx.fake.invalid_openids.add(openid)
    with pytest.raises(Rejected) as refused:
        await wx.gateway.submit(wx.transfer(openid=openid))
    assert refused.value.code == "recipient_account_invalid"
    assert openid not in refused.value.message
    # A message quoting the openid is stored masked.
    quoting = wx.transfer()
    openid = quoting.recipient["account"] or ""
    wx.fake.plan(openid, Plan(submit_faults=["error:400:PARAM_ERROR:openid {openid} 无效"]))
    with pytest.raises(Rejected) as quoted:
        await wx.gateway.submit(quoting)
    assert quoted.value.code == "recipient_account_invalid"
    assert openid not in quoted.value.message
    assert f"openid {openid[:3]}****{openid[-4:]} 无效" in quoted.value.message
    wx.fake.balance_fen = 1000
    with pytest.raises(Rejected) as poor:
        await wx.gateway.submit(wx.transfer(1001))
    assert poor.value.code == "insufficient_funds"
    assert wx.fake.ledger == []


# -- notices -------------------------------------------------------------------------------
@unit
async def test_a_genuine_notice_is_verified_and_decrypted(wx: Wx) -> None:
    request = wx.transfer()
    submitted = await wx.gateway.submit(request)
    wx.fake.confirm(request.idempotency_key)
    body, headers = wx.fake.notice(request.idempotency_key)
    notice = await wx.gateway.parse_callback(headers, body)
    assert notice.idempotency_key == request.idempotency_key
    assert notice.notice_id == json.loads(body)["id"]
    assert (notice.result.state, notice.result.reference, notice.result.gateway_status) == (
        TransferState.SUCCEEDED,
        submitted.reference,
        "SUCCESS",
    )
    wx.fake.set_state(request.idempotency_key, "FAIL", "NAME_NOT_CORRECT")
    body, headers = wx.fake.notice(request.idempotency_key)
    failed = await wx.gateway.parse_callback(headers, body)
    assert (failed.result.state, failed.result.failure_code) == (
        TransferState.FAILED,
        "recipient_name_mismatch",
    )


@unit
@pytest.mark.parametrize(
    "forgery",
    [
        "other_key",
        "tampered_body",
        "stale",
        "future",
        "wrong_serial",
        "no_signature",
        "signtest_probe",
    ],
)
async def test_a_forged_notice_is_refused(wx: Wx, intruder: WechatKeys, forgery: str) -> None:
    request = wx.transfer()
    await wx.gateway.submit(request)
    wx.fake.confirm(request.idempotency_key)
    key = request.idempotency_key
    forgeries: dict[str, dict[str, Any]] = {
        "other_key": {"signing_key": intruder.platform},
        "tampered_body": {"tamper": True},
        "stale": {"timestamp": int(time.time()) - 301},
        "future": {"timestamp": int(time.time()) + 600},
        "wrong_serial": {"serial": "PUB_KEY_ID_0000000000000000000000000000000"},
        "no_signature": {},
        "signtest_probe": {"signature": "WECHATPAY/SIGNTEST/" + "A" * 300},
    }
    body, headers = wx.fake.notice(key, **forgeries[forgery])
    if forgery == "no_signature":
        del headers["Wechatpay-Signature"]
    with pytest.raises(InvalidSignature):
        await wx.gateway.parse_callback(headers, body)


@unit
@pytest.mark.parametrize(
    "options",
    [
        {"apiv3_key": "0" * 32},
        {"event_type": "TRANSACTION.SUCCESS"},
        {"mchid": "1234567890"},
    ],
)
async def test_a_signed_but_unusable_notice_is_invalid(wx: Wx, options: dict[str, Any]) -> None:
    request = wx.transfer()
    await wx.gateway.submit(request)
    body, headers = wx.fake.notice(request.idempotency_key, **options)
    with pytest.raises(InvalidCallback) as invalid:
        await wx.gateway.parse_callback(headers, body)
    assert not isinstance(invalid.value, InvalidSignature)


# -- configuration -------------------------------------------------------------------------
async def test_credentials_inline_and_missing(
    keys: WechatKeys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeWechatPay(keys)
    async with serve_fake(fake) as base_url:
        set_env(monkeypatch, tmp_path, keys, base_url, files=False)
        gateway = create_gateway(cast(Runtime, object()))  # the runtime is not needed
        assert isinstance(gateway, WechatPayGateway)
        try:
            result = await gateway.submit(Wx(fake, gateway, keys).transfer())
        finally:
            await gateway.aclose()
        assert result.state is TransferState.PENDING
    monkeypatch.delenv(ENV + "APIV3_KEY")
    with pytest.raises(MissingCredential, match="APIV3_KEY"):
        config_from(WechatPaySettings())
    monkeypatch.setenv(ENV + "APIV3_KEY", "too-short")
    with pytest.raises(MissingCredential, match="32"):
        config_from(WechatPaySettings())
    monkeypatch.setenv(ENV + "APIV3_KEY", keys.apiv3_key)
    monkeypatch.delenv(ENV + "PRIVATE_KEY")
    with pytest.raises(MissingCredential, match="PRIVATE_KEY"):
        config_from(WechatPaySettings())


async def test_other_scenes_need_their_report_infos(
    keys: WechatKeys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeWechatPay(keys)
    async with serve_fake(fake) as base_url:
        set_env(monkeypatch, tmp_path, keys, base_url)
        monkeypatch.setenv(ENV + "TRANSFER_SCENE_ID", "1005")
        with pytest.raises(MissingCredential, match="SCENE_REPORT_INFOS"):
            config_from(WechatPaySettings())
        infos = [
            {"info_type": "岗位类型", "info_content": "兼职客服"},
            {"info_type": "报酬说明", "info_content": "工单处理报酬"},
        ]
        monkeypatch.setenv(ENV + "SCENE_REPORT_INFOS", json.dumps(infos, ensure_ascii=False))
        monkeypatch.setenv(ENV + "USER_RECV_PERCEPTION", "劳务报酬")
        monkeypatch.setenv(
            ENV + "NOTIFY_URL", "https://payouts.example.com/v1/gateway-callbacks/wechatpay"
        )
        monkeypatch.setenv(ENV + "SEND_NAME_ALWAYS", "true")
        gateway = WechatPayGateway(config_from(WechatPaySettings()))
        try:
            await gateway.submit(Wx(fake, gateway, keys).transfer(100))
        finally:
            await gateway.aclose()
    body = fake.submits()[0].json()
    assert body["transfer_scene_id"] == "1005"
    assert body["transfer_scene_report_infos"] == infos
    assert body["user_recv_perception"] == "劳务报酬"
    assert body["notify_url"].endswith("/v1/gateway-callbacks/wechatpay")
    assert decrypt_oaep_sha1(keys.platform, body["user_name"]) == "张三"


# -- through the executor ------------------------------------------------------------------
def wechat_recipient(keys: WechatKeys, name: str | None = "张三") -> dict[str, Any]:
    return {"type": "wechat", "account": new_openid(), "name": name, "app_id": keys.app_id}


async def wechat_app(
    make_app: AppFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    keys: WechatKeys,
    base_url: str,
    **settings: Any,
) -> tuple[httpx.AsyncClient, Runtime]:
    """The service with ``wechat`` recipients routed to this adapter and the fake."""
    set_env(monkeypatch, tmp_path, keys, base_url)
    app, client = await provider_app(
        make_app, gateway="wechatpay", recipient_type="wechat", **settings
    )
    return client, app.state.runtime


async def test_faults_end_with_one_booking_and_the_right_status(
    make_app: AppFactory, keys: WechatKeys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    scenarios: dict[str, tuple[str, Plan, str]] = {
        # name: (amount, plan, final payout status)
        "confirmed": ("12.34", Plan(succeed_after_queries=1), "succeeded"),
        "name_required": ("2000.00", Plan(succeed_after_queries=1), "succeeded"),
        "accepted_then_timeout": (
            "12.34",
            Plan(submit_faults=["timeout_after_booking"], succeed_after_queries=1),
            "succeeded",
        ),
        "5xx_before_booking": (
            "12.34",
            Plan(submit_faults=["500", "500"], succeed_after_queries=1),
            "succeeded",
        ),
        "5xx_after_booking": (
            "12.34",
            Plan(submit_faults=["500_after_booking"], succeed_after_queries=1),
            "succeeded",
        ),
        "unknown_error_code": (
            "12.34",
            Plan(submit_faults=["unknown_error"], succeed_after_queries=1),
            "succeeded",
        ),
        "rate_limited": (
            "12.34",
            Plan(submit_faults=["429"], succeed_after_queries=1),
            "succeeded",
        ),
        "pending_then_success": ("12.34", Plan(succeed_after_queries=3), "succeeded"),
        "bad_signature_on_success": (
            "12.34",
            Plan(initial_state="SUCCESS", submit_faults=["bad_signature"]),
            "succeeded",
        ),
        "failed_after_acceptance": (
            "12.34",
            Plan(fail_after_queries=2, fail_reason="NAME_NOT_CORRECT"),
            "failed",
        ),
        "refused_not_enough": ("12.34", Plan(submit_faults=["error:403:NOT_ENOUGH"]), "failed"),
        "never_answers": ("12.34", Plan(submit_faults=["500"] * 20), "needs_review"),
    }
    fake = FakeWechatPay(keys)
    async with serve_fake(fake) as base_url:
        client, runtime = await wechat_app(make_app, monkeypatch, tmp_path, keys, base_url)
        payouts: dict[str, tuple[str, str]] = {}  # scenario → (payout id, openid)
        for name, (amount, plan, _) in scenarios.items():
            recipient = wechat_recipient(keys)
            fake.plan(recipient["account"], plan)
            payout = await approved_payout_to(client, runtime, recipient, amount, "CNY")
            payouts[name] = (payout["id"], recipient["account"])
        final = await drain_all(runtime)
        assert await assert_paid_exactly_once(runtime, fake.booked_states()) == final
        rows = await payout_rows(runtime.db)
        for name, (pid, openid) in payouts.items():
            expected = scenarios[name][2]
            assert final[pid] == expected, (name, final[pid])
            key = rows[pid].gateway_idempotency_key
            bills = [b for b in fake.ledger if b.out_bill_no == key]
            assert all(b.openid == openid for b in bills)
            if expected == "succeeded":
                assert len(bills) == 1, name
                assert rows[pid].gateway_reference == bills[0].transfer_bill_no, name
                assert rows[pid].gateway_status == "SUCCESS", name
        booked_submits = {
            name: sum(
                1
                for s in fake.submits()
                if s.json().get("out_bill_no") == rows[payouts[name][0]].gateway_idempotency_key
            )
            for name in scenarios
        }
        # Ambiguous answers were resolved by querying, not by re-sending a booked bill.
        assert booked_submits["accepted_then_timeout"] == 1
        assert booked_submits["5xx_after_booking"] == 1
        assert booked_submits["bad_signature_on_success"] == 1
        assert booked_submits["5xx_before_booking"] == 3
        # The name went encrypted and arrived.
        named = rows[payouts["name_required"][0]].gateway_idempotency_key
        assert fake.bills[named].user_name == "张三"
        # What the helpdesk sees.
        confirmed = (await client.get(f"/v1/payouts/{payouts['confirmed'][0]}")).json()
        assert confirmed["gateway_details"]["package_info"].startswith("ABBQO")
        for name, failure in (
            ("failed_after_acceptance", "recipient_name_mismatch"),
            ("refused_not_enough", "insufficient_funds"),
        ):
            shown = (await client.get(f"/v1/payouts/{payouts[name][0]}")).json()
            assert shown["failure"]["code"] == failure, (name, shown["failure"])
        assert not any(
            rows[payouts[n][0]].gateway_idempotency_key in fake.bills
            for n in ("refused_not_enough", "never_answers")
        )


async def test_callbacks_through_the_endpoint(
    make_app: AppFactory,
    keys: WechatKeys,
    intruder: WechatKeys,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    fake = FakeWechatPay(keys)
    async with serve_fake(fake) as base_url:
        client, runtime = await wechat_app(make_app, monkeypatch, tmp_path, keys, base_url)
        paid = await approved_payout_to(client, runtime, wechat_recipient(keys), "88.00", "CNY")
        lost = await approved_payout_to(client, runtime, wechat_recipient(keys), "9.90", "CNY")
        executor, _clock, gateways = executor_for(runtime)
        try:
            await executor.run_once()
        finally:
            await gateways.aclose()
        shown = (await client.get(f"/v1/payouts/{paid['id']}")).json()
        assert shown["status"] == "processing"
        assert shown["gateway_status"] == "WAIT_USER_CONFIRM"
        assert shown["gateway_details"]["package_info"]
        rows = await payout_rows(runtime.db)
        paid_key = rows[paid["id"]].gateway_idempotency_key
        lost_key = rows[lost["id"]].gateway_idempotency_key
        url = "/v1/gateway-callbacks/wechatpay"

        # Forged and stale notices: 401, nothing changes.
        fake.confirm(paid_key)
        for forged in (
            fake.notice(paid_key, signing_key=intruder.platform),
            fake.notice(paid_key, timestamp=int(time.time()) - 3600),
            fake.notice(paid_key, tamper=True),
        ):
            answer = await client.post(url, content=forged[0], headers=forged[1])
            assert answer.status_code == 401, answer.text
            assert answer.json()["code"] == "invalid_signature"
        assert (await client.get(f"/v1/payouts/{paid['id']}")).json()["status"] == "processing"

        # The genuine notice finishes the payout; its duplicate changes nothing.
        body, headers = fake.notice(paid_key)
        answer = await client.post(url, content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"received": True, "result": "applied"}
        after = (await client.get(f"/v1/payouts/{paid['id']}")).json()
        assert (after["status"], after["gateway_status"]) == ("succeeded", "SUCCESS")
        events = (await client.get(f"/v1/payouts/{paid['id']}/events")).json()["data"]
        again = await client.post(url, content=body, headers=headers)
        assert again.status_code == 200
        assert again.json()["result"] == "duplicate"
        assert (await client.get(f"/v1/payouts/{paid['id']}/events")).json()["data"] == events

        # A failure notice fails the other one, with the mapped code.
        fake.set_state(lost_key, "FAIL", "OPENID_INVALID")
        body, headers = fake.notice(lost_key)
        answer = await client.post(url, content=body, headers=headers)
        assert answer.json()["result"] == "applied"
        failed = (await client.get(f"/v1/payouts/{lost['id']}")).json()
        assert (failed["status"], failed["failure"]["code"]) == (
            "failed",
            "recipient_account_invalid",
        )
        # A notice WeChat signed with a key we do not hold decrypts to nothing: 400.
        body, headers = fake.notice(lost_key, apiv3_key="1" * 32)
        assert (await client.post(url, content=body, headers=headers)).status_code == 400
        await assert_paid_exactly_once(runtime, fake.booked_states())


async def test_no_secret_or_account_in_logs_or_responses(
    make_app: AppFactory,
    keys: WechatKeys,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = FakeWechatPay(keys)
    async with serve_fake(fake) as base_url:
        client, runtime = await wechat_app(
            make_app, monkeypatch, tmp_path, keys, base_url, log_level="DEBUG"
        )
        logging.getLogger().addHandler(caplog.handler)  # the app's logging setup replaced it
        caplog.set_level(logging.DEBUG)
        recipients = [wechat_recipient(keys, name="赵六") for _ in range(4)]
        plans = [
            Plan(submit_faults=["unknown_error"], succeed_after_queries=1),
            Plan(submit_faults=["bad_signature"], fail_after_queries=1),
            Plan(submit_faults=["error:400:PARAM_ERROR"]),
            Plan(),
        ]
        fake.invalid_openids.add(recipients[3]["account"])
        ids = []
        for recipient, plan in zip(recipients, plans, strict=True):
            fake.plan(recipient["account"], plan)
            payout = await approved_payout_to(client, runtime, recipient, "2000.00", "CNY")
            ids.append(payout["id"])
        final = await drain_all(runtime)
        assert sorted(final.values()) == ["failed", "failed", "failed", "succeeded"]
        key = (await payout_rows(runtime.db))[ids[0]].gateway_idempotency_key
        body, headers = fake.notice(key)
        assert (
            await client.post("/v1/gateway-callbacks/wechatpay", content=body, headers=headers)
        ).status_code == 200
        shown = []
        for pid in ids:
            for path in ("", "/attempts", "/events"):
                answer = await client.get(f"/v1/payouts/{pid}{path}")
                assert answer.status_code == 200
                shown.append(answer.text)
        stored = [
            json.dumps(
                [
                    (a.request, a.error, a.gateway_status)
                    for a in await attempts_of(runtime.db, pid)
                ],
                ensure_ascii=False,
            )
            for pid in ids
        ]
    captured = capsys.readouterr()
    everything = "\n".join([*shown, *stored, caplog.text, captured.out, captured.err])
    # The capture did see the adapter's own log lines (the unverified answer).
    assert "wechatpay.answer_unverified" in caplog.text + captured.err
    private_body = "".join(keys.merchant_private_pem.splitlines()[1:-1])
    forbidden = {
        "apiv3 key": keys.apiv3_key,
        "private key": private_body[100:160],
        "real name": "赵六",
        **{f"openid {n}": r["account"] for n, r in enumerate(recipients)},
    }
    leaked = [what for what, value in forbidden.items() if value in everything]
    assert leaked == []
