"""A fake PayPal (OAuth, Payouts, webhook verification) as a Starlette app.

It speaks PayPal's wire format and enforces what the real one does. Sources, read for this
fake (none of their code is copied):

- Payouts API reference and its OpenAPI document, ``paypal/paypal-rest-api-specifications``
  ``openapi/payments_payouts_batch_v1.json`` (v1.9): ``recipient_type`` EMAIL, PHONE,
  PAYPAL_ID ("the encrypted PayPal account number"; "the PayPal sandbox does not support the
  PHONE recipient type"); ``transaction_status`` SUCCESS, FAILED, PENDING, UNCLAIMED,
  RETURNED, ONHOLD, BLOCKED, REFUNDED, REVERSED; ``batch_status`` DENIED, PENDING,
  PROCESSING, SUCCESS, CANCELED; ``PayPal-Request-Id`` kept 30 days; a ``sender_batch_id``
  used in the last 30 days is refused with a HATEOAS link to the original batch; a 5xx may be
  retried with the same ``sender_batch_id``; ``batch_header.time_created`` and an item's
  ``time_processed``.
- PayPal payer ids: ``^[2-9A-HJ-NP-Z]{13}$`` (``account_id``/``payer_id`` in
  ``openapi/checkout_orders_v2.json`` and ``payments_payment_v2.json`` of the same repo).
- https://developer.paypal.com/reference/guidelines/idempotency: "When you send two
  simultaneous API requests with same PayPal-Request-Id header, PayPal processes the first
  request and might fail the second request"; error pages
  https://developer.paypal.com/api/deprecated/payments/v1/errors/duplicate_request_id
  (``DUPLICATE_REQUEST_ID``, "The value of PayPal-Request-Id header has already been used")
  and https://developer.paypal.com/api/payment-tokens/v3/errors/paypal_request_id_previously_used.
- Webhooks: ``openapi/notifications_webhooks_v1.json`` (verify-webhook-signature request
  fields, ``verification_status`` SUCCESS/FAILURE, one ``PAYPAL-TRANSMISSION-ID`` per HTTP
  transmission).

What it does:

- ``POST /v1/oauth2/token``: HTTP Basic client credentials, ``grant_type=client_credentials``;
  issues bearer tokens that expire (``token_ttl``) and can be revoked (:meth:`expire_tokens`).
  Every other endpoint answers 401 ``AUTHENTICATION_FAILURE`` without a live token.
- ``POST /v1/payments/payouts``: validates the request (recipient type and receiver per
  type, amount format per currency, field limits: 400 ``VALIDATION_ERROR``), books one batch
  per ``sender_batch_id`` and never a second: a repeat while the first request with that
  ``PayPal-Request-Id`` / ``sender_batch_id`` is still being processed answers 422
  ``DUPLICATE_REQUEST_ID`` (the "might fail the second request" above); a later repeat with a
  known ``PayPal-Request-Id`` replays the first answer; any other repeat answers 400
  ``USER_BUSINESS_ERROR`` with a ``SENDER_BATCH_ID`` detail linking to the original batch.
- ``GET /v1/payments/payouts/{payout_batch_id}``: the batch with its one item.
- ``POST /v1/notifications/verify-webhook-signature``: really checks the RSA-SHA256
  signature over ``transmission_id|transmission_time|webhook_id|crc32(event)`` with the
  public half of the signing key the test generated.

Faults are scripted per receiver (:class:`Scenario`). :meth:`FakePayPal.booked_states` is the
ledger in the shape ``assert_paid_exactly_once`` takes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import re
import secrets
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from payoutsvc.gateways.providers import sign_rsa_sha256, verify_rsa_sha256

AUTH_ALGO = "SHA256withRSA"
PENDING_STATES = frozenset({"PENDING", "UNCLAIMED", "ONHOLD", "NEW"})
FAILED_STATES = frozenset(
    {"FAILED", "BLOCKED", "RETURNED", "REFUNDED", "REVERSED", "DENIED", "CANCELED"}
)
WHOLE_UNITS = frozenset({"HUF", "JPY", "TWD"})
_AMOUNT = re.compile(r"^(0|[1-9][0-9]*)(\.[0-9]{2})?$")
_WHOLE = re.compile(r"^[1-9][0-9]*$")
_PAYER_ID = re.compile(r"^[2-9A-HJ-NP-Z]{13}$")
_ids = itertools.count(1)


def paypal_id(prefix: str) -> str:
    return f"{prefix}{next(_ids):06d}{secrets.token_hex(3).upper()}"


def canonical(event: dict[str, Any]) -> bytes:
    """The bytes a webhook event is sent (and CRC32-signed) as."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def state_word(transaction_status: str) -> str:
    if transaction_status == "SUCCESS":
        return "succeeded"
    if transaction_status in FAILED_STATES:
        return "failed"
    return "pending"


