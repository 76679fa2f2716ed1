"""Alipay (支付宝): single transfers to Alipay accounts over the classic openapi gateway.

Wire format (``https://openapi.alipay.com/gateway.do``, one URL for every method):

- **Request**: a form POST of the common parameters ``app_id``, ``method``, ``format=JSON``,
  ``charset=utf-8``, ``sign_type=RSA2``, ``timestamp`` (``yyyy-MM-dd HH:mm:ss``, Beijing
  time), ``version=1.0``, optional ``notify_url`` and ``biz_content`` (the method's JSON),
  plus ``sign``: RSA SHA-256 with the app private key over ``k=v`` pairs of every non-empty
  parameter except ``sign``, sorted by name and joined with ``&``.
- **Response**: ``{"<method with _>_response": {...}, "sign": "…"}``. The signature (Alipay's
  key) covers the exact raw text of the ``*_response`` value, so that text is cut out of the
  body as received; re-serializing the parsed JSON would change spacing or escapes. An answer
  whose signature does not verify is not trusted: OutcomeUnknown, never a result.
- ``code`` ``10000`` is success; ``40004`` is a business failure with a ``sub_code``; ``20000``
  (``isp.unknow-error``) is Alipay's own trouble; ``20001``/``40001``/``40002``/``40006`` are
  refusals at the gateway, before any business processing.

Methods: ``alipay.fund.trans.uni.transfer`` (product ``TRANS_ACCOUNT_NO_PWD``, scene
``DIRECT_TRANSFER``) books a transfer under ``out_biz_no`` = the payout's idempotency key;
Alipay is idempotent on it (a repeat with the same content answers the original order, one
with other content ``PAYMENT_INFO_INCONSISTENCY``). ``alipay.fund.trans.common.query`` by
``out_biz_no`` resolves unknown outcomes (``ORDER_NOT_EXIST``: never booked). Alipay's
advice for ``SYSTEM_ERROR`` or a lost answer is exactly that: query, and if there is no
order, repeat the same request.

Two signing modes, chosen by the credentials configured:

- **Public-key certificate mode** (公钥证书模式), required by Alipay for the fund APIs of
  newer apps (a public-key-mode call is refused with ``40002 isv.missing-app-cert-sn``):
  requests also carry (and sign) ``app_cert_sn`` and ``alipay_root_cert_sn``, computed from
  the app certificate and Alipay's root bundle (:mod:`payoutsvc.gateways.alipay_cert`);
  answers carry ``alipay_cert_sn``, the SN of the Alipay certificate that signed them. Only
  the configured Alipay certificate's SN is trusted: when Alipay rotates its certificate the
  answers name a new SN, and until that certificate is configured they are unverifiable
  (OutcomeUnknown, logged as ``alipay.response.unknown_certificate``). The Java SDK fetches
  the new certificate over ``alipay.open.app.alipaycert.download``; this adapter does not
  trust a certificate it did not get from the operator.
- **Public-key mode** (公钥模式), for the accounts and APIs that still allow it: Alipay's
  public key verifies answers, which carry no ``alipay_cert_sn``.

Notices: ``alipay.fund.trans.order.changed``, a form POST (``notify_id``, ``msg_method``,
``app_id``, ``biz_content`` JSON with ``out_biz_no``, ``order_id``, ``status``, …, ``sign``,
``sign_type``) signed by Alipay over the sorted ``k=v`` of its non-empty parameters except
``sign``, with or without ``sign_type`` "for historical reasons": Alipay's SDKs accept
either (Java ``AlipaySignature.rsaCheckV1``/``rsaCheckV2``, Node ``checkNotifySign``), and
so does this adapter, with the configured Alipay key (or certificate). Alipay retries a
notice for about 25 hours until it reads ``success``.

``DEALING`` (处理中) is Alipay holding the transfer in its own (or a bank channel's)
processing: a :class:`ProviderHold` with ``PAYOUTSVC_ALIPAY_DEALING_PATIENCE_HOURS`` of
patience, so it does not use up the unknown-outcome retry schedule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import structlog
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from payoutsvc.gateways.alipay_cert import (
    CertificateError,
    cert_sn,
    certificate_public_key,
    root_cert_sn,
)
from payoutsvc.gateways.base import (
    CallbackNotice,
    CallbackReply,
    Gateway,
    GatewayError,
    InvalidCallback,
    InvalidSignature,
    NotDone,
    OutcomeUnknown,
    ProviderHold,
    Rejected,
    TransferRequest,
    TransferResult,
    TransferState,
)
from payoutsvc.gateways.providers import (
    MissingCredential,
    load_private_key,
    load_public_key,
    provider_client,
    redact_identifiers,
    secret_from,
    send,
    sign_rsa_sha256,
    verify_rsa_sha256,
)
from payoutsvc.money import format_amount
from payoutsvc.recipients.validation import ALIPAY_MIN_AMOUNT_MINOR
from payoutsvc.runtime import Runtime

log = structlog.get_logger(__name__)

NAME = "alipay"
DEFAULT_GATEWAY_URL = "https://openapi.alipay.com/gateway.do"
TRANSFER_METHOD = "alipay.fund.trans.uni.transfer"
QUERY_METHOD = "alipay.fund.trans.common.query"
NOTICE_METHOD = "alipay.fund.trans.order.changed"
PRODUCT_CODE = "TRANS_ACCOUNT_NO_PWD"
BIZ_SCENE = "DIRECT_TRANSFER"
SUCCESS_CODE = "10000"
CURRENCY = "CNY"
# trans_amount for TRANS_ACCOUNT_NO_PWD is limited to [0.1, 100000000] yuan.
MAX_AMOUNT_MINOR = 100_000_000 * 100
ORDER_TITLE_MAX = 128  # order_title: String(128), shown in the payee's Alipay bill
DEFAULT_ORDER_TITLE = "Payout"
IDENTITY_MAX = 64  # payee_info.identity: String(64)
NAME_MAX = 128
# Alipay reads request timestamps as Beijing time (no daylight saving: a fixed offset).
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
REPLY = CallbackReply(media_type="text/plain", body=b"success")

_USER_ID = re.compile(r"2088\d{12}")
# An Alipay open id (the per-app user identifier of apps on the openid standard), shaped like
# Alipay's documentation example "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5": a "0"
# then letters and digits. Requiring a letter keeps it apart from phone numbers.
_OPEN_ID = re.compile(r"0(?=[0-9]*[A-Za-z])[0-9A-Za-z]{19,63}")
# Alipay documents no deadline for DEALING. Transfers to an Alipay balance settle at once;
# DEALING is a channel (bank card: arrival by T+1) or risk review still working, and Alipay
# stops re-sending its notice after about 25 hours. Two days covers a business day of channel
# time plus the whole notice window before a person is asked to look.
DEFAULT_DEALING_PATIENCE_HOURS = 48.0
DEALING = "DEALING"
_WHITESPACE = re.compile(r"[ \t\n\r]*")

# Transfer order statuses (uni.transfer answer, common.query, order.changed notices).
_STATES = {
    "SUCCESS": TransferState.SUCCEEDED,
    "DEALING": TransferState.PENDING,
    "WAIT_PAY": TransferState.PENDING,
    "INIT": TransferState.PENDING,
    "FAIL": TransferState.FAILED,
    "REFUND": TransferState.FAILED,  # 退票: paid out, then returned (bank-card transfers)
    "CLOSED": TransferState.FAILED,
}

# Business failures (code 40004) after which nothing was paid, by our failure code. Any
# sub_code not listed here, SYSTEM_ERROR included, may hide a booked transfer: the status
# query decides.
_DECLINES: dict[str, str] = {
    **dict.fromkeys(
        (
            "PAYEE_NOT_EXIST",
            "PAYEE_ACCOUNT_NOT_EXSIT",  # sic, as Alipay spells it
            "PAYEE_ACCOUNT_NOT_EXIST",
            "PAYEE_ACCOUNT_STATUS_ERROR",
            "PAYEE_USERINFO_STATUS_ERROR",
            "PAYEE_ACC_OCUPIED",  # sic
            "PAYEE_ACC_OCCUPIED",
            "PAYEE_USER_TYPE_ERROR",
            "PAYEE_NOT_RELNAME_CERTIFY",
            "PAYEE_NOT_REALNAME_CERTIFY",
            "PERM_AML_NOT_REALNAME_REV",
            "PERMIT_NON_BANK_LIMIT_PAYEE",
            "PERMIT_LIMIT_PAYEE",
            "PERMIT_CHECK_RECEIVE_LIMIT",
            "RELEASE_USER_FORBBIDEN_RECIEVE",  # sic
            "BLOCK_USER_FORBBIDEN_RECIEVE",  # sic
            "NO_ACCOUNT_USER_FORBBIDEN_RECIEVE",  # sic
            "NO_ACCOUNT_RECEIVE_PERMISSION",
            "PAYER_PAYEE_CANNOT_SAME",
        ),
        "recipient_account_invalid",
    ),
    **dict.fromkeys(("PAYEE_USER_INFO_ERROR", "PAYEE_CERT_INFO_ERROR"), "recipient_name_mismatch"),
    **dict.fromkeys(
        ("PAYER_BALANCE_NOT_ENOUGH", "BALANCE_IS_NOT_ENOUGH", "PAYMENT_MONEY_NOT_ENOUGH"),
        "insufficient_funds",
    ),
    **dict.fromkeys(
        (
            "INVALID_PARAMETER",
            "CURRENCY_NOT_SUPPORT",
            "PRODUCT_NOT_SIGN",
            "PAYER_STATUS_ERROR",
            "PAYER_NOT_EXIST",
            "PAYER_USERINFO_NOT_EXSIT",  # sic
            "PAYER_CERTIFY_CHECK_FAIL",
            "PAYER_PERMLIMIT_CHECK_FAILURE",
            "PERMIT_PAYER_FORBIDDEN",
            "PERMIT_CHECK_PERM_LIMITED",
            "PERMIT_CHECK_PERM_IDENTITY_THEFT",
            "NO_ACCOUNT_PAYMENT_PERMISSION",
            "NO_PERMISSION_ACCOUNT",
            "PAYCARD_UNABLE_PAYMENT",
            "SECURITY_CHECK_FAILED",
            "REMARK_HAS_SENSITIVE_WORD",
            "MEMO_REQUIRED_IN_TRANSFER_ERROR",
            "NOT_IN_WHITE_LIST",
            "USER_RISK_FREEZE",
            "BLOCK_USER_FORBBIDEN_SEND",  # sic
        ),
        "gateway_declined",
    ),
}
_AMOUNT_LIMIT_PREFIX = "EXCEED_LIMIT_"  # single, daily, monthly and minimum amount limits
# Refused before any business processing: sending the same request again is safe.
_NOT_PROCESSED_CODES = frozenset({"20001", "40001", "40002", "40006"})
_NOT_PROCESSED_SUB_CODES = frozenset({"RESOURCE_LIMIT_EXCEED", "aop.ACQ.RESOURCE_LIMIT_EXCEED"})
_ORDER_NOT_EXIST = "ORDER_NOT_EXIST"


class AlipaySettings(BaseSettings):
    """``PAYOUTSVC_ALIPAY_*``: the app's credentials from the Alipay open platform console."""

    model_config = SettingsConfigDict(env_prefix="PAYOUTSVC_ALIPAY_", extra="ignore")

    app_id: str | None = None
    app_private_key: SecretStr | None = None
    app_private_key_file: Path | None = None
    # Alipay's public key (支付宝公钥, not the app's): verifies answers and notices.
    public_key: SecretStr | None = None
    public_key_file: Path | None = None
    # Certificate mode (all three, each inline PEM or ``…_FILE``, as downloaded from the
    # console): the app's public-key certificate (appCertPublicKey_<app_id>.crt), Alipay's
    # public-key certificate (alipayCertPublicKey_RSA2.crt) and Alipay's root bundle
    # (alipayRootCert.crt). With them, PUBLIC_KEY is not used.
    app_cert: SecretStr | None = None
    app_cert_file: Path | None = None
    alipay_cert: SecretStr | None = None
    alipay_cert_file: Path | None = None
    alipay_root_cert: SecretStr | None = None
    alipay_root_cert_file: Path | None = None
    gateway_url: str = DEFAULT_GATEWAY_URL
    timeout_seconds: float = Field(default=15.0, gt=0)
    notify_url: str | None = None
    dealing_patience_hours: float = Field(default=DEFAULT_DEALING_PATIENCE_HOURS, gt=0)

    def certificate_mode(self) -> bool:
        """Certificate mode as soon as any certificate is configured: a half-configured
        certificate mode is a missing credential, never a silent fall back to public keys."""
        return any(
            value is not None
            for value in (
                self.app_cert,
                self.app_cert_file,
                self.alipay_cert,
                self.alipay_cert_file,
                self.alipay_root_cert,
                self.alipay_root_cert_file,
            )
        )


