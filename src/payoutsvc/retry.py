"""Retry schedules: one parser and one delay rule for every loop that retries (the webhook
sender's deliveries, the executor's gateway checks).

The first attempt is made immediately; after the n-th failed attempt the next one is
scheduled ``schedule[n - 1]`` seconds later (with +/-20% jitter); once the schedule is used
up there is no further attempt. With the webhooks' default schedule (the one suggested by
the Standard Webhooks spec) that is: immediately, 5s, 5min, 30min, 2h, 5h, 10h, 10h --
eight attempts in total, spread over ~1.5 days.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = [
    "DEFAULT_RETRY_SCHEDULE",
    "JITTER_FRACTION",
    "MAX_RETRY_AFTER_SECONDS",
    "checked_schedule",
    "jittered",
    "next_delay",
    "parse_schedule",
    "retry_after_seconds",
]

DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
JITTER_FRACTION = 0.2
MAX_RETRY_AFTER_SECONDS = 24 * 3600.0
MAX_SCHEDULE_ENTRIES = 100

_SYSTEM_RNG = random.SystemRandom()
_DELTA_SECONDS = re.compile(r"[0-9]+")


def parse_schedule(text: str) -> tuple[float, ...]:
    """Parse a comma-separated list of positive delays in seconds, e.g. ``"5,300,1800"``.

    Whitespace around entries is ignored.  Raises ``ValueError`` (with a message naming
    the offending entry) for an empty list, an empty entry, a non-number, or a number
    that is not finite and > 0.
    """
    if not text or not text.strip():
        raise ValueError("retry schedule is empty; expected comma-separated seconds, e.g. '5,300'")
    parts = text.split(",")
    if len(parts) > MAX_SCHEDULE_ENTRIES:
        raise ValueError(f"retry schedule has more than {MAX_SCHEDULE_ENTRIES} entries")
    delays: list[float] = []
    for index, part in enumerate(parts, start=1):
        item = part.strip()
        if not item:
            raise ValueError(f"retry schedule entry {index} is empty in {text!r}")
        try:
            value = float(item)
        except ValueError:
            raise ValueError(
                f"retry schedule entry {index} ({item!r}) is not a number of seconds"
            ) from None
        delays.append(value)
    return checked_schedule(delays)


def checked_schedule(delays: Sequence[float]) -> tuple[float, ...]:
    """``delays`` as a schedule, or ``ValueError`` naming the first entry that is not a
    positive, finite number of seconds (the rule for a parsed string and a given list)."""
    if not delays:
        raise ValueError("retry schedule is empty; expected comma-separated seconds, e.g. '5,300'")
    for index, value in enumerate(delays, start=1):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"retry schedule entry {index} ({value!r}) must be a positive, finite "
                "number of seconds"
            )
    return tuple(float(value) for value in delays)


def next_delay(
    schedule: Sequence[float],
    attempts_made: int,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before the next attempt, or ``None`` when retries are exhausted.

    ``attempts_made`` counts attempts already made (>= 1): after the first failed
    attempt the delay is ``schedule[0]``; once ``attempts_made > len(schedule)`` there
    is no further attempt.  The result is jittered uniformly within +/-20%.
    """
    if attempts_made < 1:
        raise ValueError("attempts_made must be >= 1 (the first attempt is immediate)")
    index = attempts_made - 1
    if index >= len(schedule):
        return None
    return jittered(float(schedule[index]), rng)


def jittered(seconds: float, rng: random.Random | None = None) -> float:
    """``seconds`` scaled by a random factor within +/-20%, so that work failed together is
    not retried together."""
    generator = rng if rng is not None else _SYSTEM_RNG
    return seconds * generator.uniform(1.0 - JITTER_FRACTION, 1.0 + JITTER_FRACTION)


def retry_after_seconds(header_value: str | None, now: datetime) -> float | None:
    """Parse a ``Retry-After`` header (delta-seconds or HTTP-date) into seconds from ``now``.

    Returns ``None`` for a missing or unparseable value.  Dates in the past give 0; the
    result is capped at 24 hours.  A naive ``now`` is taken to be UTC.
    """
    if header_value is None:
        return None
    value = header_value.strip()
    if not value:
        return None
    if _DELTA_SECONDS.fullmatch(value):
        # Very long digit strings would exceed int()'s digit limit; they are over the cap anyway.
        seconds = MAX_RETRY_AFTER_SECONDS if len(value) > 12 else float(int(value))
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # HTTP dates are always GMT
            when = when.replace(tzinfo=UTC)
        reference = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
        seconds = (when - reference).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
