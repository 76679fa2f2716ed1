"""Payout statuses and the only arrows they may move along (API.md, Statuses)."""

from __future__ import annotations

from enum import StrEnum


class PayoutStatus(StrEnum):
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NEEDS_REVIEW = "needs_review"
    REJECTED = "rejected"
    CANCELED = "canceled"


S = PayoutStatus

ALLOWED_TRANSITIONS: dict[PayoutStatus, frozenset[PayoutStatus]] = {
    S.PENDING_APPROVAL: frozenset({S.APPROVED, S.REJECTED, S.CANCELED}),
    S.APPROVED: frozenset({S.PROCESSING, S.CANCELED}),
    S.PROCESSING: frozenset({S.SUCCEEDED, S.FAILED, S.NEEDS_REVIEW}),
    S.NEEDS_REVIEW: frozenset({S.SUCCEEDED, S.FAILED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.REJECTED: frozenset(),
    S.CANCELED: frozenset(),
}

TERMINAL: frozenset[PayoutStatus] = frozenset({S.SUCCEEDED, S.FAILED, S.REJECTED, S.CANCELED})

# Payouts that no longer count towards any limit: the money will never move.
NOT_COUNTED_FOR_LIMITS: frozenset[PayoutStatus] = frozenset({S.REJECTED, S.CANCELED, S.FAILED})

EVENT_FOR_STATUS: dict[PayoutStatus, str] = {
    S.APPROVED: "payout.approved",
    S.REJECTED: "payout.rejected",
    S.CANCELED: "payout.canceled",
    S.PROCESSING: "payout.processing",
    S.SUCCEEDED: "payout.succeeded",
    S.FAILED: "payout.failed",
    S.NEEDS_REVIEW: "payout.needs_review",
}

# A move into one of these statuses takes the payout out of its limit counters (every arrow
# into them starts from a counted status, checked in transitions.py): its event says so.
RELEASING_EVENT_TYPES: frozenset[str] = frozenset(
    EVENT_FOR_STATUS[s] for s in NOT_COUNTED_FOR_LIMITS
)

# Chained events that do not move the status (transitions.note): a person's release of a
# payout that waited for one, a person's look at its full recipient, and its full recipient
# written to a bank file (batches/service.py).
RELEASED_EVENT = "payout.released"
RECIPIENT_REVEALED_EVENT = "payout.recipient_revealed"
EXPORTED_EVENT = "payout.exported"
NOTE_EVENT_TYPES: frozenset[str] = frozenset(
    {RELEASED_EVENT, RECIPIENT_REVEALED_EVENT, EXPORTED_EVENT}
)
# Events kept in the audit chain only, never delivered to helpdesk webhooks (who looked at or
# exported an account is for the auditors, not for the ticket system).
AUDIT_ONLY_EVENT_TYPES: frozenset[str] = frozenset({RECIPIENT_REVEALED_EVENT, EXPORTED_EVENT})

EVENT_TYPES: tuple[str, ...] = (
    "payout.created",
    *EVENT_FOR_STATUS.values(),
    RELEASED_EVENT,
    RECIPIENT_REVEALED_EVENT,
    EXPORTED_EVENT,
)
