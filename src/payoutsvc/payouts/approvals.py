"""Human decisions on a payout: approve, reject, resolve. Services never commit.

Every decision first row-locks the payout (PostgreSQL; SQLite serialises writers anyway), then
reads approvals and writes, so two approvals racing on one payout are counted one after the
other; the status change itself is PayoutService.transition's conditional update, so an
approve racing a cancel ends in one consistent history either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.base import utcnow
from payoutsvc.errors import (
    AlreadyApproved,
    ApprovalLimitExceeded,
    SelfApprovalForbidden,
    not_found,
)
from payoutsvc.messages import message
from payoutsvc.money import format_money
from payoutsvc.operators.models import Operator
from payoutsvc.operators.service import OperatorService
from payoutsvc.payouts import transitions
from payoutsvc.payouts.acting import Acting, Credential, deciding_operator
from payoutsvc.payouts.events import sealed
from payoutsvc.payouts.models import Payout, PayoutApproval
from payoutsvc.payouts.presenter import approval_json, payout_json
from payoutsvc.payouts.repository import PayoutRepository
from payoutsvc.payouts.service import PayoutService
from payoutsvc.payouts.status import PayoutStatus
from payoutsvc.policy.document import Policy
from payoutsvc.policy.engine import approver_limit_allows
from payoutsvc.policy.service import PolicyService
from payoutsvc.runtime import Runtime

log = structlog.get_logger(__name__)

APPROVED = "approved"
REJECTED = "rejected"
# The failure code of a payout an operator marked failed after reviewing it.
MANUAL_REVIEW_FAILED = "manual_review_failed"


class ApprovalService:
    def __init__(self, session: AsyncSession, runtime: Runtime) -> None:
        self.session = session
        self.runtime = runtime
        self.repo = PayoutRepository(session)
        self.payouts = PayoutService(session, runtime)
        self.operators = OperatorService(session)

    async def _decider(
        self, credential: Credential, named: str | None
    ) -> tuple[Operator, Acting, Policy]:
        """The active operator taking a decision, as the key and the current policy allow
        (see payouts/acting.py), checked before the payout is even looked up."""
        policy = await PolicyService.of(self.session, self.runtime).current()
        acting = deciding_operator(credential, named, policy)
        operator = await self.operators.require_active(
            acting.operator_id, discreet=acting.discreet_for(credential)
        )
        return operator, acting, policy

    async def require_approver(self, credential: Credential, named: str | None) -> None:
        """403 when the acting operator may approve no payout at all (the same checks and
        codes as :meth:`approve`: the key, an active operator, a role with approval rights):
        what a batch approve asks before its payouts, whose own refusals stay per payout."""
        operator, acting, policy = await self._decider(credential, named)
        limits = policy.role(operator.role)
        if limits is not None and limits.approve_max:
            return
        if acting.discreet_for(credential):
            raise ApprovalLimitExceeded(message("approver_rights_hidden", operator=operator.id))
        raise ApprovalLimitExceeded(
            message(
                "approver_rights_none",
                operator=operator.id,
                role=str(operator.role),
                version=policy.version,
            )
        )

    async def _pending_payout(
        self, payout_id: str, visible_integration: str | None, arrow: transitions.Arrow
    ) -> Payout:
        """The payout, row-locked, while it still awaits a decision (409 otherwise)."""
        payout = await self.repo.get_for_update(payout_id, visible_integration)
        if payout is None:
            raise not_found("Payout", payout_id)
        arrow.require(payout_id, payout.status)
        return payout

    async def approve(
        self,
        credential: Credential,
        payout_id: str,
        visible_integration: str | None,
        named: str | None,
        comment: str | None,
    ) -> dict[str, Any]:
        """Record the acting operator's approval; at ``required_approvals`` the payout becomes
        ``approved`` (the executor's job). The approver's role and limits are the current
        policy's: a role change applies to later decisions only."""
        operator, acting, policy = await self._decider(credential, named)
        payout = await self._pending_payout(payout_id, visible_integration, transitions.APPROVE)
        _require_may_approve(operator, payout, policy, discreet=acting.discreet_for(credential))
        approvals = (await self.repo.approvals_for([payout.id]))[payout.id]
        if any(a.operator_id == operator.id for a in approvals):
            raise AlreadyApproved(
                message(
                    "already_approved", operator=operator.id, required=payout.required_approvals
                )
            )
        now = utcnow()
        await self.repo.insert_approval(
            {
                "payout_id": payout.id,
                "operator_id": operator.id,
                "decision": APPROVED,
                "comment": comment,
                "at": now,
            }
        )
        approvals = (await self.repo.approvals_for([payout.id]))[payout.id]
        approved = [a for a in approvals if a.decision == APPROVED]
        log.info(
            "payout.approval_recorded",
            payout_id=payout.id,
            operator_id=operator.id,
            approvals=len(approved),
            required=payout.required_approvals,
        )
        if len(approved) < payout.required_approvals:
            # Recorded in payout_approvals (shown in `approvals`); the audit chain gets the
            # full list in the payout.approved (or .rejected/.canceled) event that ends it.
            await self.repo.touch(payout.id, now)
            payout.updated_at = now
            return payout_json(payout, approvals)
        held = await self._release_required(payout)
        return await self.payouts.transition(
            payout.id,
            visible_integration,
            transitions.APPROVE,
            PayoutStatus.APPROVED,
            locked=payout,
            actor=operator.id,
            event_data=_approval_data(operator, payout, policy, comment, approvals, held),
            # A row whose release_required was cleared gets it back, so the release can follow.
            values={"release_required": True} if held and not payout.release_required else None,
            held=held,
        )

    async def _release_required(self, payout: Payout) -> bool:
        """Whether the approved payout must wait for a manual release: as its create decided
        and sealed in ``payout.created``, not only as the row says now, so clearing the row's
        ``release_required`` while the payout waits for approval does not pay it unreleased.
        An opening event that is missing or does not verify counts as requiring one (a person
        then looks before it is paid)."""
        if payout.release_required:
            return True
        opening = await self.repo.opening_event(payout.id)
        if opening is None or not sealed(opening, self.runtime.audit_key):
            return True
        data = opening.data if isinstance(opening.data, dict) else {}
        return data.get("release_required") is True

    async def reject(
        self,
        credential: Credential,
        payout_id: str,
        visible_integration: str | None,
        named: str | None,
        reason: str | None,
    ) -> dict[str, Any]:
        """``pending_approval`` → ``rejected``. Money never moves, so any active operator may
        reject (the key's ``payouts:approve`` scope and its operator are the gate), even after
        approving."""
        operator, _acting, _policy = await self._decider(credential, named)
        payout = await self._pending_payout(payout_id, visible_integration, transitions.REJECT)
        approvals = (await self.repo.approvals_for([payout.id]))[payout.id]
        if not any(a.operator_id == operator.id for a in approvals):
            # One row per operator: an approver who now rejects keeps their earlier row, and
            # the rejection is in the payout.rejected event.
            await self.repo.insert_approval(
                {
                    "payout_id": payout.id,
                    "operator_id": operator.id,
                    "decision": REJECTED,
                    "comment": reason,
                    "at": utcnow(),
                }
            )
            approvals = (await self.repo.approvals_for([payout.id]))[payout.id]
        return await self.payouts.transition(
            payout.id,
            visible_integration,
            transitions.REJECT,
            PayoutStatus.REJECTED,
            locked=payout,
            actor=operator.id,
            event_data={"reason": reason, "approvals": [approval_json(a) for a in approvals]},
        )

    async def resolve(
        self,
        credential: Credential,
        payout_id: str,
        visible_integration: str | None,
        named: str | None,
        outcome: Literal["succeeded", "failed"],
        comment: str | None,
    ) -> dict[str, Any]:
        """``needs_review`` → ``succeeded`` | ``failed``, after a person checked with the
        gateway what really happened."""
        operator, _acting, _policy = await self._decider(credential, named)
        target = PayoutStatus(outcome)
        values: dict[str, Any] = {}
        if target is PayoutStatus.SUCCEEDED:
            values.update(failure_code=None, failure_message=None)
        else:
            values.update(
                failure_code=MANUAL_REVIEW_FAILED,
                failure_message=comment or "Marked failed after manual review.",
            )
        return await self.payouts.transition(
            payout_id,
            visible_integration,
            transitions.RESOLVE,
            target,
            actor=operator.id,
            event_data={"resolution": outcome, "comment": comment},
            values=values,
        )


def _approval_data(
    operator: Operator,
    payout: Payout,
    policy: Policy,
    comment: str | None,
    approvals: Sequence[PayoutApproval],
    release_required: bool,
) -> dict[str, Any]:
    """What the payout.approved event of a person's approval records (audit verify and the
    executor's evidence check read it): who approved under which policy, every approval, and
    whether a manual release must follow."""
    return {
        "comment": comment,
        "approver_role": operator.role,
        "policy_version": policy.version,
        "required_approvals": payout.required_approvals,
        "approvals": [approval_json(a) for a in approvals],
        "release_required": release_required,
    }


def _require_may_approve(
    operator: Operator, payout: Payout, policy: Policy, *, discreet: bool
) -> None:
    """Four eyes (never one's own request) and the approver's role limit under the current
    policy; 403 otherwise. ``discreet``: the caller does not prove the approver, so the
    refusal does not tell their role or limit."""
    if payout.requested_by == operator.id:
        raise SelfApprovalForbidden(message("self_approval_forbidden", operator=operator.id))
    if approver_limit_allows(policy, operator.role, payout.amount_minor, payout.currency):
        return
    if discreet:
        raise ApprovalLimitExceeded(message("approval_limit_hidden", operator=operator.id))
    limits = policy.role(operator.role)
    limit = (
        None
        if limits is None or limits.approve_max is None
        else limits.approve_max.get(payout.currency)
    )
    facts: dict[str, str | int] = {
        "operator": operator.id,
        "role": str(operator.role),
        "version": policy.version,
        "amount": format_money(payout.amount_minor, payout.currency),
    }
    if limit is None:
        raise ApprovalLimitExceeded(message("approval_rights_none", **facts))
    limit_text = format_money(limit, payout.currency)
    raise ApprovalLimitExceeded(message("approval_limit", limit=limit_text, **facts))
