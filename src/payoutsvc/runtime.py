"""The long-lived objects of one process, built once in the app lifespan or the worker."""

from __future__ import annotations

from dataclasses import dataclass, field

from payoutsvc.config import Settings
from payoutsvc.crypto import RecipientCipher
from payoutsvc.db.engine import Database


@dataclass
class Runtime:
    settings: Settings
    db: Database
    cipher: RecipientCipher
    # (integration, idempotency key) pairs whose first request is running in this process;
    # PostgreSQL additionally serialises them across processes with an advisory lock.
    idempotency_in_flight: set[tuple[str, str]] = field(default_factory=set)
