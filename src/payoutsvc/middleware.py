"""Pure ASGI middlewares (no per-request task switch like BaseHTTPMiddleware): request id,
access log and HTTP metrics; the body size limit; the rate limits that hold before a body
is read or a key looked up."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payoutsvc.errors import (
    PROBLEM_CONTENT_TYPE,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceError,
)
from payoutsvc.messages import message as catalogue_message
from payoutsvc.messages import negotiate
from payoutsvc.metrics import HTTP_LATENCY, HTTP_REQUESTS
from payoutsvc.ratelimit import PER_ADDRESS, RateLimiter, Verdict

INTERNAL_ERROR = ServiceError(catalogue_message("internal_error"), title="Internal server error")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# No id, route or file of ours has a control character in its path (and PostgreSQL text
# cannot hold NUL): such a path is answered 404 before it reaches any query.
_CONTROL_IN_PATH = re.compile(r"[\x00-\x1f\x7f]")
NOT_FOUND_IN_PATH = NotFound(catalogue_message("not_found_control_character"))
access_log = structlog.get_logger("payoutsvc.access")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status_holder: dict[str, Any] = {"status": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            if _CONTROL_IN_PATH.search(scope["path"]):
                await send_problem(send_with_id, scope, NOT_FOUND_IN_PATH)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Handled here rather than by Starlette's outermost error middleware so the 500
            # still carries X-Request-Id; the body never includes the stack trace.
            access_log.exception(
                "http.unhandled_error", path=scope["path"], error=type(exc).__name__
            )
            if status_holder.get("started"):
                raise
            await send_problem(send_with_id, scope, INTERNAL_ERROR)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", "unmatched")
            method = scope["method"]
            HTTP_REQUESTS.labels(method, route_path, str(status_holder["status"])).inc()
            HTTP_LATENCY.labels(method, route_path).observe(elapsed)
            access_log.info(
                "http.request",
                method=method,
                path=scope["path"],
                status=status_holder["status"],
                duration_ms=round(elapsed * 1000, 2),
            )


def _accept_language(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"accept-language":
            return str(value.decode("latin-1"))
    return None


async def send_problem(
    send: Send, scope: Scope, error: ServiceError, extra: dict[str, str] | None = None
) -> None:
    """Answer ``error`` as problem+json in the request's language (``Accept-Language``),
    outside the app's exception handlers."""
    locale = negotiate(_accept_language(scope))
    body = json.dumps(error.to_problem(locale), ensure_ascii=False).encode()
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"content-language", locale.encode()),
        (b"vary", b"Accept-Language"),
    ]
    headers.extend((name.lower().encode(), value.encode()) for name, value in (extra or {}).items())
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes its limit. An HTTPException because the
    framework passes those through from body parsing (anything else would become its 400)
    and the app's handler renders 413 as problem+json ``payload_too_large``."""

    def __init__(self, limit: int) -> None:
        self.error = PayloadTooLarge(catalogue_message("payload_too_large", limit=limit))
        super().__init__(413, self.error.detail)
        self.limit = limit


class BodyLimitMiddleware:
    """Bodies are limited as they stream in, before anything parses them: a declared
    Content-Length over the limit is refused at once, unread; a chunked body is cut off as
    soon as it passes the limit. ``route_limits`` gives some paths their own limits: a key
    ending in ``/`` is a prefix (every path under it), any other key is that one path only.

    Ours rather than FastAPI's ``max_body_size``: that one answers a declared oversize with a
    plain-text 413 in place of whatever the app says, and every error here is problem+json.
    """

    def __init__(self, app: ASGIApp, default: int, route_limits: dict[str, int]) -> None:
        self.app = app
        self.default = default
        self.route_limits = route_limits

    def limit_for(self, path: str) -> int:
        for route, limit in self.route_limits.items():
            if path == route or (route.endswith("/") and path.startswith(route)):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await send_problem(send, scope, _too_large(limit))
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_within_limit, send_tracking)
        except BodyTooLarge:
            # Read outside the framework's body parsing (nothing caught it on the way).
            if started:
                raise
            await send_problem(send, scope, _too_large(limit))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(catalogue_message("payload_too_large", limit=limit))


API_PREFIX = "/v1/"
CALLBACK_PREFIX = "/v1/gateway-callbacks/"
# Where authenticate() leaves the API key's verdict for the response's RateLimit headers.
RATE_LIMIT_STATE = "rate_limit"


def client_address(scope: Scope) -> str:
    """The peer's address (behind a proxy, run uvicorn with --forwarded-allow-ips so this
    is the client's and not the proxy's)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RateLimitMiddleware:
    """Budgets that must hold before a request's body is read or a key is looked up.

    Gateway callbacks carry no key: each one counts against its address's budget. Any other
    ``/v1`` request from an address whose budget is spent (by requests without a valid
    key, counted in authenticate()) is refused at once, so a key-guessing flood costs
    neither a body read nor a query. Valid keys are counted per key in authenticate(); the
    verdict it leaves in the request state becomes this response's RateLimit headers.
    """

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if not path.startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        address = client_address(scope)
        if path.startswith(CALLBACK_PREFIX):
            verdict = await self.limiter.hit(PER_ADDRESS, address)
        else:
            verdict = await self.limiter.peek(PER_ADDRESS, address)
        if not verdict.allowed:
            refusal = RateLimited(catalogue_message("rate_limited_address"))
            await send_problem(send, scope, refusal, verdict.headers())
            return
        state = scope.setdefault("state", {})
        if path.startswith(CALLBACK_PREFIX):
            state[RATE_LIMIT_STATE] = verdict

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                found: Verdict | None = state.get(RATE_LIMIT_STATE)
                if found is not None:
                    headers = list(message.get("headers", []))
                    names = {name.lower() for name, _ in headers}
                    for name, value in found.headers().items():
                        if name.lower().encode() not in names:
                            headers.append((name.lower().encode(), value.encode()))
                    message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