@dataclass(frozen=True, slots=True)
class CertificateMode:
    """The serial numbers of public-key certificate mode."""

    app_cert_sn: str  # sent as app_cert_sn
    alipay_root_cert_sn: str  # sent as alipay_root_cert_sn
    alipay_cert_sn: str  # the configured Alipay certificate: answers must name it

    @classmethod
    def from_pem(cls, *, app_cert: str, alipay_cert: str, alipay_root_cert: str) -> CertificateMode:
        return cls(
            app_cert_sn=cert_sn(app_cert),
            alipay_root_cert_sn=root_cert_sn(alipay_root_cert),
            alipay_cert_sn=cert_sn(alipay_cert),
        )


def create_gateway(runtime: Runtime) -> Gateway:
    """The registry's factory: credentials come from the environment, not the runtime."""
    return AlipayGateway.from_settings(AlipaySettings())


class AlipayGateway:
    name = NAME
    callback_reply: CallbackReply | None = REPLY

    def __init__(
        self,
        *,
        app_id: str,
        app_private_key: rsa.RSAPrivateKey,
        alipay_public_key: rsa.RSAPublicKey,
        gateway_url: str = DEFAULT_GATEWAY_URL,
        timeout_seconds: float = 15.0,
        notify_url: str | None = None,
        certificates: CertificateMode | None = None,
        dealing_patience: timedelta = timedelta(hours=DEFAULT_DEALING_PATIENCE_HOURS),
    ) -> None:
        """``alipay_public_key`` is Alipay's key; in certificate mode (``certificates``
        given) it must be the key of the certificate whose SN is ``alipay_cert_sn``."""
        self._app_id = app_id
        self._private_key = app_private_key
        self._public_key = alipay_public_key
        self._certificates = certificates
        self._dealing_patience = dealing_patience
        self._gateway_url = gateway_url
        self._notify_url = notify_url
        self._client = provider_client(gateway_url, timeout_seconds)

    @classmethod
    def from_settings(cls, settings: AlipaySettings) -> AlipayGateway:
        if not settings.app_id:
            raise MissingCredential("PAYOUTSVC_ALIPAY_APP_ID is not configured")
        private_key = load_private_key(
            secret_from(
                settings.app_private_key,
                settings.app_private_key_file,
                name="PAYOUTSVC_ALIPAY_APP_PRIVATE_KEY",
            )
        )
        certificates: CertificateMode | None = None
        if settings.certificate_mode():
            certificates, public_key = _certificate_credentials(settings, private_key)
        else:
            public_key = load_public_key(
                secret_from(
                    settings.public_key,
                    settings.public_key_file,
                    name="PAYOUTSVC_ALIPAY_PUBLIC_KEY",
                )
            )
        return cls(
            app_id=settings.app_id,
            app_private_key=private_key,
            alipay_public_key=public_key,
            gateway_url=settings.gateway_url,
            timeout_seconds=settings.timeout_seconds,
            notify_url=settings.notify_url or None,
            certificates=certificates,
            dealing_patience=timedelta(hours=settings.dealing_patience_hours),
        )

    @property
    def certificates(self) -> CertificateMode | None:
        return self._certificates

    # -- Gateway protocol ---------------------------------------------------------------
    async def submit(self, request: TransferRequest) -> TransferResult:
        body = await self._call(TRANSFER_METHOD, _transfer_content(request))
        if body.get("code") != SUCCESS_CODE:
            raise _error_of(body)
        _check_echo(body, request.idempotency_key)
        return self._result_of(body)

    async def get_status(
        self, idempotency_key: str, *, reference: str | None = None
    ) -> TransferResult:
        # Asked by out_biz_no alone: Alipay prefers order_id when both are given, and the
        # key is what every attempt shares (an answer carrying order_id may have been lost).
        body = await self._call(
            QUERY_METHOD,
            {"out_biz_no": idempotency_key, "product_code": PRODUCT_CODE, "biz_scene": BIZ_SCENE},
        )
        if body.get("code") != SUCCESS_CODE:
            if body.get("sub_code") == _ORDER_NOT_EXIST:
                return TransferResult(TransferState.NOT_FOUND, gateway_status=_ORDER_NOT_EXIST)
            error = _error_of(body)
            if isinstance(error, Rejected):  # a query refused is no verdict on the transfer
                raise OutcomeUnknown(error.message, gateway_status=error.gateway_status)
            raise error
        _check_echo(body, idempotency_key)
        return self._result_of(body)

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackNotice:
        params = _form_fields(body)
        signature = params.get("sign")
        if not signature:
            raise InvalidSignature("the notice carries no sign")
        if params.get("sign_type", "RSA2") != "RSA2":
            raise InvalidSignature("only RSA2 notices are accepted")
        if not any(
            verify_rsa_sha256(self._public_key, content.encode(), signature)
            for content in notice_signing_contents(params)
        ):
            raise InvalidSignature("the notice's signature does not verify with Alipay's key")
        if params.get("app_id") != self._app_id:
            raise InvalidCallback("the notice is addressed to another app")
        if params.get("msg_method") != NOTICE_METHOD:
            raise InvalidCallback(f"expected msg_method {NOTICE_METHOD}")
        try:
            notice = json.loads(params.get("biz_content", ""))
        except ValueError:
            raise InvalidCallback("biz_content is not JSON") from None
        if not isinstance(notice, dict):
            raise InvalidCallback("biz_content is not a JSON object")
        key = notice.get("out_biz_no")
        if not isinstance(key, str) or not key:
            raise InvalidCallback("biz_content has no out_biz_no")
        status = notice.get("status")
        if not isinstance(status, str) or not status:
            raise InvalidCallback("biz_content has no status")
        if status in _STATES:
            result = self._result_of(notice)
        else:
            # A status word this adapter does not know finishes nothing; the executor's
            # status queries still will.
            result = TransferResult(
                TransferState.PENDING, _reference(notice), gateway_status=status
            )
        notice_id = params.get("notify_id")
        return CallbackNotice(idempotency_key=key, result=result, notice_id=notice_id or None)

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- the gateway call -----------------------------------------------------------------
    def _signed_params(self, method: str, content: Mapping[str, Any]) -> dict[str, str]:
        """The form fields of one call, ``sign`` included."""
        params = {
            "app_id": self._app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
            "version": "1.0",
            "notify_url": self._notify_url or "",
            "biz_content": json.dumps(content, ensure_ascii=False, separators=(",", ":")),
        }
        if self._certificates is not None:  # signed like every other common parameter
            params["app_cert_sn"] = self._certificates.app_cert_sn
            params["alipay_root_cert_sn"] = self._certificates.alipay_root_cert_sn
        params = {key: value for key, value in params.items() if value}
        params["sign"] = sign_rsa_sha256(self._private_key, signing_content(params).encode())
        return params

    async def _call(self, method: str, content: Mapping[str, Any]) -> dict[str, Any]:
        request = self._client.build_request(
            "POST",
            self._gateway_url,
            data=self._signed_params(method, content),
            headers={"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"},
        )
        response = await send(self._client, request)
        if response.status_code == httpx.codes.TOO_MANY_REQUESTS:
            raise NotDone("Alipay answered HTTP 429", gateway_status="http_429")
        if response.status_code != httpx.codes.OK:
            # A 5xx may come after the gateway booked; nothing short of a query can tell.
            raise OutcomeUnknown(
                f"Alipay answered HTTP {response.status_code}",
                gateway_status=f"http_{response.status_code}",
            )
        return self._verified(method, response.content)

    def _verified(self, method: str, raw: bytes) -> dict[str, Any]:
        """The ``*_response`` object of an answer whose signature verifies."""
        try:
            members = response_members(raw.decode("utf-8"))
        except ValueError:
            raise OutcomeUnknown(
                "Alipay's answer is not the expected JSON", gateway_status="unparseable"
            ) from None
        node = method.replace(".", "_") + "_response"
        text, body = members.get(node) or members.get("error_response") or ("", None)
        if not isinstance(body, dict):
            raise OutcomeUnknown(f"Alipay's answer has no {node}", gateway_status="unparseable")
        if self._certificates is not None:
            _check_certificate(self._certificates, method, members)
        signature = members["sign"][1] if "sign" in members else None
        if not isinstance(signature, str) or not verify_rsa_sha256(
            self._public_key, text.encode("utf-8"), signature
        ):
            log.warning("alipay.response.unverified", method=method)
            raise OutcomeUnknown(
                "Alipay's answer is not signed with Alipay's key: not trusted",
                gateway_status="bad_signature",
            )
        return body

    def _result_of(self, body: Mapping[str, Any]) -> TransferResult:
        result = _result_of(body)
        if result.gateway_status != DEALING:
            return result
        # Alipay holds the transfer for processing of its own: a hold, not an unknown.
        # Its create time is not in every answer (common.query has none), so the deadline
        # counts from the first answer that reported DEALING.
        return TransferResult(
            result.state,
            result.reference,
            gateway_status=result.gateway_status,
            hold=ProviderHold(reason=DEALING, patience=self._dealing_patience),
        )


