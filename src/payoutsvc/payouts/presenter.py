"""The payout as clients, logs and webhooks see it: masked, amounts as decimal strings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from payoutsvc.money import format_amount
from payoutsvc.payouts.models import PayoutApproval, PayoutEvent
from payoutsvc.timestamps import rfc3339


def approval_json(approval: PayoutApproval | Mapping[str, Any]) -> dict[str, Any]:
    values: Mapping[str, Any] = (
        approval
        if isinstance(approval, Mapping)
        else {k: getattr(approval, k) for k in ("operator_id", "decision", "comment", "at")}
    )
    return {
        "operator_id": values["operator_id"],
        "decision": values["decision"],
        "comment": values["comment"],
        "at": rfc3339(values["at"]),
    }


def payout_json(
    payout: Any, approvals: Sequence[PayoutApproval | Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """``payout`` is an ORM object or a returned row with the payouts columns."""
    failure = (
        {"code": payout.failure_code, "message": payout.failure_message}
        if payout.failure_code
        else None
    )
    metadata = payout.metadata if isinstance(getattr(payout, "metadata", None), dict) else None
    if metadata is None:
        metadata = payout.metadata_
    return {
        "id": payout.id,
        "status": payout.status,
        "ticket": {
            "system": payout.ticket_system,
            "id": payout.ticket_id,
            "url": payout.ticket_url,
        },
        "reason": payout.reason,
        "amount": format_amount(payout.amount_minor, payout.currency),
        "amount_minor": payout.amount_minor,
        "currency": payout.currency,
        "recipient": payout.recipient_public,
        "requested_by": payout.requested_by,
        "description": payout.description,
        "metadata": metadata,
        "required_approvals": payout.required_approvals,
        "approvals": [approval_json(a) for a in approvals],
        "policy": payout.policy,
        "gateway": payout.gateway,
        "gateway_reference": payout.gateway_reference,
        "gateway_status": payout.gateway_status,
        "gateway_details": payout.gateway_details,
        "gateway_hold_until": rfc3339(payout.gateway_hold_until)
        if payout.gateway_hold_until
        else None,
        "attempts": payout.attempts,
        "failure": failure,
        "release": {
            "required": bool(payout.release_required),
            "released_by": payout.released_by,
            "released_at": rfc3339(payout.released_at) if payout.released_at else None,
        },
        "created_at": rfc3339(payout.created_at),
        "updated_at": rfc3339(payout.updated_at),
    }


def payout_json_of(
    payout: Mapping[str, Any], approvals: Sequence[PayoutApproval | Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """:func:`payout_json` for the payout's columns as a mapping (a returned row, the
    values a transition is about to write)."""
    return payout_json(SimpleNamespace(**payout), approvals)


def event_json(event: PayoutEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "sequence": event.sequence,
        "actor": event.actor,
        "at": rfc3339(event.at),
        "data": event.data,
    }
