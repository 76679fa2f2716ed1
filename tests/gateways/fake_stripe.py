"""A fake Stripe API v1 for Connect transfers, as a Starlette app, plus its webhook sender.

What it does as Stripe does (https://docs.stripe.com/api/transfers,
https://docs.stripe.com/api/idempotent_requests, https://docs.stripe.com/webhooks):

- ``POST /v1/transfers`` (form-encoded), ``GET /v1/transfers/{id}``,
  ``GET /v1/transfers?transfer_group=…``; ``Authorization: Bearer <key>`` or Basic with the
  key as user name, anything else 401.
- The list (https://docs.stripe.com/api/transfers/list, https://docs.stripe.com/api/pagination):
  newest first, ``created[gt|gte|lt|lte]`` (unix seconds, inclusive for gte/lte),
  ``limit`` 1-100 (default 10, anything else 400), ``starting_after=<id>`` continues after
  that transfer (an unknown id is 400 ``resource_missing``), ``has_more`` says whether
  another page follows.
- Idempotency on the ``Idempotency-Key`` header: once the endpoint began executing, its
  status and body are saved under the key (errors and 500s too) and replayed to a retry with
  the same parameters, with ``Idempotent-Replayed: true``; the same key with other
  parameters is a 400 ``idempotency_error``. Validation errors, 429s and edge 503s are not
  saved (they happen before execution).
- Validation: unknown parameters, non-integer or non-positive amounts, uppercase or
  unsupported currencies, ISK not in whole krónur, three-decimal amounts not ending in 0,
  metadata and description limits; declines for an unknown destination
  (``resource_missing``), a destination without the transfers capability, a short balance.
- Webhooks: events signed ``Stripe-Signature: t=…,v1=…`` with the endpoint's ``whsec_``.

Transfers have no pending state at Stripe, so there is no "pending then success" to model;
the matching ambiguity here is a lost reply followed by a replay.

Faults are scripted per destination account: each create for that destination takes the
next entry of ``script[destination]`` (see :data:`FAULTS`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import string
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.gateways.harness import serve_asgi

# What a scripted create meets. "booked" faults create the transfer first.
FAULTS = frozenset(
    {
        "timeout_after_booking",  # books, then answers only after the client gave up
        "reset_after_booking",  # books, then drops the connection mid-answer
        "reversed_after_booking",  # books, answer lost, and the platform reverses it at once
        "lost_and_unlisted",  # books, answer lost, and the next list query misses it
        "garbage_after_booking",  # books, and a proxy answers 200 with an HTML page
        "mismatched_after_booking",  # books, and answers with another payout's transfer
        "500_after_booking",  # books, then 500 (saved under the key: replays answer 500)
        "500_saved",  # 500 before booking, saved under the key: the key is spent
        "503",  # the edge answers 503 before the API ran: nothing saved, nothing booked
        "429",  # rate limited before the idempotency layer
        "409",  # another request with this key is in progress
        "unknown_error",  # a 400 with an error code nobody documented
        "unknown_error_retryable",  # the same, with Stripe-Should-Retry: true
    }
)

SUPPORTED_CURRENCIES = frozenset({"usd", "eur", "jpy", "isk", "kwd", "mga", "gbp"})
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
CREATE_PARAMS = re.compile(
    r"amount|currency|destination|transfer_group|description|source_transaction|"
    r"source_type|metadata\[[^\]]+\]|expand\[\]"
)
_ALNUM = string.ascii_letters + string.digits


def stripe_id(prefix: str) -> str:
    return prefix + "_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


@dataclass
class Saved:
    params: list[tuple[str, str]]
    status: int
    body: dict[str, Any]
    request_id: str


@dataclass
class Seen:
    """One request as the fake received it, and what it answered."""

    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    form: dict[str, str]
    status: int = 0
    replayed: bool = False


@dataclass
class FakeStripe:
    secret_key: str
    webhook_secret: str
    accounts: set[str] = field(default_factory=set)  # connected accounts that exist
    no_transfers_capability: set[str] = field(default_factory=set)
    balance: dict[str, int] = field(default_factory=dict)  # per currency; absent: plenty
    script: dict[str, list[str]] = field(default_factory=dict)  # destination -> faults
    answer_delay: float = 2.0  # for timeout faults: well past the client's timeout
    ignore_list_filter: bool = False  # a list endpoint that ignores transfer_group
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)
    booked_under: dict[str, str | None] = field(default_factory=dict)  # tr id -> key
    saved: dict[str, Saved] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    unlisted: dict[str, int] = field(default_factory=dict)  # group -> list queries to miss
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    # -- the ledger, for the exactly-once checks ------------------------------------------
    def booked_states(self) -> dict[str, list[str]]:
        """Idempotency key -> state of each transfer booked under it ('succeeded', or
        'failed' once fully reversed). A transfer made without a key is listed under a key
        of its own, which no payout has, so the harness flags it."""
        booked: dict[str, list[str]] = {}
        for transfer_id, transfer in self.transfers.items():
            key = self.booked_under[transfer_id] or f"(no Idempotency-Key) {transfer_id}"
            booked.setdefault(key, []).append("failed" if transfer["reversed"] else "succeeded")
        return booked

    def creates(self, destination: str | None = None) -> list[Seen]:
        return [
            s
            for s in self.seen
            if s.method == "POST"
            and s.path == "/v1/transfers"
            and (destination is None or s.form.get("destination") == destination)
        ]

    def new_account(self, *faults: str) -> str:
        """A connected account that exists, with faults for its successive creates."""
        assert set(faults) <= FAULTS, set(faults) - FAULTS
        account = "acct_" + "".join(secrets.choice(_ALNUM) for _ in range(16))
        self.accounts.add(account)
        if faults:
            self.script[account] = list(faults)
        return account

    def reverse(self, transfer_id: str, amount: int | None = None) -> dict[str, Any]:
        """The platform takes funds back (all of them unless ``amount``)."""
        transfer = self.transfers[transfer_id]
        taken = transfer["amount"] - transfer["amount_reversed"] if amount is None else amount
        transfer["amount_reversed"] += taken
        transfer["reversed"] = transfer["amount_reversed"] >= transfer["amount"]
        reversal = {"id": stripe_id("trr"), "object": "transfer_reversal", "amount": taken}
        transfer["reversals"]["data"].append(reversal)
        transfer["reversals"]["total_count"] += 1
        return transfer

    def transfer_for(self, key: str) -> dict[str, Any]:
        (found,) = [t for t in self.transfers.values() if t["transfer_group"] == key]
        return found

    # -- webhooks ---------------------------------------------------------------------------
    def event(self, transfer: Mapping[str, Any], event_type: str) -> dict[str, Any]:
        return {
            "id": stripe_id("evt"),
            "object": "event",
            "api_version": "2025-04-30.basil",
            "created": int(time.time()),
            "data": {"object": json.loads(json.dumps(transfer))},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": stripe_id("req"), "idempotency_key": None},
            "type": event_type,
        }

    def signed(
        self,
        event: Mapping[str, Any],
        *,
        timestamp: int | None = None,
        secret: str | None = None,
        also_signed_with: tuple[str, ...] = (),
    ) -> tuple[bytes, dict[str, str]]:
        """Body and headers of a delivery; ``secret`` forges it with another secret,
        ``also_signed_with`` adds the signatures Stripe sends while a secret is rolled."""
        body = json.dumps(dict(event)).encode()
        stamp = int(time.time()) if timestamp is None else timestamp
        signatures = [
            sign(s, stamp, body) for s in (*also_signed_with, secret or self.webhook_secret)
        ]
        header = ",".join([f"t={stamp}", *(f"v1={s}" for s in signatures)])
        return body, {"Stripe-Signature": header, "Content-Type": "application/json"}

    # -- serving ----------------------------------------------------------------------------
    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """Serve on loopback; answers held back by timeout faults are let go at the end."""
        async with serve_asgi(self.app()) as base_url:
            try:
                yield base_url
            finally:
                self._release.set()

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/transfers", self._create, methods=["POST"]),
                Route("/v1/transfers", self._list, methods=["GET"]),
                Route("/v1/transfers/{transfer_id}", self._retrieve, methods=["GET"]),
            ]
        )

    # -- endpoints --------------------------------------------------------------------------
    async def _create(self, request: Request) -> Response:  # noqa: C901  (the provider's checks, one after another, as its docs list them)
        body = (await request.body()).decode()
        params = parse_qsl(body, keep_blank_values=True)
        seen = self._record(request, dict(params))
        refused = self._refuse(request)
        if refused is not None:
            return self._answer(seen, refused)
        if request.headers.get("content-type", "").split(";")[0] != (
            "application/x-www-form-urlencoded"
        ):
            return self._answer(seen, _error(400, "invalid_request_error", "Form bodies only."))
        key = request.headers.get("idempotency-key")
        destination = dict(params).get("destination", "")
        if key is not None and key in self.saved:
            saved = self.saved[key]
            if sorted(saved.params) != sorted(params):
                return self._answer(
                    seen,
                    _error(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with. Try using a key other than "
                        f"'{key}' if you meant to execute a different request.",
                    ),
                )
            seen.replayed = True
            response = JSONResponse(saved.body, status_code=saved.status)
            response.headers["Idempotent-Replayed"] = "true"
            response.headers["Original-Request"] = saved.request_id
            return self._answer(seen, response)
        fault = self.script[destination].pop(0) if self.script.get(destination) else None
        if fault in ("503", "429", "409", "unknown_error_retryable"):
            return self._answer(seen, _unsaved_fault(fault, key))
        invalid = self._invalid(dict(params), [name for name, _ in params])
        if invalid is not None:
            return self._answer(seen, invalid)
        # From here on the endpoint executes: whatever it answers is saved under the key.
        request_id = stripe_id("req")
        status, answer = self._execute(dict(params), key, fault)
        if key is not None:
            self.saved[key] = Saved(list(params), status, answer, request_id)
        if fault == "reversed_after_booking":
            self.reverse(answer["id"])
        if fault == "lost_and_unlisted":
            self.unlisted[answer["transfer_group"]] = 1
        if fault in ("timeout_after_booking", "reversed_after_booking", "lost_and_unlisted"):
            with suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.answer_delay)
        if fault == "reset_after_booking":
            seen.status = -1
            return _BrokenResponse()
        if fault == "garbage_after_booking":
            seen.status = 200
            return Response("<html>502 upstream</html>", media_type="text/html")
        if fault == "mismatched_after_booking":
            other = dict(answer, id=stripe_id("tr"), transfer_group="0" * 32, metadata={})
            return self._answer(seen, JSONResponse(other))
        return self._answer(seen, JSONResponse(answer, status_code=status))

    async def _list(self, request: Request) -> Response:
        seen = self._record(request, {})
        refused = self._refuse(request)
        if refused is not None:
            return self._answer(seen, refused)
        query = request.query_params
        group = query.get("transfer_group")
        listed = [
            t
            for t in reversed(self.transfers.values())
            if (self.ignore_list_filter or group is None or t["transfer_group"] == group)
            and _created_matches(t["created"], query)
        ]
        if group is not None and self.unlisted.get(group, 0) > 0:
            self.unlisted[group] -= 1
            listed = [t for t in listed if t["transfer_group"] != group]
        limit = int(query.get("limit", "10"))
        if not 1 <= limit <= 100:
            return self._answer(
                seen, _error(400, "invalid_request_error", "limit must be 1-100", param="limit")
            )
        after = query.get("starting_after")
        if after is not None:
            ids = [t["id"] for t in listed]
            if after not in ids:
                return self._answer(
                    seen,
                    _error(
                        400,
                        "invalid_request_error",
                        f"No such transfer: '{after}'",
                        code="resource_missing",
                        param="starting_after",
                    ),
                )
            listed = listed[ids.index(after) + 1 :]
        return self._answer(
            seen,
            JSONResponse(
                {
                    "object": "list",
                    "data": listed[:limit],
                    "has_more": len(listed) > limit,
                    "url": "/v1/transfers",
                }
            ),
        )

    async def _retrieve(self, request: Request) -> Response:
        seen = self._record(request, {})
        refused = self._refuse(request)
        if refused is not None:
            return self._answer(seen, refused)
        transfer_id = request.path_params["transfer_id"]
        transfer = self.transfers.get(transfer_id)
        if transfer is None:
            return self._answer(
                seen,
                _error(
                    404,
                    "invalid_request_error",
                    f"No such transfer: '{transfer_id}'",
                    code="resource_missing",
                    param="id",
                ),
            )
        return self._answer(seen, JSONResponse(transfer))

    # -- the parts --------------------------------------------------------------------------
    def _record(self, request: Request, form: dict[str, str]) -> Seen:
        seen = Seen(
            request.method,
            request.url.path,
            {k.lower(): v for k, v in request.headers.items()},
            dict(request.query_params),
            form,
        )
        self.seen.append(seen)
        return seen

    @staticmethod
    def _answer(seen: Seen, response: Response) -> Response:
        seen.status = response.status_code
        return response

    def _refuse(self, request: Request) -> Response | None:
        """Stripe's authentication and version checks, before anything else."""
        authorization = request.headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        given = None
        if scheme == "Bearer":
            given = credentials
        elif scheme == "Basic":
            try:
                given = base64.b64decode(credentials).decode().partition(":")[0]
            except ValueError:
                given = None
        if not given:
            return _error(401, "invalid_request_error", "You did not provide an API key.")
        if not hmac.compare_digest(given, self.secret_key):
            masked = given[:8] + "*" * max(0, len(given) - 12) + given[-4:]
            return _error(401, "invalid_request_error", f"Invalid API Key provided: {masked}")
        version = request.headers.get("stripe-version")
        if version is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}(\.[a-z]+)?", version):
            return _error(400, "invalid_request_error", f"Invalid Stripe API version: {version}")
        return None

    def _invalid(self, form: dict[str, str], names: list[str]) -> Response | None:
        """Parameter validation: fails before execution, so nothing is saved."""
        for name in names:
            if not CREATE_PARAMS.fullmatch(name):
                return _error(
                    400,
                    "invalid_request_error",
                    f"Received unknown parameter: {name}",
                    code="parameter_unknown",
                    param=name,
                )
        if len(names) != len(set(names)):
            return _error(400, "invalid_request_error", "A parameter was given twice.")
        for required in ("amount", "currency", "destination"):
            if not form.get(required):
                return _error(
                    400,
                    "invalid_request_error",
                    f"Missing required param: {required}.",
                    code="parameter_missing",
                    param=required,
                )
        amount, currency = form["amount"], form["currency"]
        if not amount.isdigit() or int(amount) <= 0:
            return _error(
                400,
                "invalid_request_error",
                "This value must be greater than or equal to 1.",
                code="parameter_invalid_integer",
                param="amount",
            )
        if currency not in SUPPORTED_CURRENCIES:
            return _error(
                400,
                "invalid_request_error",
                f"Invalid currency: {currency}.",
                code="parameter_invalid_empty" if not currency else None,
                param="currency",
            )
        if (currency == "isk" and int(amount) % 100) or (
            currency in THREE_DECIMAL and int(amount) % 10
        ):
            return _error(
                400,
                "invalid_request_error",
                f"Invalid amount for {currency}.",
                code="invalid_charge_amount",
                param="amount",
            )
        metadata = {k: v for k, v in form.items() if k.startswith("metadata[")}
        if len(metadata) > 50 or any(
            len(k) - len("metadata[]") > 40 or len(v) > 500 for k, v in metadata.items()
        ):
            return _error(400, "invalid_request_error", "Metadata too large.", param="metadata")
        if len(form.get("description", "")) > 5000:
            return _error(
                400,
                "invalid_request_error",
                "Description too long.",
                code="string_length_exceeds_maximum",
                param="description",
            )
        return None

    def _execute(
        self, form: dict[str, str], key: str | None, fault: str | None
    ) -> tuple[int, dict[str, Any]]:
        destination, currency, amount = form["destination"], form["currency"], int(form["amount"])
        if fault == "500_saved":
            return 500, _error_body("api_error", "An unknown error occurred")
        if fault == "unknown_error":
            return 400, _error_body(
                "invalid_request_error",
                "This transfer cannot be made right now.",
                code="transfer_frobnicated",
            )
        if destination not in self.accounts:
            return 400, _error_body(
                "invalid_request_error",
                f"No such destination: '{destination}'",
                code="resource_missing",
                param="destination",
            )
        if destination in self.no_transfers_capability:
            return 400, _error_body(
                "invalid_request_error",
                "Your destination account needs to have at least one of the following "
                "capabilities enabled: transfers, crypto_transfers, legacy_payments",
                code="insufficient_capabilities_for_transfer",
                param="destination",
            )
        if currency in self.balance and self.balance[currency] < amount:
            return 400, _error_body(
                "invalid_request_error",
                "You have insufficient available funds in your Stripe account.",
                code="balance_insufficient",
            )
        if currency in self.balance:
            self.balance[currency] -= amount
        transfer_id = stripe_id("tr")
        transfer = {
            "id": transfer_id,
            "object": "transfer",
            "amount": amount,
            "amount_reversed": 0,
            "balance_transaction": stripe_id("txn"),
            "created": int(time.time()),
            "currency": currency,
            "description": form.get("description"),
            "destination": destination,
            "destination_payment": stripe_id("py"),
            "livemode": False,
            "metadata": {
                k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")
            },
            "reversals": {
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": f"/v1/transfers/{transfer_id}/reversals",
            },
            "reversed": False,
            "source_transaction": None,
            "source_type": "card",
            "transfer_group": form.get("transfer_group"),
        }
        self.transfers[transfer_id] = transfer
        self.booked_under[transfer_id] = key
        if fault == "500_after_booking":
            return 500, _error_body("api_error", "An unknown error occurred")
        return 200, json.loads(json.dumps(transfer))


