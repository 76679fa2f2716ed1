"""Prefixed, time-sortable identifiers (``po_…``, ``evt_…``): 48-bit milliseconds + 80 random bits.

Crockford base32 keeps them URL-safe and lexicographically ordered by creation time, which is
what cursor pagination relies on. The executor mints several ids per payout, so encoding
looks up two digits per 10-bit group instead of looping over digits.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # two digits per 10-bit group


def _encode_time(millis: int) -> str:
    return (
        _PAIRS[(millis >> 40) & 1023]
        + _PAIRS[(millis >> 30) & 1023]
        + _PAIRS[(millis >> 20) & 1023]
        + _PAIRS[(millis >> 10) & 1023]
        + _PAIRS[millis & 1023]
    )


def new_id(prefix: str, now_ms: int | None = None) -> str:
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    r = int.from_bytes(os.urandom(10), "big")  # 80 bits: 16 digits
    return (
        f"{prefix}_{_encode_time(millis)}{_PAIRS[(r >> 70) & 1023]}{_PAIRS[(r >> 60) & 1023]}"
        f"{_PAIRS[(r >> 50) & 1023]}{_PAIRS[(r >> 40) & 1023]}{_PAIRS[(r >> 30) & 1023]}"
        f"{_PAIRS[(r >> 20) & 1023]}{_PAIRS[(r >> 10) & 1023]}{_PAIRS[r & 1023]}"
    )


def id_floor(prefix: str, millis: int) -> str:
    """The smallest id ``new_id(prefix, m)`` can mint for any ``m >= millis``: ``id >=
    id_floor(p, t)`` selects by creation time on the primary-key index alone."""
    return f"{prefix}_{_encode_time(millis)}"
