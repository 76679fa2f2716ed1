"""API key secrets: generation and hashing."""

from __future__ import annotations

import hashlib
import secrets

SCOPES: tuple[str, ...] = (
    "payouts:write",
    "payouts:read",
    "payouts:approve",
    "payouts:release",
    "admin",
)
KEY_PREFIX = "psk_"


def generate_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_hint(secret: str) -> str:
    """What an operator may see of a key to tell keys apart: its last four characters."""
    return "…" + secret[-4:]
