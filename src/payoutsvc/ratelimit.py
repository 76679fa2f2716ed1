"""Request budgets per API key and per client address, counted by the `limits` library.

One budget is ``PAYOUTSVC_RATE_LIMIT`` (say ``100/second``) with bursts of
``PAYOUTSVC_RATE_LIMIT_BURST`` (200): a moving window of 200 requests per 2 seconds, so a
client may send 200 at once and 100 a second for ever. Budgets live in this process's memory
(``memory://``) or in Redis (``redis://…``), where every API replica counts against the same
budget. Each answer says where the budget stands in the IETF ``RateLimit`` /
``RateLimit-Policy`` fields (draft-ietf-httpapi-ratelimit-headers-09), and a refusal also
carries ``Retry-After``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import coredis
import structlog
from limits import RateLimitItem, RateLimitItemPerSecond, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from payoutsvc.config import Settings

log = structlog.get_logger(__name__)

# After the shared storage failed, how long budgets stay in memory before it is tried again:
# without this pause every request would first wait for a connection attempt to fail.
STORAGE_RETRY_SECONDS = 5.0

PER_KEY = "per-key"
PER_ADDRESS = "per-address"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Where one budget stands after (or without) counting a request."""

    allowed: bool
    policy: str
    quota: int
    window_seconds: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Policy": f'"{self.policy}";q={self.quota};w={self.window_seconds}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={self.reset_seconds}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_seconds))
        return headers


def burst_item(rate: str, burst: int) -> RateLimitItem:
    """``burst`` requests per the time ``rate`` needs to refill them: 100/second with bursts
    of 200 is 200 per 2 seconds. The window is whole seconds (at least one), so a burst
    smaller than the rate's one-second amount also lowers the rate to ``burst`` a second."""
    sustained = parse(rate)
    window = max(1, math.ceil(burst * sustained.get_expiry() / sustained.amount))
    return RateLimitItemPerSecond(burst, window)


def _async_uri(uri: str) -> str:
    return uri if uri.startswith("async+") else f"async+{uri}"


class RateLimiter:
    """This process's view of the budgets. When the shared storage fails, budgets are
    counted in this process's memory until it answers again: each replica still refuses a
    flood on its own, rather than letting everything through or refusing everybody."""

    def __init__(self, item: RateLimitItem, storage_uri: str = "memory://") -> None:
        self.item = item
        options: dict[str, Any] = {}
        self._pool: coredis.ConnectionPool | None = None
        if storage_uri.startswith(("redis://", "rediss://")):
            # Our own pool, so shutting down can close its connections.
            self._pool = options["connection_pool"] = coredis.ConnectionPool.from_url(storage_uri)
        storage = storage_from_string(_async_uri(storage_uri), wrap_exceptions=True, **options)
        assert isinstance(storage, Storage)
        self._strategy = MovingWindowRateLimiter(storage)
        self._fallback = MovingWindowRateLimiter(MemoryStorage())
        self._storage_down = False
        self._retry_shared_at = 0.0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.disconnect()

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        return cls(
            burst_item(settings.rate_limit, settings.rate_limit_burst),
            settings.rate_limit_storage,
        )

    async def hit(self, policy: str, identity: str) -> Verdict:
        """Count one request against ``identity``'s budget under ``policy``."""
        return await self._ask(policy, identity, count=True)

    async def peek(self, policy: str, identity: str) -> Verdict:
        """Where ``identity``'s budget stands, without counting a request."""
        return await self._ask(policy, identity, count=False)

    async def _ask(self, policy: str, identity: str, *, count: bool) -> Verdict:
        if time.monotonic() >= self._retry_shared_at:
            try:
                verdict = await self._consult(self._strategy, policy, identity, count)
            except StorageError as exc:
                self._note_storage_down(exc)
            else:
                self._note_storage_up()
                return verdict
        return await self._consult(self._fallback, policy, identity, count)

    async def _consult(
        self, strategy: MovingWindowRateLimiter, policy: str, identity: str, count: bool
    ) -> Verdict:
        if count:
            allowed = await strategy.hit(self.item, policy, identity)
            stats = await strategy.get_window_stats(self.item, policy, identity)
        else:
            # A peek is this one read (one Redis round trip): every /v1 request makes one.
            stats = await strategy.get_window_stats(self.item, policy, identity)
            allowed = stats.remaining > 0
        return Verdict(
            allowed=allowed,
            policy=policy,
            quota=self.item.amount,
            window_seconds=self.item.get_expiry(),
            remaining=max(0, stats.remaining),
            reset_seconds=max(0, math.ceil(stats.reset_time - time.time())),
        )

    def _note_storage_down(self, exc: StorageError) -> None:
        self._retry_shared_at = time.monotonic() + STORAGE_RETRY_SECONDS
        if not self._storage_down:  # once per outage, not once per request
            log.warning("rate_limit.storage_unavailable", error=repr(exc.storage_error))
            self._storage_down = True

    def _note_storage_up(self) -> None:
        if self._storage_down:
            log.info("rate_limit.storage_back")
        self._storage_down = False
