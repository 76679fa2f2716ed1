"""Payout use cases. Services never commit: the request's transaction does."""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc import jsontext
from payoutsvc.db.base import utcnow
from payoutsvc.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyInvalid,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    InvalidRecipient,
    PolicyChanging,
    ServiceError,
    invalid_status_transition,
    not_found,
)
from payoutsvc.ids import new_id
from payoutsvc.metrics import PAYOUTS_CREATED
from payoutsvc.money import parse_amount
from payoutsvc.operators.service import OperatorService
from payoutsvc.payouts import transitions
from payoutsvc.payouts.acting import Acting, Credential, named_operator
from payoutsvc.payouts.events import (
    NewEvent,
    append_events,
    approvals_digest,
    canonical_json,
    insert_hashed_events,
    payout_digest,
)
from payoutsvc.payouts.limits import (
    CounterDelta,
    LimitsRepository,
    RequestFacts,
    duplicate_likeness,
)
from payoutsvc.payouts.models import Payout, PayoutColumns
from payoutsvc.payouts.presenter import event_json, payout_json, payout_json_of
from payoutsvc.payouts.repository import PayoutRepository
from payoutsvc.payouts.schemas import PayoutCreate
from payoutsvc.payouts.status import PayoutStatus
from payoutsvc.policy.engine import (
    PolicyDecision,
    duplicate_window_start,
    evaluate_policy,
    policy_day_bounds,
)
from payoutsvc.policy.rules import PayoutFacts
from payoutsvc.policy.service import PayoutRequest, PolicyService
from payoutsvc.recipients.storage import public_view, seal
from payoutsvc.recipients.validation import (
    RecipientCheck,
    recipient_fingerprint,
    validate_recipient,
)
from payoutsvc.runtime import Runtime
from payoutsvc.tracing import remember_payout
from payoutsvc.webhooks.outbox import endpoint_presence

log = structlog.get_logger(__name__)

MAX_IDEMPOTENCY_KEY_LENGTH = 255
# The actor of events no person caused (auto-approval by policy, executor steps).
SYSTEM_ACTOR = "system"
# A PUT between reading the version and reading the totals makes us read again; more than a
# few PUTs in that instant means something is looping on PUT /v1/policy.
_MAX_POLICY_RACES = 5


@dataclass(frozen=True)
class StoredResponse:
    """What POST /v1/payouts answers; ``replayed`` when it comes from the idempotency store."""

    status_code: int
    body: dict[str, Any]
    replayed: bool = False
    # A refusal's ServiceError.i18n_state(): the router renders the problem in the asking
    # request's language from it (a replay too: stored with the answer under I18N_KEY).
    i18n: dict[str, Any] | None = None

    @functools.cached_property
    def stored_json(self) -> str:
        """The text kept in the idempotency record; for a 201 also the response's body (the
        router sends it as is: one serialisation per answer)."""
        body = self.body if self.i18n is None else {**self.body, I18N_KEY: self.i18n}
        return jsontext.dumps(body)

    @classmethod
    def replay(cls, status_code: int, stored: str) -> StoredResponse:
        body = json.loads(stored)
        return cls(status_code, body, True, body.pop(I18N_KEY, None))


# Never a problem member (those are fixed by API.md), so it cannot clash with one.
I18N_KEY = "_i18n"


def request_fingerprint(body: PayoutCreate) -> str:
    return hashlib.sha256(canonical_json(body.model_dump(mode="json")).encode()).hexdigest()


def _key_in_use() -> ServiceError:
    return IdempotencyKeyInUse(
        "A request with this Idempotency-Key is still being processed; retry shortly.",
        headers={"Retry-After": "1"},
    )