def _check_certificate(
    certificates: CertificateMode, method: str, members: Mapping[str, tuple[str, Any]]
) -> None:
    """In certificate mode an answer names the Alipay certificate it was signed with;
    only the configured one is trusted (an unknown one may be Alipay's new certificate:
    unverifiable, not a refusal)."""
    named = members["alipay_cert_sn"][1] if "alipay_cert_sn" in members else None
    if named == certificates.alipay_cert_sn:
        return
    if not isinstance(named, str) or not named:
        log.warning("alipay.response.no_certificate", method=method)
        raise OutcomeUnknown(
            "Alipay's answer names no alipay_cert_sn: not verifiable in certificate mode",
            gateway_status="no_alipay_cert_sn",
        )
    log.error(
        "alipay.response.unknown_certificate",
        method=method,
        alipay_cert_sn=named[:64],
        configured_alipay_cert_sn=certificates.alipay_cert_sn,
        action="Alipay signs with a certificate that is not configured (a rotation?): "
        "download the new Alipay public certificate (alipayCertPublicKey_RSA2.crt) from "
        "the open platform console and set PAYOUTSVC_ALIPAY_ALIPAY_CERT(_FILE)",
    )
    raise OutcomeUnknown(
        f"Alipay signed its answer with certificate {named[:64]!r}, not the configured "
        f"{certificates.alipay_cert_sn!r}: configure Alipay's new public certificate",
        gateway_status="unknown_alipay_cert",
    )


