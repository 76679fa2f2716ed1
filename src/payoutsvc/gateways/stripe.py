"""Stripe Connect transfers: pays ``stripe_account`` recipients (a connected account ``acct_…``)
from the platform's Stripe balance.

Wire format (Stripe API v1, form-encoded requests, JSON answers):

- submit: ``POST /v1/transfers`` with ``amount`` (Stripe's minor units, see
  :func:`stripe_amount`), ``currency`` (lowercase), ``destination=acct_…``,
  ``transfer_group`` = the payout's idempotency key, ``metadata[payout_id]``,
  ``metadata[payout_key]`` and ``description``; header ``Idempotency-Key`` = the payout's key.
  Stripe saves the first answer under a key (success *and* errors, including 500s, once the
  endpoint began executing) and replays it, marked ``Idempotent-Replayed: true``, to a retry
  with the same parameters; the same key with other parameters is an ``idempotency_error``.
- status: ``GET /v1/transfers/{tr_…}`` when the reference is known, else
  ``GET /v1/transfers?transfer_group=<key>`` (none listed: NOT_FOUND, safe to submit).
- list (reconciliation): ``GET /v1/transfers?created[gte]=…&created[lte]=…&limit=100``,
  page after page with ``starting_after=<last id>`` while ``has_more``
  (https://docs.stripe.com/api/transfers/list, https://docs.stripe.com/api/pagination).
- callbacks: Stripe events ``transfer.created`` / ``transfer.updated`` / ``transfer.reversed``,
  header ``Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``
  (several ``v1`` while a signing secret is being rolled; any one matching is enough),
  refused when more than 300 s away from our clock.

A created transfer has no pending state: it moved the funds (SUCCEEDED). Only the platform
can take them back, with a reversal. A transfer found fully reversed before we recorded the
payout's success maps to FAILED ``gateway_reversed`` (the recipient has nothing); a partial
reversal stays SUCCEEDED with gateway status ``partially_reversed`` and the amount reversed
in the details. A reversal notice after success finds the payout succeeded and changes
nothing (payouts never move backwards); it is kept among the payout's gateway calls.

Stripe's answers are not signed (TLS authenticates the API), so an answer is only trusted
when it is a transfer for this payout's key: anything else is OutcomeUnknown and the status
query decides.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from payoutsvc.gateways.base import (
    CallbackNotice,
    CallbackReply,
    Gateway,
    InvalidCallback,
    InvalidSignature,
    ListedTransfer,
    NotDone,
    OutcomeUnknown,
    Rejected,
    TransferRequest,
    TransferResult,
    TransferState,
)
from payoutsvc.gateways.providers import provider_client, secret_from, send
from payoutsvc.money import MoneyError, currency_exponent, format_amount
from payoutsvc.recipients.masking import mask_account
from payoutsvc.runtime import Runtime

log = structlog.get_logger(__name__)

NAME = "stripe"
RECIPIENT_TYPE = "stripe_account"
DEFAULT_BASE_URL = "https://api.stripe.com"
# The API version this adapter reads. Without a pin, requests run on the account's default
# version, which the account owner can upgrade in the Dashboard at any time; a pinned
# ``Stripe-Version`` keeps what we read fixed until we move it on purpose
# (https://docs.stripe.com/api/versioning, https://docs.stripe.com/upgrades).
DEFAULT_API_VERSION = "2025-04-30.basil"
_API_VERSION_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}(\.[a-z]+)?")
SIGNATURE_HEADER = "stripe-signature"
SIGNATURE_TOLERANCE_SECONDS = 300
DESCRIPTION_MAX_CHARS = 5000  # Stripe's limit on description strings
LIST_PAGE_SIZE = 100  # Stripe's largest page
MAX_LIST_PAGES = 1000  # a period of more than 100,000 transfers is refused, not truncated
TRANSFER_EVENTS = frozenset({"transfer.created", "transfer.updated", "transfer.reversed"})

# Stripe's own minor units differ from ISO 4217 for a few currencies
# (https://docs.stripe.com/currencies): these are whole units in Stripe's API, including
# MGA, which ISO gives two decimals.
ZERO_DECIMAL = frozenset(
    {
        "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA",
        "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF",
    }
)  # fmt: skip
# ISK is whole krónur (ISO exponent 0), but Stripe's API keeps two decimals (amount 100 = 1 kr).
_EXPONENT_OVERRIDES = {"ISK": 2}
# Stripe takes three decimals for these but requires the last digit to be 0.
THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})

_ACCOUNT_ID = re.compile(r"acct_[A-Za-z0-9]+")
_TRANSFER_ID = re.compile(r"tr_[A-Za-z0-9]+")
_SECRETS = re.compile(r"\b(?:(?:sk|rk|pk)_(?:live|test)|whsec)_[A-Za-z0-9*]+")

# Stripe error codes (https://docs.stripe.com/error-codes) that refuse a transfer for good.
_REJECTIONS = {
    "balance_insufficient": "insufficient_funds",
    "amount_too_small": "amount_out_of_range",
    "amount_too_large": "amount_out_of_range",
    "account_invalid": "recipient_account_invalid",
    "account_closed": "recipient_account_invalid",
    "insufficient_capabilities_for_transfer": "recipient_account_invalid",
    "transfers_not_allowed": "gateway_declined",
}


class StripeSettings(BaseSettings):
    """``PAYOUTSVC_STRIPE_*``: each secret inline or as a file (``…_FILE`` wins)."""

    model_config = SettingsConfigDict(env_prefix="PAYOUTSVC_STRIPE_", extra="ignore")

    secret_key: SecretStr | None = None  # sk_live_… / sk_test_… (or a restricted rk_…)
    secret_key_file: Path | None = None
    webhook_secret: SecretStr | None = None  # whsec_… of the webhook endpoint
    webhook_secret_file: Path | None = None
    base_url: str = DEFAULT_BASE_URL
    timeout_seconds: float = 15.0
    api_version: str = DEFAULT_API_VERSION  # sent as Stripe-Version on every request

    @field_validator("api_version")
    @classmethod
    def _version_shape(cls, value: str) -> str:
        if not _API_VERSION_SHAPE.fullmatch(value):
            raise ValueError(f"expected a Stripe API version like {DEFAULT_API_VERSION!r}")
        return value

    @field_validator("base_url")
    @classmethod
    def _https_unless_loopback(cls, value: str) -> str:
        # The secret key travels in every request: never in clear text off this machine.
        parts = urlsplit(value)
        host = parts.hostname or ""
        if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host)):
            return value.rstrip("/")
        raise ValueError("the Stripe base URL must be https (http only to a loopback host)")

    @field_validator("timeout_seconds")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("the timeout must be positive")
        return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def stripe_exponent(currency: str) -> int:
    """How many decimals Stripe's ``amount`` has in ``currency`` (raises MoneyError)."""
    iso = currency_exponent(currency)
    if currency in ZERO_DECIMAL:
        return 0
    return _EXPONENT_OVERRIDES.get(currency, iso)