# What check_idempotency_key accepts, for the document: printable, not blank, at most the
# maximum length (ASCII, as header values are in practice).
IDEMPOTENCY_KEY_SCHEMA: dict[str, Any] = {
    "minLength": 1,
    "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH,
    "pattern": r"^[\x20-\x7e]*[\x21-\x7e][\x20-\x7e]*$",
}


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
    async def create(
        self, credential: Credential, integration_id: str, key: str, body: PayoutCreate
    ) -> StoredResponse:
        """Create a payout exactly once per (integration, Idempotency-Key).

        The key is claimed first by inserting its record in this transaction (see
        PayoutRepository.claim_idempotency_key); the payout and the final answer commit with
        it, so a crash leaves neither. A second request with the same key gets 409 while the
        first runs (in-process set; PostgreSQL advisory lock across processes) and the stored
        answer once it has committed.

        The requester is settled first (403 ``operator_mismatch`` stores nothing) and written
        into the body, so the fingerprint names who asked: two keys of one integration bound
        to different operators cannot replay each other's payout under one Idempotency-Key.
        """
        requester = named_operator(credential, body.requested_by, "requested_by")
        body = body.model_copy(update={"requested_by": requester.operator_id})
        flight = (integration_id, key)
        in_flight = self.runtime.idempotency_in_flight
        if flight in in_flight:
            raise _key_in_use()
        in_flight.add(flight)
        try:
            return await self._create_once(credential, requester, integration_id, key, body)
        finally:
            in_flight.discard(flight)

    async def _create_once(
        self,
        credential: Credential,
        requester: Acting,
        integration_id: str,
        key: str,
        body: PayoutCreate,
    ) -> StoredResponse:
        now = utcnow()
        fingerprint = request_fingerprint(body)
        claimed = await self.repo.claim_idempotency_keys(
            integration_id, [(key, fingerprint)], now, self._key_expiry(now)
        )
        if key not in claimed:
            return await self._unclaimed_answer(integration_id, key, fingerprint)
        checked = self._policy_request(body, credential, requester)
        outcome = await self._plan_payout(integration_id, key, body, checked, now)
        response = outcome.response if isinstance(outcome, NewPayout) else outcome
        # The writes after the counters' row locks, in one round trip (PostgreSQL): the
        # locks are held until commit, so the fewer round trips the more payouts per second
        # one requester gets.
        async with self.repo.folded_writes():
            await self._insert_payouts([outcome] if isinstance(outcome, NewPayout) else [])
            await self.repo.complete_idempotency_keys(
                integration_id, [(key, response.status_code, response.stored_json)]
            )
        return response

    async def create_many(
        self,
        credential: Credential,
        integration_id: str,
        items: Sequence[tuple[str, PayoutCreate]],
        refusals: tuple[type[ServiceError], ...],
    ) -> list[StoredResponse | ServiceError]:
        """:meth:`create` for each (Idempotency-Key, body) of ``items``, in order, in this
        transaction: each item decided by the policy exactly as if it had been created
        alone after the ones before it (their counters, and their payouts for the duplicate
        check), but written together: the keys claimed in one statement, the payouts, their
        events and the answers in one each. The keys must be distinct (a batch's item keys
        are). An item that raises one of ``refusals`` gets that error in its place; any
        other error propagates."""
        now = utcnow()
        answers: list[StoredResponse | ServiceError | None] = [None] * len(items)
        pending: list[tuple[int, str, PayoutCreate, Acting, str]] = []
        for index, (key, body) in enumerate(items):
            try:
                requester = named_operator(credential, body.requested_by, "requested_by")
            except refusals as exc:
                answers[index] = exc
                continue
            body = body.model_copy(update={"requested_by": requester.operator_id})
            pending.append((index, key, body, requester, request_fingerprint(body)))
        flights = {(integration_id, key) for _, key, _, _, _ in pending}
        in_flight = self.runtime.idempotency_in_flight
        if flights & in_flight:
            raise _key_in_use()
        in_flight.update(flights)
        try:
            claimed = await self.repo.claim_idempotency_keys(
                integration_id, [(k, f) for _, k, _, _, f in pending], now, self._key_expiry(now)
            )
            planned: list[NewPayout] = []
            likenesses: set[tuple[Any, ...]] = set()
            completed: list[tuple[str, int, str]] = []
            for index, key, body, requester, fingerprint in pending:
                try:
                    if key not in claimed:
                        answers[index] = await self._unclaimed_answer(
                            integration_id, key, fingerprint
                        )
                        continue
                    checked = self._policy_request(body, credential, requester)
                    # Each payout's own time, as if created alone (and its id's).
                    outcome = await self._plan_payout(
                        integration_id, key, body, checked, utcnow(), planned_like=likenesses
                    )
                except refusals as exc:
                    answers[index] = exc
                    continue
                if isinstance(outcome, NewPayout):
                    planned.append(outcome)
                    likenesses.add(duplicate_likeness(checked[1]))
                    outcome = outcome.response
                answers[index] = outcome
                completed.append((key, outcome.status_code, outcome.stored_json))
            async with self.repo.folded_writes():
                await self._insert_payouts(planned)
                await self.repo.complete_idempotency_keys(integration_id, completed)
        finally:
            in_flight.difference_update(flights)
        return [answer for answer in answers if answer is not None]

    def _key_expiry(self, now: datetime) -> datetime:
        return now + timedelta(hours=self.runtime.settings.idempotency_ttl_hours)

    async def _unclaimed_answer(
        self, integration_id: str, key: str, fingerprint: str
    ) -> StoredResponse:
        """The answer for a key another request owns: its stored answer (a replay), 422
        when the body differs, 409 while that request has not committed."""
        stored = await self.repo.get_idempotency(integration_id, key)
        if stored is None:
            raise _key_in_use()  # claimed by a transaction that has not committed yet
        if stored.request_hash != fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used with a different request body; "
                "use a new key for a new payout."
            )
        return StoredResponse.replay(stored.response_status, stored.response_body)

    async def _plan_payout(
        self,
        integration_id: str,
        key: str,
        body: PayoutCreate,
        checked: tuple[RecipientCheck, PayoutRequest],
        now: datetime,
        *,
        planned_like: Collection[tuple[Any, ...]] = (),
    ) -> NewPayout | StoredResponse:
        """Decide a new payout: counted in its limit counters and built, ready to insert
        (:meth:`_insert_payouts`), or the policy's 422 (nothing else written).
        ``planned_like``: the likenesses of payouts planned in this transaction but not
        inserted yet, which the duplicate check must see as it sees inserted ones."""
        check, request = checked
        # Counts the payout in its limit counters, whose row locks (PostgreSQL) hold until
        # this transaction commits, so parallel requests cannot both fit under a cap they
        # exceed together.
        decision, counters = await self.decide(
            request, now, count_in=True, planned_like=planned_like
        )
        if decision.forbidden:
            # An answer, not an exception: the transaction commits the idempotency record, so
            # a replay returns this same 422, and nothing else was written.
            await LimitsRepository(self.session).count_out(counters)
            # Told by the request's one log line (middleware.py), not a line of its own.
            structlog.contextvars.bind_contextvars(
                payout_forbidden_by=[r.rule for r in decision.reasons]
            )
            refusal = decision.to_service_error()
            return StoredResponse(422, refusal.to_problem(), i18n=refusal.i18n_state())
        values = self._new_payout(integration_id, key, body, check, request, decision, now)
        # The daily rows' day (the ticket row's is 0): what a release subtracts from.
        values["limit_day"] = max(day for _, _, day, _, _ in counters)
        snapshot = payout_json(_RowView(values))
        events = _opening_events(values, check, decision, snapshot, self.runtime.audit_key)
        return NewPayout(values, events, StoredResponse(201, snapshot))

    async def _insert_payouts(self, planned: Sequence[NewPayout]) -> None:
        """Write planned payouts with their opening events (and webhooks), one statement
        each for all of them."""
        if not planned:
            return
        await self.repo.insert_payouts([p.values for p in planned])
        await append_events(
            self.session,
            [event for p in planned for event in p.events],
            self.runtime.audit_key,
            endpoint_presence(self.runtime),
        )
        for p in planned:
            PAYOUTS_CREATED.labels(status=p.values["status"]).inc()
            remember_payout(self.runtime.tracing, p.values["id"])
        last = planned[-1].values
        structlog.contextvars.bind_contextvars(payout_id=last["id"], payout_status=last["status"])

    def _new_payout(
        self,
        integration_id: str,
        key: str,
        body: PayoutCreate,
        check: RecipientCheck,
        request: PayoutRequest,
        decision: PolicyDecision,
        now: datetime,
    ) -> PayoutColumns:
        """The payouts row of a new payout, by column name (its chain head comes later)."""
        payout_id = new_id("po", int(now.timestamp() * 1000))
        auto_approved = decision.auto_approved
        status = PayoutStatus.APPROVED if auto_approved else PayoutStatus.PENDING_APPROVAL
        return {
            "id": payout_id,
            "integration_id": integration_id,
            "status": status.value,
            "idempotency_key": key,
            "ticket_system": body.ticket.system,
            "ticket_id": body.ticket.id,
            "ticket_url": body.ticket.url,
            "reason": body.reason,
            "amount_minor": request.amount_minor,
            "currency": body.currency,
            "recipient_type": body.recipient.type,
            "recipient_encrypted": seal(self.runtime.cipher, check.normalized, payout_id),
            "recipient_public": public_view(check.normalized),
            "recipient_fingerprint": request.recipient_fingerprint,
            "requested_by": request.requester_id,
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
            # An approved payout is the executor's job as of now, unless it waits for a
            # manual release (no due time: the executor's claim never finds it).
            "next_attempt_at": now if auto_approved and not decision.release_required else None,
            "locked_until": None,
            "locked_by": None,
            "created_at": now,
            "updated_at": now,
            "limit_day": 0,  # set by the caller from the counters it counted the payout in
            "release_required": decision.release_required,
            "released_by": None,
            "released_at": None,
        }

    def _policy_request(
        self, body: PayoutCreate, credential: Credential, requester: Acting
    ) -> tuple[RecipientCheck, PayoutRequest]:
        """Validate the recipient (422 ``invalid_recipient``) and describe the request to the
        policy, with what its messages may tell this caller."""
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
            requester_id=requester.operator_id,
            ticket_system=body.ticket.system,
            ticket_id=body.ticket.id,
            recipient_fingerprint=recipient_fingerprint(
                check.normalized, self.runtime.cipher.fingerprint_key
            ),
            recipient_warnings=tuple(w.code for w in check.warnings),
            requester_verified=requester.verified,
            disclose_totals=credential.admin,
            disclose_requester=not requester.discreet_for(credential),
        )
        return check, request

    async def preview(self, credential: Credential, body: PayoutCreate) -> dict[str, Any]:
        """What POST /v1/payouts would decide for ``body`` right now, for this caller (the
        same requester checks and the same discreet messages); creates nothing."""
        requester = named_operator(credential, body.requested_by, "requested_by")
        check, request = self._policy_request(body, credential, requester)
        decision, _ = await self.decide(request, utcnow(), count_in=False)
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

    # -- policy decision ---------------------------------------------------------------------
    async def decide(
        self,
        request: PayoutRequest,
        now: datetime,
        *,
        count_in: bool,
        planned_like: Collection[tuple[Any, ...]] = (),
    ) -> tuple[PolicyDecision, list[CounterDelta]]:
        """Gather the facts and evaluate the current policy for ``request``; returns the
        decision and the limit counters the request counts in.

        ``count_in``: the caller will insert the payout in this transaction, so add it to
        its counters now (LimitsRepository.count_in), which serialises the check-and-insert
        with every other request on the same requester, ticket or recipient until commit;
        the caller takes it out again if the decision forbids it. Otherwise (a preview) the
        totals are read as they are. ``planned_like``: see :meth:`_plan_payout`.
        """
        limits = LimitsRepository(self.session)
        policies = PolicyService.of(self.session, self.runtime)
        policy = await policies.newest_known()
        for _ in range(_MAX_POLICY_RACES):
            day_start, _ = policy_day_bounds(policy, now)
            counters = request.limit_counters(int(day_start.timestamp()))
            duplicate_since = duplicate_window_start(policy, now)
            folded = count_in and limits.counts_with_facts
            if folded:  # PostgreSQL: facts and counting in, one statement
                facts = await limits.count_in_with_facts(
                    request, counters, duplicate_since=duplicate_since
                )
            else:
                facts = await limits.request_facts(
                    request,
                    day=int(day_start.timestamp()),
                    duplicate_since=duplicate_since,
                    with_totals=not count_in,
                )
            if facts.policy_version in (policy.version, None):
                if count_in and not folded:
                    facts = await limits.count_in(request, facts, counters, duplicate_since)
                if duplicate_since is not None and duplicate_likeness(request) in planned_like:
                    facts = replace(facts, duplicate_suspected=True)
                held = policy.review.hold_open_anomalies and await limits.open_anomaly(
                    request.requester_id, request.recipient_fingerprint
                )
                payout_facts = _payout_facts(request, facts, open_anomaly=held)
                return evaluate_policy(payout_facts, policy), counters
            # The day bounds and duplicate window depend on the policy: read again under it
            # (and count again: the counters were those of the other policy's day).
            if folded:
                await limits.count_out(counters)
            policy = await policies.get(facts.policy_version)
        raise PolicyChanging(
            "The policy changed repeatedly while this request was evaluated; retry.",
            headers={"Retry-After": "1"},
            title="Policy is changing",
        )

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
        arrow: transitions.Arrow,
        target: PayoutStatus,
        *,
        actor: str,
        event_data: dict[str, Any],
        values: dict[str, Any] | None = None,
        locked: Payout | None = None,
        lease: transitions.Lease | None = None,
        held: bool = False,
    ) -> dict[str, Any]:
        """Move a payout along one of ``arrow``'s arrows, writing its event (and, through
        the outbox, its webhooks) in the same transaction. ``locked`` is the payout when the
        caller already holds its row lock. Returns the payout as it is now."""
        payout = locked or await self.repo.get_for_update(payout_id, visible_integration)
        if payout is None:
            raise not_found("Payout", payout_id)
        approvals = (await self.repo.approvals_for([payout.id]))[payout.id]
        planned = transitions.move(
            arrow,
            self.repo.columns_of(payout),
            target,
            actor=actor,
            # Seals the approval rows as they are at this decision (audit verify).
            data={**event_data, "approvals_digest": approvals_digest(approvals)},
            at=utcnow(),
            present=functools.partial(payout_json_of, approvals=approvals),
            key=self.runtime.audit_key,
            values=values,
            lease=lease,
            held=held,
        )
        if not await self.repo.apply_move(planned):
            # The row is locked (PostgreSQL) or every writer waits (SQLite), so only a
            # caller that passed a stale ``locked`` row gets here.
            current = await self.repo.current_status(payout_id, visible_integration)
            raise invalid_status_transition(payout_id, current or "unknown", arrow.action)
        await insert_hashed_events(
            self.session, [(planned.event, planned.head.hash)], endpoint_presence(self.runtime)
        )
        remember_payout(self.runtime.tracing, payout_id)
        log.info("payout.status_changed", payout_id=payout_id, status=target.value, actor=actor)
        return planned.event.snapshot()

    async def cancel(
        self,
        credential: Credential,
        payout_id: str,
        visible_integration: str | None,
        named: str | None,
        reason: str | None,
    ) -> dict[str, Any]:
        """Withdraw a payout before it is paid. Not gated by ``require_operator_key``: it is
        not an approver's decision and never moves money, and the helpdesk that asked must be
        able to take its request back; a bound key still cancels only as its own operator."""
        acting = named_operator(credential, named, "operator_id")
        await OperatorService(self.session).require_active(
            acting.operator_id, discreet=acting.discreet_for(credential)
        )
        return await self.transition(
            payout_id,
            visible_integration,
            transitions.CANCEL,
            PayoutStatus.CANCELED,
            actor=acting.operator_id,
            event_data={"reason": reason, "operator_verified": acting.verified},
        )


