"""A fake Alipay openapi gateway (``POST /gateway.do``) for the adapter's tests.

It speaks the classic gateway protocol: form-encoded common parameters signed RSA2 with the
app's private key (checked here with the app's public key; the timestamp must be Beijing
time), JSON answers ``{"<method>_response": {...}, "sign": "…"}`` signed with the fake's own
"Alipay" private key over the exact text of the ``*_response`` value. That text has raw
UTF-8 Chinese (as Alipay sends it) and, unlike Alipay's compact answers, spaces after ``:``
and ``,``: an adapter that re-serialized the parsed JSON before verifying fails every answer.

Certificate mode (公钥证书模式), when the fake is given :class:`FakeCertificates`: like
Alipay for the fund APIs of newer apps, every request must carry ``app_cert_sn`` and
``alipay_root_cert_sn``, or it is refused ``40002 isv.missing-app-cert-sn`` /
``isv.missing-alipay-root-cert-sn`` (the answer real apps report for a public-key-mode
transfer, e.g. the aliyun developer Q&A https://developer.aliyun.com/ask/285112); an SN other
than the one the fake computes from the certificates it holds is refused
``isv.app-cert-not-exist`` (https://developer.aliyun.com/ask/285114) or
``isv.invalid-alipay-root-cert-sn`` (https://developer.aliyun.com/ask/285113). Answers carry
``alipay_cert_sn``, the SN of the certificate the fake signs with, as Alipay's do
(``{"…_response": {...}, "alipay_cert_sn": "…", "sign": "…"}``). The fake computes SNs
its own way (``cryptography``'s RFC 4514 issuer string, which equals Java's RFC 2253 string
for these names) following the Java SDK (alipay/alipay-sdk-java-all
``AntCertificationUtil.getRootCertSN``, ``AbstractAlipayClient.getCertSN``) and the Node SDK
(alipay/alipay-sdk-nodejs-all ``src/antcertutil.ts``): md5 hex of issuer DN + decimal serial;
root: RSA-signed certificates only, ``_``-joined.

Notices are signed like Alipay's signer does (Java ``AlipaySignature.getSignContent``): the
sorted ``k=v`` of the non-empty parameters; without ``sign_type`` by default, with it when
asked (the SDKs' ``rsaCheckV1``/``rsaCheckV2`` accept either).

Methods: ``alipay.fund.trans.uni.transfer`` (idempotent on ``out_biz_no``: the same content
answers the original order, other content ``PAYMENT_INFO_INCONSISTENCY``) and
``alipay.fund.trans.common.query`` (``ORDER_NOT_EXIST`` when nothing was booked). It keeps a
ledger of booked orders, signs ``alipay.fund.trans.order.changed`` notices (and forged
ones), and plays the faults a :class:`Script` asks for, chosen by the transfer's amount.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl, urlencode

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from payoutsvc.gateways.providers import sign_rsa_sha256, verify_rsa_sha256

BEIJING = timezone(timedelta(hours=8))
TRANSFER = "alipay.fund.trans.uni.transfer"
QUERY = "alipay.fund.trans.common.query"
NOTICE = "alipay.fund.trans.order.changed"
TIMESTAMP_SKEW = timedelta(minutes=10)
_AMOUNT = re.compile(r"(0|[1-9]\d{0,8})(\.\d{1,2})?")
_USER_ID = re.compile(r"2088\d{12}")
_OPEN_ID = re.compile(r"0[0-9A-Za-z]{1,63}")
RSA_SIGNATURE_OID_PREFIX = "1.2.840.113549.1.1."
_order_numbers = itertools.count(1)

# How the ledger reports an order's status (for assert_paid_exactly_once).
LEDGER_STATE = {
    "SUCCESS": "succeeded",
    "DEALING": "pending",
    "WAIT_PAY": "pending",
    "INIT": "pending",
    "FAIL": "failed",
    "REFUND": "failed",
    "CLOSED": "failed",
}

SUB_MESSAGES = {
    "SYSTEM_ERROR": "系统繁忙",
    "PAYEE_NOT_EXIST": "收款账号不存在或姓名有误",
    "PAYEE_USER_INFO_ERROR": "支付宝账号和姓名不匹配请确认姓名是否正确",
    "PAYER_BALANCE_NOT_ENOUGH": "付款方余额不足",
    "EXCEED_LIMIT_SM_MIN_AMOUNT": "请求金额不能低于0.1元",
    "PAYMENT_INFO_INCONSISTENCY": "两次请求商户单号一样但是参数不一致",
    "ORDER_NOT_EXIST": "转账订单不存在",
    "INVALID_PARAMETER": "参数有误",
}


class Fault(Enum):
    NONE = "none"
    DELAY = "delay"  # hold the answer until `FakeAlipay.release()` (past the client timeout)
    CUT = "cut"  # start a 200 answer, then drop the connection mid-body
    HTTP_5XX = "http_5xx"  # answer 502 Bad Gateway
    ERROR_CODE = "error_code"  # answer `Script.code`/`Script.sub_code` instead of the order
    BAD_SIGNATURE = "bad_signature"  # answer the order, signed with a key that is not Alipay's
    # Certificate mode: answer the order signed with Alipay's next (rotated) certificate, one
    # the adapter has not been given yet.
    ROTATED_CERT = "rotated_cert"


@dataclass(frozen=True)
class Script:
    """What the fake does with the transfers of one amount.

    The order is booked with ``status``; a ``DEALING`` order moves to ``then`` after
    ``polls`` status queries (``error_code`` explains a ``FAIL``). The first ``faults``
    submits of a key meet ``fault``; ``fault_books`` says whether those submits book the
    order before the fault strikes. Later submits are answered normally (idempotently).
    """

    status: str = "SUCCESS"
    then: str | None = None
    polls: int = 2
    error_code: str | None = None
    fault: Fault = Fault.NONE
    faults: int = 1
    fault_books: bool = True
    code: str = "40004"
    sub_code: str = "SYSTEM_ERROR"

    @classmethod
    def decline(cls, sub_code: str, code: str = "40004") -> Script:
        """Every submit is refused with this business error; nothing is ever booked."""
        return cls(
            fault=Fault.ERROR_CODE, faults=10**6, fault_books=False, code=code, sub_code=sub_code
        )


def certificate_sn(certificate: x509.Certificate) -> str:
    """md5 hex of the issuer DN (RDNs last first, ``CN=…,OU=…,O=…,C=…``) + decimal serial."""
    issuer = certificate.issuer.rfc4514_string()
    return hashlib.md5((issuer + str(certificate.serial_number)).encode()).hexdigest()


def pem_of(*certificates: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


@dataclass(frozen=True)
class FakeCertificates:
    """What Alipay holds for an app in certificate mode, as PEM files an operator downloads."""

    app_cert: str  # appCertPublicKey_<app_id>.crt
    alipay_cert: str  # alipayCertPublicKey_RSA2.crt
    alipay_root_cert: str  # alipayRootCert.crt
    rotated_alipay_cert: str  # Alipay's next certificate, after a rotation

    def _first(self, pem: str) -> x509.Certificate:
        return x509.load_pem_x509_certificates(pem.encode())[0]

    @property
    def app_cert_sn(self) -> str:
        return certificate_sn(self._first(self.app_cert))

    @property
    def alipay_cert_sn(self) -> str:
        return certificate_sn(self._first(self.alipay_cert))

    @property
    def rotated_alipay_cert_sn(self) -> str:
        return certificate_sn(self._first(self.rotated_alipay_cert))

    @property
    def alipay_root_cert_sn(self) -> str:
        return "_".join(
            certificate_sn(c)
            for c in x509.load_pem_x509_certificates(self.alipay_root_cert.encode())
            if c.signature_algorithm_oid.dotted_string.startswith(RSA_SIGNATURE_OID_PREFIX)
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fake Ant Financial"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Certification Authority"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    subject: x509.Name,
    public_key: Any,
    issuer: x509.Name,
    issuer_key: Any,
    algorithm: hashes.HashAlgorithm,
    serial_number: int,
) -> x509.Certificate:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial_number)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(issuer_key, algorithm)
    )


def make_certificates(
    *,
    app_key: rsa.RSAPrivateKey,
    alipay_key: rsa.RSAPrivateKey,
    rotated_key: rsa.RSAPrivateKey,
    ca_key: rsa.RSAPrivateKey,
    app_id: str,
) -> FakeCertificates:
    """An RSA root (sha256WithRSA) issuing the app's and Alipay's certificates, and an ECDSA
    root beside it in the bundle, which the root SN must skip, as it skips Alipay's E1 root."""
    root_name = _name("Fake Ant Financial Certification Authority R1")
    root = _certificate(
        root_name, ca_key.public_key(), root_name, ca_key, hashes.SHA256(), 2292228364100439313
    )
    ec_key = ec.generate_private_key(ec.SECP384R1())
    ec_name = _name("Fake Ant Financial Certification Authority E1")
    ec_root = _certificate(
        ec_name, ec_key.public_key(), ec_name, ec_key, hashes.SHA384(), 4719484692854726474
    )
    app_subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "测试商户有限公司"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Alipay"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"2088000000000001-{app_id}"),
        ]
    )

    def issued(subject: x509.Name, key: rsa.RSAPrivateKey) -> x509.Certificate:
        return _certificate(
            subject,
            key.public_key(),
            root_name,
            ca_key,
            hashes.SHA256(),
            x509.random_serial_number(),
        )

    alipay_subject = _name("支付宝(中国)网络技术有限公司-2088000000000002")
    return FakeCertificates(
        app_cert=pem_of(issued(app_subject, app_key)),
        alipay_cert=pem_of(issued(alipay_subject, alipay_key)),
        alipay_root_cert=pem_of(ec_root, root),
        rotated_alipay_cert=pem_of(issued(alipay_subject, rotated_key)),
    )