@dataclass
class Scenario:
    """What the fake does with payouts to one receiver."""

    # Every POST answers this (status, body) and books nothing.
    refuse: tuple[int, dict[str, Any]] | None = None
    # The first N POSTs answer ``error_status`` and book nothing.
    errors_before_booking: int = 0
    error_status: int = 500
    error_body: dict[str, Any] | None = None
    # The POST that books answers 500 afterwards (its answer is not kept for replay).
    error_after_booking: bool = False
    # The POST that books answers only after ``delay`` seconds (past the client's timeout).
    slow_after_booking: bool = False
    delay: float = 0.6
    # The 201 names another sender_batch_id (an answer that is not about our batch).
    wrong_sender_batch_id: bool = False
    # A repeat with a known PayPal-Request-Id replays the first answer (else: the duplicate
    # answer below); a duplicate sender_batch_id answer links the original batch.
    replay_request_id: bool = True
    duplicate_link: bool = True
    # Status queries: the first N answer 503; then the item is ``pending_status`` for
    # ``pending_polls`` queries, then ``final_status`` (None: never settles).
    status_errors: int = 0
    pending_polls: int = 0
    pending_status: str = "PENDING"
    final_status: str | None = "SUCCESS"
    final_error: str | None = None
    final_batch_status: str = "SUCCESS"


@dataclass
class Batch:
    payout_batch_id: str
    sender_batch_id: str
    request: dict[str, Any]
    scenario: Scenario
    payout_item_id: str = field(default_factory=lambda: paypal_id("ITEM"))
    transaction_id: str | None = None
    batch_status: str = "PENDING"
    transaction_status: str = "PENDING"
    error_name: str | None = None
    polls: int = 0
    time_created: str = field(default_factory=lambda: _now())
    time_processed: str = field(default_factory=lambda: _now())

    @property
    def item(self) -> dict[str, Any]:
        return dict(self.request["items"][0])


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived

    def json(self) -> Any:
        return json.loads(self.body)


