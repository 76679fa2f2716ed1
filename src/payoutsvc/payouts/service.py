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

from payoutsvc.audit import payout_digest
from payoutsvc.db.base import utcnow
from payoutsvc.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyInvalid,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    InvalidRecipient,
    ServiceError,
    invalid_status_transition,
    not_found,
)
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
from payoutsvc.policy.service import PayoutRequest, PolicyService
from payoutsvc.recipients.storage import public_view, seal
from payoutsvc.recipients.validation import (
    RecipientCheck,
    recipient_fingerprint,
    validate_recipient,
)
from payoutsvc.runtime import Runtime

log = structlog.get_logger(__name__)

MAX_IDEMPOTENCY_KEY_LENGTH = 255
# The actor of events no person caused (auto-approval by policy, executor steps).
SYSTEM_ACTOR = "system"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What POST /v1/payouts answers; ``replayed`` when it comes from the idempotency store."""

    status_code: int
    body: dict[str, Any]
    replayed: bool = False


def request_fingerprint(body: PayoutCreate) -> str:
    return hashlib.sha256(canonical_json(body.model_dump(mode="json")).encode()).hexdigest()


def _key_in_use() -> ServiceError:
    return IdempotencyKeyInUse(
        "A request with this Idempotency-Key is still being processed; retry shortly.",
        headers={"Retry-After": "1"},
    )


def check_idempotency_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise IdempotencyKeyMissing(
            "POST /v1/payouts needs an Idempotency-Key header (e.g. a UUID per payout attempt)."
        )
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not key.isprintable():
        raise IdempotencyKeyInvalid(
            "Idempotency-Key must be printable and at most "
            f"{MAX_IDEMPOTENCY_KEY_LENGTH} characters."
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

        The key is claimed first by inserting its record in this transaction (see
        PayoutRepository.claim_idempotency_key); the payout and the final answer commit with
        it, so a crash leaves neither. A second request with the same key gets 409 while the
        first runs (in-process set; PostgreSQL advisory lock across processes) and the stored
        answer once it has committed.
        """
        flight = (integration_id, key)
        in_flight = self.runtime.idempotency_in_flight
        if flight in in_flight:
            raise _key_in_use()
        in_flight.add(flight)
        try:
            return await self._create_once(integration_id, key, body)
        finally:
            in_flight.discard(flight)

    async def _create_once(
        self, integration_id: str, key: str, body: PayoutCreate
    ) -> StoredResponse:
        now = utcnow()
        fingerprint = request_fingerprint(body)
        expires_at = now + timedelta(hours=self.runtime.settings.idempotency_ttl_hours)
        claimed = await self.repo.claim_idempotency_key(
            integration_id, key, fingerprint, now, expires_at
        )
        if not claimed:
            stored = await self.repo.get_idempotency(integration_id, key)
            if stored is None:
                raise _key_in_use()  # claimed by a transaction that has not committed yet
            if stored.request_hash != fingerprint:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was used with a different request body; "
                    "use a new key for a new payout."
                )
            return StoredResponse(stored.response_status, json.loads(stored.response_body), True)

        response = await self._create_payout(integration_id, key, body, now)
        await self.repo.complete_idempotency_key(
            integration_id, key, response.status_code, json.dumps(response.body, ensure_ascii=False)
        )
        return response

    async def _create_payout(
        self, integration_id: str, key: str, body: PayoutCreate, now: datetime
    ) -> StoredResponse:
        amount_minor, check, request = self._policy_request(body)
        # Locks the requester/ticket/recipient counters (PostgreSQL) until this transaction
        # commits, so parallel requests cannot both fit under a cap they exceed together.
        decision = await PolicyService(self.session, self.runtime.settings).decide_payout(
            request, now, lock=True
        )
        if decision.forbidden:
            # An answer, not an exception: the transaction commits the idempotency record, so
            # a replay returns this same 422, and nothing else was written.
            log.info("payout.forbidden", rules=[r.rule for r in decision.reasons])
            return StoredResponse(422, decision.to_service_error().to_problem())
        payout_id = new_id("po", int(now.timestamp() * 1000))
        auto_approved = decision.auto_approved
        status = PayoutStatus.APPROVED if auto_approved else PayoutStatus.PENDING_APPROVAL
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
            "recipient_fingerprint": request.recipient_fingerprint,
            "requested_by": body.requested_by,
            "description": body.description,
            "metadata": body.metadata,
            "required_approvals": decision.required_approvals,
            "policy": decision.as_json(),
            "policy_version": decision.version,
            "gateway": self.runtime.settings.gateway_for(body.recipient.type),
            "gateway_idempotency_key": uuid.uuid4().hex,
            "gateway_reference": None,
            "gateway_status": None,
            "gateway_details": None,
            "gateway_hold_until": None,
            "attempts": 0,
            "failure_code": None,
            "failure_message": None,
            # An approved payout is the executor's job as of now.
            "next_attempt_at": now if auto_approved else None,
            "locked_until": None,
            "locked_by": None,
            "last_event_sequence": 2 if auto_approved else 1,
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
            data={
                "status": status.value,
                "policy": decision.as_json(),
                "required_approvals": decision.required_approvals,
                "warnings": [w.as_dict() for w in check.warnings],
                # Seals the payouts row's immutable fields into the chain (audit verify).
                "payout_digest": payout_digest(values),
            },
            at=now,
            prev_hash=GENESIS_HASH,
            payout_snapshot=snapshot,
        )
        events = [event]
        if auto_approved:
            # Every payout that becomes approved emits payout.approved, so a helpdesk can
            # react to that one event whether a person or the policy approved it.
            events.append(
                NewEvent(
                    payout_id=payout_id,
                    integration_id=integration_id,
                    sequence=2,
                    type="payout.approved",
                    actor=SYSTEM_ACTOR,
                    data={
                        "status": status.value,
                        "auto_approved": True,
                        "policy_version": decision.version,
                        "reasons": [r.as_json() for r in decision.reasons],
                        "approvals": [],
                    },
                    at=now,
                    prev_hash=hash_of(event),
                    payout_snapshot=snapshot,
                )
            )
        values["last_event_hash"] = hash_of(events[-1])
        await self.repo.insert_payout(values)
        await append_events(self.session, events)
        PAYOUTS_CREATED.labels(status=status.value).inc()
        log.info("payout.created", payout_id=payout_id, status=status.value)
        return StoredResponse(201, snapshot)

    def _policy_request(self, body: PayoutCreate) -> tuple[int, RecipientCheck, PayoutRequest]:
        """Validate the recipient (422 ``invalid_recipient``) and describe the request to the
        policy."""
        amount_minor = parse_amount(body.amount, body.currency)
        check = validate_recipient(body.recipient, amount_minor, body.currency)
        if not check.valid:
            raise InvalidRecipient(
                "The recipient cannot be paid: " + "; ".join(e.message for e in check.errors),
                errors=check.errors,
            )
        request = PayoutRequest(
            amount_minor=amount_minor,
            currency=body.currency,
            reason=body.reason,
            requester_id=body.requested_by,
            ticket_system=body.ticket.system,
            ticket_id=body.ticket.id,
            recipient_fingerprint=recipient_fingerprint(
                check.normalized, self.runtime.cipher.fingerprint_key
            ),
            recipient_warnings=tuple(w.code for w in check.warnings),
        )
        return amount_minor, check, request

    async def preview(self, body: PayoutCreate) -> dict[str, Any]:
        """What POST /v1/payouts would decide for ``body`` right now; creates nothing."""
        _amount, check, request = self._policy_request(body)
        decision = await PolicyService(self.session, self.runtime.settings).decide_payout(
            request, utcnow(), lock=False
        )
        status: str | None = None
        if not decision.forbidden:
            status = (
                PayoutStatus.APPROVED if decision.auto_approved else PayoutStatus.PENDING_APPROVAL
            ).value
        return {
            "decision": decision.decision,
            "status": status,
            "required_approvals": decision.required_approvals,
            "policy": decision.as_json(),
            "errors": [e.as_dict() for e in decision.violation_errors()],
            "warnings": [w.as_dict() for w in check.warnings],
        }

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

    async def events_json(
        self, payout_id: str, visible_integration: str | None
    ) -> list[dict[str, Any]]:
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
        ((_, head),) = await append_events(self.session, [event])
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
