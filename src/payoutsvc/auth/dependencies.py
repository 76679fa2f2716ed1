"""Authentication (Bearer API key) and authorisation (scopes, integration isolation)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.auth.keys import hash_secret
from payoutsvc.auth.repository import AuthRepository
from payoutsvc.deps import DbSession
from payoutsvc.errors import (
    InsufficientScope,
    OperatorDisabled,
    RateLimited,
    ServiceError,
    Unauthorized,
)
from payoutsvc.messages import message
from payoutsvc.middleware import RATE_LIMIT_STATE, client_address
from payoutsvc.ratelimit import PER_ADDRESS, PER_KEY, RateLimiter

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer psk_…`")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the key's integration and scopes, and the operator it is bound to
    (None: an integration key, which proves no person)."""

    integration_id: str
    key_id: str
    scopes: frozenset[str]
    operator_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    @property
    def visible_integration(self) -> str | None:
        """The integration this caller is confined to, or None for the back office."""
        return None if self.is_admin else self.integration_id


class ApiKeyCache:
    """Verified keys for a moment, saving a query on every request.

    A revocation takes effect at once in the process that revoked the key and within
    ``ttl_seconds`` (PAYOUTSVC_API_KEY_CACHE_SECONDS, at most 2) in every other process:
    the API promises 401 everywhere within 2 s. Only valid keys are cached; an unknown key
    is looked up each time, and its address's budget bounds how often.
    """

    def __init__(self, ttl_seconds: float = 1.0, max_entries: int = 10_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Caller, float]] = {}

    def get(self, secret_hash: str) -> Caller | None:
        entry = self._entries.get(secret_hash)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, secret_hash: str, caller: Caller) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[secret_hash] = (caller, time.monotonic() + self.ttl_seconds)

    def forget_key(self, key_id: str) -> None:
        for secret_hash, (caller, _) in list(self._entries.items()):
            if caller.key_id == key_id:
                del self._entries[secret_hash]


async def _refuse(request: Request, detail: str) -> ServiceError:
    """401 for a missing or bad key, counted against the address's budget: once that is
    spent, 429 (and RateLimitMiddleware refuses the address's next requests unread)."""
    limiter: RateLimiter = request.app.state.rate_limiter
    verdict = await limiter.hit(PER_ADDRESS, client_address(request.scope))
    if not verdict.allowed:
        return RateLimited(
            "Too many requests without a valid API key from this address; see Retry-After.",
            headers=verdict.headers(),
        )
    return Unauthorized(detail, headers={"WWW-Authenticate": "Bearer"})


async def _require_operator_enabled(repo: AuthRepository, operator_id: str) -> None:
    """A disabled operator's keys can do nothing. Read on every request (not cached with the
    key), so disabling an offboarded or compromised person stops their keys at once in every
    process."""
    if await repo.operator_state(operator_id) is not False:
        raise OperatorDisabled(
            "The operator this API key is bound to is disabled; its keys can do nothing.",
            title="Operator disabled",
        )


async def authenticate(
    request: Request, session: AsyncSession, credentials: HTTPAuthorizationCredentials | None
) -> Caller:
    """Who the request's API key belongs to (cached for a moment, its operator checked on
    every request), its request counted against the key's budget."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise await _refuse(request, "Send the API key as `Authorization: Bearer <key>`.")
    secret_hash = hash_secret(credentials.credentials)
    cache: ApiKeyCache = request.app.state.api_key_cache
    caller = cache.get(secret_hash)
    if caller is None:
        key = await AuthRepository(session).find_active_key(secret_hash)
        if key is None:
            raise await _refuse(request, "The API key is unknown or revoked.")
        caller = Caller(key.integration_id, key.id, frozenset(key.scopes), key.operator_id)
        cache.put(secret_hash, caller)
    if caller.operator_id is not None:
        await _require_operator_enabled(AuthRepository(session), caller.operator_id)
    structlog.contextvars.bind_contextvars(
        integration_id=caller.integration_id, key_id=caller.key_id
    )
    limiter: RateLimiter = request.app.state.rate_limiter
    verdict = await limiter.hit(PER_KEY, caller.key_id)
    if not verdict.allowed:
        raise RateLimited("This API key is over its request rate.", headers=verdict.headers())
    setattr(request.state, RATE_LIMIT_STATE, verdict)
    request.state.caller = caller
    return caller


def require_scope(*accepted: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency that authenticates the caller and admits it if it holds any of
    ``accepted`` (``admin`` holds all). One dependency, not one on top of
    :func:`authenticate`'s: FastAPI spends ~15 µs per dependency per request."""

    async def dependency(
        request: Request,
        session: DbSession,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        caller = await authenticate(request, session, credentials)
        if caller.is_admin or caller.scopes.intersection(accepted):
            return caller
        raise InsufficientScope(
            message("insufficient_scope", scopes=", ".join(accepted)),
            title="The API key lacks a required scope",
        )

    return dependency


PayoutsWriter = Annotated[Caller, Depends(require_scope("payouts:write"))]
PayoutsReader = Annotated[Caller, Depends(require_scope("payouts:read"))]
PayoutsApprover = Annotated[Caller, Depends(require_scope("payouts:approve"))]
PayoutsReleaser = Annotated[Caller, Depends(require_scope("payouts:release"))]
Admin = Annotated[Caller, Depends(require_scope("admin"))]
