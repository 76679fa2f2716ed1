"""Finance's actions on a payout (API.md, "Finance operations"): release a payout that waits
for a person, record what was paid through a bank portal (the ``manual`` gateway), and look at
the full recipient to pay it. Services never commit.

Release and record-payment are decisions: the acting operator is settled by
:func:`~payoutsvc.payouts.acting.deciding_operator` (operator-bound keys,
``approvals.require_operator_key``) exactly as for approve, must be active and have a role
with ``can_release`` in the current policy. The release and the reveal do not move the status:
they are chained events written by :func:`~payoutsvc.payouts.transitions.note`;
record-payment is a status change (``transitions.RECORD_PAYMENT``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.base import utcnow
from payoutsvc.errors import (
    FieldError,
    InvalidStatusTransition,
    PayoutInFlight,
    ReleaseNotAllowed,
    SelfReleaseForbidden,
    not_found,
    validation_failed,
)
from payoutsvc.gateways.manual import (
    AWAITING_MANUAL_PAYMENT,
    MANUAL_PAYMENT_FAILED,
    PAID_MANUALLY,
)
from payoutsvc.gateways.manual import NAME as MANUAL
from payoutsvc.operators.models import Operator
from payoutsvc.operators.service import OperatorService
from payoutsvc.payouts import transitions
from payoutsvc.payouts.acting import Acting, Credential, deciding_operator
from payoutsvc.payouts.events import insert_hashed_events
from payoutsvc.payouts.models import Payout
from payoutsvc.payouts.presenter import payout_json_of
from payoutsvc.payouts.repository import PayoutRepository
from payoutsvc.payouts.service import PayoutService
from payoutsvc.payouts.status import RECIPIENT_REVEALED_EVENT, RELEASED_EVENT, PayoutStatus
from payoutsvc.policy.service import PolicyService
from payoutsvc.recipients.storage import unseal
from payoutsvc.runtime import Runtime
from payoutsvc.timestamps import rfc3339
from payoutsvc.webhooks.outbox import endpoint_presence

log = structlog.get_logger(__name__)


class FinanceService:
    def __init__(self, session: AsyncSession, runtime: Runtime) -> None:
        self.session = session
        self.runtime = runtime
        self.repo = PayoutRepository(session)
        self.payouts = PayoutService(session, runtime)

    async def require_releaser(self, credential: Credential, named: str | None) -> None:
        """403 (``release_not_allowed``, ``operator_key_required``, ...) when the acting
        operator may release no payout at all, as :meth:`release` would answer: what a batch
        release asks before its payouts, whose own refusals stay per payout."""
        await self._releaser(credential, named)

    async def _releaser(self, credential: Credential, named: str | None) -> tuple[Operator, Acting]:
        """The active operator releasing or recording, whose role may release (403
        ``release_not_allowed`` otherwise), as the key and the current policy allow."""
        policy = await PolicyService.of(self.session, self.runtime).current()
        acting = deciding_operator(credential, named, policy)
        operator = await OperatorService(self.session).require_active(
            acting.operator_id, discreet=acting.discreet_for(credential)
        )
        role = policy.role(operator.role)
        if role is None or not role.can_release:
            if acting.discreet_for(credential):
                raise ReleaseNotAllowed(f"{operator.id} may not release payouts.")
            raise ReleaseNotAllowed(
                f"{operator.id} ({operator.role}) may not release payouts under policy version "
                f"{policy.version}: the role has no can_release."
            )
        return operator, acting

    async def _locked(self, payout_id: str, visible_integration: str | None) -> Payout:
        payout = await self.repo.get_for_update(payout_id, visible_integration)
        if payout is None:
            raise not_found("Payout", payout_id)
        return payout

    async def _write_note(self, payout: Payout, planned: transitions.Move) -> dict[str, Any]:
        if not await self.repo.apply_move(planned):  # row-locked: only a stale row gets here
            raise InvalidStatusTransition(f"{payout.id} changed meanwhile; retry.")
        await insert_hashed_events(
            self.session, [(planned.event, planned.head.hash)], endpoint_presence(self.runtime)
        )
        return planned.event.snapshot()

    # -- release ---------------------------------------------------------------------------
    async def release(
        self,
        credential: Credential,
        payout_id: str,
        visible_integration: str | None,
        named: str | None,
        comment: str | None,
    ) -> dict[str, Any]:
        """Release an approved payout that waits for a person: it becomes the executor's job
        at once. 409 ``invalid_status_transition`` for any payout not waiting (another
        status, no release required, released already); 403 ``self_release_forbidden`` for
        its requester. What a batch release calls per payout."""
        operator, acting = await self._releaser(credential, named)
        payout = await self._locked(payout_id, visible_integration)
        if payout.status != PayoutStatus.APPROVED.value:
            raise InvalidStatusTransition(
                f"Cannot release {payout.id}: its status is {payout.status!r}."
            )
        if not payout.release_required or payout.released_at is not None:
            state = "was released already" if payout.released_at else "needs no release"
            raise InvalidStatusTransition(f"Cannot release {payout.id}: it {state}.")
        if payout.requested_by == operator.id:
            raise SelfReleaseForbidden(
                f"{operator.id} requested this payout and cannot release it; another operator must."
            )
        now = utcnow()
        approvals = (await self.repo.approvals_for([payout.id]))[payout.id]
        planned = transitions.note(
            self.repo.columns_of(payout),
            RELEASED_EVENT,
            actor=operator.id,
            data={
                "comment": comment,
                "releaser_role": operator.role,
                "operator_verified": acting.verified,
            },
            at=now,
            present=functools.partial(payout_json_of, approvals=approvals),
            key=self.runtime.audit_key,
            values={"released_by": operator.id, "released_at": now},
            due=True,
        )
        snapshot = await self._write_note(payout, planned)
        log.info("payout.released", payout_id=payout.id, operator_id=operator.id)
        return snapshot

    # -- offline payment -------------------------------------------------------------------
    async def record_payment(
        self,
        credential: Credential,
        payout_id: str,
        visible_integration: str | None,
        named: str | None,
        result: PaymentResult,
    ) -> dict[str, Any]:
        """Settle a ``manual`` payout waiting for its offline payment: ``succeeded`` with the
        bank's reference (its ``gateway_reference``) or ``failed`` with a failure code. 409
        for any other payout, or one already recorded."""
        result.check()
        operator, acting = await self._releaser(credential, named)
        payout = await self._locked(payout_id, visible_integration)
        if not (
            payout.gateway == MANUAL
            and payout.status == PayoutStatus.PROCESSING.value
            and payout.gateway_status == AWAITING_MANUAL_PAYMENT
            and payout.locked_by is None
        ):
            raise InvalidStatusTransition(
                f"Cannot record a payment for {payout.id}: it is not a manual payout waiting "
                f"for its payment (status {payout.status!r}, gateway {payout.gateway!r}, "
                f"gateway_status {payout.gateway_status!r})."
            )
        return await self.payouts.transition(
            payout.id,
            visible_integration,
            transitions.RECORD_PAYMENT,
            PayoutStatus(result.outcome),
            locked=payout,
            actor=operator.id,
            event_data={
                "outcome": result.outcome,
                "reference": result.reference,
                "comment": result.comment,
                "operator_verified": acting.verified,
            },
            values=result.columns(),
        )

    # -- reveal ----------------------------------------------------------------------------
    async def reveal_recipient(
        self, credential: Credential, key_id: str, payout_id: str, visible_integration: str | None
    ) -> dict[str, Any]:
        """The full recipient, recorded as a ``payout.recipient_revealed`` event naming the
        key and, for an operator-bound key, its operator (the event's actor). The status
        does not change; 409 ``payout_in_flight`` while the executor is sending it (its
        finishing write must find the chain as it claimed it)."""
        if credential.bound_operator is not None:
            await OperatorService(self.session).require_active(
                credential.bound_operator, discreet=False
            )
        payout = await self._locked(payout_id, visible_integration)
        now = utcnow()
        if payout.locked_by is not None and (payout.locked_until or now) > now:
            raise PayoutInFlight(
                f"{payout.id} is being sent to its gateway right now; retry in a few seconds.",
                headers={"Retry-After": "5"},
            )
        recipient = unseal(self.runtime.cipher, payout.recipient_encrypted, payout.id)
        actor = credential.bound_operator or f"key:{key_id}"
        planned = transitions.note(
            self.repo.columns_of(payout),
            RECIPIENT_REVEALED_EVENT,
            actor=actor,
            data={"api_key_id": key_id, "operator_id": credential.bound_operator},
            at=now,
            present=payout_json_of,
            key=self.runtime.audit_key,
        )
        await self._write_note(payout, planned)
        log.info("payout.recipient_revealed", payout_id=payout.id, actor=actor)
        return {
            "payout_id": payout.id,
            "recipient": recipient,
            "revealed_by": actor,
            "revealed_at": rfc3339(now),
        }


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """What finance reports about an offline payment (the record-payment body)."""

    outcome: Literal["succeeded", "failed"]
    reference: str | None
    failure_code: str | None
    comment: str | None

    def check(self) -> None:
        """422 ``validation_failed`` unless the fields the outcome needs are there."""
        if self.outcome == "succeeded" and not self.reference:
            raise validation_failed(
                [FieldError("reference", "required", "A succeeded payment needs its reference.")]
            )
        if self.outcome == "failed" and not self.failure_code:
            raise validation_failed(
                [FieldError("failure_code", "required", "A failed payment needs a failure code.")]
            )

    def columns(self) -> dict[str, Any]:
        if self.outcome == "succeeded":
            return {
                "gateway_reference": self.reference,
                "gateway_status": PAID_MANUALLY,
                "failure_code": None,
                "failure_message": None,
            }
        return {
            "gateway_reference": self.reference,
            "gateway_status": MANUAL_PAYMENT_FAILED,
            "failure_code": self.failure_code,
            "failure_message": self.comment or "The offline payment failed.",
        }
