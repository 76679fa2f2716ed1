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
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, cast

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from payoutsvc.executor.service import Executor
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
from payoutsvc.gateways.wechatpay import (
    TRANSFER_PATH,
    WechatPayConfig,
    WechatPayGateway,
    WechatPaySettings,
    config_from,
    create_gateway,
)
from payoutsvc.payouts.models import Payout
from payoutsvc.runtime import Runtime
from tests.executor.conftest import AppFactory
from tests.executor.support import FakeClock, attempts_of, events_by_payout, payout_rows
from tests.gateways.fake_wechatpay import (
    SERIAL_MISSING,
    FakeWechatPay,
    MerchantMode,
    Plan,
    WechatKeys,
    serve_fake,
)
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


Trust = Literal["public_key", "certificate", "both"]


def set_env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    keys: WechatKeys,
    base_url: str,
    *,
    files: bool = True,
    timeout: float = 0.3,
    private_key_pem: str | None = None,
    trust: Trust = "public_key",
) -> None:
    """The adapter's credentials, as files (the ``_FILE`` variants) or inline; ``trust``
    says what verifies WeChat: its public key, its platform certificates, or both."""
    private_pem = private_key_pem or keys.merchant_private_pem
    monkeypatch.setenv(ENV + "MCHID", keys.mchid)
    monkeypatch.setenv(ENV + "MERCHANT_SERIAL_NO", keys.merchant_serial_no)
    monkeypatch.setenv(ENV + "BASE_URL", base_url)
    monkeypatch.setenv(ENV + "TIMEOUT_SECONDS", str(timeout))
    secrets = {"PRIVATE_KEY": private_pem, "APIV3_KEY": keys.apiv3_key}
    for name in ("PUBLIC_KEY_ID", "PUBLIC_KEY", "PLATFORM_CERTIFICATES"):
        monkeypatch.delenv(ENV + name, raising=False)
        monkeypatch.delenv(ENV + name + "_FILE", raising=False)
    if trust in ("public_key", "both"):
        monkeypatch.setenv(ENV + "PUBLIC_KEY_ID", keys.public_key_id)
        secrets["PUBLIC_KEY"] = keys.public_key_pem
    if trust in ("certificate", "both"):
        secrets["PLATFORM_CERTIFICATES"] = keys.certificates_pem
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
    fake.mode = "public_key"
    return Wx(fake, gateway, keys, base_url)


@pytest.fixture(scope="module")
def configs(
    keys: WechatKeys, base_config: WechatPayConfig, tmp_path_factory: pytest.TempPathFactory
) -> dict[Trust, WechatPayConfig]:
    """The adapter's configuration for each way of trusting WeChat (read from the env)."""
    found: dict[Trust, WechatPayConfig] = {"public_key": base_config}
    for trust in ("certificate", "both"):
        with pytest.MonkeyPatch.context() as patch:
            folder = tmp_path_factory.mktemp(f"wechatpay_{trust}")
            set_env(patch, folder, keys, "http://unused", trust=trust)
            found[trust] = config_from(WechatPaySettings())
    return found


@asynccontextmanager
async def gateway_trusting(
    wx: Wx, configs: dict[Trust, WechatPayConfig], trust: Trust
) -> AsyncIterator[WechatPayGateway]:
    gateway = WechatPayGateway(replace(configs[trust], base_url=wx.base_url))
    try:
        yield gateway
    finally:
        await gateway.aclose()


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
    # Named on every request, encrypted field or not: WeChat signs its answer with that key.
    assert seen.headers["wechatpay-serial"] == wx.keys.public_key_id
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
        (10, None, "客服补偿"),  # the smallest WeChat transfer (0.10 CNY); the default remark
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
async def test_user_name_is_encrypted_with_the_public_key_from_2000_cny(wx: Wx) -> None:
    request = wx.transfer(200_000, name="张三")
    await wx.gateway.submit(request)
    [seen] = wx.fake.submits()
    encrypted = seen.json()["user_name"]
    assert "张三" not in encrypted
    assert decrypt_oaep_sha1(wx.keys.wechatpay, encrypted) == "张三"
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
        ({"amount_minor": 9}, "amount_out_of_range"),
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
        "other_key": {"signing_key": intruder.wechatpay},
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