def stripe_amount(amount_minor: int, currency: str) -> int:
    """Our ISO minor units as Stripe's ``amount``; raises Rejected when Stripe cannot take
    the amount exactly (it is never rounded: the recipient gets what was approved or
    nothing)."""
    shift = stripe_exponent(currency) - currency_exponent(currency)
    factor: int = 10 ** abs(shift)
    if shift >= 0:
        units = amount_minor * factor
    elif amount_minor % factor:
        raise Rejected(
            "amount_out_of_range",
            f"Stripe takes {currency} in whole units only; "
            f"{format_amount(amount_minor, currency)} has a fraction.",
        )
    else:
        units = amount_minor // factor
    if currency in THREE_DECIMAL and units % 10:
        raise Rejected(
            "amount_out_of_range",
            f"Stripe takes {currency} amounts with a last decimal of 0 only; "
            f"{format_amount(amount_minor, currency)} is not one.",
        )
    return units


def minor_from_stripe(units: int, currency: str) -> int:
    """Stripe's ``amount`` in ``currency`` as our ISO minor units (raises MoneyError when
    they do not map exactly)."""
    shift = stripe_exponent(currency) - currency_exponent(currency)
    factor: int = 10 ** abs(shift)
    if shift <= 0:
        return units * factor
    if units % factor:
        raise MoneyError("invalid_amount", f"{units} is not a whole {currency} minor unit")
    return units // factor