def _certificate_credentials(
    settings: AlipaySettings, private_key: rsa.RSAPrivateKey
) -> tuple[CertificateMode, rsa.RSAPublicKey]:
    """The SNs and Alipay's key of certificate mode; every certificate must be given."""
    texts = {
        name: secret_from(value, path, name=name)
        for name, value, path in (
            ("PAYOUTSVC_ALIPAY_APP_CERT", settings.app_cert, settings.app_cert_file),
            ("PAYOUTSVC_ALIPAY_ALIPAY_CERT", settings.alipay_cert, settings.alipay_cert_file),
            (
                "PAYOUTSVC_ALIPAY_ALIPAY_ROOT_CERT",
                settings.alipay_root_cert,
                settings.alipay_root_cert_file,
            ),
        )
    }
    app_cert = texts["PAYOUTSVC_ALIPAY_APP_CERT"]
    alipay_cert = texts["PAYOUTSVC_ALIPAY_ALIPAY_CERT"]
    try:
        certificates = CertificateMode.from_pem(
            app_cert=app_cert,
            alipay_cert=alipay_cert,
            alipay_root_cert=texts["PAYOUTSVC_ALIPAY_ALIPAY_ROOT_CERT"],
        )
        app_public_key = certificate_public_key(app_cert)
        alipay_public_key = certificate_public_key(alipay_cert)
    except CertificateError as exc:
        raise MissingCredential(f"an Alipay certificate cannot be read: {exc}") from None
    if app_public_key.public_numbers() != private_key.public_key().public_numbers():
        # Alipay would refuse every request as isv.invalid-signature.
        raise MissingCredential(
            "PAYOUTSVC_ALIPAY_APP_CERT is not the certificate of PAYOUTSVC_ALIPAY_APP_PRIVATE_KEY"
        )
    return certificates, alipay_public_key


