"""Per-gateway circuit breaker: stop hammering a provider that keeps failing.

Closed: calls flow, and the outcomes of the last ``window`` calls are kept; once at least
``minimum_calls`` of them are known and ``failure_rate`` of them failed (timeouts, 5xx,
refused connections; not declines, which are healthy answers) the breaker opens. A rate
rather than a run of consecutive failures: hundreds of calls end at nearly the same moment,
so a handful of unlucky payouts in a row must not stop a healthy gateway. Open: no calls for
``cooldown_seconds``; payouts for that gateway simply wait (they are not claimed, or are put
back without using up their retry schedule). Half-open: one probe call is let through; its
success closes the breaker, its failure opens it for another cooldown.

One breaker per gateway per worker process: each worker learns about the provider's health
from its own calls, which needs no coordination and errs towards trying.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import structlog

from payoutsvc.metrics import GATEWAY_BREAKER_STATE

log = structlog.get_logger(__name__)


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    window: int = 50
    minimum_calls: int = 20
    failure_rate: float = 0.8  # an outage, not a few flaky answers (retries handle those)
    cooldown_seconds: float = 15.0


class CircuitBreaker:
    def __init__(
        self,
        gateway: str,
        config: BreakerConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway = gateway
        self.config = config
        self._clock = clock
        self._recent: deque[bool] = deque(maxlen=config.window)  # True: the call failed
        self._opened_at: float | None = None
        self._probe_in_flight = False
        GATEWAY_BREAKER_STATE.labels(gateway=gateway).set(BreakerState.CLOSED)

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.config.cooldown_seconds:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def seconds_until_retry(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.config.cooldown_seconds - (self._clock() - self._opened_at))

    def paused(self) -> bool:
        """True while no new work should even be claimed for this gateway."""
        state = self.state
        return state is BreakerState.OPEN or (
            state is BreakerState.HALF_OPEN and self._probe_in_flight
        )

    def allow(self) -> bool:
        """Ask before each call; in half-open only one caller (the probe) gets True."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            GATEWAY_BREAKER_STATE.labels(gateway=self.gateway).set(BreakerState.HALF_OPEN)
            return True
        return False

    def record_success(self) -> None:
        if self._opened_at is not None:
            if not self._probe_in_flight:
                return  # a call from before the breaker opened; the probe decides
            log.info("gateway.breaker_closed", gateway=self.gateway)
            self._opened_at = None
            self._probe_in_flight = False
            self._recent.clear()
            GATEWAY_BREAKER_STATE.labels(gateway=self.gateway).set(BreakerState.CLOSED)
            return
        self._recent.append(False)

    def record_failure(self) -> None:
        if self._opened_at is not None:
            if self._probe_in_flight:
                self._open()  # the probe failed: another cooldown
            return
        self._recent.append(True)
        calls = len(self._recent)
        failures = sum(self._recent)
        if calls >= self.config.minimum_calls and failures >= self.config.failure_rate * calls:
            self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._probe_in_flight = False
        self._recent.clear()
        GATEWAY_BREAKER_STATE.labels(gateway=self.gateway).set(BreakerState.OPEN)
        log.warning(
            "gateway.breaker_opened",
            gateway=self.gateway,
            cooldown_seconds=self.config.cooldown_seconds,
        )
