"""PayPal Payouts (REST ``/v1/payments/payouts``): one payout is one single-item batch.

Wire format (PayPal's published Payouts and Webhooks API reference):

- **Auth.** OAuth 2.0 client credentials: ``POST /v1/oauth2/token`` with HTTP Basic
  ``client_id:client_secret`` and ``grant_type=client_credentials`` answers an
  ``access_token`` valid ``expires_in`` seconds. The token is cached until shortly before
  it expires and fetched by one caller at a time; a 401 on an API call drops it and the call
  is retried once with a fresh one (a 401 means PayPal did not act on the request).
- **Create.** ``POST /v1/payments/payouts`` with ``sender_batch_header.sender_batch_id`` =
  the payout's idempotency key and one item (``sender_item_id`` = the payout id). Header
  ``PayPal-Request-Id`` = the key too, so a retried POST replays the original answer. PayPal
  "completes a payment only once for a sender_batch_id used within 30 days" and says a 5xx
  may be retried with the same ``sender_batch_id``. 201 → ``batch_header.payout_batch_id``
  (our reference), ``batch_status`` PENDING: the item's result comes later.
- **Duplicate.** A ``sender_batch_id`` PayPal already booked (and no replay) answers 400
  ``USER_BUSINESS_ERROR`` with a ``SENDER_BATCH_ID`` detail whose HATEOAS link names the
  original batch: that batch is looked up (by id, on *our* configured base URL; the link's
  host is never fetched). Without a link the outcome is unknown (:class:`OutcomeUnknown`);
  if that persists the executor ends the payout in ``needs_review``.
- **Status.** ``GET /v1/payments/payouts/{payout_batch_id}``: the one item's
  ``transaction_status``: SUCCESS → succeeded; PENDING (and NEW) → processing; UNCLAIMED and
  ONHOLD → processing under a 30-day :class:`ProviderHold` (PayPal returns unclaimed or held
  money after 30 days), counted from the item's ``time_processed`` (else the batch's
  ``time_created``); FAILED, BLOCKED, RETURNED, REFUNDED, REVERSED, DENIED, CANCELED →
  failed; a DENIED or CANCELED batch → failed. PayPal has no lookup by ``sender_batch_id``,
  so without a reference :meth:`PayPalGateway.get_status` answers NOT_FOUND: safe, because
  the executor then re-submits under the same ``sender_batch_id`` + ``PayPal-Request-Id``,
  which PayPal never books twice; but not while an earlier send may still be in PayPal's
  hands (one adapter timeout after a lost answer or a concurrent-request refusal), when it
  answers OutcomeUnknown instead.
- **Errors.** A 400/422 is :class:`Rejected` only when PayPal documents it as a refusal of
  this payment (``DEFINITE_REFUSALS``, or a validation error all of whose details are about
  the item's receiver, amount or currency). Anything naming the request id or a batch id
  (``DUPLICATE_REQUEST_ID``: PayPal "processes the first request and might fail the second")
  and every other name → :class:`OutcomeUnknown`, asked again under the same key; 403 and
  429 → :class:`NotDone`; 5xx and anything unexpected → :class:`OutcomeUnknown`. An answer
  that cannot be tied to our ``sender_batch_id`` is not trusted (OutcomeUnknown, never
  success).
- **Webhooks.** ``PAYMENT.PAYOUTS-ITEM.*`` (resource = the payout item, carrying
  ``sender_batch_id`` and ``transaction_status``) and ``PAYMENT.PAYOUTSBATCH.*``. Verified
  the documented way: ``POST /v1/notifications/verify-webhook-signature`` with the
  ``PAYPAL-TRANSMISSION-*``, ``PAYPAL-CERT-URL`` and ``PAYPAL-AUTH-ALGO`` headers, our
  ``webhook_id`` and the event exactly as received; anything but ``verification_status``
  SUCCESS is :class:`InvalidSignature`. Before that call (so forged notices cannot spend the
  merchant's API quota): the headers, ``PAYPAL-TRANSMISSION-TIME`` within ±5 minutes, and
  the event's shape; a transmission already verified (or refused) is answered from memory;
  at most ``verify_per_minute`` calls a minute, beyond which :class:`NotDone` (503: PayPal
  delivers the notice again later).

PayPal does not sign its API answers (TLS authenticates them); what this adapter checks
instead is that every answer is about our ``sender_batch_id``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from payoutsvc.gateways.base import (
    CallbackNotice,
    CallbackReply,
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
    provider_client,
    redact_identifiers,
    secret_from,
    send,
)
from payoutsvc.money import currency_exponent, format_amount
from payoutsvc.runtime import Runtime

log = structlog.get_logger(__name__)

NAME = "paypal"
DEFAULT_BASE_URL = "https://api-m.paypal.com"
TOKEN_PATH = "/v1/oauth2/token"  # noqa: S105  (a URL path, not a password)
PAYOUTS_PATH = "/v1/payments/payouts"
VERIFY_PATH = "/v1/notifications/verify-webhook-signature"
REQUEST_ID_HEADER = "PayPal-Request-Id"

# A token is refreshed this long before PayPal says it expires (at most half its life), so a
# request never leaves with a token that dies on the way.
TOKEN_REFRESH_MARGIN_SECONDS = 300.0

# Currencies PayPal pays out; HUF, JPY and TWD only in whole units ("decimal amounts cause
# an error"), although ISO 4217 gives HUF and TWD two decimals.
_CURRENCY_CODES = "AUD BRL CAD CHF CNY CZK DKK EUR GBP HKD HUF ILS JPY MXN MYR NOK NZD PHP PLN SEK"
SUPPORTED_CURRENCIES = frozenset((_CURRENCY_CODES + " SGD THB TWD USD").split())
WHOLE_UNIT_CURRENCIES = frozenset({"HUF", "JPY", "TWD"})

# Field limits of the create-payout request.
RECEIVER_MAX = 127
NOTE_MAX = 1000  # the batch and item notes together may not exceed 1000 characters
SENDER_ITEM_ID_MAX = 63
EMAIL_SUBJECT_MAX = 255

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
# A PayPal payer id ("the encrypted PayPal account number"): 13 characters of PayPal's Base32
# alphabet (``^[2-9A-HJ-NP-Z]{13}$``, ``account_id`` in PayPal's Orders v2 OpenAPI document).
# We also require one letter: 13 digits are far likelier a phone number missing its "+".
_PAYER_ID = re.compile(r"^(?=.*[A-Z])[2-9A-HJ-NP-Z]{13}$")
_BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BATCH_LINK = re.compile(r"/v1/payments/payouts/([A-Za-z0-9_-]{1,64})/?$")

ITEM_SUCCEEDED = frozenset({"SUCCESS"})
ITEM_PROCESSING = frozenset({"PENDING", "UNCLAIMED", "ONHOLD", "NEW"})
ITEM_FAILED = frozenset(
    {"FAILED", "BLOCKED", "RETURNED", "REFUNDED", "REVERSED", "DENIED", "CANCELED"}
)
BATCH_FAILED = frozenset({"DENIED", "CANCELED"})

# PayPal error names (error ``name``, a detail's ``issue``, or an item's ``errors.name``)
# that say why a payout was refused, as our failure codes. Anything else: gateway_declined.
FAILURE_CODES: dict[str, str] = {
    "INSUFFICIENT_FUNDS": "insufficient_funds",
    "RECEIVER_UNREGISTERED": "recipient_account_invalid",
    "RECEIVER_UNCONFIRMED": "recipient_account_invalid",
    "RECEIVER_ACCOUNT_INVALID": "recipient_account_invalid",
    "RECEIVER_ACCOUNT_LOCKED": "recipient_account_invalid",
    "RECEIVER_INVALID": "recipient_account_invalid",
    "RECEIVER_COUNTRY_NOT_ALLOWED": "recipient_account_invalid",
    "RECEIVER_YOUTH_ACCOUNT": "recipient_account_invalid",
    "INVALID_EMAIL": "recipient_account_invalid",
    "INVALID_PHONE": "recipient_account_invalid",
    "SELF_PAY_NOT_ALLOWED": "recipient_account_invalid",
    "CURRENCY_NOT_SUPPORTED_FOR_RECEIVER": "currency_not_supported",
    "RECEIVER_REFUSED": "currency_not_supported",  # "refused this payout in this currency"
    "NON_HOLDING_CURRENCY": "currency_not_supported",
    "CURRENCY_COMPLIANCE": "currency_not_supported",
    "UNSUPPORTED_PAYEE_CURRENCY": "currency_not_supported",
    "INVALID_CURRENCY": "currency_not_supported",
    "CURRENCY_NOT_SUPPORTED": "currency_not_supported",
    "SPENDING_LIMIT_EXCEEDED": "amount_out_of_range",
    "TRANSACTION_LIMIT_EXCEEDED": "amount_out_of_range",
    "RECEIVING_LIMIT_EXCEEDED": "amount_out_of_range",
    "AMOUNT_LIMIT_EXCEEDED": "amount_out_of_range",
    "ZERO_AMOUNT": "amount_out_of_range",
    "INVALID_AMOUNT": "amount_out_of_range",
    "DECIMAL_PRECISION": "amount_out_of_range",
}
DUPLICATE_NAMES = frozenset({"SENDER_BATCH_ID_ALREADY_USED", "DUPLICATE_SENDER_BATCH_ID"})

# The closed list of create refusals that may fail a payout: PayPal documents each as a
# refusal of this payment that books nothing (the Payouts "transaction activity log error
# and reason codes" table, https://developer.paypal.com/payouts/view-transactions, and the
# Payouts error pages https://developer.paypal.com/api/payments.payouts-batch/v1/errors/).
# Deliberately NOT here: RECEIVER_UNREGISTERED/RECEIVER_UNCONFIRMED (PayPal pays such
# receivers as UNCLAIMED items, claimable for 30 days), RECEIVER_ACCOUNT_LIMITATION (the
# payment is held, not refused), anything about the request or batch id, and every name
# PayPal may invent tomorrow: those are unknown outcomes, resolved under the same key.
DEFINITE_REFUSALS = frozenset(
    {
        "INSUFFICIENT_FUNDS",  # 1002
        "USER_COUNTRY_NOT_ALLOWED",  # 1003
        "USER_FUNDING_SOURCE_INELIGIBLE",  # 1004
        "SELF_PAY_NOT_ALLOWED",  # 3004
        "RECEIVER_ACCOUNT_LOCKED",  # 3015 ("money returned to your account")
        "SPENDING_LIMIT_EXCEEDED",  # 3017
        "CURRENCY_NOT_SUPPORTED_FOR_RECEIVER",
        "RECEIVER_REFUSED",
    }
)
# Generic validation answers (the OpenAPI document's 400 INVALID_REQUEST and 422
# UNPROCESSABLE_ENTITY, and VALIDATION_ERROR) refuse this payment for good only when every
# detail is about the item's own receiver, amount or currency, or is a listed refusal.
VALIDATION_NAMES = frozenset({"VALIDATION_ERROR", "INVALID_REQUEST", "UNPROCESSABLE_ENTITY"})
ITEM_FIELD_WORDS = ("receiver", "recipient_type", "amount", "currency")
# Any error naming the idempotency fields: DUPLICATE_REQUEST_ID (a second request under a
# PayPal-Request-Id whose first is still in flight: "PayPal processes the first request and
# might fail the second", https://developer.paypal.com/reference/guidelines/idempotency),
# PAYPAL_REQUEST_ID_PREVIOUSLY_USED, batch-id issues. They say nothing about the payment.
IDEMPOTENCY_WORDS = ("REQUEST_ID", "REQUEST-ID", "BATCH_ID")

# PayPal keeps a transfer pending for reasons of its own (ProviderHold). UNCLAIMED: "these
# payouts expire in 30 days, and PayPal automatically returns the money"
# (https://developer.paypal.com/payouts/use-payouts/handle-unclaimed-payouts). ONHOLD: the
# documented hold (RECEIVER_ACCOUNT_LIMITATION) says "Funds will be returned to your account
# if the limitation is not resolved within 30 days of the sent payout"; PayPal gives no
# other deadline for ONHOLD, so it is 30 days too.
HOLD_PATIENCE = {"UNCLAIMED": timedelta(days=30), "ONHOLD": timedelta(days=30)}

# Notices: PAYPAL-TRANSMISSION-TIME must be within this many seconds of our clock (either
# way) before PayPal's verify API is asked at all. PayPal retries an unacknowledged notice
# as a new HTTP transmission with its own id and time, so a refused stale one comes again.
TRANSMISSION_WINDOW_SECONDS = 300.0
# Verified (or refused) transmissions are remembered this long, answering a redelivered
# duplicate without a second verify call; older ones fail the window check anyway.
VERIFIED_MEMORY_SECONDS = 2 * TRANSMISSION_WINDOW_SECONDS
VERIFIED_MEMORY_MAX = 10_000

# Webhook headers → fields of the verify-webhook-signature request.
TRANSMISSION_HEADERS = {
    "auth_algo": "paypal-auth-algo",
    "cert_url": "paypal-cert-url",
    "transmission_id": "paypal-transmission-id",
    "transmission_sig": "paypal-transmission-sig",
    "transmission_time": "paypal-transmission-time",
}
ITEM_EVENT_PREFIX = "PAYMENT.PAYOUTS-ITEM."
BATCH_EVENT_PREFIX = "PAYMENT.PAYOUTSBATCH."
# An item event whose resource lacks transaction_status: the status its name implies.
ITEM_EVENT_STATUS = {
    "SUCCEEDED": "SUCCESS",
    "FAILED": "FAILED",
    "BLOCKED": "BLOCKED",
    "RETURNED": "RETURNED",
    "REFUNDED": "REFUNDED",
    "REVERSED": "REVERSED",
    "DENIED": "DENIED",
    "CANCELED": "CANCELED",
    "UNCLAIMED": "UNCLAIMED",
    "HELD": "ONHOLD",
}


class PayPalSettings(BaseSettings):
    """``PAYOUTSVC_PAYPAL_*``: each credential inline or as a file (``…_FILE`` wins)."""

    model_config = SettingsConfigDict(env_prefix="PAYOUTSVC_PAYPAL_", extra="ignore")

    client_id: SecretStr | None = None
    client_id_file: Path | None = None
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    webhook_id: SecretStr | None = None
    webhook_id_file: Path | None = None
    base_url: str = DEFAULT_BASE_URL
    timeout_seconds: float = Field(default=15.0, gt=0)
    email_subject: str = Field(default="You have a payout", min_length=1, max_length=255)
    # At most this many verify-webhook-signature calls per minute (per process): forged
    # notices must not spend the merchant's API quota. Beyond it a notice is answered 503
    # and PayPal delivers it again later.
    verify_per_minute: int = Field(default=120, ge=1)


def create_gateway(runtime: Runtime) -> PayPalGateway:
    """The registry's factory: credentials from the environment (``PAYOUTSVC_PAYPAL_*``)."""
    return PayPalGateway.from_settings(PayPalSettings())


