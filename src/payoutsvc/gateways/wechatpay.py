"""WeChat Pay merchant transfer (商家转账, API v3, user-confirmation mode).

Wire format (pay.weixin.qq.com/doc/v3/merchant, "商家转账"):

- **submit**: ``POST /v3/fund-app/mch-transfer/transfer-bills`` with ``out_bill_no`` (the
  payout's idempotency key: 32 lowercase hex characters fit WeChat's "≤ 32 letters/digits"),
  ``transfer_amount`` in fen, ``openid`` + ``appid``, ``transfer_scene_id``,
  ``transfer_remark`` (≤ 32 characters, shown to the user) and the scene's
  ``transfer_scene_report_infos``. Amounts from 0.10 CNY. ``user_name`` (required from
  2000 CNY, allowed from 0.30 CNY) is RSA-OAEP (SHA-1, as WeChat documents) encrypted with
  the WeChat Pay public key (or, without one, the newest platform certificate). WeChat is
  idempotent on ``out_bill_no``: the same number with the same parameters answers the
  existing bill again, which its guide asks for when a bill stays ``ACCEPTED``.
- **status**: ``GET …/transfer-bills/out-bill-no/{out_bill_no}``; 404 ``NOT_FOUND`` means no
  bill under that number.
- **signatures**: every request carries ``Authorization: WECHATPAY2-SHA256-RSA2048
  mchid=…,nonce_str=…,signature=…,timestamp=…,serial_no=…`` (RSA SHA-256 over
  ``METHOD\\nURL\\ntimestamp\\nnonce\\nbody\\n`` with the merchant key) and ``Wechatpay-Serial``
  (the public key's ``PUB_KEY_ID_…``, else the platform certificate's serial): WeChat signs
  its answer with the key the request names, and with its platform certificate when the
  header is missing. Every answer and every notice is signed by WeChat Pay
  (``Wechatpay-Timestamp/-Nonce/-Signature/-Serial`` over ``timestamp\\nnonce\\nbody\\n``) and
  is verified with the key its own ``Wechatpay-Serial`` names (public key or one of the
  configured platform certificates: a merchant switching to the public key gets both for
  days); one that does not verify is never trusted, whatever it says (OutcomeUnknown, also a
  404 ``NOT_FOUND``: only a verified one means "no such bill").
- **pending**: ``WAIT_USER_CONFIRM``/``TRANSFERING`` wait for the user and ``ACCEPTED``/
  ``PROCESSING`` (after the normal schedule; re-sent) for WeChat: :class:`ProviderHold` until
  24 h after the bill's ``create_time``, plus a margin for WeChat's late closing.
- **notices**: ``MCHTRANSFER.BILL.FINISHED`` with an AES-256-GCM ``resource`` decrypted with
  the APIv3 key; WeChat accepts any 200/204 answer.

WeChat's rule for a non-200 answer to a transfer is "never switch to a new out_bill_no before
a query shows the original failed". So: 429 is NotDone; 5xx, ``SYSTEM_ERROR`` and codes this
module does not know are OutcomeUnknown (the executor then queries by the same number and
re-submits under it only if WeChat has no bill); a documented refusal (``NOT_ENOUGH``,
``PARAM_ERROR``, ``INVALID_REQUEST`` …) becomes Rejected only after a query has confirmed that
no bill exists under the number (WeChat also answers ``INVALID_REQUEST`` when an
``out_bill_no`` is re-used with different parameters: then the existing bill is the answer).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    secret_from,
    send,
    sign_rsa_sha256,
    verify_rsa_sha256,
)
from payoutsvc.recipients.masking import mask_account, mask_name
from payoutsvc.recipients.validation import (
    WECHAT_MIN_AMOUNT_MINOR,
    WECHAT_NAME_ALLOWED_FROM_MINOR,
    WECHAT_NAME_REQUIRED_FROM_MINOR,
)
from payoutsvc.runtime import Runtime

log = structlog.get_logger(__name__)

NAME = "wechatpay"
DEFAULT_BASE_URL = "https://api.mch.weixin.qq.com"
TRANSFER_PATH = "/v3/fund-app/mch-transfer/transfer-bills"
QUERY_PATH = TRANSFER_PATH + "/out-bill-no/{out_bill_no}"
AUTH_SCHEME = "WECHATPAY2-SHA256-RSA2048"
USER_AGENT = "payoutsvc-wechatpay/1"
NOTICE_EVENT = "MCHTRANSFER.BILL.FINISHED"
NOTICE_ALGORITHM = "AEAD_AES_256_GCM"
# Answers and notices older (or newer) than this are refused: WeChat's SDKs use 5 minutes.
SIGNATURE_TOLERANCE_SECONDS = 300
MAX_REMARK_CHARS = 32
APIV3_KEY_BYTES = 32
CURRENCY = "CNY"
PUBLIC_KEY_ID_PREFIX = "PUB_KEY_ID_"
# WeChat's floor for one transfer is 0.10 CNY (FAQ 4013778940: 单笔转账额度最低为0.1元); a
# name may only be sent from 0.30 CNY, so below that it is left out even when configured.
MIN_AMOUNT_FEN = WECHAT_MIN_AMOUNT_MINOR
NAME_ALLOWED_FROM_FEN = WECHAT_NAME_ALLOWED_FROM_MINOR
# A bill lives 24 hours: the user has 24 h to confirm (FAQ 4013778940), and WeChat keeps
# trying to lock the merchant's funds for 24 h before closing it (关键概念 4012715191). Its
# closing "may take longer than 24 hours" (same page), so holds allow a margin beyond that.
BILL_LIFETIME = timedelta(hours=24)
CLOSING_MARGIN = timedelta(hours=2)
HOLD_PATIENCE = BILL_LIFETIME + CLOSING_MARGIN

_OUT_BILL_NO = re.compile(r"[0-9A-Za-z]{1,32}")
_OPENID = re.compile(r"[A-Za-z0-9_-]{1,64}")

PENDING_STATES = frozenset(
    {"ACCEPTED", "PROCESSING", "WAIT_USER_CONFIRM", "TRANSFERING", "CANCELING"}
)
# Waiting for the user: WAIT_USER_CONFIRM, and TRANSFERING ("可拉起微信收款确认页面再次重试确认
# 收款": the user retries the confirmation). Pending is then not "outcome unknown".
USER_HOLD_STATES = frozenset({"WAIT_USER_CONFIRM", "TRANSFERING"})
# Accepted, funds not locked yet: WeChat documents re-sending the same out_bill_no with the
# same parameters (开发指引 4012715211: ACCEPTED "一定要使用原商户单号及原参数重试";
# 查单 PROCESSING "如余额不足,可充值后再原单重试"). Ordinary in flight at first.
RESEND_HOLD_STATES = frozenset({"ACCEPTED", "PROCESSING"})
SUCCEEDED_STATES = frozenset({"SUCCESS"})
FAILED_STATES = frozenset({"FAIL", "CANCELLED"})

# ``fail_reason`` of a FAIL/CANCELLED bill → (our failure code, what it means).
FAIL_REASONS: dict[str, tuple[str, str]] = {
    "ACCOUNT_FROZEN": ("recipient_account_invalid", "the user's WeChat account is frozen"),
    "ACCOUNT_NOT_EXIST": ("recipient_account_invalid", "the user's WeChat account does not exist"),
    "OPENID_INVALID": (
        "recipient_account_invalid",
        "the openid is malformed or does not belong to the app",
    ),
    "REAL_NAME_CHECK_FAIL": (
        "recipient_account_invalid",
        "the user has not completed WeChat real-name verification",
    ),
    "PAYEE_ACCOUNT_ABNORMAL": (
        "recipient_account_invalid",
        "the user's account cannot receive money until they complete their identity details",
    ),
    "NAME_NOT_CORRECT": ("recipient_name_mismatch", "the real name does not match the account"),
    "ID_CARD_NOT_CORRECT": (
        "recipient_name_mismatch",
        "the identity check of the recipient failed",
    ),
    "TRANSFER_QUOTA_EXCEED": (
        "amount_out_of_range",
        "above the user's single-transfer receiving limit",
    ),
    "DAY_RECEIVED_QUOTA_EXCEED": (
        "recipient_limit_exceeded",
        "above the user's daily receiving amount",
    ),
    "DAY_RECEIVED_COUNT_EXCEED": (
        "recipient_limit_exceeded",
        "above the user's daily number of transfers received",
    ),
    "MONTH_RECEIVED_QUOTA_EXCEED": (
        "recipient_limit_exceeded",
        "above the user's monthly receiving amount",
    ),
    "BLOCK_B2C_USERLIMITAMOUNT_BSRULE_MONTH": (
        "recipient_limit_exceeded",
        "above the user's monthly receiving limit",
    ),
    "BLOCK_B2C_USERLIMITAMOUNT_MONTH": (
        "recipient_limit_exceeded",
        "the user's account is restricted from receiving this month",
    ),
    "REALNAME_ACCOUNT_RECEIVED_QUOTA_EXCEED": (
        "recipient_limit_exceeded",
        "the user's account has reached its receiving limit",
    ),
    "MCH_CANCEL": ("transfer_canceled", "the merchant canceled the transfer"),
    "OVERDUE_CLOSE": (
        "transfer_expired",
        "closed by WeChat Pay after its retry period (e.g. the user never confirmed)",
    ),
    "PAYER_ACCOUNT_ABNORMAL": ("gateway_declined", "the merchant account may not pay out"),
    "PRODUCT_AUTH_CHECK_FAIL": (
        "gateway_declined",
        "the merchant transfer product is not enabled or frozen",
    ),
    "RECEIVE_ACCOUNT_NOT_CONFIGURE": (
        "gateway_declined",
        "the transfer scene is not configured on the merchant platform",
    ),
    "MERCHANT_REJECT": ("gateway_declined", "a merchant approver rejected the transfer"),
    "MERCHANT_NOT_CONFIRM": ("gateway_declined", "no merchant approver confirmed in time"),
}

# Error codes of a non-200 answer that WeChat documents as "this request was refused" →
# our failure code. Applied only once a query shows no bill under the out_bill_no.
DEFINITE_ERRORS: dict[str, str] = {
    "NOT_ENOUGH": "insufficient_funds",
    "PARAM_ERROR": "gateway_declined",
    "INVALID_REQUEST": "gateway_declined",
    "NO_AUTH": "gateway_declined",
    "APPID_MCHID_NOT_MATCH": "gateway_declined",
    "USER_ERROR": "gateway_declined",
}
# Message words that make a PARAM_ERROR / INVALID_REQUEST specific. WeChat asks not to
# automate on messages; here they only choose the failure code of a refusal that is final
# anyway, never whether it is final.
_MESSAGE_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"openid", re.IGNORECASE), "recipient_account_invalid"),
    (re.compile(r"额度|上下限|限额"), "amount_out_of_range"),
)


class SceneReportInfo(BaseModel):
    """One ``transfer_scene_report_infos`` entry (WeChat: type ≤ 15, content ≤ 32 chars)."""

    info_type: str = Field(min_length=1, max_length=15)
    info_content: str = Field(min_length=1, max_length=32)


# Scene 1000 (现金营销) requires both entries; other scenes' entries must be configured.
DEFAULT_SCENE_REPORT_INFOS: dict[str, tuple[SceneReportInfo, ...]] = {
    "1000": (
        SceneReportInfo(info_type="活动名称", info_content="客服工单补偿"),
        SceneReportInfo(info_type="奖励说明", info_content="客服处理工单时发放的补偿款"),
    ),
}


class WechatPaySettings(BaseSettings):
    """``PAYOUTSVC_WECHATPAY_*``. Keys may be given inline or as ``…_FILE`` paths."""

    model_config = SettingsConfigDict(env_prefix="PAYOUTSVC_WECHATPAY_", extra="ignore")

    mchid: str = Field(default="", description="Merchant id (商户号).")
    merchant_serial_no: str = Field(
        default="", description="Serial number of the merchant API certificate."
    )
    private_key: SecretStr | None = None
    private_key_file: Path | None = None
    apiv3_key: SecretStr | None = None
    apiv3_key_file: Path | None = None
    public_key: SecretStr | None = Field(default=None, description="WeChat Pay public key.")
    public_key_file: Path | None = None
    public_key_id: str = Field(default="", description="WeChat Pay public key id PUB_KEY_ID_….")
    # Platform certificates (平台证书, PEM, one or more concatenated): for merchants still on
    # them, and for merchants switching to the public key, whose notices WeChat signs with
    # either for days. Their serial numbers come from the certificates themselves.
    platform_certificates: str | None = None
    platform_certificates_file: Path | None = None
    transfer_scene_id: str = "1000"
    scene_report_infos: list[SceneReportInfo] | None = None
    user_recv_perception: str | None = None
    default_remark: str = Field(default="客服补偿", min_length=1, max_length=MAX_REMARK_CHARS)
    send_name_always: bool = False
    notify_url: str | None = None
    base_url: str = DEFAULT_BASE_URL
    timeout_seconds: float = Field(default=15.0, gt=0)


@dataclass(frozen=True, slots=True)
class WechatPayConfig:
    """``public_key`` + ``public_key_id`` (the WeChat Pay public key) and/or
    ``platform_certificates`` (serial number → the certificate's key); at least one."""

    mchid: str
    merchant_serial_no: str
    private_key: rsa.RSAPrivateKey
    apiv3_key: bytes
    public_key: rsa.RSAPublicKey | None
    public_key_id: str
    platform_certificates: Mapping[str, rsa.RSAPublicKey]
    # The certificate to encrypt with and name in requests when there is no public key:
    # the one valid longest (as WeChat's Java SDK picks its "available" certificate).
    newest_certificate_serial: str | None
    transfer_scene_id: str
    scene_report_infos: tuple[SceneReportInfo, ...]
    user_recv_perception: str | None
    default_remark: str
    send_name_always: bool
    notify_url: str | None
    base_url: str
    timeout_seconds: float

    @property
    def request_serial(self) -> str:
        """The ``Wechatpay-Serial`` sent on every request: the public key id whenever the
        public key is configured (WeChat then signs its answers with that key; without the
        header it signs them with the platform certificate), else the newest platform
        certificate's serial. Both official SDKs send it on every request."""
        if self.public_key is not None:
            return self.public_key_id
        assert self.newest_certificate_serial is not None  # config_from guarantees one
        return self.newest_certificate_serial

    @property
    def encryption_key(self) -> rsa.RSAPublicKey:
        """The key that seals ``user_name``: the one ``request_serial`` names."""
        if self.public_key is not None:
            return self.public_key
        return self.platform_certificates[self.request_serial]

    def verifier_for(self, serial: str) -> rsa.RSAPublicKey | None:
        """The key WeChat signed with, chosen by the answer's or notice's own
        ``Wechatpay-Serial``: the public key for its ``PUB_KEY_ID_…``, otherwise the
        platform certificate with that serial number; None if we hold neither."""
        if self.public_key is not None and serial == self.public_key_id:
            return self.public_key
        return self.platform_certificates.get(certificate_serial_key(serial))


def certificate_serial_key(serial: str) -> str:
    """A certificate serial number as compared here: upper-case hex without leading zeros
    (WeChat's Java SDK prints serials without them, its Go SDK with whole bytes)."""
    return serial.strip().upper().lstrip("0") or "0"


def load_platform_certificates(text: str) -> dict[str, tuple[rsa.RSAPublicKey, datetime]]:
    """serial → (public key, end of validity) of each PEM certificate in ``text``."""
    try:
        certificates = x509.load_pem_x509_certificates(text.strip().encode())
    except ValueError:
        raise MissingCredential("platform certificates are not PEM certificates") from None
    found: dict[str, tuple[rsa.RSAPublicKey, datetime]] = {}
    for certificate in certificates:
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise MissingCredential("a platform certificate does not hold an RSA key")
        serial = certificate_serial_key(format(certificate.serial_number, "X"))
        found[serial] = (key, certificate.not_valid_after_utc)
    return found


def config_from(settings: WechatPaySettings) -> WechatPayConfig:
    """Load and check the credentials; raises MissingCredential naming what is missing."""
    prefix = "PAYOUTSVC_WECHATPAY_"
    for field_name in ("mchid", "merchant_serial_no"):
        if not getattr(settings, field_name).strip():
            raise MissingCredential(f"{prefix}{field_name.upper()} is not configured")
    public_key_id = settings.public_key_id.strip()
    public_key, certificates = _verification_keys(settings, public_key_id)
    apiv3_key = secret_from(
        settings.apiv3_key, settings.apiv3_key_file, name=f"{prefix}APIV3_KEY"
    ).encode()
    if len(apiv3_key) != APIV3_KEY_BYTES:
        raise MissingCredential(f"{prefix}APIV3_KEY must be {APIV3_KEY_BYTES} characters")
    scene = settings.transfer_scene_id.strip()
    infos = (
        tuple(settings.scene_report_infos)
        if settings.scene_report_infos
        else DEFAULT_SCENE_REPORT_INFOS.get(scene, ())
    )
    if not infos:
        raise MissingCredential(
            f"{prefix}SCENE_REPORT_INFOS is required for transfer scene {scene} "
            '(JSON list of {"info_type": …, "info_content": …})'
        )
    return WechatPayConfig(
        mchid=settings.mchid.strip(),
        merchant_serial_no=settings.merchant_serial_no.strip(),
        private_key=load_private_key(
            secret_from(
                settings.private_key, settings.private_key_file, name=f"{prefix}PRIVATE_KEY"
            )
        ),
        apiv3_key=apiv3_key,
        public_key=public_key,
        public_key_id=public_key_id,
        platform_certificates={serial: key for serial, (key, _) in certificates.items()},
        newest_certificate_serial=(
            max(certificates, key=lambda serial: certificates[serial][1]) if certificates else None
        ),
        transfer_scene_id=scene,
        scene_report_infos=infos,
        user_recv_perception=settings.user_recv_perception or None,
        default_remark=settings.default_remark,
        send_name_always=settings.send_name_always,
        notify_url=settings.notify_url or None,
        base_url=settings.base_url.rstrip("/"),
        timeout_seconds=settings.timeout_seconds,
    )


def _payable(request: TransferRequest) -> tuple[str, str, str]:
    """What WeChat Pay would refuse anyway, refused before anything is sent (Rejected);
    else the out_bill_no, openid and app_id to send."""
    if request.currency != CURRENCY:
        raise Rejected(
            "currency_not_supported",
            f"WeChat Pay transfers pay CNY only, not {request.currency}.",
        )
    if request.amount_minor < MIN_AMOUNT_FEN:
        raise Rejected(
            "amount_out_of_range",
            f"WeChat Pay transfers start at {MIN_AMOUNT_FEN} fen (0.10 CNY).",
        )
    out_bill_no = out_bill_no_for(request.idempotency_key)
    if out_bill_no is None:
        raise Rejected(
            "invalid_idempotency_key",
            "The payout's gateway key cannot be a WeChat out_bill_no (≤ 32 letters/digits).",
        )
    recipient = request.recipient
    if recipient.get("type") != "wechat":
        raise Rejected(
            "recipient_account_invalid",
            f"WeChat Pay pays wechat recipients, not {recipient.get('type')!r}.",
        )
    openid, app_id = recipient.get("account") or "", recipient.get("app_id") or ""
    if not _OPENID.fullmatch(openid):
        raise Rejected("recipient_account_invalid", "The recipient's openid is malformed.")
    if not app_id:
        raise Rejected("recipient_account_invalid", "The recipient has no WeChat app_id.")
    return out_bill_no, openid, app_id


def _verification_keys(
    settings: WechatPaySettings, public_key_id: str
) -> tuple[rsa.RSAPublicKey | None, dict[str, tuple[rsa.RSAPublicKey, datetime]]]:
    """What answers and notices are verified with: the WeChat Pay public key, platform
    certificates by serial (with their start dates), or both (a merchant mid-switch)."""
    prefix = "PAYOUTSVC_WECHATPAY_"
    has_public_key = bool(
        settings.public_key_file or (settings.public_key and settings.public_key.get_secret_value())
    )
    has_certificates = bool(settings.platform_certificates_file or settings.platform_certificates)
    if not (has_public_key or public_key_id or has_certificates):
        raise MissingCredential(
            f"{prefix}PUBLIC_KEY and {prefix}PUBLIC_KEY_ID (the WeChat Pay public key) or "
            f"{prefix}PLATFORM_CERTIFICATES are not configured"
        )
    public_key: rsa.RSAPublicKey | None = None
    if has_public_key or public_key_id:
        if not public_key_id.startswith(PUBLIC_KEY_ID_PREFIX):
            raise MissingCredential(
                f"{prefix}PUBLIC_KEY_ID must be the public key's id {PUBLIC_KEY_ID_PREFIX}…"
            )
        public_key = load_public_key(
            secret_from(settings.public_key, settings.public_key_file, name=f"{prefix}PUBLIC_KEY")
        )
    certificates: dict[str, tuple[rsa.RSAPublicKey, datetime]] = {}
    if has_certificates:
        if settings.platform_certificates_file is not None:
            text = settings.platform_certificates_file.read_text(encoding="utf-8")
        else:
            text = settings.platform_certificates or ""
        certificates = load_platform_certificates(text)
        if not certificates:
            raise MissingCredential(f"{prefix}PLATFORM_CERTIFICATES holds no certificate")
    return public_key, certificates


def create_gateway(runtime: Runtime) -> Gateway:
    """The registry's factory: credentials come from ``PAYOUTSVC_WECHATPAY_*``."""
    return WechatPayGateway(config_from(WechatPaySettings()))


def out_bill_no_for(idempotency_key: str) -> str | None:
    """The payout's key as WeChat's ``out_bill_no`` (identity: notices map straight back),
    or None if the key cannot be one."""
    return idempotency_key if _OUT_BILL_NO.fullmatch(idempotency_key) else None


def transfer_remark(description: str | None, default: str) -> str:
    """The user-visible remark: the payout's description on one line, at most 32 chars."""
    text = " ".join((description or "").split()) or default
    return text[:MAX_REMARK_CHARS]


def hold_for(state: str, created: datetime | None) -> ProviderHold | None:
    """WeChat's own reason to keep a bill pending, with its deadline from the bill's
    ``create_time`` (None: an ordinary pending state, or a state this module does not know)."""
    if state in USER_HOLD_STATES:
        return ProviderHold(reason=state, patience=HOLD_PATIENCE, since=created)
    if state in RESEND_HOLD_STATES:
        return ProviderHold(
            reason=state,
            patience=HOLD_PATIENCE,
            since=created,
            resend=True,
            after_schedule=True,
        )
    return None


def parse_create_time(value: Any) -> datetime | None:
    """A bill's ``create_time`` (RFC 3339 with offset, e.g. ``2025-03-19T10:45:15+08:00``)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def result_for(
    state: str,
    *,
    reference: str | None,
    fail_reason: str | None = None,
    details: Mapping[str, str] | None = None,
    created: datetime | None = None,
) -> TransferResult:
    """A WeChat bill state as our transfer state; ``gateway_status`` keeps the raw word."""
    if state in SUCCEEDED_STATES:
        return TransferResult(
            TransferState.SUCCEEDED, reference=reference, gateway_status=state, details=details
        )
    if state in FAILED_STATES:
        code, meaning = FAIL_REASONS.get(fail_reason or "", ("", ""))
        if not code:
            code = "transfer_canceled" if state == "CANCELLED" else "gateway_declined"
            meaning = (
                "the transfer was canceled"
                if state == "CANCELLED"
                else "WeChat Pay reported the transfer as failed"
            )
        reason = f" ({fail_reason})" if fail_reason else ""
        return TransferResult(
            TransferState.FAILED,
            reference=reference,
            gateway_status=state,
            failure_code=code,
            failure_message=f"WeChat Pay {state}{reason}: {meaning}.",
            details=details,
        )
    # PENDING_STATES, and any state WeChat adds later: keep checking, never guess an end.
    return TransferResult(
        TransferState.PENDING,
        reference=reference,
        gateway_status=state,
        details=details,
        hold=hold_for(state, created),
    )


class WechatPayGateway:
    name = NAME
    callback_reply: CallbackReply | None = None  # WeChat accepts any 200/204 answer

    def __init__(self, config: WechatPayConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self._client = provider_client(config.base_url, config.timeout_seconds)

    # -- Gateway protocol ---------------------------------------------------------------
    async def submit(self, request: TransferRequest) -> TransferResult:
        out_bill_no, body = self._transfer_body(request)
        response = await send(self._client, self._signed("POST", TRANSFER_PATH, body))
        if response.status_code == 200:
            data = self._trusted_json(response, "submit")
            return self._result(data, out_bill_no, app_id=str(request.recipient.get("app_id")))
        code, message = self._trusted_error(response, "submit", request)
        status = response.status_code
        label = f"http_{status}" + (f"_{code}" if code else "")
        if status == 429 or code == "FREQUENCY_LIMITED":
            raise NotDone(
                f"WeChat Pay rate limit ({code or status}): {message}", gateway_status=label
            )
        if status >= 500 or code == "SYSTEM_ERROR" or code not in DEFINITE_ERRORS:
            raise OutcomeUnknown(
                f"WeChat Pay answered HTTP {status} {code or '(no code)'}: {message}; "
                "resolved by a status query under the same out_bill_no",
                gateway_status=label,
            )
        try:
            existing = await self.get_status(request.idempotency_key)
        except GatewayError as exc:
            raise OutcomeUnknown(
                f"WeChat Pay refused with {code} but the confirming status query failed: "
                f"{exc.message}",
                gateway_status=label,
            ) from None
        if existing.state is not TransferState.NOT_FOUND:
            log.warning(
                "wechatpay.submit.refused_but_booked",
                out_bill_no=out_bill_no,
                code=code,
                state=existing.gateway_status,
            )
            return existing
        raise Rejected(
            _refusal_code(code, message), f"WeChat Pay {code}: {message}", gateway_status=code
        )

    async def get_status(
        self, idempotency_key: str, *, reference: str | None = None
    ) -> TransferResult:
        out_bill_no = out_bill_no_for(idempotency_key)
        if out_bill_no is None:  # could never have been sent
            return TransferResult(TransferState.NOT_FOUND, gateway_status="NOT_FOUND")
        path = QUERY_PATH.format(out_bill_no=quote(out_bill_no, safe=""))
        response = await send(self._client, self._signed("GET", path, b""))
        if response.status_code == 200:
            return self._result(self._trusted_json(response, "status"), out_bill_no, app_id=None)
        code, message = self._trusted_error(response, "status", None)
        if response.status_code == 404 and code == "NOT_FOUND":
            return TransferResult(TransferState.NOT_FOUND, gateway_status="NOT_FOUND")
        if response.status_code == 429 or code == "FREQUENCY_LIMITED":
            raise NotDone(
                f"WeChat Pay rate limit ({code or 429}): {message}",
                gateway_status=f"http_{response.status_code}",
            )
        raise OutcomeUnknown(
            f"WeChat Pay status query answered HTTP {response.status_code} "
            f"{code or '(no code)'}: {message}",
            gateway_status=f"http_{response.status_code}",
        )

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackNotice:
        lowered = {k.lower(): v for k, v in headers.items()}
        if not self._signature_ok(lowered, body):
            raise InvalidSignature(
                "missing, stale or invalid Wechatpay-Signature (or unknown Wechatpay-Serial)"
            )
        try:
            notice = json.loads(body)
        except ValueError:
            raise InvalidCallback("body is not JSON") from None
        if not isinstance(notice, dict):
            raise InvalidCallback("body is not a JSON object")
        if notice.get("event_type") != NOTICE_EVENT:
            raise InvalidCallback(f"event_type {notice.get('event_type')!r} is not {NOTICE_EVENT}")
        data = self._decrypt_resource(notice.get("resource"))
        mchid = data.get("mch_id", data.get("mchid"))
        if mchid is not None and str(mchid) != self._config.mchid:
            raise InvalidCallback("notice is for another merchant id")
        out_bill_no, state = data.get("out_bill_no"), data.get("state")
        if not isinstance(out_bill_no, str) or not _OUT_BILL_NO.fullmatch(out_bill_no):
            raise InvalidCallback("resource has no valid out_bill_no")
        if not isinstance(state, str) or not state:
            raise InvalidCallback("resource has no state")
        notice_id = notice.get("id")
        return CallbackNotice(
            idempotency_key=out_bill_no,
            notice_id=notice_id if isinstance(notice_id, str) else None,
            result=result_for(
                state,
                reference=_text(data.get("transfer_bill_no")),
                fail_reason=_text(data.get("fail_reason")),
                created=parse_create_time(data.get("create_time")),
            ),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- requests -------------------------------------------------------------------------
    def _transfer_body(self, request: TransferRequest) -> tuple[str, bytes]:
        """The transfer request's JSON body; local refusals (nothing sent) are Rejected."""
        out_bill_no, openid, app_id = _payable(request)
        recipient = request.recipient
        name = (recipient.get("name") or "").strip()
        name_required = request.amount_minor >= WECHAT_NAME_REQUIRED_FROM_MINOR
        if name_required and not name:
            raise Rejected(
                "recipient_name_required",
                "WeChat Pay needs the recipient's real name from 2000.00 CNY.",
            )
        config = self._config
        body: dict[str, Any] = {
            "appid": app_id,
            "out_bill_no": out_bill_no,
            "transfer_scene_id": config.transfer_scene_id,
            "openid": openid,
            "transfer_amount": request.amount_minor,
            "transfer_remark": transfer_remark(request.description, config.default_remark),
            "transfer_scene_report_infos": [
                {"info_type": i.info_type, "info_content": i.info_content}
                for i in config.scene_report_infos
            ],
        }
        encrypted = (
            bool(name)
            and (name_required or config.send_name_always)
            and request.amount_minor >= NAME_ALLOWED_FROM_FEN
        )
        if encrypted:
            body["user_name"] = self._encrypt(name)
        if config.notify_url:
            body["notify_url"] = config.notify_url
        if config.user_recv_perception:
            body["user_recv_perception"] = config.user_recv_perception
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        return out_bill_no, content

    def _encrypt(self, text: str) -> str:
        """A sensitive field for WeChat: RSA-OAEP (SHA-1, per WeChat's docs), base64."""
        sealed = self._config.encryption_key.encrypt(
            text.encode(),
            padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),  # noqa: S303  (WeChat's documented scheme)
        )
        return base64.b64encode(sealed).decode()

    def authorization(self, method: str, url: str, body: bytes) -> str:
        """The ``Authorization`` header value for a request to ``url`` (path and query)."""
        config = self._config
        timestamp = str(int(self._clock()))
        nonce = secrets.token_hex(16)
        message = f"{method}\n{url}\n{timestamp}\n{nonce}\n".encode() + body + b"\n"
        signature = sign_rsa_sha256(config.private_key, message)
        return (
            f'{AUTH_SCHEME} mchid="{config.mchid}",nonce_str="{nonce}",'
            f'signature="{signature}",timestamp="{timestamp}",'
            f'serial_no="{config.merchant_serial_no}"'
        )

    def _signed(self, method: str, path: str, body: bytes) -> httpx.Request:
        # Wechatpay-Serial on every request, not only with an encrypted field: it also tells
        # WeChat which key to sign its answer with (微信支付公钥 switch guide 4012154180;
        # wechatpay-go core/client.go and wechatpay-java AbstractHttpClient.java do the same).
        headers = {
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "Wechatpay-Serial": self._config.request_serial,
        }
        if body:
            headers["Content-Type"] = "application/json"
        request = self._client.build_request(
            method, path, content=body if body else None, headers=headers
        )
        url = request.url.raw_path.decode("ascii")  # what the server sees: path + query
        request.headers["Authorization"] = self.authorization(method, url, body)
        return request

    # -- answers --------------------------------------------------------------------------
    def _signature_ok(self, headers: Mapping[str, str], body: bytes) -> bool:
        """WeChat's signature over ``timestamp\\nnonce\\nbody\\n`` within the tolerance, checked
        with the key its ``Wechatpay-Serial`` names (the public key's id or a platform
        certificate's serial: a merchant switching gets both for days, as wechatpay-go's
        combined verifier and wechatpay-java's AbstractVerifier.verify choose). ``headers``
        must be lower-cased (or an httpx.Headers)."""
        serial = headers.get("wechatpay-serial")
        timestamp = headers.get("wechatpay-timestamp") or ""
        nonce = headers.get("wechatpay-nonce")
        signature = headers.get("wechatpay-signature")
        if not (serial and nonce and signature):
            return False
        key = self._config.verifier_for(serial)
        if key is None:
            return False
        if not timestamp.isdigit():
            return False
        if abs(self._clock() - int(timestamp)) > SIGNATURE_TOLERANCE_SECONDS:
            return False
        message = f"{timestamp}\n{nonce}\n".encode() + body + b"\n"
        return verify_rsa_sha256(key, message, signature)

    def _trusted_json(self, response: httpx.Response, operation: str) -> dict[str, Any]:
        if not self._signature_ok(response.headers, response.content):
            log.warning(
                "wechatpay.answer_unverified", operation=operation, http_status=response.status_code
            )
            raise OutcomeUnknown(
                f"WeChat Pay {operation} answer HTTP {response.status_code} has a missing or "
                "invalid signature: not trusted",
                gateway_status="unverified",
            )
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise OutcomeUnknown(
                f"WeChat Pay {operation} answer is not a JSON object", gateway_status="malformed"
            )
        return data

    def _trusted_error(
        self, response: httpx.Response, operation: str, request: TransferRequest | None
    ) -> tuple[str, str]:
        """(code, message) of a signed error answer; an unsigned one is OutcomeUnknown."""
        try:
            data = response.json()
        except ValueError:
            data = None
        data = data if isinstance(data, dict) else {}
        code = _text(data.get("code")) or ""
        message = _scrub(_text(data.get("message")) or "", request)
        if not self._signature_ok(response.headers, response.content):
            log.warning(
                "wechatpay.answer_unverified",
                operation=operation,
                http_status=response.status_code,
                code=code,
            )
            raise OutcomeUnknown(
                f"WeChat Pay {operation} answered HTTP {response.status_code} "
                f"{code or '(no code)'} without a valid signature: not trusted",
                gateway_status=f"http_{response.status_code}",
            )
        return code, message

    def _result(
        self, data: Mapping[str, Any], out_bill_no: str, *, app_id: str | None
    ) -> TransferResult:
        state = _text(data.get("state"))
        if not state or data.get("out_bill_no") != out_bill_no:
            raise OutcomeUnknown(
                "WeChat Pay answer has no state or names another out_bill_no",
                gateway_status="malformed",
            )
        details: dict[str, str] | None = None
        package_info = _text(data.get("package_info"))
        if package_info:
            # What the helpdesk hands to wx.requestMerchantTransfer for the user's confirmation.
            details = {"package_info": package_info, "mch_id": self._config.mchid}
            app = app_id or _text(data.get("appid"))
            if app:
                details["app_id"] = app
        return result_for(
            state,
            reference=_text(data.get("transfer_bill_no")),
            fail_reason=_text(data.get("fail_reason")),
            details=details,
            created=parse_create_time(data.get("create_time")),
        )

    def _decrypt_resource(self, resource: Any) -> dict[str, Any]:
        if not isinstance(resource, dict):
            raise InvalidCallback("notice has no resource object")
        if resource.get("algorithm") != NOTICE_ALGORITHM:
            raise InvalidCallback(f"resource algorithm is not {NOTICE_ALGORITHM}")
        ciphertext, nonce = resource.get("ciphertext"), resource.get("nonce")
        associated = resource.get("associated_data") or ""
        if not isinstance(ciphertext, str) or not isinstance(nonce, str) or not nonce:
            raise InvalidCallback("resource lacks ciphertext or nonce")
        if not isinstance(associated, str):
            raise InvalidCallback("resource associated_data is not text")
        try:
            sealed = base64.b64decode(ciphertext, validate=True)
            plain = AESGCM(self._config.apiv3_key).decrypt(
                nonce.encode(), sealed, associated.encode()
            )
            data = json.loads(plain)
        except (InvalidTag, ValueError, binascii.Error):
            raise InvalidCallback("resource does not decrypt with the APIv3 key") from None
        if not isinstance(data, dict):
            raise InvalidCallback("decrypted resource is not a JSON object")
        return data


def _refusal_code(code: str, message: str) -> str:
    failure = DEFINITE_ERRORS[code]
    if code in ("PARAM_ERROR", "INVALID_REQUEST"):
        for pattern, hinted in _MESSAGE_HINTS:
            if pattern.search(message):
                return hinted
    return failure


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _scrub(text: str, request: TransferRequest | None) -> str:
    """A provider message, safe to store: never the recipient's openid or name."""
    if request is not None:
        account = request.recipient.get("account") or ""
        name = request.recipient.get("name") or ""
        if account:
            text = text.replace(account, mask_account(account))
        if name:
            text = text.replace(name, mask_name(name) or "")
    return text[:300]