@dataclass(frozen=True, slots=True)
class NewPayout:
    """A decided payout not inserted yet: its row, its opening events, its 201 answer."""

    values: PayoutColumns
    events: list[NewEvent]
    response: StoredResponse


def _opening_events(
    values: PayoutColumns,
    check: RecipientCheck,
    decision: PolicyDecision,
    snapshot: dict[str, Any],
    key: bytes,
) -> list[NewEvent]:
    """A new payout's first events (payout.created, and payout.approved when the policy
    approved it), chained; sets the chain head in ``values``."""
    created, head = transitions.open_chain(
        values,
        actor=values["requested_by"],
        data={
            "policy": decision.as_json(),
            "required_approvals": decision.required_approvals,
            "warnings": [w.as_dict() for w in check.warnings],
            "release_required": decision.release_required,
            # Seals the payouts row's immutable fields into the chain (audit verify).
            "payout_digest": payout_digest(values),
        },
        snapshot=snapshot,
        key=key,
    )
    values["last_event_sequence"] = head.sequence
    values["last_event_hash"] = head.hash
    if not decision.auto_approved:
        return [created]
    # Every payout that becomes approved emits payout.approved, so a helpdesk can react to
    # that one event whether a person or the policy approved it.
    approval = transitions.move(
        transitions.APPROVE,
        {**values, "status": PayoutStatus.PENDING_APPROVAL.value},
        PayoutStatus.APPROVED,
        actor=SYSTEM_ACTOR,
        data={
            "auto_approved": True,
            "policy_version": decision.version,
            "reasons": [r.as_json() for r in decision.reasons],
            "approvals": [],
            "release_required": decision.release_required,
        },
        at=values["created_at"],
        present=lambda _after: snapshot,
        key=key,
        held=decision.release_required,
    )
    # The row was created approved and due now, as the move plans it; only the head moves on.
    values["last_event_sequence"] = approval.head.sequence
    values["last_event_hash"] = approval.head.hash
    return [created, approval.event]


def _payout_facts(
    request: PayoutRequest, facts: RequestFacts, *, open_anomaly: bool = False
) -> PayoutFacts:
    return PayoutFacts(
        amount_minor=request.amount_minor,
        currency=request.currency,
        reason=request.reason,
        requester_id=request.requester_id,
        requester_role=facts.requester_role,
        requester_active=facts.requester_role is not None and not facts.requester_disabled,
        requester_daily_total_minor=facts.requester_daily_total_minor,
        ticket_total_minor=facts.ticket_total_minor,
        recipient_daily_count=facts.recipient_daily_count,
        recipient_daily_total_minor=facts.recipient_daily_total_minor,
        recipient_blocked=facts.recipient_blocked,
        duplicate_suspected=facts.duplicate_suspected,
        recipient_warnings=request.recipient_warnings,
        requester_verified=request.requester_verified,
        disclose_totals=request.disclose_totals,
        disclose_requester=request.disclose_requester,
        open_anomaly=open_anomaly,
    )


class _RowView:
    """Attribute access over the values of a payout being inserted (for the presenter)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        if name == "metadata_":
            name = "metadata"
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None