def notice_signing_contents(params: Mapping[str, str]) -> list[str]:
    """What a notice's ``sign`` may cover: the sorted ``k=v`` of its parameters but ``sign``,
    without ``sign_type`` (Java ``rsaCheckV1``) or with it (``rsaCheckV2``). Alipay's SDKs
    differ on empty values (Java's ``getSignCheckContentV1`` keeps them, the request signing
    rule and other SDKs skip them), so both forms are tried: either way only a signature
    Alipay made over these very values verifies."""

    def content(excluded: tuple[str, ...], *, keep_empty: bool) -> str:
        return "&".join(
            f"{key}={params[key]}"
            for key in sorted(params)
            if key not in excluded and (keep_empty or params[key] != "")
        )

    candidates: list[str] = []
    for keep_empty in (False, True):
        for excluded in (("sign", "sign_type"), ("sign",)):
            found = content(excluded, keep_empty=keep_empty)
            if found not in candidates:
                candidates.append(found)
    return candidates


def signing_content(params: Mapping[str, str]) -> str:
    """What a request's ``sign`` covers: sorted ``k=v`` of every non-empty field but sign."""
    return "&".join(
        f"{key}={params[key]}" for key in sorted(params) if key != "sign" and params[key]
    )


def response_members(text: str) -> dict[str, tuple[str, Any]]:
    """Each top-level member of a JSON object as (its exact raw text, its value).

    Alipay signs the ``*_response`` value as the characters it sent, so the text must be cut
    from the body, not re-serialized. A duplicate member is refused: which one was signed?
    """
    decoder = json.JSONDecoder()
    members: dict[str, tuple[str, Any]] = {}

    def skip(at: int) -> int:
        found = _WHITESPACE.match(text, at)
        return found.end() if found else at

    at = skip(0)
    if text[at : at + 1] != "{":
        raise ValueError("not a JSON object")
    at = skip(at + 1)
    if text[at : at + 1] == "}":
        at += 1
    else:
        while True:
            if text[at : at + 1] != '"':
                raise ValueError("expected a member name")
            name, at = decoder.raw_decode(text, at)
            at = skip(at)
            if text[at : at + 1] != ":":
                raise ValueError("expected ':'")
            start = skip(at + 1)
            value, at = decoder.raw_decode(text, start)
            if name in members:
                raise ValueError(f"duplicate member {name!r}")
            members[name] = (text[start:at], value)
            at = skip(at)
            if text[at : at + 1] == ",":
                at = skip(at + 1)
                continue
            if text[at : at + 1] != "}":
                raise ValueError("expected ',' or '}'")
            at += 1
            break
    if skip(at) != len(text):
        raise ValueError("text after the JSON object")
    return members