def _beijing_now() -> str:
    return datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class Order:
    out_biz_no: str
    order_id: str
    pay_fund_order_id: str
    content: dict[str, Any]  # what idempotency compares: amount, products, payee
    status: str
    then: str | None
    polls_left: int
    error_code: str | None
    trans_date: str = field(
        default_factory=lambda: datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S")
    )


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class _CutShort(Response):
    """A 200 whose body stops halfway: the client sees the connection drop mid-answer."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json;charset=utf-8"),
                    (b"content-length", b"512"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b'{"alipay_fund_trans_uni_tr'})
        # Returning now leaves the declared body unfinished: the server closes the socket.


class FakeAlipay:
    def __init__(
        self,
        *,
        app_id: str,
        app_public_key: rsa.RSAPublicKey,
        key: rsa.RSAPrivateKey | None = None,
        impostor_key: rsa.RSAPrivateKey | None = None,
        delay_seconds: float = 10.0,
        certificates: FakeCertificates | None = None,
        rotated_key: rsa.RSAPrivateKey | None = None,
    ) -> None:
        """``key`` is "Alipay's" private key, ``impostor_key`` anyone else's (both generated
        when not given; tests pass keys generated once to stay fast)."""
        self.app_id = app_id
        self.app_public_key = app_public_key
        self.key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.impostor_key = impostor_key or rsa.generate_private_key(
            public_exponent=65537, key_size=2048
        )
        self.delay_seconds = delay_seconds  # the longest a DELAY answer is held
        # Certificate mode: requests must carry these SNs; answers name the signing cert's.
        self.certificates = certificates
        self.rotated_key = rotated_key  # the key of certificates.rotated_alipay_cert
        self._released = asyncio.Event()
        self.scripts: dict[str, Script] = {}  # by trans_amount, e.g. "10.02"
        self.orders: dict[str, Order] = {}  # by out_biz_no: Alipay's idempotency
        self.booked: dict[str, list[Order]] = {}  # the ledger: every booking ever made
        self.requests: list[dict[str, str]] = []  # every request whose signature verified
        self.refused: list[str] = []  # sub_codes of requests refused at the gateway
        self.submits: dict[str, int] = {}
        self.raw_answers: list[str] = []
        self.query_error: tuple[str, str] | None = None  # (code, sub_code) for every query
        self.app = Starlette(routes=[Route("/gateway.do", self._gateway, methods=["POST"])])

    @property
    def alipay_public_pem(self) -> str:
        return public_pem(self.key)

    def release(self) -> None:
        """Let held (DELAY) answers go, e.g. before the server shuts down."""
        self._released.set()

    # -- what tests read ------------------------------------------------------------------
    def booked_states(self) -> dict[str, list[str]]:
        return {
            key: [LEDGER_STATE[order.status] for order in orders]
            for key, orders in self.booked.items()
        }

    def biz_contents(self, method: str) -> list[dict[str, Any]]:
        return [json.loads(r["biz_content"]) for r in self.requests if r["method"] == method]

    # -- notices --------------------------------------------------------------------------
    def finish(self, out_biz_no: str) -> Order:
        """Move a DEALING order to its final status now (as Alipay does before notifying)."""
        order = self.orders[out_biz_no]
        if order.then is not None:
            order.status, order.then = order.then, None
        return order

    def notice(
        self,
        out_biz_no: str,
        *,
        status: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        fields: Mapping[str, str] | None = None,
        tamper: Mapping[str, str] | None = None,
        notify_id: str | None = None,
        sign_type_signed: bool = False,
        empty_values_signed: bool = False,
    ) -> bytes:
        """The form body of an ``alipay.fund.trans.order.changed`` notice about an order,
        signed with ``key`` (default: Alipay's) over its non-empty fields, ``sign_type``
        included when ``sign_type_signed``. ``fields`` override common fields before
        signing (an empty value is sent but not signed, unless ``empty_values_signed``: the
        content Java's ``AlipaySignature.getSignCheckContentV1`` checks keeps empty values),
        ``tamper`` after."""
        order = self.orders[out_biz_no]
        content: dict[str, Any] = {
            "action_type": "FINISH",
            "biz_scene": "DIRECT_TRANSFER",
            "origin_interface": TRANSFER,
            "out_biz_no": order.out_biz_no,
            "order_id": order.order_id,
            "pay_fund_order_id": order.pay_fund_order_id,
            "product_code": "TRANS_ACCOUNT_NO_PWD",
            "status": status or order.status,
            "trans_amount": order.content["trans_amount"],
            "pay_date": order.trans_date,
        }
        if content["status"] == "FAIL":
            content["error_code"] = order.error_code or "PAYEE_NOT_EXIST"
            content["fail_reason"] = SUB_MESSAGES.get(content["error_code"], "失败")
        params = {
            "notify_id": notify_id or uuid.uuid4().hex,
            "utc_timestamp": str(int(time.time() * 1000)),
            "msg_method": NOTICE,
            "app_id": self.app_id,
            "version": "1.1",
            "charset": "utf-8",
            "biz_content": json.dumps(content, ensure_ascii=False),
            **(fields or {}),
        }
        params["sign_type"] = "RSA2"
        signed = "&".join(
            f"{k}={params[k]}"
            for k in sorted(params)
            if (empty_values_signed or params[k] != "") and (sign_type_signed or k != "sign_type")
        )
        params["sign"] = sign_rsa_sha256(key or self.key, signed.encode())
        params.update(tamper or {})
        return urlencode(params).encode()

    def tampered_status_notice(self, out_biz_no: str, status: str) -> bytes:
        """A genuine notice whose biz_content status was changed after Alipay signed it."""
        genuine = dict(parse_qsl(self.notice(out_biz_no).decode()))
        content = json.loads(genuine["biz_content"])
        content["status"] = status
        genuine["biz_content"] = json.dumps(content, ensure_ascii=False)
        return urlencode(genuine).encode()

    # -- the gateway ----------------------------------------------------------------------
    async def _gateway(self, request: Request) -> Response:
        try:
            params = dict(
                parse_qsl(
                    (await request.body()).decode("ascii"),
                    keep_blank_values=True,
                    strict_parsing=True,
                )
            )
        except ValueError:
            return self._refuse("alipay_response", "40002", "isv.invalid-form")
        method = params.get("method", "")
        node = method.replace(".", "_") + "_response"
        problem = self._check_common(params)
        if problem is not None:
            return self._refuse(node, "40002", problem)
        self.requests.append(params)
        content = json.loads(params["biz_content"])
        if method == TRANSFER:
            return await self._transfer(node, content)
        if method == QUERY:
            return self._query(node, content)
        return self._refuse(node, "40002", "isv.invalid-method")

    def _check_common(self, params: dict[str, str]) -> str | None:
        required = ("app_id", "method", "format", "charset", "sign_type", "timestamp", "version")
        if any(not params.get(name) for name in (*required, "biz_content", "sign")):
            return "isv.missing-parameter"
        if params["app_id"] != self.app_id:
            return "isv.invalid-app-id"
        if self.certificates is not None:
            problem = self._check_certificate_sns(params)
            if problem is not None:
                return problem
        if (params["format"], params["charset"], params["sign_type"], params["version"]) != (
            "JSON",
            "utf-8",
            "RSA2",
            "1.0",
        ):
            return "isv.invalid-parameter"
        try:
            stamp = datetime.strptime(params["timestamp"], "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return "isv.invalid-timestamp"
        if abs(stamp.replace(tzinfo=BEIJING) - datetime.now(BEIJING)) > TIMESTAMP_SKEW:
            return "isv.invalid-timestamp"
        signed = "&".join(
            f"{k}={params[k]}" for k in sorted(params) if k != "sign" and params[k] != ""
        )
        if not verify_rsa_sha256(self.app_public_key, signed.encode(), params["sign"]):
            return "isv.invalid-signature"
        try:
            content = json.loads(params["biz_content"])
        except ValueError:
            return "isv.invalid-parameter"
        return None if isinstance(content, dict) else "isv.invalid-parameter"

    def _check_certificate_sns(self, params: Mapping[str, str]) -> str | None:
        """Certificate mode: the app's certificate names the key to verify the request with."""
        assert self.certificates is not None
        if not params.get("app_cert_sn"):
            return "isv.missing-app-cert-sn"
        if not params.get("alipay_root_cert_sn"):
            return "isv.missing-alipay-root-cert-sn"
        if params["app_cert_sn"] != self.certificates.app_cert_sn:
            return "isv.app-cert-not-exist"
        if params["alipay_root_cert_sn"] != self.certificates.alipay_root_cert_sn:
            return "isv.invalid-alipay-root-cert-sn"
        return None

    async def _transfer(self, node: str, content: dict[str, Any]) -> Response:
        invalid = _invalid_transfer(content)
        if invalid is not None:
            return self._answer(node, _error("40004", invalid))
        key = content["out_biz_no"]
        compared = {k: content.get(k) for k in ("trans_amount", "product_code", "biz_scene")}
        compared["payee_info"] = content["payee_info"]
        existing = self.orders.get(key)
        if existing is not None:
            if existing.content != compared:
                return self._answer(node, _error("40004", "PAYMENT_INFO_INCONSISTENCY"))
            return self._answer(node, _order_answer(existing))
        script = self.scripts.get(content["trans_amount"], Script())
        self.submits[key] = attempt = self.submits.get(key, 0) + 1
        fault = script.fault if attempt <= script.faults else Fault.NONE
        booked = (
            self._book(key, compared, script) if fault is Fault.NONE or script.fault_books else None
        )
        answer = _order_answer(booked) if booked else _error(script.code, script.sub_code)
        if fault is Fault.DELAY:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), self.delay_seconds)
        elif fault is Fault.CUT:
            return _CutShort()
        elif fault is Fault.HTTP_5XX:
            return PlainTextResponse("Bad Gateway", status_code=502)
        elif fault is Fault.BAD_SIGNATURE:
            return self._answer(node, answer, key=self.impostor_key)
        elif fault is Fault.ROTATED_CERT:
            assert self.certificates is not None
            assert self.rotated_key is not None
            return self._answer(
                node,
                answer,
                key=self.rotated_key,
                cert_sn=self.certificates.rotated_alipay_cert_sn,
            )
        elif fault is Fault.ERROR_CODE:
            answer = _error(script.code, script.sub_code)
        return self._answer(node, answer)

    def _book(self, key: str, content: dict[str, Any], script: Script) -> Order:
        number = next(_order_numbers)
        order = Order(
            out_biz_no=key,
            order_id=f"2024{number:028d}",
            pay_fund_order_id=f"2024{number:012d}1506{number:012d}",
            content=content,
            status=script.status,
            then=script.then,
            polls_left=script.polls,
            error_code=script.error_code,
        )
        self.orders[key] = order
        self.booked.setdefault(key, []).append(order)
        return order

    def _query(self, node: str, content: dict[str, Any]) -> Response:
        key = content.get("out_biz_no")
        if not key or (content.get("product_code"), content.get("biz_scene")) != (
            "TRANS_ACCOUNT_NO_PWD",
            "DIRECT_TRANSFER",
        ):
            return self._answer(node, _error("40004", "INVALID_PARAMETER"))
        if self.query_error is not None:
            return self._answer(node, _error(*self.query_error))
        order = self.orders.get(key)
        if order is None:
            return self._answer(node, _error("40004", "ORDER_NOT_EXIST"))
        if order.then is not None:
            order.polls_left -= 1
            if order.polls_left <= 0:
                self.finish(key)
        answer: dict[str, Any] = {
            "code": "10000",
            "msg": "Success",
            "order_id": order.order_id,
            "pay_fund_order_id": order.pay_fund_order_id,
            "out_biz_no": order.out_biz_no,
            "status": order.status,
        }
        if order.status == "SUCCESS":
            answer["trans_amount"] = order.content["trans_amount"]
            answer["pay_date"] = order.trans_date
        if order.status in ("FAIL", "REFUND"):
            answer["error_code"] = order.error_code or "PAYEE_NOT_EXIST"
            answer["fail_reason"] = SUB_MESSAGES.get(answer["error_code"], "失败")
        return self._answer(node, answer)

    def _refuse(self, node: str, code: str, sub_code: str) -> Response:
        self.refused.append(sub_code)
        return self._answer(node, _error(code, sub_code))

    def _answer(
        self,
        node: str,
        payload: Mapping[str, Any],
        *,
        key: rsa.RSAPrivateKey | None = None,
        cert_sn: str | None = None,
    ) -> Response:
        # Alipay's spacing and raw UTF-8: the signature covers exactly these characters.
        text = json.dumps(payload, ensure_ascii=False)
        signature = sign_rsa_sha256(key or self.key, text.encode())
        if self.certificates is not None:  # the SN of the certificate that signed it
            sn = cert_sn or self.certificates.alipay_cert_sn
            body = f'{{"{node}": {text}, "alipay_cert_sn": "{sn}", "sign": "{signature}"}}'
        else:
            body = f'{{"{node}": {text}, "sign": "{signature}"}}'
        self.raw_answers.append(body)
        return Response(body.encode(), media_type="text/html;charset=utf-8")