# -- the WeChat Pay public key, platform certificates, a merchant switching -----------------
async def signed_raw(
    wx: Wx, method: str, path: str, body: bytes = b"", **headers: str
) -> httpx.Response:
    """A request the merchant signed, sent as is (to see what the fake itself answers)."""
    async with httpx.AsyncClient(base_url=wx.base_url) as http:
        return await http.request(
            method,
            path,
            content=body or None,
            headers={
                "Authorization": wx.gateway.authorization(method, path, body),
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "test",
                **headers,
            },
        )


def transfer_body(wx: Wx, amount: int, **extra: Any) -> bytes:
    body = {
        "appid": wx.keys.app_id,
        "out_bill_no": new_key(),
        "transfer_scene_id": "1000",
        "openid": new_openid(),
        "transfer_amount": amount,
        "transfer_remark": "test",
        "transfer_scene_report_infos": [
            {"info_type": "活动名称", "info_content": "a"},
            {"info_type": "奖励说明", "info_content": "b"},
        ],
        **extra,
    }
    return json.dumps(body, ensure_ascii=False).encode()


def encrypt_oaep_sha1(key: rsa.RSAPublicKey, text: str) -> str:
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    return base64.b64encode(key.encrypt(text.encode(), oaep)).decode()


@unit
async def test_the_fake_signs_with_its_certificate_when_the_public_key_is_not_named(
    wx: Wx,
) -> None:
    # What WeChat does for a merchant on the public key: without the header, the answer
    # is signed with the platform certificate, which such a merchant cannot verify.
    unnamed = await signed_raw(wx, "POST", TRANSFER_PATH, transfer_body(wx, 100))
    assert unnamed.status_code == 200
    assert unnamed.headers["wechatpay-serial"] == wx.keys.newest_certificate.serial
    named = await signed_raw(
        wx,
        "POST",
        TRANSFER_PATH,
        transfer_body(wx, 100),
        **{"Wechatpay-Serial": wx.keys.public_key_id},
    )
    assert named.headers["wechatpay-serial"] == wx.keys.public_key_id
    # An encrypted field without the header: WeChat's documented refusal.
    sealed = encrypt_oaep_sha1(wx.keys.wechatpay.public_key(), "张三")
    refused = await signed_raw(wx, "POST", TRANSFER_PATH, transfer_body(wx, 100, user_name=sealed))
    assert refused.status_code == 400
    assert refused.json() == {"code": "PARAM_ERROR", "message": SERIAL_MISSING}
    assert len(wx.fake.ledger) == 2


@unit
async def test_every_request_names_the_public_key_so_answers_verify(wx: Wx) -> None:
    request = wx.transfer(1234, name=None)  # nothing encrypted
    submitted = await wx.gateway.submit(request)
    found = await wx.gateway.get_status(request.idempotency_key)
    assert (submitted.state, found.state) == (TransferState.PENDING, TransferState.PENDING)
    assert {r.headers["wechatpay-serial"] for r in wx.fake.requests} == {wx.keys.public_key_id}


@unit
async def test_a_merchant_switching_verifies_the_public_key_and_its_certificates(
    wx: Wx, configs: dict[Trust, WechatPayConfig], intruder: WechatKeys
) -> None:
    wx.fake.mode = "switching"
    async with gateway_trusting(wx, configs, "both") as gateway:
        request = wx.transfer(250_000, name="王五")
        submitted = await gateway.submit(request)
        [seen] = wx.fake.submits()
        assert seen.headers["wechatpay-serial"] == wx.keys.public_key_id
        assert wx.fake.bills[request.idempotency_key].user_name == "王五"
        wx.fake.confirm(request.idempotency_key)
        # Notices come signed either way while WeChat moves the merchant over.
        for signer in ("public_key", "certificate", "old_certificate"):
            body, headers = wx.fake.notice(request.idempotency_key, signer=signer)
            notice = await gateway.parse_callback(headers, body)
            assert notice.result.reference == submitted.reference, signer
        # A certificate's serial with another key's signature is still a forgery.
        body, headers = wx.fake.notice(
            request.idempotency_key,
            signing_key=intruder.newest_certificate.key,
            serial=wx.keys.newest_certificate.serial,
        )
        with pytest.raises(InvalidSignature):
            await gateway.parse_callback(headers, body)
        # The public key alone cannot check what the certificate signed.
        body, headers = wx.fake.notice(request.idempotency_key, signer="certificate")
        with pytest.raises(InvalidSignature):
            await wx.gateway.parse_callback(headers, body)


