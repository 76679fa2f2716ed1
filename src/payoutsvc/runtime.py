"""The long-lived objects of one process, built once in the app lifespan or the worker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from payoutsvc.config import Settings
from payoutsvc.crypto import RecipientCipher, audit_key
from payoutsvc.db.engine import Database

if TYPE_CHECKING:
    from payoutsvc.tracing import Tracing

T = TypeVar("T")


@dataclass
class Runtime:
    settings: Settings
    db: Database
    cipher: RecipientCipher
    # OpenTelemetry (tracing.py), None unless PAYOUTSVC_OTEL_EXPORTER_OTLP_ENDPOINT is set.
    tracing: Tracing | None = None
    # (integration, idempotency key) pairs whose first request is running in this process;
    # PostgreSQL additionally serialises them across processes with an advisory lock.
    idempotency_in_flight: set[tuple[str, str]] = field(default_factory=set)
    # This process's one instance of each per-process helper (the gateway registry, the
    # policy cache), built on first use: per-process state lives here, not in module globals.
    _per_process: dict[type[Any], Any] = field(default_factory=dict, repr=False)
    # The HMAC key of the audit chain (crypto.audit_key); never logged, never stored.
    audit_key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.audit_key = audit_key(self.settings, self.cipher)

    def per_process(self, kind: type[T], build: Callable[[], T]) -> T:
        found = self._per_process.get(kind)
        if found is None:
            found = self._per_process[kind] = build()
        return cast(T, found)
