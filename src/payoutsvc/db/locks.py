"""Names for PostgreSQL advisory locks, shared by every domain that serialises on one."""

from __future__ import annotations

import hashlib


def advisory_lock_id(*parts: str) -> int:
    """A signed 64-bit key for pg_advisory locks, stable across processes."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