@unit
@pytest.mark.parametrize("trust", ["certificate", "both"])
async def test_a_merchant_still_on_platform_certificates(
    wx: Wx, configs: dict[Trust, WechatPayConfig], trust: Trust
) -> None:
    # "both": the public key configured before WeChat switched the merchant over; WeChat
    # keeps signing with the certificate whatever the request names.
    wx.fake.mode = "certificate"
    async with gateway_trusting(wx, configs, trust) as gateway:
        # (Until WeChat has switched the merchant over it cannot decrypt what the public
        # key sealed, so the "both" case sends no name.)
        request = wx.transfer(200_000 if trust == "certificate" else 1234, name="张三")
        submitted = await gateway.submit(request)
        assert submitted.state is TransferState.PENDING
        [seen] = wx.fake.submits()
        if trust == "certificate":
            # Encrypted with the newest certificate, whose serial the header names.
            newest = wx.keys.newest_certificate
            assert seen.headers["wechatpay-serial"] == newest.serial
            assert decrypt_oaep_sha1(newest.key, seen.json()["user_name"]) == "张三"
            assert wx.fake.bills[request.idempotency_key].user_name == "张三"
        else:
            assert seen.headers["wechatpay-serial"] == wx.keys.public_key_id
        found = await gateway.get_status(request.idempotency_key)
        assert found.reference == submitted.reference
        missing = await gateway.get_status(new_key())
        assert missing.state is TransferState.NOT_FOUND
        body, headers = wx.fake.notice(request.idempotency_key)
        assert (await gateway.parse_callback(headers, body)).idempotency_key == (
            request.idempotency_key
        )


@unit
@pytest.mark.parametrize("fault", ["unsigned", "bad_signature", "wrong_serial"])
async def test_only_a_verified_not_found_means_not_found(wx: Wx, fault: str) -> None:
    key = new_key()
    wx.fake.next_query_faults = [fault]
    with pytest.raises(OutcomeUnknown) as unknown:
        await wx.gateway.get_status(key)
    assert unknown.value.gateway_status == "http_404"
    found = await wx.gateway.get_status(key)
    assert (found.state, found.gateway_status) == (TransferState.NOT_FOUND, "NOT_FOUND")


@unit
async def test_an_unsigned_refusal_is_never_final(wx: Wx) -> None:
    request = wx.transfer()
    wx.fake.plan(
        request.recipient["account"] or "",
        Plan(submit_faults=["unsigned_error:403:NOT_ENOUGH"]),
    )
    with pytest.raises(OutcomeUnknown) as unknown:
        await wx.gateway.submit(request)
    assert not isinstance(unknown.value, Rejected)
    assert unknown.value.gateway_status == "http_403"
    # Only WeChat's signed answer to the query tells that nothing was booked.
    found = await wx.gateway.get_status(request.idempotency_key)
    assert found.state is TransferState.NOT_FOUND