def identity_type(account: str) -> str:
    """``ALIPAY_USER_ID`` for a 16-digit ``2088…`` user id, ``ALIPAY_OPEN_ID`` for an open id
    (``0`` then letters and digits), else a login id (mobile, email)."""
    if _USER_ID.fullmatch(account):
        return "ALIPAY_USER_ID"
    if _OPEN_ID.fullmatch(account):
        return "ALIPAY_OPEN_ID"
    return "ALIPAY_LOGON_ID"


def _transfer_content(request: TransferRequest) -> dict[str, Any]:
    """The uni.transfer biz_content, or Rejected when Alipay could never accept it."""
    if request.currency != CURRENCY:
        raise Rejected(
            "currency_not_supported",
            f"Alipay transfers are paid in CNY only, not {request.currency}.",
        )
    if not ALIPAY_MIN_AMOUNT_MINOR <= request.amount_minor <= MAX_AMOUNT_MINOR:
        raise Rejected(
            "amount_out_of_range",
            "Alipay transfers must be between 0.10 and 100000000.00 CNY.",
        )
    account = (request.recipient.get("account") or "").strip()
    if not account or len(account) > IDENTITY_MAX:
        raise Rejected(
            "recipient_account_invalid", "The recipient's Alipay account is missing or too long."
        )
    kind = identity_type(account)
    name = (request.recipient.get("name") or "").strip()
    if len(name) > NAME_MAX or (kind == "ALIPAY_LOGON_ID" and not name):
        raise Rejected(
            "recipient_name_mismatch",
            "Alipay needs the recipient's real name (at most 128 characters) to pay a phone "
            "or email account.",
        )
    payee: dict[str, str] = {"identity": account, "identity_type": kind}
    if name:  # Alipay checks it against the account's real name
        payee["name"] = name
    title = (request.description or "").strip()[:ORDER_TITLE_MAX] or DEFAULT_ORDER_TITLE
    return {
        "out_biz_no": request.idempotency_key,
        "trans_amount": format_amount(request.amount_minor, CURRENCY),
        "product_code": PRODUCT_CODE,
        "biz_scene": BIZ_SCENE,
        "order_title": title,
        "payee_info": payee,
    }


