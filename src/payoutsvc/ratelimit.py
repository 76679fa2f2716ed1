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
from collections import deque
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


class ProcessWindows(MemoryStorage):
    """``limits``' memory storage with its moving windows kept our way: the two methods
    MovingWindowRateLimiter calls give the same answers as the original's.

    Because the original (limits 5.8, ``aio/storage/memory.py``) trims its windows in a new
    task after every hit, with one ``asyncio.to_thread`` call per key: a thread hop per
    request, about 5 % of a payout's CPU samples under py-spy. Here a key's window is
    trimmed when it is used, and keys nobody used for a whole window are dropped once per
    window."""

    def __init__(self) -> None:
        super().__init__()
        # Per key, the times of the entries still in the window, oldest first.
        self._windows: dict[str, deque[float]] = {}
        self._sweep_at = 0.0

    def _window(self, key: str, expiry: int, now: float) -> deque[float] | None:
        """``key``'s window as of ``now`` (None: it has none; a peek does not create one)."""
        cutoff = now - expiry
        if now >= self._sweep_at:
            # Windows with no entry left in them (one limiter uses one window length).
            for idle in [k for k, w in self._windows.items() if not w or w[-1] < cutoff]:
                del self._windows[idle]
            self._sweep_at = now + expiry
        window = self._windows.get(key)
        while window and window[0] < cutoff:
            window.popleft()
        return window

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        window = self._window(key, expiry, now)
        if window is None:
            window = self._windows[key] = deque()
        if len(window) + amount > limit:
            return False
        window.extend([now] * amount)
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(time of the oldest entry in the window, entries in the window)."""
        now = time.time()
        window = self._window(key, expiry, now) or ()
        # As limits counts here: an entry exactly one window old no longer counts (a hit
        # still finds it in the way: see acquire_entry's cutoff).
        start = 0
        while start < len(window) and window[start] <= now - expiry:
            start += 1
        if start == len(window):
            return now, 0
        return window[start], len(window) - start

    async def clear(self, key: str) -> None:
        self._windows.pop(key, None)
        await super().clear(key)

    async def reset(self) -> int | None:
        self._windows.clear()
        return await super().reset()


def _moving_window(storage_uri: str, options: dict[str, Any]) -> MovingWindowRateLimiter:
    if storage_uri.startswith(("memory://", "async+memory://")):
        return MovingWindowRateLimiter(ProcessWindows())
    storage = storage_from_string(_async_uri(storage_uri), wrap_exceptions=True, **options)
    assert isinstance(storage, Storage)
    return MovingWindowRateLimiter(storage)


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
        self._strategy = _moving_window(storage_uri, options)
        self._fallback = _moving_window("memory://", {})
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
