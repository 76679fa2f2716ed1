"""Payout use cases. Services never commit: the request's transaction does."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.base import utcnow
from payoutsvc.errors import ServiceError, invalid_status_transition, not_found
from payoutsvc.ids import new_id
from payoutsvc.metrics import PAYOUTS_CREATED
from payoutsvc.money import parse_amount
from payoutsvc.operators.service import OperatorService
from payoutsvc.payouts.events import (
    GENESIS_HASH,
    NewEvent,
    append_events,
    canonical_json,
    hash_of,
)
from payoutsvc.payouts.presenter import event_json, payout_json
from payoutsvc.payouts.repository import PayoutRepository
from payoutsvc.payouts.schemas import PayoutCreate
from payoutsvc.payouts.status import EVENT_FOR_STATUS, PayoutStatus, sources_of
from payoutsvc.recipients.storage import public_view, seal
from payoutsvc.recipients.validation import recipient_fingerprint, validate_recipient
from payoutsvc.runtime import Runtime

log = structlog.get_logger(__name__)

MAX_IDEMPOTENCY_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What POST /v1/payouts answers; ``replayed`` when it comes from the idempotency store."""

    status_code: int
    body: dict[str, Any]
    replayed: bool = False


def request_fingerprint(body: PayoutCreate) -> str:
    return hashlib.sha256(canonical_json(body.model_dump(mode="json")).encode()).hexdigest()


def check_idempotency_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise ServiceError(
            400, "idempotency_key_missing", "Idempotency-Key header missing",
            "POST /v1/payouts needs an Idempotency-Key header (e.g. a UUID per payout attempt).",
        )
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not key.isprintable():
        raise ServiceError(
            400, "idempotency_key_invalid", "Invalid Idempotency-Key",
            f"Idempotency-Key must be printable and at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters.",
        )
    return key