def _check_echo(body: Mapping[str, Any], key: str) -> None:
    echoed = body.get("out_biz_no")
    if echoed != key:  # missing counts too: only an answer naming our key is ours
        raise OutcomeUnknown(
            "Alipay answered about another out_biz_no", gateway_status="mismatched_answer"
        )


def _reference(body: Mapping[str, Any]) -> str | None:
    order_id = body.get("order_id")
    return order_id if isinstance(order_id, str) and order_id else None


def _result_of(body: Mapping[str, Any]) -> TransferResult:
    """Our result for an order's ``status`` (answers, queries and notices all carry one)."""
    status = body.get("status")
    state = _STATES.get(status) if isinstance(status, str) else None
    if state is None:
        raise OutcomeUnknown(
            f"Alipay reports a transfer status this adapter does not know: {status!r}",
            gateway_status=str(status)[:64],
        )
    reference = _reference(body)
    if state is not TransferState.FAILED:
        return TransferResult(state, reference, gateway_status=str(status))
    error_code = body.get("error_code")
    reason = body.get("fail_reason")
    return TransferResult(
        state,
        reference,
        gateway_status=str(status),
        failure_code=_DECLINES.get(str(error_code), "gateway_declined"),
        failure_message=redact_identifiers(
            f"Alipay: {reason or status}" + (f" ({error_code})" if error_code else "")
        ),
    )