@unit
async def test_amount_minimums_and_names(wx: Wx) -> None:
    # 0.10 CNY is WeChat's floor; below it nothing is sent.
    smallest = await wx.gateway.submit(wx.transfer(10, name=None))
    assert smallest.state is TransferState.PENDING
    with pytest.raises(Rejected) as refused:
        await wx.gateway.submit(wx.transfer(9))
    assert refused.value.code == "amount_out_of_range"
    # The fake refuses what WeChat refuses.
    below = await signed_raw(
        wx,
        "POST",
        TRANSFER_PATH,
        transfer_body(wx, 9),
        **{"Wechatpay-Serial": wx.keys.public_key_id},
    )
    assert (below.status_code, below.json()["code"]) == (400, "INVALID_REQUEST")
    sealed = encrypt_oaep_sha1(wx.keys.wechatpay.public_key(), "张三")
    named = await signed_raw(
        wx,
        "POST",
        TRANSFER_PATH,
        transfer_body(wx, 29, user_name=sealed),
        **{"Wechatpay-Serial": wx.keys.public_key_id},
    )
    assert (named.status_code, named.json()["code"]) == (400, "PARAM_ERROR")


@unit
async def test_a_name_is_sent_only_from_030_cny(wx: Wx) -> None:
    always = replace(wx.gateway._config, send_name_always=True)
    gateway = WechatPayGateway(always)
    try:
        below = await gateway.submit(wx.transfer(29, name="张三"))
        at = await gateway.submit(wx.transfer(30, name="张三"))
    finally:
        await gateway.aclose()
    assert below.state is at.state is TransferState.PENDING
    first, second = wx.fake.submits()
    assert "user_name" not in first.json()
    assert decrypt_oaep_sha1(wx.keys.wechatpay, second.json()["user_name"]) == "张三"


@unit
@pytest.mark.parametrize(
    ("state", "resend", "after_schedule"),
    [
        ("WAIT_USER_CONFIRM", False, False),
        ("TRANSFERING", False, False),
        ("ACCEPTED", True, True),
        ("PROCESSING", True, True),
    ],
)
async def test_wechat_holds_a_pending_bill_until_its_own_deadline(
    wx: Wx, state: str, resend: bool, after_schedule: bool
) -> None:
    request = wx.transfer()
    wx.fake.plan(request.recipient["account"] or "", Plan(initial_state=state))
    submitted = await wx.gateway.submit(request)
    bill = wx.fake.bills[request.idempotency_key]
    found = await wx.gateway.get_status(request.idempotency_key)
    created = datetime.fromisoformat(bill.create_time)
    for result in (submitted, found):
        assert result.state is TransferState.PENDING
        assert result.hold == ProviderHold(
            reason=state,
            patience=timedelta(hours=26),  # 24 h bill lifetime + WeChat's closing lag
            since=created,
            resend=resend,
            after_schedule=after_schedule,
        )


@unit
@pytest.mark.parametrize("state", ["CANCELING", "A_STATE_ADDED_LATER", "SUCCESS", "FAIL"])
async def test_other_states_are_no_hold(wx: Wx, state: str) -> None:
    request = wx.transfer()
    await wx.gateway.submit(request)
    wx.fake.set_state(request.idempotency_key, state)
    assert (await wx.gateway.get_status(request.idempotency_key)).hold is None


@unit
async def test_a_resend_of_a_stuck_bill_answers_the_existing_bill(wx: Wx) -> None:
    request = wx.transfer(250_000, name="王五")
    wx.fake.plan(
        request.recipient["account"] or "",
        Plan(initial_state="ACCEPTED", resend_moves_to="WAIT_USER_CONFIRM"),
    )
    first = await wx.gateway.submit(request)
    again = await wx.gateway.submit(request)
    assert (first.gateway_status, again.gateway_status) == ("ACCEPTED", "WAIT_USER_CONFIRM")
    assert again.reference == first.reference
    assert again.details is not None
    assert again.details["package_info"]
    assert wx.fake.booked_states() == {request.idempotency_key: ["pending"]}
    assert wx.fake.bills[request.idempotency_key].resends == 1


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


