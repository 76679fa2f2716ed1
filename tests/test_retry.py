"""Retry schedule, jitter, Retry-After parsing and event filters for webhooks."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from payoutsvc.retry import (
    DEFAULT_RETRY_SCHEDULE,
    MAX_RETRY_AFTER_SECONDS,
    next_delay,
    parse_schedule,
    retry_after_seconds,
)
from payoutsvc.webhooks.filters import (
    KNOWN_EVENT_TYPES,
    event_matches,
    validate_event_filters,
)

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)

# ----------------------------------------------------------------------------- schedule


def test_default_schedule() -> None:
    assert DEFAULT_RETRY_SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 36000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5,300,1800", (5.0, 300.0, 1800.0)),
        (" 5 , 300 ,1800 ", (5.0, 300.0, 1800.0)),
        ("0.5", (0.5,)),
        ("1e2,2", (100.0, 2.0)),
        ("5,300,1800,7200,18000,36000,36000", tuple(float(x) for x in DEFAULT_RETRY_SCHEDULE)),
    ],
)
def test_parse_schedule_valid(text: str, expected: tuple[float, ...]) -> None:
    assert parse_schedule(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("5,,6", "entry 2 is empty"),
        ("5,", "entry 2 is empty"),
        ("5,abc", "'abc'"),
        ("5m", "'5m'"),
        ("0", "positive"),
        ("5,-1", "positive"),
        ("nan", "positive"),
        ("inf", "positive"),
        (",".join(["1"] * 101), "more than"),
    ],
)
def test_parse_schedule_invalid(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="retry schedule") as info:
        parse_schedule(text)
    assert fragment in str(info.value)


@pytest.mark.parametrize("seed", range(50))
def test_next_delay_jitter_within_20_percent(seed: int) -> None:
    rng = random.Random(seed)
    for attempts_made, base in enumerate(DEFAULT_RETRY_SCHEDULE, start=1):
        delay = next_delay(DEFAULT_RETRY_SCHEDULE, attempts_made, rng)
        assert delay is not None
        assert base * 0.8 <= delay <= base * 1.2


def test_next_delay_exhausted_and_invalid() -> None:
    assert next_delay(DEFAULT_RETRY_SCHEDULE, len(DEFAULT_RETRY_SCHEDULE) + 1) is None
    assert next_delay(DEFAULT_RETRY_SCHEDULE, 100) is None
    assert next_delay((), 1) is None
    with pytest.raises(ValueError, match="attempts_made"):
        next_delay(DEFAULT_RETRY_SCHEDULE, 0)


def test_next_delay_is_jittered_and_reproducible() -> None:
    delays = {next_delay((100.0,), 1) for _ in range(20)}
    assert len(delays) > 1  # default RNG actually jitters
    assert all(d is not None and 80.0 <= d <= 120.0 for d in delays)
    a = [next_delay((100.0, 200.0), n, random.Random(7)) for n in (1, 2)]
    b = [next_delay((100.0, 200.0), n, random.Random(7)) for n in (1, 2)]
    assert a == b


# ---------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 30 ", 30.0),
        ("86400", 86400.0),
        ("86401", MAX_RETRY_AFTER_SECONDS),
        ("9" * 5000, MAX_RETRY_AFTER_SECONDS),
        ("Sun, 01 Jun 2025 12:02:00 GMT", 120.0),  # IMF-fixdate
        ("Sunday, 01-Jun-25 12:00:30 GMT", 30.0),  # RFC 850
        ("Sun Jun  1 12:01:00 2025", 60.0),  # asctime
        ("Sun, 01 Jun 2025 11:00:00 GMT", 0.0),  # in the past
        ("Wed, 01 Jan 2031 00:00:00 GMT", MAX_RETRY_AFTER_SECONDS),
        (None, None),
        ("", None),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("Sun, 99 Foo 2025 99:99:99 GMT", None),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert retry_after_seconds(value, NOW) == expected


def test_retry_after_with_naive_now() -> None:
    naive = NOW.replace(tzinfo=None)
    assert retry_after_seconds("Sun, 01 Jun 2025 12:00:10 GMT", naive) == 10.0
    later = NOW + timedelta(seconds=5)
    assert retry_after_seconds("Sun, 01 Jun 2025 12:00:10 GMT", later) == 5.0


# -------------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    ("filters", "event", "expected"),
    [
        (["payout.succeeded"], "payout.succeeded", True),
        (["payout.succeeded"], "payout.failed", False),
        (["payout.*"], "payout.failed", True),
        (["payout.*"], "payout.needs_review", True),
        (["payout.*"], "payouts.failed", False),
        (["payout.*"], "payout.", False),
        (["*"], "payout.created", True),
        (["*"], "anything.else", True),
        (["payout.failed", "payout.succeeded"], "payout.succeeded", True),
        ([], "payout.created", False),
        (["Payout.created"], "payout.created", False),
        (["payout*"], "payout.created", False),
    ],
)
def test_event_matches(filters: list[str], event: str, expected: bool) -> None:
    assert event_matches(filters, event) is expected


def test_validate_event_filters_accepts_and_dedupes() -> None:
    assert validate_event_filters(["payout.*"]) == ["payout.*"]
    assert validate_event_filters(["*"]) == ["*"]
    assert validate_event_filters(list(KNOWN_EVENT_TYPES)) == list(KNOWN_EVENT_TYPES)
    assert validate_event_filters(["payout.failed", " payout.failed", "payout.*"]) == [
        "payout.failed",
        "payout.*",
    ]


@pytest.mark.parametrize(
    "filters",
    [
        [],
        ["payout.paid"],
        ["refund.*"],
        ["payout*"],
        ["payout.succeeded", "nope"],
        [""],
        ["PAYOUT.SUCCEEDED"],
        "payout.*",
        [42],
    ],
)
def test_validate_event_filters_rejects(filters: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 -- several distinct messages
        validate_event_filters(filters)  # type: ignore[arg-type]


def test_validate_event_filters_names_the_bad_filter() -> None:
    with pytest.raises(ValueError, match=r"'payout\.paid' matches no known event"):
        validate_event_filters(["payout.*", "payout.paid"])
