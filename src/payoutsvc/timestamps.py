"""How every timestamp leaves the service: RFC 3339, UTC, milliseconds, ``Z``."""

from __future__ import annotations

from datetime import datetime


def rfc3339(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