def test_public_key_and_certificates_configuration(
    keys: WechatKeys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_env(monkeypatch, tmp_path, keys, "http://unused", files=False, trust="both")
    both = config_from(WechatPaySettings())
    newest = keys.newest_certificate.serial
    assert both.request_serial == keys.public_key_id
    assert set(both.platform_certificates) == {c.serial.lstrip("0") for c in keys.certificates}
    assert both.newest_certificate_serial == newest.lstrip("0")
    # The serial is matched however WeChat writes it (case, leading zeros).
    assert both.verifier_for("00" + newest.lower()) is both.platform_certificates[newest]
    assert both.verifier_for("PUB_KEY_ID_0000000000000000") is None
    set_env(monkeypatch, tmp_path, keys, "http://unused", trust="certificate")
    only_certificates = config_from(WechatPaySettings())
    assert only_certificates.public_key is None
    assert only_certificates.request_serial == newest
    monkeypatch.delenv(ENV + "PLATFORM_CERTIFICATES_FILE")
    with pytest.raises(MissingCredential, match="PLATFORM_CERTIFICATES"):
        config_from(WechatPaySettings())
    monkeypatch.setenv(ENV + "PUBLIC_KEY_ID", keys.public_key_id)  # an id without its key
    with pytest.raises(MissingCredential, match="PUBLIC_KEY"):
        config_from(WechatPaySettings())
    monkeypatch.setenv(ENV + "PUBLIC_KEY", keys.public_key_pem)
    monkeypatch.setenv(ENV + "PUBLIC_KEY_ID", "5157F09EFDC096DE")  # a certificate serial
    with pytest.raises(MissingCredential, match="PUB_KEY_ID_"):
        config_from(WechatPaySettings())
    monkeypatch.setenv(ENV + "PLATFORM_CERTIFICATES", keys.public_key_pem)  # not certificates
    monkeypatch.setenv(ENV + "PUBLIC_KEY_ID", keys.public_key_id)
    with pytest.raises(MissingCredential, match="not PEM certificates"):
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
    assert decrypt_oaep_sha1(keys.wechatpay, body["user_name"]) == "张三"


# -- through the executor ------------------------------------------------------------------
def wechat_recipient(keys: WechatKeys, name: str | None = "张三") -> dict[str, Any]:
    return {"type": "wechat", "account": new_openid(), "name": name, "app_id": keys.app_id}


async def wechat_app(
    make_app: AppFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    keys: WechatKeys,
    base_url: str,
    *,
    trust: Trust = "public_key",
    timeout: float = 0.3,
    **settings: Any,
) -> tuple[httpx.AsyncClient, Runtime]:
    """The service with ``wechat`` recipients routed to this adapter and the fake."""
    set_env(monkeypatch, tmp_path, keys, base_url, trust=trust, timeout=timeout)
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
        # Every request named the public key, so every answer could be verified.
        assert {r.headers.get("wechatpay-serial") for r in fake.requests} == {keys.public_key_id}
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
            fake.notice(paid_key, signing_key=intruder.wechatpay),
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


@pytest.mark.parametrize(
    ("mode", "trust"),
    [("switching", "both"), ("certificate", "certificate"), ("certificate", "both")],
)
async def test_merchants_on_certificates_or_switching_through_the_executor(
    make_app: AppFactory,
    keys: WechatKeys,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    mode: MerchantMode,
    trust: Trust,
) -> None:
    fake = FakeWechatPay(keys, mode=mode)
    async with serve_fake(fake) as base_url:
        client, runtime = await wechat_app(
            make_app, monkeypatch, tmp_path, keys, base_url, trust=trust
        )
        # A name only where the key that seals it is one WeChat can use for this merchant.
        named = mode == "switching" or trust == "certificate"
        amounts = ["2000.00" if named else "12.34", "12.34", "0.30", "9.90"]
        plans = [Plan(succeed_after_queries=1), Plan(succeed_after_queries=2), Plan(), Plan()]
        ids = []
        for amount, plan in zip(amounts, plans, strict=True):
            recipient = wechat_recipient(keys)
            fake.plan(recipient["account"], plan)
            ids.append((await approved_payout_to(client, runtime, recipient, amount, "CNY"))["id"])
        executor, _clock, gateways = executor_for(runtime)
        try:
            await executor.run_once()
        finally:
            await gateways.aclose()
        rows = await payout_rows(runtime.db)
        # The last two wait for their users; their notices come signed by whichever key
        # WeChat uses for this merchant (alternating while it switches).
        for pid in ids[2:]:
            key = rows[pid].gateway_idempotency_key
            fake.confirm(key)
            body, headers = fake.notice(key)
            answer = await client.post(
                "/v1/gateway-callbacks/wechatpay", content=body, headers=headers
            )
            assert answer.status_code == 200, answer.text
        final = await drain_all(runtime)
        assert await assert_paid_exactly_once(runtime, fake.booked_states()) == final
        assert [final[pid] for pid in ids] == ["succeeded"] * 4
        if named:
            assert fake.bills[rows[ids[0]].gateway_idempotency_key].user_name == "张三"
        serials = {r.headers.get("wechatpay-serial") for r in fake.requests}
        expected = keys.newest_certificate.serial if trust == "certificate" else keys.public_key_id
        assert serials == {expected}


async def test_an_unsigned_refusal_never_fails_a_payout(
    make_app: AppFactory, keys: WechatKeys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeWechatPay(keys)
    async with serve_fake(fake) as base_url:
        client, runtime = await wechat_app(make_app, monkeypatch, tmp_path, keys, base_url)
        recipient = wechat_recipient(keys)
        fake.plan(
            recipient["account"],
            Plan(submit_faults=["unsigned_error:403:NOT_ENOUGH"], succeed_after_queries=1),
        )
        # The first status queries' "no such bill" is not WeChat's (unsigned, badly
        # signed): unknown, not a licence to submit; the signed one is.
        fake.next_query_faults = ["unsigned", "bad_signature"]
        payout = await approved_payout_to(client, runtime, recipient, "12.34", "CNY")
        final = await drain_all(runtime)
        assert await assert_paid_exactly_once(runtime, fake.booked_states()) == final
        assert final[payout["id"]] == "succeeded"
        steps = [
            (a.operation, a.outcome, a.gateway_status)
            for a in await attempts_of(runtime.db, payout["id"])
        ]
        assert steps[:4] == [
            ("submit", "unknown", "http_403"),
            ("status", "unknown", "http_404"),
            ("status", "unknown", "http_404"),
            ("status", "not_found", "NOT_FOUND"),
        ]
        assert steps[4][0] == "submit"


# -- provider holds through the executor -----------------------------------------------------
# No fault here waits for a timeout: a generous one, as the 0.3 s the fault tests use also
# bounds the connect, and a loaded CI machine once stalled a connect to the fake that long
# (the step read "refused" instead of "ACCEPTED").
HOLD_SCHEDULE = {
    "executor_retry_schedule": "1,1,1",
    "executor_hold_check_seconds": 600,
    "timeout": 5.0,
}
CHINA = timezone(timedelta(hours=8))


async def step(executor: Executor, clock: FakeClock, payout_id: str) -> Payout:
    """Move the clock to the payout's next check, run the executor once, return the row."""
    row = (await payout_rows(executor.runtime.db))[payout_id]
    if row.next_attempt_at is not None and row.next_attempt_at > clock.now:
        clock.now = row.next_attempt_at
    await executor.run_once()
    return (await payout_rows(executor.runtime.db))[payout_id]


async def test_a_bill_waiting_for_its_user_is_held_until_wechats_deadline(
    make_app: AppFactory, keys: WechatKeys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeWechatPay(keys)
    async with serve_fake(fake) as base_url:
        client, runtime = await wechat_app(
            make_app, monkeypatch, tmp_path, keys, base_url, **HOLD_SCHEDULE
        )
        confirmed = await approved_payout_to(
            client, runtime, wechat_recipient(keys), "12.34", "CNY"
        )
        expired = await approved_payout_to(client, runtime, wechat_recipient(keys), "9.90", "CNY")
        executor, clock, gateways = executor_for(runtime)
        try:
            await executor.run_once()
            rows = await payout_rows(runtime.db)
            keys_of = {pid: rows[pid].gateway_idempotency_key for pid in rows}
            # WeChat's clock for the second bill started 22 h ago: 4 h of its 24 h + 2 h left.
            old = fake.bills[keys_of[expired["id"]]]
            old.create_time = (datetime.now(CHINA) - timedelta(hours=22)).isoformat("T", "seconds")
            deadline = datetime.fromisoformat(old.create_time) + timedelta(hours=26)

            # The user takes hours to confirm: the payout outlives the retry schedule by far.
            for _ in range(8):
                row = await step(executor, clock, confirmed["id"])
                assert (row.status, row.gateway_status) == ("processing", "WAIT_USER_CONFIRM")
            created = datetime.fromisoformat(fake.bills[keys_of[confirmed["id"]]].create_time)
            assert row.gateway_hold_until == created + timedelta(hours=26)
            shown = (await client.get(f"/v1/payouts/{confirmed['id']}")).json()
            assert shown["gateway_hold_until"] is not None
            fake.confirm(keys_of[confirmed["id"]])
            body, headers = fake.notice(keys_of[confirmed["id"]])
            answer = await client.post(
                "/v1/gateway-callbacks/wechatpay", content=body, headers=headers
            )
            assert answer.json()["result"] == "applied"

            # Never confirmed: checked every ~10 minutes, then review once the deadline passed.
            seen = []
            while clock.now < deadline:
                row = await step(executor, clock, expired["id"])
                seen.append(row.status)
                assert row.gateway_hold_until == deadline
            assert seen[-1] == "needs_review"
            assert seen[:-1] == ["processing"] * (len(seen) - 1)
            assert len(seen) >= 10  # hours after the retry schedule ended
        finally:
            await gateways.aclose()
        events = (await events_by_payout(runtime.db))[expired["id"]]
        assert events[-1].data["reason"] == "provider_deadline_passed"
        final = await assert_paid_exactly_once(runtime, fake.booked_states())
        assert (final[confirmed["id"]], final[expired["id"]]) == ("succeeded", "needs_review")
        assert len(fake.submits()) == 2  # a user hold is asked about, never re-sent


async def test_a_bill_stuck_accepted_is_resent_after_the_schedule_until_it_moves(
    make_app: AppFactory, keys: WechatKeys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeWechatPay(keys)
    async with serve_fake(fake) as base_url:
        client, runtime = await wechat_app(
            make_app, monkeypatch, tmp_path, keys, base_url, **HOLD_SCHEDULE
        )
        recipient = wechat_recipient(keys)
        # The operating account was empty: ACCEPTED until a re-send after the top-up.
        fake.plan(
            recipient["account"],
            Plan(initial_state="ACCEPTED", resend_moves_to="WAIT_USER_CONFIRM"),
        )
        payout = await approved_payout_to(client, runtime, recipient, "2000.00", "CNY")
        executor, clock, gateways = executor_for(runtime)
        try:
            rows = [await step(executor, clock, payout["id"]) for _ in range(4)]
            key = rows[0].gateway_idempotency_key
            # An ordinary in-flight state while the normal schedule lasts: queries only.
            assert [r.gateway_hold_until is None for r in rows] == [True, True, True, False]
            assert [r.gateway_status for r in rows] == ["ACCEPTED"] * 4
            assert (len(fake.submits()), fake.bills[key].resends) == (1, 0)
            # On the slow schedule each check re-sends the same bill: WeChat answers the
            # existing one, moved on to the user's confirmation.
            row = await step(executor, clock, payout["id"])
            assert (row.status, row.gateway_status) == ("processing", "WAIT_USER_CONFIRM")
            assert (len(fake.submits()), fake.bills[key].resends) == (2, 1)
            resent = fake.submits()[-1].json()
            assert resent["out_bill_no"] == key
            assert decrypt_oaep_sha1(keys.wechatpay, resent["user_name"]) == "张三"
            assert row.gateway_details is not None
            assert row.gateway_details["package_info"]
            row = await step(executor, clock, payout["id"])  # waiting for the user: no re-send
            assert row.status == "processing"
            assert len(fake.submits()) == 2
            fake.confirm(key)
            row = await step(executor, clock, payout["id"])
            assert row.status == "succeeded"
        finally:
            await gateways.aclose()
        final = await assert_paid_exactly_once(runtime, fake.booked_states())
        assert final[payout["id"]] == "succeeded"