class PayoutService:
    def __init__(self, session: AsyncSession, runtime: Runtime) -> None:
        self.session = session
        self.runtime = runtime
        self.repo = PayoutRepository(session)

    # -- create ----------------------------------------------------------------------------
    async def create(self, integration_id: str, key: str, body: PayoutCreate) -> StoredResponse:
        """Create a payout exactly once per (integration, Idempotency-Key).

        Race-freedom: within a process a second request with a key in flight gets 409; across
        processes a PostgreSQL advisory lock on the key does the same, and the primary key
        of idempotency_keys is the final backstop.
        """
        flight = (integration_id, key)
        in_flight = self.runtime.idempotency_in_flight
        if flight in in_flight or not await self.repo.try_lock("idem", integration_id, key):
            raise ServiceError(
                409, "idempotency_key_in_use", "Idempotency key in use",
                "A request with this Idempotency-Key is still being processed; retry shortly.",
                headers={"Retry-After": "1"},
            )
        in_flight.add(flight)
        try:
            return await self._create_once(integration_id, key, body)
        finally:
            in_flight.discard(flight)

    async def _create_once(self, integration_id: str, key: str, body: PayoutCreate) -> StoredResponse:
        now = utcnow()
        fingerprint = request_fingerprint(body)
        stored = await self.repo.get_idempotency(integration_id, key)
        if stored is not None and stored.expires_at > now:
            if stored.request_hash != fingerprint:
                raise ServiceError(
                    422, "idempotency_key_reused", "Idempotency key reused",
                    "This Idempotency-Key was used with a different request body; "
                    "use a new key for a new payout.",
                )
            return StoredResponse(stored.response_status, json.loads(stored.response_body), True)
        if stored is not None:
            await self.repo.delete_idempotency(integration_id, key)

        response = await self._create_payout(integration_id, key, body, now)
        await self.repo.insert_idempotency(
            {
                "integration_id": integration_id,
                "key": key,
                "request_hash": fingerprint,
                "response_status": response.status_code,
                "response_body": json.dumps(response.body, ensure_ascii=False),
                "created_at": now,
                "expires_at": now + timedelta(hours=self.runtime.settings.idempotency_ttl_hours),
            }
        )
        return response

    async def _create_payout(
        self, integration_id: str, key: str, body: PayoutCreate, now: datetime
    ) -> StoredResponse:
        await OperatorService(self.session).require_active(body.requested_by, "requested_by")
        amount_minor = parse_amount(body.amount, body.currency)
        check = validate_recipient(body.recipient, amount_minor, body.currency)
        if not check.valid:
            raise ServiceError(
                422, "invalid_recipient", "Invalid recipient",
                "The recipient cannot be paid: " + "; ".join(e.message for e in check.errors),
                check.errors,
            )
        payout_id = new_id("po", int(now.timestamp() * 1000))
        status = PayoutStatus.PENDING_APPROVAL
        values: dict[str, Any] = {
            "id": payout_id,
            "integration_id": integration_id,
            "status": status.value,
            "idempotency_key": key,
            "ticket_system": body.ticket.system,
            "ticket_id": body.ticket.id,
            "ticket_url": body.ticket.url,
            "reason": body.reason,
            "amount_minor": amount_minor,
            "currency": body.currency,
            "recipient_type": body.recipient.type,
            "recipient_encrypted": seal(self.runtime.cipher, check.normalized, payout_id),
            "recipient_public": public_view(check.normalized),
            "recipient_fingerprint": recipient_fingerprint(check.normalized),
            "requested_by": body.requested_by,
            "description": body.description,
            "metadata": body.metadata,
            "required_approvals": 1,
            "policy": None,
            "policy_version": None,
            "gateway": self.runtime.settings.gateway_for(body.recipient.type),
            "gateway_idempotency_key": uuid.uuid4().hex,
            "gateway_reference": None,
            "gateway_status": None,
            "attempts": 0,
            "failure_code": None,
            "failure_message": None,
            "next_attempt_at": None,
            "locked_until": None,
            "locked_by": None,
            "last_event_sequence": 1,
            "created_at": now,
            "updated_at": now,
        }
        row = _RowView(values)
        snapshot = payout_json(row)
        event = NewEvent(
            payout_id=payout_id,
            integration_id=integration_id,
            sequence=1,
            type="payout.created",
            actor=body.requested_by,
            data={"status": status.value, "policy": None, "warnings": [w.as_dict() for w in check.warnings]},
            at=now,
            prev_hash=GENESIS_HASH,
            payout_snapshot=snapshot,
        ).with_id()
        values["last_event_hash"] = hash_of(event)
        await self.repo.insert_payout(values)
        await append_events(self.session, [event])
        PAYOUTS_CREATED.labels(status=status.value).inc()
        log.info("payout.created", payout_id=payout_id, status=status.value)
        return StoredResponse(201, snapshot)

    # -- read ------------------------------------------------------------------------------
    async def get_json(self, payout_id: str, visible_integration: str | None) -> dict[str, Any]:
        payout = await self.repo.get(payout_id, visible_integration)
        if payout is None:
            raise not_found("Payout", payout_id)
        approvals = await self.repo.approvals_for([payout.id])
        return payout_json(payout, approvals[payout.id])

    async def list_json(
        self, visible_integration: str | None, limit: int, before_id: str | None, **filters: Any
    ) -> list[dict[str, Any]]:
        payouts = await self.repo.list(
            integration_id=visible_integration, limit=limit, before_id=before_id, **filters
        )
        approvals = await self.repo.approvals_for([p.id for p in payouts])
        return [payout_json(p, approvals[p.id]) for p in payouts]

    async def events_json(self, payout_id: str, visible_integration: str | None) -> list[dict[str, Any]]:
        if await self.repo.current_status(payout_id, visible_integration) is None:
            raise not_found("Payout", payout_id)
        return [event_json(e) for e in await self.repo.events_for(payout_id)]

    # -- status changes ----------------------------------------------------------------------
    async def transition(
        self,
        payout_id: str,
        visible_integration: str | None,
        target: PayoutStatus,
        *,
        actor: str,
        action: str,
        event_data: dict[str, Any],
        values: dict[str, Any] | None = None,
        from_statuses: frozenset[PayoutStatus] | None = None,
    ) -> dict[str, Any]:
        """Move a payout along one arrow with a conditional update, writing its event (and,
        through the outbox, its webhooks) in the same transaction. Returns the new payout."""
        now = utcnow()
        sources = from_statuses if from_statuses is not None else sources_of(target)
        row = await self.repo.transition(
            payout_id,
            visible_integration,
            sources,
            {"status": target.value, "updated_at": now, **(values or {})},
        )
        if row is None:
            current = await self.repo.current_status(payout_id, visible_integration)
            if current is None:
                raise not_found("Payout", payout_id)
            raise invalid_status_transition(payout_id, current, action)
        approvals = await self.repo.approvals_for([payout_id])
        snapshot = payout_json(row, approvals[payout_id])
        event = NewEvent(
            payout_id=payout_id,
            integration_id=row.integration_id,
            sequence=row.last_event_sequence,
            type=EVENT_FOR_STATUS[target],
            actor=actor,
            data={"status": target.value, **event_data},
            at=now,
            prev_hash=row.last_event_hash,
            payout_snapshot=snapshot,
        )
        (_, head), = await append_events(self.session, [event])
        await self.repo.set_chain_head([(payout_id, head)])
        log.info("payout.status_changed", payout_id=payout_id, status=target.value, actor=actor)
        return snapshot

    async def cancel(
        self, payout_id: str, visible_integration: str | None, operator_id: str, reason: str | None
    ) -> dict[str, Any]:
        await OperatorService(self.session).require_active(operator_id)
        return await self.transition(
            payout_id,
            visible_integration,
            PayoutStatus.CANCELED,
            actor=operator_id,
            action="cancel",
            event_data={"reason": reason},
        )


class _RowView:
    """Attribute access over the values of a payout being inserted (for the presenter)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        if name == "metadata_":
            name = "metadata"
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