class FakePayPal:
    def __init__(
        self,
        signing_key: rsa.RSAPrivateKey,
        *,
        client_id: str = "AYfakeClientId0001",
        client_secret: str = "EFfakeClientSecret-0123456789",
        webhook_id: str = "8PT597110X687430LKGECATA",
        token_ttl: int = 32400,
    ) -> None:
        self.signing_key = signing_key
        self.client_id = client_id
        self.client_secret = client_secret
        self.webhook_id = webhook_id
        self.token_ttl = token_ttl
        self.base_url = "http://127.0.0.1"  # set once served
        self.verify_status: int | None = None  # answer verifications with this HTTP status
        self.issued_tokens: list[str] = []
        self.scenarios: dict[str, Scenario] = {}
        self.tokens: dict[str, float] = {}
        self.token_requests = 0
        self.requests: list[Recorded] = []
        self.batches: dict[str, Batch] = {}
        self.by_sender: dict[str, str] = {}
        self.replays: dict[str, tuple[str, dict[str, Any]]] = {}
        # PayPal-Request-Ids and sender_batch_ids of create requests still being processed.
        self.in_flight: set[str] = set()
        self.concurrent_refusals = 0
        self.posts: Counter[str] = Counter()
        self.gets: Counter[str] = Counter()
        self.verifications: list[str] = []
        self.app = Starlette(
            routes=[
                Route("/v1/oauth2/token", self._token, methods=["POST"]),
                Route("/v1/payments/payouts", self._create, methods=["POST"]),
                Route("/v1/payments/payouts/{batch_id}", self._show, methods=["GET"]),
                Route("/v1/notifications/verify-webhook-signature", self._verify, methods=["POST"]),
            ]
        )

    # -- test controls ----------------------------------------------------------------------
    def script(self, receiver: str, scenario: Scenario) -> None:
        self.scenarios[receiver] = scenario

    def expire_tokens(self) -> None:
        """Revoke every issued token (PayPal expired them early)."""
        self.tokens.clear()

    def booked_states(self) -> dict[str, list[str]]:
        """sender_batch_id → the state of each batch booked under it."""
        found: dict[str, list[str]] = {}
        for batch in self.batches.values():
            found.setdefault(batch.sender_batch_id, []).append(
                "failed" if batch.batch_status == "DENIED" else state_word(batch.transaction_status)
            )
        return found

    def batch_for(self, sender_batch_id: str) -> Batch:
        return self.batches[self.by_sender[sender_batch_id]]

    def settle(self, sender_batch_id: str, status: str, error: str | None = None) -> None:
        batch = self.batch_for(sender_batch_id)
        batch.transaction_status = status
        batch.error_name = error
        batch.batch_status = "SUCCESS"
        batch.time_processed = _now()
        if status == "SUCCESS":
            batch.transaction_id = batch.transaction_id or paypal_id("TX")

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    # -- webhooks ---------------------------------------------------------------------------
    def item_event(self, sender_batch_id: str, event_type: str | None = None) -> dict[str, Any]:
        """A ``PAYMENT.PAYOUTS-ITEM.*`` event about the batch's item as it stands."""
        batch = self.batch_for(sender_batch_id)
        suffix = {
            "SUCCESS": "SUCCEEDED",
            "ONHOLD": "HELD",
        }.get(batch.transaction_status, batch.transaction_status)
        return {
            "id": paypal_id("WH-"),
            "event_version": "1.0",
            "create_time": _now(),
            "resource_type": "payouts_item",
            "event_type": event_type or f"PAYMENT.PAYOUTS-ITEM.{suffix}",
            "summary": "A payout item changed state.",
            "resource": self._item_view(batch),
            "links": [
                {
                    "href": f"{self.base_url}/v1/notifications/webhooks-events/WH-1",
                    "rel": "self",
                    "method": "GET",
                }
            ],
        }

    def batch_event(self, sender_batch_id: str, batch_status: str) -> dict[str, Any]:
        batch = self.batch_for(sender_batch_id)
        return {
            "id": paypal_id("WH-"),
            "event_version": "1.0",
            "create_time": _now(),
            "resource_type": "payouts",
            "event_type": f"PAYMENT.PAYOUTSBATCH.{batch_status}",
            "resource": {"batch_header": {**self._header(batch), "batch_status": batch_status}},
        }

    def signed(
        self,
        event: dict[str, Any],
        *,
        key: rsa.RSAPrivateKey | None = None,
        webhook_id: str | None = None,
        transmission_time: str | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """Body and headers as PayPal sends a notice (``key``/``webhook_id`` to forge one;
        ``transmission_time`` to send it as if at another moment)."""
        body = canonical(event)
        transmission_id = paypal_id("tx-")
        transmission_time = transmission_time or _now()
        message = (
            f"{transmission_id}|{transmission_time}|{webhook_id or self.webhook_id}|"
            f"{zlib.crc32(body)}"
        ).encode()
        signature = sign_rsa_sha256(key or self.signing_key, message)
        return body, {
            "Content-Type": "application/json",
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": transmission_time,
            "PAYPAL-TRANSMISSION-SIG": signature,
            "PAYPAL-CERT-URL": f"{self.base_url}/v1/notifications/certs/CERT-fake",
            "PAYPAL-AUTH-ALGO": AUTH_ALGO,
        }

    # -- endpoints --------------------------------------------------------------------------
    async def _record(self, request: Request) -> bytes:
        body = await request.body()
        self.requests.append(
            Recorded(request.method, request.url.path, dict(request.headers), body)
        )
        return body

    async def _token(self, request: Request) -> Response:
        body = await self._record(request)
        self.token_requests += 1
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Client Authentication failed"},
                status_code=401,
            )
        form = parse_qs(body.decode())
        if form.get("grant_type") != ["client_credentials"]:
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "Grant type is NULL"},
                status_code=400,
            )
        token = "A21AA" + secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.token_ttl
        self.issued_tokens.append(token)
        return JSONResponse(
            {
                "scope": "https://uri.paypal.com/services/payments/payouts",
                "access_token": token,
                "token_type": "Bearer",
                "app_id": "APP-80W284485P519543T",
                "expires_in": self.token_ttl,
                "nonce": _now() + secrets.token_hex(8),
            }
        )

    def _authenticated(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        expires = self.tokens.get(token or "")
        return expires is not None and time.monotonic() < expires

    @staticmethod
    def _unauthenticated() -> JSONResponse:
        return JSONResponse(
            {
                "name": "AUTHENTICATION_FAILURE",
                "message": "Authentication failed due to invalid authentication credentials or "
                "a missing Authorization header.",
                "links": [
                    {
                        "href": "https://developer.paypal.com/docs/api/overview/#error",
                        "rel": "information_link",
                    }
                ],
            },
            status_code=401,
        )

    async def _create(self, request: Request) -> Response:
        raw = await self._record(request)
        if not self._authenticated(request):
            return self._unauthenticated()
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return _error(415, "UNSUPPORTED_MEDIA_TYPE", "The request payload is not supported.")
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "MALFORMED_REQUEST", "The request JSON is not well formed.")
        problems = _validate(body)
        if problems:
            return _error(
                400,
                "VALIDATION_ERROR",
                "Invalid request - see details.",
                details=[{"field": f, "location": "body", "issue": i} for f, i in problems],
            )
        sender = body["sender_batch_header"]["sender_batch_id"]
        scenario = self.scenarios.get(body["items"][0]["receiver"], Scenario())
        fingerprint = hashlib.sha256(raw).hexdigest()
        request_id = request.headers.get("paypal-request-id")
        if (request_id and request_id in self.in_flight) or sender in self.in_flight:
            # "PayPal processes the first request and might fail the second request."
            self.concurrent_refusals += 1
            return _error(
                422,
                "DUPLICATE_REQUEST_ID",
                "The value of PayPal-Request-Id header has already been used.",
            )
        if request_id and scenario.replay_request_id and request_id in self.replays:
            stored_fingerprint, answer = self.replays[request_id]
            if stored_fingerprint != fingerprint:
                return _error(
                    422,
                    "DUPLICATE_REQUEST_ID",
                    "The value of PayPal-Request-Id header has already been used.",
                )
            return JSONResponse(answer, status_code=201)
        marks = {sender, *([request_id] if request_id else [])}
        self.in_flight |= marks
        try:
            return await self._book(body, sender, scenario, request_id, fingerprint)
        finally:
            self.in_flight -= marks

    async def _book(
        self,
        body: dict[str, Any],
        sender: str,
        scenario: Scenario,
        request_id: str | None,
        fingerprint: str,
    ) -> Response:
        self.posts[sender] += 1
        if scenario.refuse is not None:
            status, payload = scenario.refuse
            return JSONResponse(payload, status_code=status)
        if self.posts[sender] <= scenario.errors_before_booking:
            return JSONResponse(
                scenario.error_body
                or {"name": "INTERNAL_SERVER_ERROR", "message": "An internal error occurred."},
                status_code=scenario.error_status,
            )
        if sender in self.by_sender:
            link = f"{self.base_url}/v1/payments/payouts/{self.by_sender[sender]}"
            detail: dict[str, Any] = {
                "field": "SENDER_BATCH_ID",
                "location": "body",
                "issue": "Batch with given sender_batch_id already exists",
            }
            if scenario.duplicate_link:
                detail["link"] = [{"href": link, "rel": "self", "method": "GET"}]
            return _error(400, "USER_BUSINESS_ERROR", "User business error.", details=[detail])
        batch = Batch(paypal_id("BATCH"), sender, body, scenario)
        self.batches[batch.payout_batch_id] = batch
        self.by_sender[sender] = batch.payout_batch_id
        answer = {
            "batch_header": self._header(batch),
            "links": [
                {
                    "href": f"{self.base_url}/v1/payments/payouts/{batch.payout_batch_id}",
                    "rel": "self",
                    "method": "GET",
                }
            ],
        }
        if scenario.wrong_sender_batch_id:
            answer["batch_header"]["sender_batch_header"]["sender_batch_id"] = "someone-else"
        if scenario.error_after_booking:
            return _error(500, "INTERNAL_SERVER_ERROR", "An internal error occurred.")
        if scenario.slow_after_booking:
            # Booked, still working on the answer: the request stays in flight meanwhile.
            await asyncio.sleep(scenario.delay)
        if request_id:
            self.replays[request_id] = (fingerprint, answer)
        return JSONResponse(answer, status_code=201)

    async def _show(self, request: Request) -> Response:
        await self._record(request)
        if not self._authenticated(request):
            return self._unauthenticated()
        batch = self.batches.get(request.path_params["batch_id"])
        if batch is None:
            return _error(404, "INVALID_RESOURCE_ID", "Requested resource ID was not found.")
        scenario = batch.scenario
        self.gets[batch.sender_batch_id] += 1
        if self.gets[batch.sender_batch_id] <= scenario.status_errors:
            return _error(503, "SERVICE_UNAVAILABLE", "Service Unavailable.")
        if batch.transaction_status in PENDING_STATES and batch.batch_status == "PENDING":
            batch.polls += 1
            if batch.polls <= scenario.pending_polls or scenario.final_status is None:
                if batch.transaction_status != scenario.pending_status:
                    batch.transaction_status = scenario.pending_status
                    batch.time_processed = _now()
            else:
                self.settle(batch.sender_batch_id, scenario.final_status, scenario.final_error)
                batch.batch_status = scenario.final_batch_status
        return JSONResponse(
            {
                "batch_header": self._header(batch),
                "items": [self._item_view(batch)],
                "links": [],
            }
        )

    async def _verify(self, request: Request) -> Response:
        raw = await self._record(request)
        if not self._authenticated(request):
            return self._unauthenticated()
        if self.verify_status is not None:
            return _error(self.verify_status, "SERVICE_UNAVAILABLE", "Try again later.")
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "MALFORMED_REQUEST", "The request JSON is not well formed.")
        required = (
            "auth_algo",
            "cert_url",
            "transmission_id",
            "transmission_sig",
            "transmission_time",
            "webhook_id",
            "webhook_event",
        )
        missing = [name for name in required if not body.get(name)]
        if missing:
            return _error(
                400,
                "VALIDATION_ERROR",
                "Invalid request - see details.",
                details=[{"field": m, "issue": "MISSING_REQUIRED_PARAMETER"} for m in missing],
            )
        message = (
            f"{body['transmission_id']}|{body['transmission_time']}|{body['webhook_id']}|"
            f"{zlib.crc32(canonical(body['webhook_event']))}"
        ).encode()
        ok = (
            body["auth_algo"] == AUTH_ALGO
            and str(body["cert_url"]).startswith(self.base_url + "/")
            and body["webhook_id"] == self.webhook_id
            and verify_rsa_sha256(
                self.signing_key.public_key(), message, str(body["transmission_sig"])
            )
        )
        verdict = "SUCCESS" if ok else "FAILURE"
        self.verifications.append(verdict)
        return JSONResponse({"verification_status": verdict})

    # -- representations --------------------------------------------------------------------
    def _header(self, batch: Batch) -> dict[str, Any]:
        header = dict(batch.request["sender_batch_header"])
        item = batch.item
        return {
            "payout_batch_id": batch.payout_batch_id,
            "batch_status": batch.batch_status,
            "time_created": batch.time_created,
            "sender_batch_header": {
                "sender_batch_id": header["sender_batch_id"],
                "email_subject": header.get("email_subject"),
            },
            "amount": dict(item["amount"]),
        }

    def _item_view(self, batch: Batch) -> dict[str, Any]:
        view: dict[str, Any] = {
            "payout_item_id": batch.payout_item_id,
            "transaction_status": batch.transaction_status,
            "payout_item_fee": {"currency": batch.item["amount"]["currency"], "value": "0.25"},
            "payout_batch_id": batch.payout_batch_id,
            "sender_batch_id": batch.sender_batch_id,
            "payout_item": batch.item,
            "time_processed": batch.time_processed,
        }
        if batch.transaction_id:
            view["transaction_id"] = batch.transaction_id
        if batch.error_name:
            view["errors"] = {
                "name": batch.error_name,
                "message": f"The payout item failed: {batch.error_name}.",
                "information_link": "https://developer.paypal.com/docs/api/payments.payouts-batch/#errors",
                "details": [],
            }
        return view


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(
    status: int, name: str, message: str, *, details: list[dict[str, Any]] | None = None
) -> JSONResponse:
    payload: dict[str, Any] = {
        "name": name,
        "message": message,
        "debug_id": secrets.token_hex(6),
        "information_link": "https://developer.paypal.com/docs/api/payments.payouts-batch/#errors",
    }
    if details:
        payload["details"] = details
    return JSONResponse(payload, status_code=status, headers={"PayPal-Debug-Id": "fake"})