@dataclass(frozen=True, slots=True)
class PayPalError:
    """A PayPal error answer: ``{"name", "message", "debug_id", "details": [...]}``."""

    status: int
    name: str
    message: str
    debug_id: str | None
    details: list[dict[str, Any]]
    links: list[str]

    @classmethod
    def of(cls, response: httpx.Response) -> PayPalError:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {}
        details = [d for d in data.get("details") or [] if isinstance(d, dict)]
        links = _hrefs(data.get("links"))
        for detail in details:
            links += _hrefs(detail.get("link")) + _hrefs(detail.get("links"))
        name = data.get("name") or data.get("error")
        message = data.get("message") or data.get("error_description")
        return cls(
            status=response.status_code,
            name=str(name) if name else f"HTTP_{response.status_code}",
            message=str(message)[:300] if message else "",
            debug_id=_text(data.get("debug_id")) or response.headers.get("paypal-debug-id"),
            details=details,
            links=links,
        )

    def issues(self) -> list[str]:
        return [str(d.get("issue") or "") for d in self.details]

    @property
    def duplicate_batch(self) -> bool:
        if self.name in DUPLICATE_NAMES:
            return True
        for detail in self.details:
            field = str(detail.get("field") or "").upper()
            issue = str(detail.get("issue") or "").upper()
            # "field": "SENDER_BATCH_ID", "issue": "Batch with given sender_batch_id already
            # exists". Our sender_batch_id is always well-formed (32 hex digits), so any
            # issue PayPal raises about that field is taken as a possible duplicate, whatever
            # its wording: a refusal read as final there could leave a paid batch "failed".
            if "SENDER_BATCH_ID" in field + issue:
                return True
        return self.existing_batch_id() is not None

    def existing_batch_id(self) -> str | None:
        """The original batch's id from the duplicate answer's HATEOAS link (its path only)."""
        for href in self.links:
            match = _BATCH_LINK.search(urlsplit(href).path)
            if match:
                return match.group(1)
        return None

    def names_idempotency_field(self) -> bool:
        """Whether the error is about the PayPal-Request-Id or a batch id (not the payment)."""
        words = [self.name]
        words += [f"{d.get('field') or ''} {d.get('issue') or ''}" for d in self.details]
        text = " ".join(words).upper().replace(" ", "_")
        return any(word in text for word in IDEMPOTENCY_WORDS)

    def is_definite_refusal(self) -> bool:
        """Whether PayPal documents this answer as a refusal of this payment (closed list)."""
        if self.names_idempotency_field():
            return False
        if self.name.upper() in DEFINITE_REFUSALS:
            return True
        if self.name.upper() not in VALIDATION_NAMES or not self.details:
            return False
        return all(_detail_refuses_item(detail) for detail in self.details)

    def failure_code(self) -> str:
        for word in (self.name, *self.issues()):
            code = FAILURE_CODES.get(word.upper())
            if code:
                return code
        for detail in self.details:
            field = str(detail.get("field") or "").lower()
            if "receiver" in field or "recipient" in field:
                return "recipient_account_invalid"
            if "currency" in field:
                return "currency_not_supported"
            if "amount" in field:
                return "amount_out_of_range"
        return "gateway_declined"

    def describe(self) -> str:
        issues = "; ".join(
            f"{d.get('field') or '?'}: {d.get('issue') or d.get('description') or '?'}"
            for d in self.details
        )
        text = f"PayPal answered HTTP {self.status} {self.name}"
        if self.message:
            text += f": {self.message}"
        if issues:
            text += f" ({issues[:300]})"
        if self.debug_id:
            text += f" [debug_id {self.debug_id}]"
        return redact_identifiers(text)