def _created_matches(created: int, query: Mapping[str, str]) -> bool:
    bounds = {
        "created[gt]": lambda v: created > v,
        "created[gte]": lambda v: created >= v,
        "created[lt]": lambda v: created < v,
        "created[lte]": lambda v: created <= v,
    }
    return all(test(int(query[name])) for name, test in bounds.items() if name in query)


def _error_body(
    kind: str, message: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code is not None:
        error["code"] = code
    if param is not None:
        error["param"] = param
    return {"error": error}


def _error(
    status: int, kind: str, message: str, *, code: str | None = None, param: str | None = None
) -> JSONResponse:
    response = JSONResponse(_error_body(kind, message, code=code, param=param), status_code=status)
    response.headers["Request-Id"] = stripe_id("req")
    return response


def _unsaved_fault(fault: str, key: str | None) -> Response:
    if fault == "503":
        return Response("<html>503 Service Unavailable</html>", 503, media_type="text/html")
    if fault == "429":
        return _error(
            429,
            "invalid_request_error",
            "Request rate limit exceeded.",
            code="rate_limit",
        )
    if fault == "409":
        return _error(
            409,
            "idempotency_error",
            "There is currently another in-progress request using this Idempotent Key "
            f"'{key}'. Please try again later.",
        )
    response = _error(
        400, "invalid_request_error", "Try again later.", code="transfer_temporarily_blocked"
    )
    response.headers["Stripe-Should-Retry"] = "true"
    return response


class _BrokenResponse(Response):
    """Headers and half a body, then the connection closes: a reset mid-answer."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"900")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id": "tr_', "more_body": True})
        raise ConnectionResetError("fake Stripe drops the connection")
