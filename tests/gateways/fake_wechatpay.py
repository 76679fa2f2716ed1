"""A fake WeChat Pay (商家转账, API v3, user-confirmation mode) as a Starlette app.

It speaks the documented wire format: it checks the merchant's ``Authorization`` signature
(``WECHATPAY2-SHA256-RSA2048``, RSA SHA-256 over ``METHOD\\nURL\\ntimestamp\\nnonce\\nbody\\n``
with the merchant key), decrypts ``user_name`` (RSA-OAEP SHA-1) with the key the request's
``Wechatpay-Serial`` names, validates the body, is idempotent on ``out_bill_no`` (same
parameters: the existing bill again, as the docs ask merchants to re-send ACCEPTED bills;
different parameters: 400 ``INVALID_REQUEST``), and signs every answer it would sign
(``Wechatpay-Timestamp/-Nonce/-Signature/-Serial`` over ``timestamp\\nnonce\\nbody\\n``). It
builds ``MCHTRANSFER.BILL.FINISHED`` notices (resource AES-256-GCM encrypted with the APIv3
key), genuine or forged.

Which key WeChat signs with depends on the merchant's ``mode``:

- ``public_key`` (微信支付公钥): answers to a request whose ``Wechatpay-Serial`` is the
  ``PUB_KEY_ID_…`` are signed with the public key's private half under that id; without the
  header WeChat signs with its platform certificate, which such a merchant cannot verify
  (WeChat staff on developers.weixin.qq.com/community/develop/doc/0000287571ca806b3c23d17ec66c00
  "不传公钥ID的,商户收到应答时需要用平台证书来验签"; binarywang/WxJava PR #3548; the guide
  pay.weixin.qq.com/doc/v3/merchant/4012154180). A request carrying an encrypted field
  without the header is refused: 400 ``PARAM_ERROR`` "HTTP header缺少微信支付平台证书序列号
  (Wechatpay-Serial)" (the answer quoted in wechatpay-apiv3/wechatpay-apache-httpclient#109
  and yansongda/pay#546). Notices are signed with the public key.
- ``certificate`` (平台证书 only): everything is signed with the newest platform certificate,
  whatever the request names ("未开启切换,即使…传了公钥ID,微信侧也仍会用平台证书返回",
  community/develop/doc/0004e8c40b09182972936db6d69400).
- ``switching`` (mid-switch): answers follow the request's header as above; notices
  alternate between the public key and the certificate (WeChat raises the public key's
  share day by day over 7 days, community/pay/doc/000a4e6c9a00209af2335313c61400).

Verifiers choose by the ``Wechatpay-Serial`` of the answer, as the official SDKs do
(wechatpay-apiv3/wechatpay-go core/auth/verifiers/sha256withrsa_combined_verifier.go,
wechatpay-apiv3/wechatpay-java core/.../cipher/AbstractVerifier.java), and the SDKs send
``Wechatpay-Serial`` on every request (wechatpay-go core/client.go ``GetAcceptSerial``,
wechatpay-java core/.../http/AbstractHttpClient.java).

Amounts: below 0.10 CNY 400 ``INVALID_REQUEST`` "超过单笔转账上下限,核实产品设置是否准确"
(FAQ pay.weixin.qq.com/doc/v3/merchant/4013778940: 单笔转账额度最低为0.1元); a
``user_name`` below 0.30 CNY is refused with ``PARAM_ERROR`` (the code is an assumption: no
documented answer was found). Bill states and their meaning: 发起转账 (docs/merchant/apis/
mch-trans/transfer-bill/transfer-to-user.html), 商户单号查询转账单 (…/get-transfer-bill-by-
out-no.html: 404 ``NOT_FOUND`` for an unknown number), 关键概念 4012715191 (24 h lifetime).

Behaviour per recipient openid is a :class:`Plan`: the state a new bill starts in, after how
many status queries it succeeds or fails, and faults injected into the next submits/queries
(one fault word per call, consumed in order):

=======================  ==================================================================
``timeout_after_booking``  books the bill, then answers only after ``hang_seconds``
``500``                    500 ``SYSTEM_ERROR``, nothing booked
``500_after_booking``      books the bill, then 500 ``SYSTEM_ERROR``
``unknown_error``          400 with a code nobody documents, nothing booked
``429``                    429 ``FREQUENCY_LIMITED``, nothing done
``error:<http>:<CODE>``    that error (e.g. ``error:403:NOT_ENOUGH``), nothing booked; an
                           optional ``:<message>`` may quote ``{openid}``
``unsigned_error:…``       the same error without signature headers (a proxy's answer)
``bad_signature``          the normal answer (booking included), with a broken signature
``unsigned``               the normal answer without signature headers
``wrong_serial``           the normal answer signed by another key id
``timeout`` (queries)      answers the query only after ``hang_seconds``
=======================  ==================================================================

Status queries take the same words (``500``, ``429``, ``bad_signature`` …) from the plan's
``query_faults``, or from ``next_query_faults`` whatever bill they ask about.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from payoutsvc.gateways.providers import sign_rsa_sha256, verify_rsa_sha256
from tests.gateways.harness import serve_asgi

TRANSFER_PATH = "/v3/fund-app/mch-transfer/transfer-bills"
QUERY_PREFIX = TRANSFER_PATH + "/out-bill-no/"
MIN_AMOUNT_FEN = 10  # WeChat's own floor: 0.10 CNY
NAME_REQUIRED_FROM_FEN = 200_000
SIGNATURE_TOLERANCE_SECONDS = 300
_CHINA = timezone(timedelta(hours=8))
_AUTH = re.compile(r'(\w+)="([^"]*)"')
_OUT_BILL_NO = re.compile(r"[0-9A-Za-z]{1,32}")
_PENDING = {"ACCEPTED", "PROCESSING", "WAIT_USER_CONFIRM", "TRANSFERING", "CANCELING"}
_SCENE_REPORT_TYPES = {"1000": {"活动名称", "奖励说明"}}
_bill_numbers = itertools.count(1)
DUPLICATE_MISMATCH = "单号已存在但信息不一致,请查单后比较确认"
OPENID_INVALID = "Openid格式错误或者不属于商家公众账号,请检查"
NAME_ALLOWED_FROM_FEN = 30
SERIAL_MISSING = "HTTP header缺少微信支付平台证书序列号(Wechatpay-Serial)"
NOT_CIPHERTEXT = "请确认待处理的消息是否为加密后的密文"
AMOUNT_OUT_OF_RANGE = "超过单笔转账上下限,核实产品设置是否准确"
NAME_BELOW_MINIMUM = "转账金额小于0.3元时不支持传入收款用户姓名"
MerchantMode = Literal["public_key", "certificate", "switching"]
Signer = Literal["public_key", "certificate", "old_certificate"]


def _pem_private(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _pem_public(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@dataclass(frozen=True)
class PlatformCertificate:
    """A WeChat Pay platform certificate (平台证书) and the private key WeChat signs with."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @classmethod
    def generate(cls, *, valid_days: int) -> PlatformCertificate:
        key = rsa.generate_private_key(65537, 2048)
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Tenpay.com Root CA")])
        start = datetime.now(UTC) - timedelta(days=1)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=valid_days))
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @property
    def serial(self) -> str:
        """The serial as WeChat writes it in ``Wechatpay-Serial``: upper-case hex."""
        return format(self.certificate.serial_number, "X")

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class WechatKeys:
    """Test credentials: the merchant's key pair, the WeChat Pay public key's pair (WeChat
    keeps the private half) and two platform certificates (an older and a newer one)."""

    merchant: rsa.RSAPrivateKey
    wechatpay: rsa.RSAPrivateKey  # behind the WeChat Pay public key PUB_KEY_ID_…
    certificates: tuple[PlatformCertificate, PlatformCertificate]
    apiv3_key: str
    mchid: str = "1900000109"
    merchant_serial_no: str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
    public_key_id: str = "PUB_KEY_ID_0119000001092025010100000000000001"
    app_id: str = "wxd678efh567hg6787"

    @classmethod
    def generate(cls) -> WechatKeys:
        return cls(
            merchant=rsa.generate_private_key(65537, 2048),
            wechatpay=rsa.generate_private_key(65537, 2048),
            certificates=(
                PlatformCertificate.generate(valid_days=365),
                PlatformCertificate.generate(valid_days=5 * 365),
            ),
            apiv3_key=secrets.token_hex(16),  # 32 characters, as WeChat hands it out
        )

    @property
    def merchant_private_pem(self) -> str:
        return _pem_private(self.merchant)

    @property
    def public_key_pem(self) -> str:
        return _pem_public(self.wechatpay.public_key())

    @property
    def certificates_pem(self) -> str:
        return "".join(c.pem for c in self.certificates)

    @property
    def newest_certificate(self) -> PlatformCertificate:
        return self.certificates[-1]

    def signing_key(self, signer: Signer) -> tuple[rsa.RSAPrivateKey, str]:
        """(private key, ``Wechatpay-Serial``) of one of WeChat's signers."""
        if signer == "public_key":
            return self.wechatpay, self.public_key_id
        certificate = self.certificates[0 if signer == "old_certificate" else -1]
        return certificate.key, certificate.serial