def _validate(body: Any) -> list[tuple[str, str]]:  # noqa: C901  (the provider's checks, one after another, as its docs list them)
    """PayPal's create-payout checks, as (field, issue) pairs."""
    if not isinstance(body, dict):
        return [("body", "The request body must be an object.")]
    problems: list[tuple[str, str]] = []
    header = body.get("sender_batch_header")
    if not isinstance(header, dict):
        return [("sender_batch_header", "MISSING_REQUIRED_PARAMETER")]
    sender = header.get("sender_batch_id")
    if not isinstance(sender, str) or not 1 <= len(sender) <= 256:
        problems.append(("sender_batch_header.sender_batch_id", "Value is invalid."))
    if len(str(header.get("email_subject") or "")) > 255:
        problems.append(("sender_batch_header.email_subject", "Value is too long."))
    items = body.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= 15000:
        return [*problems, ("items", "Value is invalid.")]
    for index, item in enumerate(items):
        where = f"items[{index}]"
        if not isinstance(item, dict):
            problems.append((where, "Value is invalid."))
            continue
        kind = item.get("recipient_type") or header.get("recipient_type")
        receiver = item.get("receiver")
        if kind not in ("EMAIL", "PHONE", "PAYPAL_ID"):
            problems.append((f"{where}.recipient_type", "Value is invalid."))
        if not isinstance(receiver, str) or not 1 <= len(receiver) <= 127:
            problems.append((f"{where}.receiver", "Value is invalid."))
        elif kind == "EMAIL" and "@" not in receiver:
            problems.append((f"{where}.receiver", "Receiver is not a valid email."))
        elif kind == "PHONE" and not re.fullmatch(r"\+?[0-9]{7,15}", receiver):
            problems.append((f"{where}.receiver", "Receiver is not a valid phone number."))
        elif kind == "PAYPAL_ID" and not _PAYER_ID.fullmatch(receiver):
            problems.append((f"{where}.receiver", "Receiver is not a valid PayPal payer id."))
        amount = item.get("amount")
        if not isinstance(amount, dict):
            problems.append((f"{where}.amount", "MISSING_REQUIRED_PARAMETER"))
        else:
            value, currency = amount.get("value"), amount.get("currency")
            if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
                problems.append((f"{where}.amount.currency", "Value is invalid."))
            pattern = _WHOLE if currency in WHOLE_UNITS else _AMOUNT
            if not isinstance(value, str) or not pattern.fullmatch(value):
                problems.append((f"{where}.amount.value", "Value is invalid."))
        if len(str(item.get("note") or "")) > 1000:
            problems.append((f"{where}.note", "Value is too long."))
        if len(str(item.get("sender_item_id") or "")) > 63:
            problems.append((f"{where}.sender_item_id", "Value is too long."))
    return problems