def _error_of(body: Mapping[str, Any]) -> GatewayError:
    """What a non-10000 answer means for the transfer."""
    code = str(body.get("code"))
    sub_code = str(body.get("sub_code") or "")
    detail = body.get("sub_msg") or body.get("msg") or "no message"
    word = sub_code or code
    message = redact_identifiers(f"Alipay {word}: {detail}")
    if code == "40004" and sub_code in _DECLINES:
        return Rejected(_DECLINES[sub_code], message, gateway_status=word)
    if code == "40004" and sub_code.startswith(_AMOUNT_LIMIT_PREFIX):
        return Rejected("amount_out_of_range", message, gateway_status=word)
    if code in _NOT_PROCESSED_CODES or sub_code in _NOT_PROCESSED_SUB_CODES:
        return NotDone(message, gateway_status=word)
    # SYSTEM_ERROR, isp.unknow-error (20000), PAYMENT_INFO_INCONSISTENCY, a sub_code new to
    # us: the transfer may exist. Only the status query by out_biz_no can tell.
    return OutcomeUnknown(message, gateway_status=word)


def _form_fields(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(
            body.decode("ascii"), keep_blank_values=True, strict_parsing=True, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidCallback("the notice is not a form-encoded body") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise InvalidCallback(f"the notice repeats {key!r}")
        fields[key] = value
    return fields
