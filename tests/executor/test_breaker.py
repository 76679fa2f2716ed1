"""The circuit breaker's decisions, on a fake clock."""

from __future__ import annotations

from payoutsvc.executor.breaker import BreakerConfig, BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_minority_of_failures_never_opens_it() -> None:
    breaker = CircuitBreaker("gw", BreakerConfig(window=30, minimum_calls=10), Clock())
    for n in range(300):
        assert breaker.allow()
        breaker.record_failure() if n % 3 == 0 else breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_mostly_failing_calls_open_it_then_one_probe_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker(
        "gw", BreakerConfig(window=20, minimum_calls=10, cooldown_seconds=30), clock
    )
    for _ in range(9):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED  # too few calls to judge
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.paused()
    breaker.record_success()  # a call that started before it opened does not close it
    assert breaker.state is BreakerState.OPEN

    clock.now += 30
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN  # probe failed: another cooldown
    assert breaker.seconds_until_retry() == 30

    clock.now += 30
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