def scrub(text: str) -> str:
    """A Stripe message fit for logs and the payout: connected account ids masked, keys
    removed (Stripe already masks keys in its own messages; this does not rely on it)."""
    text = _SECRETS.sub("[redacted]", text)
    return _ACCOUNT_ID.sub(lambda m: mask_account(m.group(0)), text)[:500]


class StripeGateway:
    name = NAME
    callback_reply: CallbackReply | None = None

    def __init__(
        self,
        *,
        secret_key: str,
        webhook_secret: str | None,
        base_url: str = DEFAULT_BASE_URL,
        timeout_seconds: float = 15.0,
        api_version: str = DEFAULT_API_VERSION,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._webhook_secret = webhook_secret.encode() if webhook_secret else None
        self._clock = clock
        self._client = provider_client(base_url, timeout_seconds)
        self._headers = {
            "Authorization": f"Bearer {secret_key}",
            "Accept": "application/json",
            "User-Agent": "payoutsvc",
            "Stripe-Version": api_version,
        }

    # -- Gateway protocol ---------------------------------------------------------------
    async def submit(self, request: TransferRequest) -> TransferResult:
        form = self._transfer_form(request)
        response = await send(
            self._client,
            self._client.build_request(
                "POST",
                "/v1/transfers",
                data=form,
                headers={**self._headers, "Idempotency-Key": request.idempotency_key},
            ),
        )
        if not response.is_success:
            raise _error_of(response, "submit")
        transfer = _json(response)
        key = request.idempotency_key
        if not (
            _is_transfer(transfer)
            and _belongs_to(transfer, key)
            and transfer.get("amount") == int(form["amount"])
            and transfer.get("currency") == form["currency"]
        ):
            log.warning("gateway.stripe.untrusted_answer", operation="submit", idempotency_key=key)
            raise OutcomeUnknown(
                "Stripe's answer is not a transfer matching this payout",
                gateway_status=f"http_{response.status_code}",
            )
        if response.headers.get("idempotent-replayed") == "true":
            log.info("gateway.stripe.replayed", transfer=transfer["id"])
        return _result_of(transfer)

    async def get_status(
        self, idempotency_key: str, *, reference: str | None = None
    ) -> TransferResult:
        if reference is not None and _TRANSFER_ID.fullmatch(reference):
            response = await self._get(f"/v1/transfers/{reference}")
            if response.is_success:
                transfer = _json(response)
                if not (_is_transfer(transfer) and _belongs_to(transfer, idempotency_key)):
                    raise OutcomeUnknown(
                        f"Stripe's transfer {reference} is not this payout's",
                        gateway_status="mismatch",
                    )
                return _result_of(transfer)
            if _error_code(response) != "resource_missing":
                raise _status_error(response)
            # Stripe never deletes a transfer, so an id it gave us and no longer knows means
            # the key now points at another account or mode: there, asking by group would
            # find nothing and a re-submit would pay a second time. Only a human can tell.
            raise OutcomeUnknown(
                f"Stripe no longer knows transfer {reference} (another account or mode?)",
                gateway_status="reference_missing",
            )
        response = await self._get(
            "/v1/transfers", params={"transfer_group": idempotency_key, "limit": "10"}
        )
        if not response.is_success:
            raise _status_error(response)
        listed = _json(response)
        data = listed.get("data")
        if listed.get("object") != "list" or not isinstance(data, list):
            raise OutcomeUnknown("Stripe's answer is not a list of transfers")
        # Filtered here too: a filter the API ignored must not lend us a stranger's transfer.
        mine = [t for t in data if _is_transfer(t) and _belongs_to(t, idempotency_key)]
        if not mine:
            return TransferResult(TransferState.NOT_FOUND, gateway_status="not_found")
        if len(mine) > 1:
            log.error(
                "gateway.stripe.duplicate_transfers",
                idempotency_key=idempotency_key,
                transfers=[t["id"] for t in mine],
            )
            raise OutcomeUnknown(
                f"Stripe holds {len(mine)} transfers under this payout's key",
                gateway_status="duplicate",
            )
        return _result_of(mine[0])

    async def list_transfers(self, since: datetime, until: datetime) -> list[ListedTransfer]:
        """Every transfer created in ``[since, until)``, newest first as Stripe lists them.
        ``created[lte]`` is inclusive and in whole seconds, so the last second is asked
        for and anything at or after ``until`` is dropped here."""
        params = {
            "created[gte]": str(int(since.timestamp())),
            "created[lte]": str(int(until.timestamp())),
            "limit": str(LIST_PAGE_SIZE),
        }
        found: list[ListedTransfer] = []
        for _ in range(MAX_LIST_PAGES):
            response = await self._get("/v1/transfers", params=params)
            if not response.is_success:
                raise _status_error(response)
            listed = _json(response)
            data = listed.get("data")
            if listed.get("object") != "list" or not isinstance(data, list):
                raise OutcomeUnknown("Stripe's answer is not a list of transfers")
            transfers = [t for t in data if _is_transfer(t)]
            if len(transfers) != len(data):
                raise OutcomeUnknown("Stripe listed something that is not a transfer")
            found.extend(t for t in map(_listed, transfers) if since <= t.created_at < until)
            if listed.get("has_more") is not True or not transfers:
                return found
            params["starting_after"] = transfers[-1]["id"]
        raise OutcomeUnknown(f"more than {MAX_LIST_PAGES} pages of Stripe transfers")

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackNotice:
        self._verify(headers, body)
        try:
            event = json.loads(body)
        except ValueError:
            raise InvalidCallback("body is not JSON") from None
        if not isinstance(event, dict) or event.get("object") != "event":
            raise InvalidCallback("body is not a Stripe event")
        event_id, event_type = event.get("id"), event.get("type")
        if not isinstance(event_id, str) or not isinstance(event_type, str):
            raise InvalidCallback("event id or type missing")
        data = event.get("data")
        transfer = data.get("object") if isinstance(data, dict) else None
        if event_type not in TRANSFER_EVENTS:
            # Verified, but not about a transfer: acknowledged so Stripe stops resending it
            # (no payout has an empty key, so it is answered ``unknown_transfer``).
            return CallbackNotice(
                idempotency_key="",
                notice_id=event_id,
                result=TransferResult(TransferState.PENDING, gateway_status=event_type),
            )
        if not _is_transfer(transfer):
            raise InvalidCallback(f"{event_type} without a transfer object")
        if event.get("api_version") != self._headers["Stripe-Version"]:
            # Stripe renders an event in its webhook endpoint's API version, not ours: the
            # transfer fields we read are checked above, but the endpoint should be moved to
            # the pinned version (README, Stripe section).
            log.warning(
                "gateway.stripe.webhook_version_differs",
                event_version=event.get("api_version"),
                pinned_version=self._headers["Stripe-Version"],
            )
        return CallbackNotice(
            # A transfer some other integration of the platform made has no key of ours and
            # is answered ``unknown_transfer``.
            idempotency_key=_key_of(transfer),
            notice_id=event_id,
            result=_result_of(transfer),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _transfer_form(request: TransferRequest) -> dict[str, str]:
        recipient = request.recipient
        if recipient.get("type") != RECIPIENT_TYPE:
            raise Rejected(
                "recipient_account_invalid",
                f"Stripe pays {RECIPIENT_TYPE} recipients only, not {recipient.get('type')!r}.",
            )
        destination = recipient.get("account") or ""
        if not _ACCOUNT_ID.fullmatch(destination):
            raise Rejected(
                "recipient_account_invalid",
                "The recipient is not a Stripe connected account id (acct_…).",
            )
        description = request.description or f"payoutsvc payout {request.payout_id}"
        return {
            "amount": str(stripe_amount(request.amount_minor, request.currency)),
            "currency": request.currency.lower(),
            "destination": destination,
            "transfer_group": request.idempotency_key,
            "description": description[:DESCRIPTION_MAX_CHARS],
            "metadata[payout_id]": request.payout_id,
            "metadata[payout_key]": request.idempotency_key,
        }

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> httpx.Response:
        return await send(
            self._client,
            self._client.build_request("GET", path, params=params, headers=self._headers),
        )

    def _verify(self, headers: Mapping[str, str], body: bytes) -> None:
        if self._webhook_secret is None:
            raise InvalidSignature("no Stripe webhook signing secret is configured")
        header = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER), None)
        if not header:
            raise InvalidSignature("missing Stripe-Signature header")
        timestamps, signatures = [], []
        for item in header.split(","):
            scheme, _, value = item.strip().partition("=")
            if scheme == "t":
                timestamps.append(value)
            elif scheme == "v1":  # other schemes (v0 in test mode) are never trusted
                signatures.append(value)
        if len(timestamps) != 1 or not timestamps[0].isdigit() or not signatures:
            raise InvalidSignature("malformed Stripe-Signature header")
        if abs(self._clock() - int(timestamps[0])) > SIGNATURE_TOLERANCE_SECONDS:
            raise InvalidSignature("signature timestamp outside the 300 s tolerance")
        expected = hmac.new(
            self._webhook_secret, timestamps[0].encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        if not any(hmac.compare_digest(expected, given) for given in signatures):
            raise InvalidSignature("no v1 signature matches")


def create_gateway(runtime: Runtime) -> Gateway:
    """The registry's factory: credentials from ``PAYOUTSVC_STRIPE_*``."""
    del runtime  # everything Stripe needs is in its own settings
    settings = StripeSettings()
    webhook_secret = (
        secret_from(
            settings.webhook_secret,
            settings.webhook_secret_file,
            name="PAYOUTSVC_STRIPE_WEBHOOK_SECRET",
        )
        if settings.webhook_secret is not None or settings.webhook_secret_file is not None
        else None  # callbacks are then refused (401); status queries still settle payouts
    )
    return StripeGateway(
        secret_key=secret_from(
            settings.secret_key, settings.secret_key_file, name="PAYOUTSVC_STRIPE_SECRET_KEY"
        ),
        webhook_secret=webhook_secret,
        base_url=settings.base_url,
        timeout_seconds=settings.timeout_seconds,
        api_version=settings.api_version,
    )


# -- answers -----------------------------------------------------------------------------
def _json(response: httpx.Response) -> dict[str, Any]:
    """A 2xx body, which must be a JSON object: a proxy's page or a cut body may hide a
    booked transfer, so anything else is OutcomeUnknown."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise OutcomeUnknown(
            f"HTTP {response.status_code} from Stripe without a JSON object",
            gateway_status=f"http_{response.status_code}",
        )
    return body


def _is_transfer(value: object) -> TypeGuard[dict[str, Any]]:
    return (
        isinstance(value, dict)
        and value.get("object") == "transfer"
        and isinstance(value.get("id"), str)
        and type(value.get("amount")) is int
        and isinstance(value.get("currency"), str)
        and isinstance(value.get("reversed", False), bool)
        and type(value.get("amount_reversed", 0)) is int
    )


def _key_of(transfer: Mapping[str, Any]) -> str:
    metadata = transfer.get("metadata")
    key = metadata.get("payout_key") if isinstance(metadata, dict) else None
    if not isinstance(key, str) or not key:
        key = transfer.get("transfer_group")
    return key if isinstance(key, str) else ""


def _belongs_to(transfer: Mapping[str, Any], key: str) -> bool:
    metadata = transfer.get("metadata")
    return transfer.get("transfer_group") == key or (
        isinstance(metadata, dict) and metadata.get("payout_key") == key
    )


def _amount_of(transfer: Mapping[str, Any]) -> tuple[int | None, str]:
    """The transfer's amount in our minor units (None when it does not map exactly)."""
    currency = str(transfer["currency"]).upper()
    try:
        return minor_from_stripe(transfer["amount"], currency), currency
    except MoneyError:
        return None, currency


def _listed(transfer: Mapping[str, Any]) -> ListedTransfer:
    result = _result_of(transfer)
    amount, currency = _amount_of(transfer)
    created = transfer.get("created")
    return ListedTransfer(
        reference=transfer["id"],
        idempotency_key=_key_of(transfer),
        amount_minor=transfer["amount"] if amount is None else amount,
        currency=currency,
        state=result.state,
        created_at=datetime.fromtimestamp(created if type(created) is int else 0, UTC),
    )


def _result_of(transfer: Mapping[str, Any]) -> TransferResult:
    amount, reversed_amount = transfer["amount"], transfer.get("amount_reversed", 0)
    amount_minor, currency = _amount_of(transfer)
    details: dict[str, str] = {}
    if isinstance(transfer.get("destination_payment"), str):
        # The payment the connected account sees in its own dashboard.
        details["destination_payment"] = transfer["destination_payment"]
    if transfer.get("reversed") or (amount > 0 and reversed_amount >= amount):
        return TransferResult(
            TransferState.FAILED,
            reference=transfer["id"],
            gateway_status="reversed",
            failure_code="gateway_reversed",
            failure_message="The platform reversed the Stripe transfer; the funds went back.",
            details=details or None,
            amount_minor=amount_minor,
            currency=currency,
        )
    status = "succeeded"
    if reversed_amount > 0:
        status = "partially_reversed"
        try:
            details["amount_reversed"] = format_amount(
                minor_from_stripe(reversed_amount, currency), currency
            )
        except MoneyError:
            details["amount_reversed"] = f"{reversed_amount} (Stripe units)"
    return TransferResult(
        TransferState.SUCCEEDED,
        reference=transfer["id"],
        gateway_status=status,
        details=details or None,
        amount_minor=amount_minor,
        currency=currency,
    )


def _error_body(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _error_code(response: httpx.Response) -> str | None:
    error = _error_body(response)
    code = error.get("code") if error else None
    return code if isinstance(code, str) else None


def _error_of(response: httpx.Response, operation: str) -> Rejected | NotDone | OutcomeUnknown:
    """Sort a non-2xx answer to a create by what Stripe may have done.

    Stripe-Should-Retry is honoured only towards caution: ``true`` keeps an answer that
    would fail the payout from doing so (the status query decides instead).
    """
    status = response.status_code
    error = _error_body(response) or {}
    kind, code = error.get("type"), error.get("code")
    message = scrub(str(error.get("message") or f"HTTP {status} from Stripe"))
    gateway_status = str(code or kind or f"http_{status}")
    should_retry = response.headers.get("stripe-should-retry")
    if status in (401, 403):
        # A wrong, expired or under-privileged key: the request was refused before any
        # execution. Safe to retry once the key is fixed; the operator must know.
        log.error(
            "gateway.stripe.authentication_failed",
            operation=operation,
            http_status=status,
            error_type=kind,
        )
        return NotDone(f"Stripe refused the API key (HTTP {status})", gateway_status=gateway_status)
    if status == 429:
        # Rate limiters run before Stripe's idempotency layer: nothing was executed.
        return NotDone(f"Stripe rate limit: {message}", gateway_status=gateway_status)
    if status >= 500 or status in (409, 424) or kind == "idempotency_error" or not error:
        # 5xx: may have executed (and is saved under the key: a replay answers the same).
        # 409 / idempotency_error: another request under this key exists or is running.
        if status >= 500:
            log.warning(
                "gateway.stripe.server_error",
                operation=operation,
                http_status=status,
                should_retry=should_retry,
            )
        return OutcomeUnknown(f"Stripe HTTP {status}: {message}", gateway_status=gateway_status)
    if should_retry == "true":
        return OutcomeUnknown(
            f"Stripe HTTP {status} (Stripe-Should-Retry): {message}",
            gateway_status=gateway_status,
        )
    if code == "resource_missing" and error.get("param") == "destination":
        return Rejected("recipient_account_invalid", message, gateway_status=gateway_status)
    ours = _REJECTIONS.get(code) if isinstance(code, str) else None
    # Any other refusal, known or not: Stripe created no transfer (errors never do).
    return Rejected(ours or "gateway_declined", message, gateway_status=gateway_status)


def _status_error(response: httpx.Response) -> NotDone:
    """A failed status query changes nothing at Stripe; the executor asks again later."""
    error = _error_of(response, "status")
    return NotDone(error.message, gateway_status=error.gateway_status)
