"""Applying verified gateway notices to payouts.

A notice can only finish a payout that is still ``processing`` (or ``needs_review``, which
the provider's verified word settles as an operator would): the same conditional status
change as everywhere else (→ succeeded/failed), so a duplicate finds the payout
already there, a stale or contradicting one finds it elsewhere, and neither changes
anything; a payout never moves backwards. Every notice is recorded as a gateway call of the
payout (operation ``callback``). If an executor holds the payout's lease meanwhile, its own
finishing write sees the new event and leaves the payout alone.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.base import utcnow
from payoutsvc.errors import InvalidStatusTransition
from payoutsvc.executor.repository import ExecutorRepository
from payoutsvc.gateways.base import CallbackNotice, TransferState
from payoutsvc.ids import new_id
from payoutsvc.metrics import GATEWAY_CALLBACK_CONTRADICTIONS, GATEWAY_CALLBACKS
from payoutsvc.payouts import transitions
from payoutsvc.payouts.service import PayoutService
from payoutsvc.payouts.status import TERMINAL, PayoutStatus
from payoutsvc.runtime import Runtime

log = structlog.get_logger(__name__)


class CallbackResult(StrEnum):
    APPLIED = "applied"  # the payout moved to the notice's final status
    RECORDED = "recorded"  # informational (still pending): recorded, nothing to change
    DUPLICATE = "duplicate"  # the payout already has this result
    STALE = "stale"  # the payout is elsewhere (finished otherwise, or not yet sent)
    UNKNOWN_TRANSFER = "unknown_transfer"  # no payout of ours under this key


_FINAL = {
    TransferState.SUCCEEDED: PayoutStatus.SUCCEEDED,
    TransferState.FAILED: PayoutStatus.FAILED,
}


class CallbackService:
    def __init__(self, session: AsyncSession, runtime: Runtime) -> None:
        self.session = session
        self.runtime = runtime
        self.repo = ExecutorRepository(session)

    async def apply(self, gateway: str, notice: CallbackNotice) -> CallbackResult:
        result = await self._apply(gateway, notice)
        GATEWAY_CALLBACKS.labels(gateway, result.value).inc()
        log.info(
            "gateway.callback",
            gateway=gateway,
            notice_id=notice.notice_id,
            state=notice.result.state.value,
            result=result.value,
        )
        return result

    async def _apply(self, gateway: str, notice: CallbackNotice) -> CallbackResult:
        payout = await self.repo.by_gateway_key(gateway, notice.idempotency_key)
        if payout is None:
            return CallbackResult.UNKNOWN_TRANSFER
        found = notice.result
        await self.repo.insert_attempts([_attempt_row(gateway, payout, notice)])
        target = _FINAL.get(found.state)
        if target is None:
            return CallbackResult.RECORDED
        if payout.status == target.value:
            return CallbackResult.DUPLICATE
        if payout.status not in transitions.SETTLE.sources:
            if PayoutStatus(payout.status) in TERMINAL:
                _report_contradiction(gateway, payout, target, notice)
            return CallbackResult.STALE
        values, event_data = _settlement(payout, target, notice)
        try:
            await PayoutService(self.session, self.runtime).transition(
                payout.id,
                None,
                transitions.SETTLE,
                target,
                actor=f"gateway:{gateway}",
                event_data=event_data,
                values=values,
            )
        except InvalidStatusTransition:
            # Finished by someone else between our read and the conditional update.
            current = await self.repo.by_gateway_key(gateway, notice.idempotency_key)
            if current is not None and current.status == target.value:
                return CallbackResult.DUPLICATE
            return CallbackResult.STALE
        return CallbackResult.APPLIED


def _attempt_row(gateway: str, payout: Row[Any], notice: CallbackNotice) -> dict[str, Any]:
    """A notice, recorded as one of the payout's gateway calls (operation ``callback``)."""
    found = notice.result
    now = utcnow()
    return {
        "id": new_id("att", int(now.timestamp() * 1000)),
        "payout_id": payout.id,
        "attempt": payout.attempts,
        "operation": "callback",
        "gateway": gateway,
        "worker": None,
        "request": {"notice_id": notice.notice_id, "idempotency_key": notice.idempotency_key},
        "outcome": found.state.value,
        "error": found.failure_message,
        "gateway_status": found.gateway_status,
        "gateway_reference": found.reference,
        "latency_ms": 0.0,
        "started_at": now,
    }


def _settlement(
    payout: Row[Any], target: PayoutStatus, notice: CallbackNotice
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The columns a notice settles a payout with, and what its event says."""
    found = notice.result
    values: dict[str, Any] = {
        "gateway_reference": found.reference or payout.gateway_reference,
        "gateway_status": found.gateway_status or payout.gateway_status,
        "gateway_hold_until": None,
    }
    if found.details:
        values["gateway_details"] = dict(found.details)
    event_data: dict[str, Any] = {"source": "gateway_callback", "notice_id": notice.notice_id}
    if target is PayoutStatus.FAILED:
        values["failure_code"] = found.failure_code or "gateway_declined"
        values["failure_message"] = found.failure_message or "The gateway declined it."
        event_data["failure"] = {
            "code": values["failure_code"],
            "message": values["failure_message"],
        }
    else:
        event_data["gateway_reference"] = values["gateway_reference"]
    return values, event_data


def _report_contradiction(
    gateway: str, payout: Row[Any], target: PayoutStatus, notice: CallbackNotice
) -> None:
    """The provider's verified word contradicts a final status (paid there, failed or
    canceled here; or the reverse). Statuses never move back, so a person must reconcile
    it, before anyone pays the customer again."""
    GATEWAY_CALLBACK_CONTRADICTIONS.labels(gateway).inc()
    log.error(
        "gateway.callback.contradicts_payout",
        gateway=gateway,
        payout_id=payout.id,
        payout_status=payout.status,
        notice_status=target.value,
        notice_id=notice.notice_id,
    )