class PayPalGateway:
    name = NAME
    callback_reply: CallbackReply | None = None

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        webhook_id: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        timeout_seconds: float = 15.0,
        email_subject: str = "You have a payout",
        verify_per_minute: int = 120,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._webhook_id = webhook_id
        self._base_url = base_url.rstrip("/")
        self._client = provider_client(self._base_url, timeout_seconds)
        self._email_subject = email_subject[:EMAIL_SUBJECT_MAX]
        self._clock = clock
        self._wall_clock = wall_clock
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._token_lock = asyncio.Lock()
        # Wait before re-sending. PayPal may still be processing a create we stopped waiting
        # for, and then answers a second one under the same PayPal-Request-Id with
        # DUPLICATE_REQUEST_ID ("processes the first request and might fail the second").
        # So after a send whose answer we lost (timeout, reset) or that PayPal refused as
        # concurrent, nothing is sent under that sender_batch_id for one more of our own
        # timeouts: get_status answers OutcomeUnknown instead of NOT_FOUND (the executor
        # calls it first for every non-fresh job, so it never reaches submit) and submit
        # refuses without sending. The memory is in-process (adapters do not see the
        # database): the executor holds one adapter per process, shared by all its
        # concurrent jobs. When another worker process takes the payout over, it does not
        # know of the earlier send and may re-send sooner (the default retry schedule starts
        # at 1 s, config.py); that is still safe, because PayPal's refusal of a concurrent
        # re-send is an unknown outcome here, never a failure, and is asked again later.
        self._timeout_seconds = timeout_seconds
        self._resend_not_before: OrderedDict[str, float] = OrderedDict()
        self._sending: set[str] = set()
        self._verify_per_minute = verify_per_minute
        self._verify_calls: deque[float] = deque()
        # digest of a transmission → (forget after, verified?)
        self._verified: OrderedDict[str, tuple[float, bool]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: PayPalSettings) -> PayPalGateway:
        try:
            webhook_id: str | None = secret_from(
                settings.webhook_id, settings.webhook_id_file, name="PAYOUTSVC_PAYPAL_WEBHOOK_ID"
            )
        except MissingCredential:
            webhook_id = None
            log.warning(
                "gateway.paypal.no_webhook_id",
                detail="PAYOUTSVC_PAYPAL_WEBHOOK_ID is not set: PayPal notices are refused",
            )
        return cls(
            client_id=secret_from(
                settings.client_id, settings.client_id_file, name="PAYOUTSVC_PAYPAL_CLIENT_ID"
            ),
            client_secret=secret_from(
                settings.client_secret,
                settings.client_secret_file,
                name="PAYOUTSVC_PAYPAL_CLIENT_SECRET",
            ),
            webhook_id=webhook_id,
            base_url=settings.base_url,
            timeout_seconds=settings.timeout_seconds,
            email_subject=settings.email_subject,
            verify_per_minute=settings.verify_per_minute,
        )

    def __repr__(self) -> str:  # never the credentials
        return f"PayPalGateway(base_url={self._base_url!r})"

    # -- Gateway protocol ---------------------------------------------------------------
    async def submit(self, request: TransferRequest) -> TransferResult:
        body = payout_body(request, email_subject=self._email_subject)
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        key = request.idempotency_key
        self._refuse_early_resend(key)
        self._sending.add(key)
        try:
            response = await self._api(
                "POST", PAYOUTS_PATH, content=content, headers={REQUEST_ID_HEADER: key}
            )
        except OutcomeUnknown:
            self._hold_resends(key)  # PayPal may still be working on it
            raise
        finally:
            self._sending.discard(key)
        if response.status_code in (200, 201):
            result = batch_result(key, _json_object(response))
            log.info(
                "gateway.paypal.submitted",
                payout_id=request.payout_id,
                payout_batch_id=result.reference,
                status=result.gateway_status,
            )
            return result
        error = PayPalError.of(response)
        if error.status in (400, 409, 422) and error.duplicate_batch:
            return await self._existing_batch(key, error)
        if error.names_idempotency_field():
            self._hold_resends(key)  # e.g. DUPLICATE_REQUEST_ID: the first is still in flight
        raise _refusal(error)

    async def get_status(
        self, idempotency_key: str, *, reference: str | None = None
    ) -> TransferResult:
        if reference is None:
            # PayPal can only be asked by its payout_batch_id. Without one no answer of
            # PayPal's was read, so the executor re-submits under the same sender_batch_id
            # and PayPal-Request-Id: PayPal replays the first answer or names the batch it
            # already has, and never books the key twice. Not while an earlier send may
            # still be in PayPal's hands (see __init__): then this answers "unknown".
            self._refuse_early_resend(idempotency_key)
            return TransferResult(TransferState.NOT_FOUND, gateway_status="no_reference")
        if not _BATCH_ID.fullmatch(reference):
            raise OutcomeUnknown(
                "the stored reference is not a PayPal payout_batch_id", gateway_status="invalid"
            )
        response = await self._api("GET", f"{PAYOUTS_PATH}/{reference}")
        if response.status_code == 200:
            return batch_result(idempotency_key, _json_object(response))
        error = PayPalError.of(response)
        if response.status_code == 404:
            # PayPal named this batch to us before; not finding it now means a wrong base
            # URL or account, where a re-submit could pay twice. Never NOT_FOUND here.
            raise OutcomeUnknown(
                f"PayPal cannot show batch {reference} it named before: {error.describe()}",
                gateway_status=error.name,
            )
        if response.status_code == 429:
            raise NotDone(error.describe(), gateway_status=error.name)
        raise OutcomeUnknown(error.describe(), gateway_status=error.name)

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackNotice:
        # Every check that costs nothing comes before PayPal's verify API, so that forged
        # notices cannot spend the merchant's API quota.
        lowered = {k.lower(): v for k, v in headers.items()}
        transmission = {field: lowered.get(h, "") for field, h in TRANSMISSION_HEADERS.items()}
        missing = [TRANSMISSION_HEADERS[f].upper() for f, v in transmission.items() if not v]
        if missing:
            raise InvalidSignature(f"missing {', '.join(missing)}")
        if self._webhook_id is None:
            raise InvalidSignature("no PayPal webhook id is configured to verify notices with")
        self._check_transmission_time(transmission["transmission_time"])
        try:
            event = json.loads(body)
        except ValueError:
            raise InvalidCallback("body is not JSON") from None
        if not isinstance(event, dict):
            raise InvalidCallback("body is not a JSON object")
        notice = notice_from_event(event)  # only parsed here; returned once verified
        digest = self._transmission_digest(transmission, body)
        known = self._remembered(digest)
        if known is None:
            known = await self._verify(transmission, body)
            self._remember(digest, verified=known)
        if not known:
            raise InvalidSignature("PayPal did not verify the notice")
        if notice.result.state in (TransferState.SUCCEEDED, TransferState.FAILED):
            return await self._confirmed(notice)
        return notice

    async def _confirmed(self, notice: CallbackNotice) -> CallbackNotice:
        """PayPal signs a notice over a CRC32 of its body, which can be forged to match a
        captured genuine delivery; so a final result in a notice is only a prompt to ask
        PayPal itself, over TLS, what the batch under our sender_batch_id says now. An answer
        that cannot be had or is not provably ours raises (503: PayPal delivers again)."""
        batch_id = notice.result.reference
        if not batch_id:
            raise InvalidCallback("a final PayPal notice without its payout_batch_id")
        confirmed = await self.get_status(notice.idempotency_key, reference=batch_id)
        return CallbackNotice(notice.idempotency_key, confirmed, notice.notice_id)

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- re-sends ---------------------------------------------------------------------------
    def _refuse_early_resend(self, key: str) -> None:
        """OutcomeUnknown while a send under ``key`` may still be in PayPal's hands."""
        now = self._clock()
        while self._resend_not_before:  # forget what no longer matters (oldest first)
            oldest, not_before = next(iter(self._resend_not_before.items()))
            if not_before > now:
                break
            del self._resend_not_before[oldest]
        until = self._resend_not_before.get(key)
        if key in self._sending or until is not None:
            wait = max(0.0, (until or now) - now)
            raise OutcomeUnknown(
                f"an earlier request under this sender_batch_id may still be processed by "
                f"PayPal; not re-sent for another {wait:.1f}s",
                gateway_status="resend_wait",
            )

    def _hold_resends(self, key: str) -> None:
        self._resend_not_before[key] = self._clock() + self._timeout_seconds
        self._resend_not_before.move_to_end(key)

    # -- notices ----------------------------------------------------------------------------
    def _check_transmission_time(self, value: str) -> None:
        try:
            sent = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidSignature("PAYPAL-TRANSMISSION-TIME is not a date-time") from None
        if sent.tzinfo is None:
            sent = sent.replace(tzinfo=UTC)
        skew = abs((self._wall_clock() - sent).total_seconds())
        if skew > TRANSMISSION_WINDOW_SECONDS:
            raise InvalidSignature(
                f"PAYPAL-TRANSMISSION-TIME is {skew:.0f}s away from now "
                f"(at most {TRANSMISSION_WINDOW_SECONDS:.0f}s)"
            )

    def _transmission_digest(self, transmission: Mapping[str, str], body: bytes) -> str:
        parts = [transmission[f] for f in sorted(transmission)]
        hashed = hashlib.sha256("\n".join(parts).encode())
        hashed.update(b"\n" + body.strip())
        return hashed.hexdigest()

    def _remembered(self, digest: str) -> bool | None:
        now = self._clock()
        while self._verified:
            oldest, (forget_at, _) = next(iter(self._verified.items()))
            if forget_at > now:
                break
            del self._verified[oldest]
        found = self._verified.get(digest)
        return None if found is None else found[1]

    def _remember(self, digest: str, *, verified: bool) -> None:
        self._verified[digest] = (self._clock() + VERIFIED_MEMORY_SECONDS, verified)
        self._verified.move_to_end(digest)
        while len(self._verified) > VERIFIED_MEMORY_MAX:
            self._verified.popitem(last=False)

    def _spend_verify_call(self) -> None:
        """Count one verify call against the per-minute bound; NotDone beyond it (answered
        503, so PayPal delivers the notice again later)."""
        now = self._clock()
        while self._verify_calls and self._verify_calls[0] <= now - 60.0:
            self._verify_calls.popleft()
        if len(self._verify_calls) >= self._verify_per_minute:
            log.warning("gateway.paypal.verify_throttled", per_minute=self._verify_per_minute)
            raise NotDone(
                f"more than {self._verify_per_minute} PayPal notices to verify in a minute",
                gateway_status="verify_throttled",
            )
        self._verify_calls.append(now)

    # -- PayPal calls ---------------------------------------------------------------------
    async def _existing_batch(self, key: str, error: PayPalError) -> TransferResult:
        batch_id = error.existing_batch_id()
        log.warning(
            "gateway.paypal.duplicate_sender_batch_id",
            idempotency_key=key,
            payout_batch_id=batch_id,
            debug_id=error.debug_id,
        )
        if batch_id is None:
            raise OutcomeUnknown(
                "PayPal already has a batch under this sender_batch_id but did not say "
                f"which, and did not replay its first answer; {error.describe()}",
                gateway_status="SENDER_BATCH_ID_ALREADY_USED",
            )
        found = await self.get_status(key, reference=batch_id)
        if found.state is TransferState.NOT_FOUND:
            raise OutcomeUnknown(
                f"PayPal named batch {batch_id} for this sender_batch_id but cannot show it",
                gateway_status=found.gateway_status,
            )
        return found

    async def _verify(self, transmission: Mapping[str, str], body: bytes) -> bool:
        """PayPal's verdict on the notice: True (SUCCESS) or False; raises when there is none."""
        self._spend_verify_call()
        fields = {**transmission, "webhook_id": self._webhook_id}
        # The event goes back exactly as received: re-serialising it could change the bytes
        # PayPal's CRC32 was computed over.
        prefix = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
        content = prefix[:-1].encode() + b',"webhook_event":' + body.strip() + b"}"
        response = await self._api("POST", VERIFY_PATH, content=content)
        if response.status_code == 200:
            try:
                verdict = response.json().get("verification_status")
            except (ValueError, AttributeError):
                verdict = None
            if verdict in ("SUCCESS", "FAILURE"):
                return bool(verdict == "SUCCESS")
            raise InvalidSignature(f"PayPal did not verify the notice ({verdict or 'no verdict'})")
        error = PayPalError.of(response)
        if response.status_code == 429:
            raise NotDone(f"could not verify the notice: {error.describe()}", gateway_status="429")
        if response.status_code >= 500:
            raise OutcomeUnknown(
                f"could not verify the notice: {error.describe()}", gateway_status=error.name
            )
        raise InvalidSignature(f"PayPal refused to verify the notice: {error.describe()}")

    async def _api(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One authenticated call; a 401 drops the token and the call is made once more."""
        for attempt in (1, 2):
            token = await self._access_token()
            all_headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            if content is not None:
                all_headers["Content-Type"] = "application/json"
            all_headers.update(headers or {})
            request = self._client.build_request(method, path, content=content, headers=all_headers)
            response = await send(self._client, request)
            if response.status_code != 401:
                return response
            self._drop_token(token)
            log.warning("gateway.paypal.token_rejected", path=path, attempt=attempt)
        raise NotDone("PayPal refused a fresh access token (HTTP 401)", gateway_status="http_401")

    def _cached_token(self) -> str | None:
        if self._token is not None and self._clock() < self._token_expires_at:
            return self._token
        return None

    def _drop_token(self, token: str) -> None:
        if self._token == token:
            self._token = None

    async def _access_token(self) -> str:
        token = self._cached_token()
        if token is not None:
            return token
        async with self._token_lock:  # one refresh at a time; the others reuse its token
            token = self._cached_token()
            if token is not None:
                return token
            return await self._fetch_token()

    async def _fetch_token(self) -> str:
        request = self._client.build_request(
            "POST",
            TOKEN_PATH,
            content=b"grant_type=client_credentials",
            headers={
                "Authorization": self._basic,
                "Accept": "application/json",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        try:
            response = await send(self._client, request)
        except (NotDone, OutcomeUnknown) as exc:
            # A token request moves no money, whatever happened to it.
            raise NotDone(f"no access token: {exc.message}", gateway_status="no_token") from None
        if response.status_code != 200:
            error = PayPalError.of(response)
            log.error("gateway.paypal.token_refused", status=error.status, error=error.name)
            raise NotDone(
                f"PayPal refused the client credentials: {error.describe()}",
                gateway_status="token_refused",
            )
        try:
            data = response.json()
        except ValueError:
            data = None
        token = data.get("access_token") if isinstance(data, dict) else None
        expires_in = data.get("expires_in") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token or not isinstance(expires_in, int | float):
            raise NotDone("PayPal's token answer has no access_token/expires_in")
        lifetime = float(expires_in)
        self._token = token
        self._token_expires_at = (
            self._clock() + lifetime - min(TOKEN_REFRESH_MARGIN_SECONDS, lifetime / 2)
        )
        log.info("gateway.paypal.token_fetched", expires_in=expires_in)
        return token


# -- request ------------------------------------------------------------------------------
def recipient_type_of(account: str) -> str:
    """PayPal's ``recipient_type`` for our account: EMAIL, PHONE (E.164) or PAYPAL_ID (a
    PayPal payer id)."""
    if _EMAIL.fullmatch(account):
        return "EMAIL"
    if _E164.fullmatch(account):
        return "PHONE"
    if _PAYER_ID.fullmatch(account):
        return "PAYPAL_ID"
    raise Rejected(
        "recipient_account_invalid",
        "A PayPal account must be an email, an E.164 phone number or a PayPal payer id.",
    )


def paypal_amount(amount_minor: int, currency: str) -> str:
    """Minor units to PayPal's ``amount.value`` string (major units)."""
    if currency not in SUPPORTED_CURRENCIES:
        raise Rejected("currency_not_supported", f"PayPal does not pay out in {currency}.")
    if amount_minor <= 0:
        raise Rejected("amount_out_of_range", "The amount must be positive.")
    if currency in WHOLE_UNIT_CURRENCIES:
        unit = 10 ** currency_exponent(currency)
        if amount_minor % unit:
            raise Rejected(
                "amount_out_of_range", f"PayPal pays {currency} in whole units only (no decimals)."
            )
        return str(amount_minor // unit)
    return format_amount(amount_minor, currency)


def payout_body(request: TransferRequest, *, email_subject: str) -> dict[str, Any]:
    """The create-payout request for one payout; raises Rejected for what PayPal would
    refuse anyway (nothing is sent then)."""
    if request.recipient.get("type") != "paypal":
        raise Rejected(
            "recipient_account_invalid", "The PayPal gateway pays recipients of type paypal only."
        )
    account = (request.recipient.get("account") or "").strip()
    if len(account) > RECEIVER_MAX:
        raise Rejected(
            "recipient_account_invalid",
            f"A PayPal receiver is at most {RECEIVER_MAX} characters.",
        )
    recipient_type = recipient_type_of(account)
    item: dict[str, Any] = {
        "recipient_type": recipient_type,
        "amount": {
            "value": paypal_amount(request.amount_minor, request.currency),
            "currency": request.currency,
        },
        "receiver": account,
        "sender_item_id": request.payout_id[:SENDER_ITEM_ID_MAX],
    }
    note = (request.description or "").strip()
    if note:
        item["note"] = note[:NOTE_MAX]
    return {
        "sender_batch_header": {
            "sender_batch_id": request.idempotency_key,
            "recipient_type": recipient_type,
            "email_subject": email_subject,
        },
        "items": [item],
    }


# -- answers ------------------------------------------------------------------------------
def _refusal(error: PayPalError) -> Exception:
    """What a non-2xx answer to create means for the payout."""
    if error.status in (403, 429):
        # 403: the app lacks the Payouts permission (configuration); 429: throttled. PayPal
        # acted on neither, and neither is the payout's fault: retried with the same key.
        return NotDone(error.describe(), gateway_status=error.name)
    if error.status in (400, 422) and error.is_definite_refusal():
        log.warning(
            "gateway.paypal.refused", status=error.status, error=error.name, debug_id=error.debug_id
        )
        return Rejected(error.failure_code(), error.describe(), gateway_status=error.name)
    if error.status in (400, 422):
        # Not on the closed list: about the request id or batch id (e.g. DUPLICATE_REQUEST_ID
        # while our first request is still being processed, which PayPal may well book), or
        # a name we do not know. Never a failure: asked again under the same key.
        log.warning(
            "gateway.paypal.unclassified_refusal",
            status=error.status,
            error=error.name,
            debug_id=error.debug_id,
        )
    # 5xx: PayPal may have booked it (and says a retry with the same sender_batch_id is
    # safe); any other answer (3xx, 404, 409, ...) is not one PayPal documents for create.
    return OutcomeUnknown(error.describe(), gateway_status=error.name)


def _detail_refuses_item(detail: Mapping[str, Any]) -> bool:
    issue = str(detail.get("issue") or "").upper()
    if issue in DEFINITE_REFUSALS:
        return True
    field = str(detail.get("field") or "").lower()
    return any(word in field for word in ITEM_FIELD_WORDS)


def batch_result(key: str, data: Mapping[str, Any]) -> TransferResult:
    """A batch answer (create or show) as our result, if it is about ``key``'s batch."""
    header = data.get("batch_header")
    if not isinstance(header, dict):
        raise OutcomeUnknown("PayPal's answer has no batch_header", gateway_status="malformed")
    batch_id = header.get("payout_batch_id")
    batch_status = _text(header.get("batch_status")) or "UNKNOWN"
    sender = header.get("sender_batch_header")
    sender_batch_id = sender.get("sender_batch_id") if isinstance(sender, dict) else None
    if not isinstance(batch_id, str) or not _BATCH_ID.fullmatch(batch_id):
        raise OutcomeUnknown(
            "PayPal's answer has no valid payout_batch_id", gateway_status="malformed"
        )
    if sender_batch_id != key:
        # Not provably ours: never taken as a result, least of all a success.
        raise OutcomeUnknown(
            f"PayPal answered about batch {batch_id}, which is not under our sender_batch_id",
            gateway_status="mismatch",
        )
    items = data.get("items")
    item = None
    if isinstance(items, list) and items:
        if len(items) != 1 or not isinstance(items[0], dict):
            raise OutcomeUnknown(
                f"PayPal's batch {batch_id} does not hold exactly our one item",
                gateway_status="mismatch",
            )
        item = items[0]
        item_batch = item.get("payout_batch_id")
        if item_batch is not None and item_batch != batch_id:
            raise OutcomeUnknown(
                f"PayPal's item belongs to batch {item_batch}, not {batch_id}",
                gateway_status="mismatch",
            )
    if batch_status in BATCH_FAILED:
        code, message = _item_failure(item, f"PayPal {batch_status.lower()} the payout batch.")
        return TransferResult(
            TransferState.FAILED,
            reference=batch_id,
            gateway_status=batch_status,
            failure_code=code,
            failure_message=message,
        )
    if item is None:
        return TransferResult(
            TransferState.PENDING, reference=batch_id, gateway_status=batch_status
        )
    return item_result(item, batch_id, batch_created=_text(header.get("time_created")))


def item_result(
    item: Mapping[str, Any], batch_id: str | None, *, batch_created: str | None = None
) -> TransferResult:
    """A payout item's ``transaction_status`` as our state."""
    status = _text(item.get("transaction_status")) or "UNKNOWN"
    details = {
        k: v
        for k in ("payout_item_id", "transaction_id")
        if isinstance(v := item.get(k), str) and v
    }
    if status in ITEM_SUCCEEDED:
        return TransferResult(
            TransferState.SUCCEEDED,
            reference=batch_id,
            gateway_status=status,
            details=details or None,
        )
    if status in ITEM_FAILED:
        code, message = _item_failure(item, f"PayPal reports the payout item {status}.")
        return TransferResult(
            TransferState.FAILED,
            reference=batch_id,
            gateway_status=status,
            failure_code=code,
            failure_message=message,
            details=details or None,
        )
    if status not in ITEM_PROCESSING:
        # Undocumented: keep asking (never a success); needs_review if it never settles.
        log.warning("gateway.paypal.unknown_item_status", status=status, payout_batch_id=batch_id)
    hold = None
    if status in HOLD_PATIENCE:
        # PayPal's 30 days run from the payout it sent: the item's time_processed (when it
        # was sent and became unclaimed or held), else the batch's time_created.
        since = _instant(item.get("time_processed")) or _instant(batch_created)
        hold = ProviderHold(reason=status, patience=HOLD_PATIENCE[status], since=since)
    return TransferResult(
        TransferState.PENDING,
        reference=batch_id,
        gateway_status=status,
        details=details or None,
        hold=hold,
    )


def _item_failure(item: Mapping[str, Any] | None, default: str) -> tuple[str, str]:
    errors = item.get("errors") if item is not None else None
    if not isinstance(errors, dict):
        return "gateway_declined", default
    name = _text(errors.get("name")) or ""
    message = _text(errors.get("message")) or default
    code = FAILURE_CODES.get(name.upper(), "gateway_declined")
    return code, redact_identifiers(f"{name}: {message}" if name else message, 300)


def notice_from_event(event: Mapping[str, Any]) -> CallbackNotice:
    """A verified PayPal webhook event as a notice about the payout under its batch."""
    event_type = event.get("event_type")
    resource = event.get("resource")
    if not isinstance(event_type, str) or not isinstance(resource, dict):
        raise InvalidCallback("event_type or resource missing")
    notice_id = _text(event.get("id"))
    if event_type.startswith(ITEM_EVENT_PREFIX):
        key = resource.get("sender_batch_id")
        status = _text(resource.get("transaction_status")) or ITEM_EVENT_STATUS.get(
            event_type.removeprefix(ITEM_EVENT_PREFIX)
        )
        if status is None:
            raise InvalidCallback(f"{event_type} carries no transaction_status")
        batch_id = _text(resource.get("payout_batch_id"))
        result = item_result({**resource, "transaction_status": status}, batch_id)
    elif event_type.startswith(BATCH_EVENT_PREFIX):
        header = resource.get("batch_header")
        if not isinstance(header, dict):
            raise InvalidCallback("a batch event without batch_header")
        sender = header.get("sender_batch_header")
        key = sender.get("sender_batch_id") if isinstance(sender, dict) else None
        batch_status = _text(header.get("batch_status")) or event_type.removeprefix(
            BATCH_EVENT_PREFIX
        )
        batch_id = _text(header.get("payout_batch_id"))
        if batch_status in BATCH_FAILED:
            result = TransferResult(
                TransferState.FAILED,
                reference=batch_id,
                gateway_status=batch_status,
                failure_code="gateway_declined",
                failure_message=f"PayPal {batch_status.lower()} the payout batch.",
            )
        else:
            # A processed batch says nothing about its item (it may be UNCLAIMED).
            result = TransferResult(
                TransferState.PENDING, reference=batch_id, gateway_status=batch_status
            )
    else:
        raise InvalidCallback(f"{event_type} is not a payouts event")
    if not isinstance(key, str) or not key:
        raise InvalidCallback("the event names no sender_batch_id")
    return CallbackNotice(idempotency_key=key, result=result, notice_id=notice_id)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise OutcomeUnknown(
            f"PayPal answered HTTP {response.status_code} with a body that is not a JSON object",
            gateway_status="malformed",
        )
    return data


def _hrefs(links: object) -> list[str]:
    if not isinstance(links, list):
        return []
    return [str(link["href"]) for link in links if isinstance(link, dict) and link.get("href")]


def _instant(value: object) -> datetime | None:
    """A PayPal date-time (RFC 3339, e.g. ``2014-01-27T10:17:41Z``), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