def _invalid_transfer(content: Mapping[str, Any]) -> str | None:
    """The sub_code Alipay refuses this uni.transfer biz_content with, if any."""
    key, amount = content.get("out_biz_no"), content.get("trans_amount")
    if not isinstance(key, str) or not re.fullmatch(r"[0-9A-Za-z_]{1,64}", key):
        return "INVALID_PARAMETER"
    if (content.get("product_code"), content.get("biz_scene")) != (
        "TRANS_ACCOUNT_NO_PWD",
        "DIRECT_TRANSFER",
    ):
        return "INVALID_PARAMETER"
    if not isinstance(amount, str) or not _AMOUNT.fullmatch(amount):
        return "INVALID_PARAMETER"
    if Decimal(amount) < Decimal("0.10"):
        return "EXCEED_LIMIT_SM_MIN_AMOUNT"
    title = content.get("order_title")
    if not isinstance(title, str) or not 0 < len(title) <= 128:
        return "INVALID_PARAMETER"
    payee = content.get("payee_info")
    if not isinstance(payee, dict) or not isinstance(payee.get("identity"), str):
        return "INVALID_PARAMETER"
    kind, identity, name = payee.get("identity_type"), payee["identity"], payee.get("name")
    if kind == "ALIPAY_USER_ID":
        return None if _USER_ID.fullmatch(identity) else "PAYEE_NOT_EXIST"
    if kind == "ALIPAY_OPEN_ID":  # an open id of another app is nobody under this one
        return None if _OPEN_ID.fullmatch(identity) else "PAYEE_NOT_EXIST"
    if kind == "ALIPAY_LOGON_ID":
        return None if name and len(identity) <= 64 else "INVALID_PARAMETER"
    return "INVALID_PARAMETER"


def _error(code: str, sub_code: str) -> dict[str, str]:
    msg = {
        "20000": "Service Currently Unavailable",
        "40002": "Invalid Arguments",
        "40004": "Business Failed",
    }
    return {
        "code": code,
        "msg": msg.get(code, "Business Failed"),
        "sub_code": sub_code,
        "sub_msg": SUB_MESSAGES.get(sub_code, "未知错误"),
    }


def _order_answer(order: Order) -> dict[str, Any]:
    return {
        "code": "10000",
        "msg": "Success",
        "out_biz_no": order.out_biz_no,
        "order_id": order.order_id,
        "pay_fund_order_id": order.pay_fund_order_id,
        "status": order.status,
        "trans_date": order.trans_date,
    }