@dataclass
class Plan:
    """How the fake treats transfers to one openid."""

    initial_state: str = "WAIT_USER_CONFIRM"
    succeed_after_queries: int | None = None
    fail_after_queries: int | None = None
    fail_reason: str = "NAME_NOT_CORRECT"
    submit_faults: list[str] = field(default_factory=list)
    query_faults: list[str] = field(default_factory=list)
    # A re-send of a bill still ACCEPTED/PROCESSING moves it on to this state (the merchant
    # topped up its balance and re-sent, as WeChat's guide says to).
    resend_moves_to: str | None = None


@dataclass
class Bill:
    out_bill_no: str
    transfer_bill_no: str
    appid: str
    openid: str
    amount: int
    remark: str
    scene_id: str
    user_name: str | None
    state: str
    create_time: str
    update_time: str
    package_info: str | None = None
    fail_reason: str | None = None
    queries: int = 0
    resends: int = 0  # submits of this out_bill_no answered with the existing bill

    def parameters(self) -> tuple[Any, ...]:
        return (
            self.appid,
            self.openid,
            self.amount,
            self.remark,
            self.scene_id,
            self.user_name,
        )


@dataclass(frozen=True)
class Seen:
    """One request as the fake received it (after its signature check)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    signature_ok: bool

    def json(self) -> Any:
        return json.loads(self.body)


def _package_info() -> str:
    return "ABBQO+oYAAABAAAAAAAk+yPtrAAAAAAAAAAA" + secrets.token_hex(8)


def _now_text() -> str:
    return datetime.now(_CHINA).isoformat(timespec="seconds")


def _our_state(state: str) -> str:
    if state == "SUCCESS":
        return "succeeded"
    if state in ("FAIL", "CANCELLED"):
        return "failed"
    return "pending"


class FakeWechatPay:
    def __init__(
        self,
        keys: WechatKeys,
        *,
        mode: MerchantMode = "public_key",
        hang_seconds: float = 1.0,
        balance_fen: int | None = None,
        app_ids: set[str] | None = None,
        invalid_openids: set[str] | None = None,
    ) -> None:
        self.keys = keys
        self.mode = mode
        self._notice_signers: itertools.cycle[Signer] = itertools.cycle(
            ["public_key", "certificate"]
        )
        self.merchant_public = keys.merchant.public_key()
        self.hang_seconds = hang_seconds
        self.app_ids = app_ids if app_ids is not None else {keys.app_id}
        self.reset(balance_fen=balance_fen, invalid_openids=invalid_openids)
        self._release = asyncio.Event()
        self.app = Starlette(
            routes=[
                Route(TRANSFER_PATH, self._transfer, methods=["POST"]),
                Route(QUERY_PREFIX + "{out_bill_no}", self._query, methods=["GET"]),
            ]
        )

    # -- test controls --------------------------------------------------------------------
    def reset(
        self, *, balance_fen: int | None = None, invalid_openids: set[str] | None = None
    ) -> None:
        """Forget every bill, plan and request (one fake serving many tests)."""
        self.balance_fen = balance_fen
        self.invalid_openids = invalid_openids or set()
        self.bills: dict[str, Bill] = {}
        self.ledger: list[Bill] = []  # every booking ever made, in order
        self.plans: dict[str, Plan] = {}
        # Faults for the next status queries whatever bill they ask about (a query for a
        # bill that does not exist has no openid, so no plan).
        self.next_query_faults: list[str] = []
        self.requests: list[Seen] = []
        self.bad_signatures = 0

    def plan(self, openid: str, plan: Plan) -> Plan:
        self.plans[openid] = plan
        return plan

    def booked_states(self) -> dict[str, list[str]]:
        """out_bill_no (= the payout's idempotency key) → our state of each booking."""
        found: dict[str, list[str]] = {}
        for bill in self.ledger:
            found.setdefault(bill.out_bill_no, []).append(_our_state(bill.state))
        return found

    def submits(self) -> list[Seen]:
        return [r for r in self.requests if r.method == "POST"]

    def queries(self) -> list[Seen]:
        return [r for r in self.requests if r.method == "GET"]

    def set_state(self, out_bill_no: str, state: str, fail_reason: str | None = None) -> Bill:
        bill = self.bills[out_bill_no]
        bill.state, bill.update_time = state, _now_text()
        bill.fail_reason = fail_reason if state in ("FAIL", "CANCELLED") else None
        if state not in ("WAIT_USER_CONFIRM", "TRANSFERING"):
            bill.package_info = None
        return bill

    def confirm(self, out_bill_no: str) -> Bill:
        """The user confirms the receipt in WeChat: the transfer succeeds."""
        return self.set_state(out_bill_no, "SUCCESS")

    def release_hung_requests(self) -> None:
        self._release.set()

    def notice(
        self,
        out_bill_no: str,
        *,
        timestamp: int | None = None,
        signing_key: rsa.RSAPrivateKey | None = None,
        serial: str | None = None,
        apiv3_key: str | None = None,
        event_type: str = "MCHTRANSFER.BILL.FINISHED",
        mchid: str | None = None,
        tamper: bool = False,
        signature: str | None = None,
        signer: Signer | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """A ``MCHTRANSFER.BILL.FINISHED`` notice about the bill, as WeChat Pay sends it
        (or forged: another signing key, serial or APIv3 key, a body changed after signing,
        an old timestamp, a given signature). ``signer`` defaults to the merchant's mode
        (alternating while switching)."""
        bill = self.bills[out_bill_no]
        resource: dict[str, Any] = {
            "mch_id": mchid or self.keys.mchid,
            "out_bill_no": bill.out_bill_no,
            "transfer_bill_no": bill.transfer_bill_no,
            "state": bill.state,
            "transfer_amount": bill.amount,
            "openid": bill.openid,
            "create_time": bill.create_time,
            "update_time": bill.update_time,
        }
        if bill.fail_reason:
            resource["fail_reason"] = bill.fail_reason
        nonce = secrets.token_hex(6)  # 12 characters, as in WeChat's notices
        sealed = AESGCM((apiv3_key or self.keys.apiv3_key).encode()).encrypt(
            nonce.encode(), json.dumps(resource).encode(), b"mch_payment"
        )
        payload = {
            "id": str(uuid.uuid4()),
            "create_time": _now_text(),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "商家转账单据终态通知",
            "resource": {
                "original_type": "mch_payment",
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode(),
                "associated_data": "mch_payment",
                "nonce": nonce,
            },
        }
        body = json.dumps(payload, ensure_ascii=False).encode()
        if signer is None:
            signer = {
                "public_key": "public_key",
                "certificate": "certificate",
                "switching": next(self._notice_signers),
            }[self.mode]
        key, signer_serial = self.keys.signing_key(signer)
        headers = self._signature_headers(
            body,
            timestamp=timestamp,
            key=signing_key or key,
            serial=serial or signer_serial,
            signature=signature,
        )
        if tamper:
            body = body.replace(b'"encrypt-resource"', b'"encrypt-resource" ')
        headers["Content-Type"] = "application/json"
        return body, headers

    # -- signing ----------------------------------------------------------------------------
    @staticmethod
    def _signature_headers(
        body: bytes,
        *,
        key: rsa.RSAPrivateKey,
        serial: str,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        nonce = secrets.token_hex(16)
        message = f"{stamp}\n{nonce}\n".encode() + body + b"\n"
        return {
            "Wechatpay-Timestamp": stamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": signature or sign_rsa_sha256(key, message),
            "Wechatpay-Serial": serial,
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        }

    def answer_signer(self, request_serial: str | None) -> Signer:
        """Who signs the answer to a request naming ``request_serial`` (see the module doc)."""
        if self.mode != "certificate" and request_serial == self.keys.public_key_id:
            return "public_key"
        return "certificate"

    def _decryption_key(self, request_serial: str) -> rsa.RSAPrivateKey | None:
        """The private key behind the ``Wechatpay-Serial`` a request names for its
        encrypted fields: the public key (not for a merchant without one) or a platform
        certificate."""
        if request_serial == self.keys.public_key_id:
            return self.keys.wechatpay if self.mode != "certificate" else None
        for certificate in self.keys.certificates:
            if certificate.serial == request_serial.upper():
                return certificate.key
        return None

    def _answer(
        self,
        request: Request,
        status: int,
        payload: Mapping[str, Any],
        fault: str | None = None,
    ) -> Response:
        body = json.dumps(dict(payload), ensure_ascii=False).encode()
        headers = {"Request-ID": uuid.uuid4().hex}
        if fault != "unsigned":
            key, serial = self.keys.signing_key(
                self.answer_signer(request.headers.get("wechatpay-serial"))
            )
            if fault == "wrong_serial":
                serial = "PUB_KEY_ID_0000000000000000"
            signed = self._signature_headers(body, key=key, serial=serial)
            if fault == "bad_signature":
                raw = bytearray(base64.b64decode(signed["Wechatpay-Signature"]))
                raw[0] ^= 0xFF
                signed["Wechatpay-Signature"] = base64.b64encode(bytes(raw)).decode()
            headers.update(signed)
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    @staticmethod
    def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str]]:
        return status, {"code": code, "message": message}

    def _check_authorization(self, request: Request, body: bytes) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, params = header.partition(" ")
        if scheme != "WECHATPAY2-SHA256-RSA2048":
            return False
        fields = dict(_AUTH.findall(params))
        if fields.get("mchid") != self.keys.mchid:
            return False
        if fields.get("serial_no") != self.keys.merchant_serial_no:
            return False
        stamp, nonce, signature = (
            fields.get("timestamp", ""),
            fields.get("nonce_str", ""),
            fields.get("signature", ""),
        )
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > SIGNATURE_TOLERANCE_SECONDS:
            return False
        url = request.scope["raw_path"].decode()
        if request.scope.get("query_string"):
            url += "?" + request.scope["query_string"].decode()
        message = f"{request.method}\n{url}\n{stamp}\n{nonce}\n".encode() + body + b"\n"
        return bool(nonce) and verify_rsa_sha256(self.merchant_public, message, signature)

    async def _hang(self) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), self.hang_seconds)

    # -- endpoints --------------------------------------------------------------------------
    async def _received(self, request: Request) -> tuple[bytes, bool]:
        body = await request.body()
        ok = self._check_authorization(request, body)
        self.requests.append(
            Seen(request.method, request.url.path, dict(request.headers), body, ok)
        )
        if not ok:
            self.bad_signatures += 1
        return body, ok

    async def _transfer(self, request: Request) -> Response:
        body, ok = await self._received(request)
        if not ok:
            # WeChat cannot sign for a merchant it did not authenticate.
            return self._answer(
                request, 401, {"code": "SIGN_ERROR", "message": "签名错误"}, "unsigned"
            )
        try:
            data = json.loads(body)
        except ValueError:
            return self._answer(request, *self._error(400, "PARAM_ERROR", "请求体不是合法的JSON"))
        if not isinstance(data, dict):
            return self._answer(request, *self._error(400, "PARAM_ERROR", "请求体不是合法的JSON"))
        plan = self.plans.get(str(data.get("openid")), Plan())
        fault = plan.submit_faults.pop(0) if plan.submit_faults else None
        if fault == "429":
            return self._answer(request, *self._error(429, "FREQUENCY_LIMITED", "频率超限"))
        if fault == "500":
            return self._answer(request, *self._error(500, "SYSTEM_ERROR", "系统繁忙,请稍后重试"))
        if fault == "unknown_error":
            return self._answer(request, *self._error(400, "BRAND_NEW_ERROR", "一个新的错误码"))
        if fault and fault.startswith(("error:", "unsigned_error:")):
            kind, http_status, code, *text = fault.split(":", 3)
            message = text[0] if text else f"注入的错误 {code}"
            message = message.replace("{openid}", str(data.get("openid")))
            return self._answer(
                request,
                *self._error(int(http_status), code, message),
                "unsigned" if kind == "unsigned_error" else None,
            )
        status, payload = self._book(request, data, plan)
        if status == 200 and fault == "timeout_after_booking":
            await self._hang()
        if status == 200 and fault == "500_after_booking":
            return self._answer(request, *self._error(500, "SYSTEM_ERROR", "系统繁忙,请稍后重试"))
        return self._answer(request, status, payload, fault)

    def _book(
        self, request: Request, data: dict[str, Any], plan: Plan
    ) -> tuple[int, dict[str, Any]]:
        invalid = self._invalid(request, data)
        if invalid is not None:
            return invalid
        out_bill_no = data["out_bill_no"]
        user_name = (
            self._decrypt(data["user_name"], request.headers.get("wechatpay-serial", ""))
            if "user_name" in data
            else None
        )
        existing = self.bills.get(out_bill_no)
        parameters = (
            data["appid"],
            data["openid"],
            data["transfer_amount"],
            data["transfer_remark"],
            data["transfer_scene_id"],
            user_name,
        )
        if existing is not None:
            if existing.parameters() != parameters:
                return self._error(400, "INVALID_REQUEST", DUPLICATE_MISMATCH)
            # The documented re-send: the existing bill again, moved on if it was stuck.
            existing.resends += 1
            if existing.state in ("ACCEPTED", "PROCESSING") and plan.resend_moves_to:
                self.set_state(out_bill_no, plan.resend_moves_to)
                if existing.state in ("WAIT_USER_CONFIRM", "TRANSFERING"):
                    existing.package_info = _package_info()
            return 200, self._bill_answer(existing)
        if data["openid"] in self.invalid_openids:
            return self._error(400, "INVALID_REQUEST", OPENID_INVALID)
        if self.balance_fen is not None:
            if data["transfer_amount"] > self.balance_fen:
                return self._error(403, "NOT_ENOUGH", "商户运营账户资金不足")
            self.balance_fen -= data["transfer_amount"]
        now = _now_text()
        bill = Bill(
            out_bill_no=out_bill_no,
            transfer_bill_no=f"1330000071100999991182020{next(_bill_numbers):015d}",
            appid=data["appid"],
            openid=data["openid"],
            amount=data["transfer_amount"],
            remark=data["transfer_remark"],
            scene_id=data["transfer_scene_id"],
            user_name=user_name,
            state=plan.initial_state,
            create_time=now,
            update_time=now,
        )
        if bill.state in ("WAIT_USER_CONFIRM", "TRANSFERING"):
            bill.package_info = _package_info()
        if bill.state in ("FAIL", "CANCELLED"):
            bill.fail_reason = plan.fail_reason
        self.bills[out_bill_no] = bill
        self.ledger.append(bill)
        return 200, self._bill_answer(bill)

    def _invalid(self, request: Request, data: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:  # noqa: C901  (the provider's checks, one after another, as its docs list them)
        if not request.headers.get("user-agent"):
            return self._error(400, "PARAM_ERROR", "HTTP头缺少User-Agent")
        if "application/json" not in request.headers.get("content-type", ""):
            return self._error(415, "PARAM_ERROR", "Content-Type必须为application/json")
        for name, kind in (
            ("appid", str),
            ("out_bill_no", str),
            ("transfer_scene_id", str),
            ("openid", str),
            ("transfer_amount", int),
            ("transfer_remark", str),
        ):
            value = data.get(name)
            if not isinstance(value, kind) or isinstance(value, bool) or value in ("", 0):
                return self._error(400, "PARAM_ERROR", f"输入源“/body/{name}”映射到值字段失败")
        if not _OUT_BILL_NO.fullmatch(data["out_bill_no"]):
            return self._error(400, "PARAM_ERROR", "商户单号只能由数字、大小写字母组成")
        if len(data["transfer_remark"]) > 32:
            return self._error(400, "PARAM_ERROR", "转账备注超过32个字符")
        if data["appid"] not in self.app_ids:
            return self._error(400, "APPID_MCHID_NOT_MATCH", "appid与商户号不匹配")
        required = _SCENE_REPORT_TYPES.get(data["transfer_scene_id"], set())
        infos = data.get("transfer_scene_report_infos") or []
        given = {i.get("info_type") for i in infos if isinstance(i, dict) and i.get("info_content")}
        if not required <= given or any(
            len(i.get("info_type", "")) > 15 or len(i.get("info_content", "")) > 32 for i in infos
        ):
            return self._error(400, "PARAM_ERROR", "需传入转账场景报备信息,请检查")
        if data["transfer_amount"] < MIN_AMOUNT_FEN:
            return self._error(400, "INVALID_REQUEST", AMOUNT_OUT_OF_RANGE)
        if "user_name" in data:
            serial = request.headers.get("wechatpay-serial")
            if not serial:
                return self._error(400, "PARAM_ERROR", SERIAL_MISSING)
            if self._decrypt(data["user_name"], serial) is None:
                return self._error(400, "PARAM_ERROR", NOT_CIPHERTEXT)
            if data["transfer_amount"] < NAME_ALLOWED_FROM_FEN:
                return self._error(400, "PARAM_ERROR", NAME_BELOW_MINIMUM)
        elif data["transfer_amount"] >= NAME_REQUIRED_FROM_FEN:
            return self._error(400, "PARAM_ERROR", "转账金额>=2000元时收款用户姓名必填")
        return None

    def _decrypt(self, value: Any, serial: str) -> str | None:
        key = self._decryption_key(serial)
        if key is None:
            return None
        try:
            plain = key.decrypt(
                base64.b64decode(value, validate=True),
                padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
            )
        except (ValueError, TypeError):
            return None
        return plain.decode()

    @staticmethod
    def _bill_answer(bill: Bill) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "out_bill_no": bill.out_bill_no,
            "transfer_bill_no": bill.transfer_bill_no,
            "create_time": bill.create_time,
            "state": bill.state,
        }
        if bill.fail_reason:
            answer["fail_reason"] = bill.fail_reason
        if bill.package_info:
            answer["package_info"] = bill.package_info
        return answer

    async def _query(self, request: Request) -> Response:
        _, ok = await self._received(request)
        if not ok:
            return self._answer(
                request, 401, {"code": "SIGN_ERROR", "message": "签名错误"}, "unsigned"
            )
        out_bill_no = request.path_params["out_bill_no"]
        bill = self.bills.get(out_bill_no)
        plan = self.plans.get(bill.openid if bill else "", Plan())
        if self.next_query_faults:
            fault: str | None = self.next_query_faults.pop(0)
        else:
            fault = plan.query_faults.pop(0) if plan.query_faults else None
        if fault == "429":
            return self._answer(request, *self._error(429, "FREQUENCY_LIMITED", "频率超限"))
        if fault == "500":
            return self._answer(request, *self._error(500, "SYSTEM_ERROR", "系统繁忙,请稍后重试"))
        if fault == "timeout":
            await self._hang()
        if bill is None:
            return self._answer(request, 404, {"code": "NOT_FOUND", "message": "记录不存在"}, fault)
        bill.queries += 1
        if bill.state in _PENDING:
            if (
                plan.succeed_after_queries is not None
                and bill.queries >= plan.succeed_after_queries
            ):
                self.set_state(out_bill_no, "SUCCESS")
            elif plan.fail_after_queries is not None and bill.queries >= plan.fail_after_queries:
                self.set_state(out_bill_no, "FAIL", plan.fail_reason)
        answer: dict[str, Any] = {
            "mch_id": self.keys.mchid,
            "out_bill_no": bill.out_bill_no,
            "transfer_bill_no": bill.transfer_bill_no,
            "appid": bill.appid,
            "state": bill.state,
            "transfer_amount": bill.amount,
            "transfer_remark": bill.remark,
            "openid": bill.openid,
            "create_time": bill.create_time,
            "update_time": bill.update_time,
        }
        if bill.fail_reason:
            answer["fail_reason"] = bill.fail_reason
        return self._answer(request, 200, answer, fault)


@asynccontextmanager
async def serve_fake(fake: FakeWechatPay) -> AsyncIterator[str]:
    """Serve the fake on loopback; hung answers are let go before the server stops."""
    async with serve_asgi(fake.app) as base_url:
        try:
            yield base_url
        finally:
            fake.release_hung_requests()
