"""JSON text of our own values (answers, stored answers, JSON columns, log lines) by orjson,
several times faster than the standard library on the create path's documents.

Not for anything hashed or signed byte for byte (payouts/events.py ``canonical_json``, the
webhook bodies): those keep their exact standard-library form. A value orjson refuses (an
integer beyond 64 bits, a non-string key) gets the standard library's text instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """Compact JSON, non-ASCII as is (as ``ensure_ascii=False`` writes it); ``default``
    turns what JSON cannot hold into what it can, as for ``json.dumps``."""
    try:
        return orjson.dumps(value, default=default).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=default)
