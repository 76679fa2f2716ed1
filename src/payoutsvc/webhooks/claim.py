"""The sender's first step: lease due deliveries and count the attempt (one transaction).

See ``WebhookRepository.claim_due`` for the ordering rule and how several senders stay out
of each other's way. A sender that dies mid-flight loses its lease and another sends again:
delivery is at-least-once, and receivers de-duplicate on ``webhook-id`` (the event id).
Each claimed delivery comes with its :class:`Target`: the endpoint as it was at the claim,
its secrets decrypted (cached by ciphertext).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.repository import AnyRow, WebhookRepository
from payoutsvc.webhooks.service import unseal_secret
from payoutsvc.webhooks.ssrf import MAX_ADDRESS_ATTEMPTS

log = structlog.get_logger(__name__)

# A lease outlives the longest attempt by this much before another sender may take the
# delivery over. An attempt is at most one DNS lookup and MAX_ADDRESS_ATTEMPTS connections,
# each bounded by the timeout.
LEASE_MARGIN_SECONDS = 60.0
_SECRET_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to send: the endpoint as it was when the delivery was claimed."""

    endpoint_id: str
    url: str
    enabled: bool
    secrets: tuple[str, ...] = ()  # current first, then the previous one during a rotation
    secret_error: str | None = None
    failing_since: datetime | None = None
    # A helpdesk connector's target (webhooks/render.py): its kind, and how notes are written.
    # Its one "secret" is then the helpdesk credentials as JSON.
    kind: str | None = None
    options: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: str
    endpoint_id: str
    event_id: str
    payout_id: str
    sequence: int
    event_type: str
    body: bytes
    attempts: int  # including the attempt it was claimed for
    token: str
    target: Target | None  # None: the endpoint was deleted


class DeliveryClaimer:
    def __init__(self, runtime: Runtime, *, clock: Callable[[], datetime]) -> None:
        self.runtime = runtime
        self.clock = clock
        self._secrets: dict[tuple[str, bytes], str] = {}
        # After a claim that found nothing, look (read-only) before claiming again.
        self._idle = True

    async def claim(self, limit: int) -> list[ClaimedDelivery]:
        if limit <= 0:
            return []
        now = self.clock()
        token = uuid.uuid4().hex
        longest_attempt = self.runtime.settings.webhook_timeout_seconds * (1 + MAX_ADDRESS_ATTEMPTS)
        lease_until = now + timedelta(seconds=longest_attempt + LEASE_MARGIN_SECONDS)
        if self._idle:
            async with self.runtime.db.transaction(write=False) as session:
                if not await WebhookRepository(session).any_due(now):
                    return []
        async with self.runtime.db.transaction() as session:
            repo = WebhookRepository(session)
            await repo.skip_commit_flush()
            rows = await repo.claim_due(now, limit, lease_until, token)
            self._idle = not rows
            if not rows:
                return []
            endpoint_rows = await repo.targets(r.endpoint_id for r in rows)
        targets = {row.id: self._target(row, now) for row in endpoint_rows}
        return [
            ClaimedDelivery(
                id=r.id,
                endpoint_id=r.endpoint_id,
                event_id=r.event_id,
                payout_id=r.payout_id,
                sequence=r.sequence,
                event_type=r.event_type,
                body=r.payload.encode(),
                attempts=r.attempts,
                token=token,
                target=targets.get(r.endpoint_id),
            )
            for r in rows
        ]

    def _target(self, row: AnyRow, now: datetime) -> Target:
        blobs = [row.secret_encrypted]
        if (
            row.previous_secret_encrypted is not None
            and row.previous_secret_expires_at is not None
            and row.previous_secret_expires_at > now
        ):
            blobs.append(row.previous_secret_encrypted)
        try:
            secrets = tuple(self._secret(row.id, blob) for blob in blobs)
        except Exception as exc:  # noqa: BLE001  (a wrong key must not stop other endpoints)
            log.error(  # noqa: TRY400  (no traceback: it could quote key material)
                "webhook.secret_unreadable", endpoint_id=row.id, error=type(exc).__name__
            )
            return Target(
                row.id,
                row.url,
                bool(row.enabled),
                (),
                "cannot decrypt the endpoint secret",
                row.failing_since,
                row.target_kind,
                row.target_options,
            )
        return Target(
            row.id,
            row.url,
            bool(row.enabled),
            secrets,
            None,
            row.failing_since,
            row.target_kind,
            row.target_options,
        )

    def _secret(self, endpoint_id: str, blob: bytes) -> str:
        # Keyed by the ciphertext itself, so a rotated secret can never be served stale.
        key = (endpoint_id, bytes(blob))
        secret = self._secrets.get(key)
        if secret is None:
            if len(self._secrets) >= _SECRET_CACHE_LIMIT:
                self._secrets.clear()
            secret = unseal_secret(self.runtime.cipher, endpoint_id, key[1])
            self._secrets[key] = secret
        return secret
