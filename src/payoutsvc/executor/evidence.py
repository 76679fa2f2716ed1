"""The executor pays only with evidence: proof, from the payout's own keyed event chain, of
how it became payable (API.md, Statuses).

A payouts row is just a row: anyone who can write the database can set ``status`` to
``approved``. What they cannot write is an event whose HMAC verifies under the audit key,
which the database never holds. So before a payout is sent, its newest events must read, from
the chain head backwards and each one keyed and intact:

* ``approved`` payout: the head is the ``payout.approved`` event;
* ``processing`` payout (a retry, or one whose worker died): the head is the executor's
  ``payout.processing`` claim, and the event it chains to is the ``payout.approved`` event;

and that approval must satisfy every :data:`REQUIREMENTS` entry: the policy's auto-approval,
or as many distinct approvers as its decision required, none of them the requester. Payouts
that fail go to ``needs_review`` with failure code ``approval_evidence_missing`` and nothing
is sent (executor/service.py).

Cost: the caller loads only the approval and claim events of the batch (one query, at most
two rows per payout) and this module recomputes one or two HMACs per payout; it never walks
the whole chain (``payoutsvc audit verify`` does that).

A manual release (the policy's ``release`` section): when the approval event (or the row)
says ``release_required``, the segment must also hold a keyed ``payout.released`` event
between the approval and the claim, by an operator other than the requester
(:func:`_released_if_required`). Events that do not move the status (a release, a look at the
recipient: ``NOTE_EVENT_TYPES``) may sit anywhere in the segment; the claim is the newest
event that is not one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from payoutsvc.payouts.events import sealed
from payoutsvc.payouts.status import (
    EXPORTED_EVENT,
    NOTE_EVENT_TYPES,
    RECIPIENT_REVEALED_EVENT,
    RELEASED_EVENT,
    PayoutStatus,
)

__all__ = [
    "EVIDENCE_MISSING",
    "REQUIREMENTS",
    "SEGMENT_TYPES",
    "approval_problem",
    "refusals",
]

EVIDENCE_MISSING = "approval_evidence_missing"
APPROVAL_EVENT = "payout.approved"
CLAIM_EVENT = "payout.processing"
# The event types between the approval and the chain head of a payable payout, approval
# included: the only events the caller loads.
SEGMENT_TYPES: tuple[str, ...] = (
    APPROVAL_EVENT,
    RELEASED_EVENT,
    RECIPIENT_REVEALED_EVENT,
    EXPORTED_EVENT,
    CLAIM_EVENT,
)
# Who writes which evidence (payouts.service.SYSTEM_ACTOR, executor.service.ACTOR).
POLICY_ACTOR = "system"
EXECUTOR_ACTOR = "executor"
APPROVED = PayoutStatus.APPROVED.value
PROCESSING = PayoutStatus.PROCESSING.value


class ChainEvent(Protocol):
    """The columns of a payout_events row the check reads (an ORM row or a Core row)."""

    @property
    def id(self) -> str: ...
    @property
    def payout_id(self) -> str: ...
    @property
    def sequence(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def actor(self) -> str: ...
    @property
    def at(self) -> Any: ...
    @property
    def data(self) -> Any: ...
    @property
    def prev_hash(self) -> str: ...
    @property
    def hash(self) -> str: ...
    @property
    def hash_scheme(self) -> str: ...


# One rule a payable payout's approval must meet: (payout columns, the approval event, the
# segment head-first) -> why not, or None. Issue 15 appends the release rule here.
Requirement = Callable[[Mapping[str, Any], ChainEvent, Sequence[ChainEvent]], str | None]


def approval_problem(
    data: Mapping[str, Any], actor: str, requested_by: str, required: int
) -> str | None:
    """Why a ``payout.approved`` event's content does not show a valid approval, or None:
    the policy's auto-approval, or ``required`` (or the event's own ``required_approvals``,
    whichever is more) distinct approvers, the last of them its actor, none the requester.
    Shared with ``payoutsvc audit verify``."""
    if data.get("auto_approved") is True:
        if actor != POLICY_ACTOR:
            return f"an auto-approval recorded by {actor!r} instead of the policy"
        return None
    recorded = data.get("approvals")
    approvers = {
        str(a.get("operator_id"))
        for a in (recorded if isinstance(recorded, list) else [])
        if isinstance(a, dict) and a.get("decision") == "approved"
    }
    if requested_by in approvers:
        return f"approved by its own requester {requested_by!r}"
    needed = max(required, _int(data.get("required_approvals")))
    if len(approvers) < max(needed, 1):
        return f"{len(approvers)} distinct approval(s) recorded, {max(needed, 1)} required"
    if actor not in approvers:
        return f"the approving event's actor {actor!r} is not among its recorded approvers"
    return None


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _approvals_met(
    payout: Mapping[str, Any], approval: ChainEvent, _segment: Sequence[ChainEvent]
) -> str | None:
    data = approval.data if isinstance(approval.data, dict) else {}
    return approval_problem(
        data, approval.actor, str(payout["requested_by"]), int(payout["required_approvals"])
    )


def _released_if_required(
    payout: Mapping[str, Any], approval: ChainEvent, segment: Sequence[ChainEvent]
) -> str | None:
    """A payout whose decision required a manual release shows one: a ``payout.released``
    event after the approval and before any claim, not by the requester."""
    data = approval.data if isinstance(approval.data, dict) else {}
    if data.get("release_required") is not True and not payout.get("release_required"):
        return None
    before_claim = segment
    for index, event in enumerate(segment):
        if event.type == CLAIM_EVENT:
            before_claim = segment[index + 1 :]
            break
    releases = [e for e in before_claim if e.type == RELEASED_EVENT]
    if not releases:
        return "its decision required a manual release and none is recorded"
    if any(e.actor == payout["requested_by"] for e in releases):
        return f"released by its own requester {payout['requested_by']!r}"
    return None


REQUIREMENTS: tuple[Requirement, ...] = (_approvals_met, _released_if_required)


def refusals(
    payouts: Iterable[Mapping[str, Any]],
    events: Mapping[str, Sequence[ChainEvent]],
    key: bytes,
) -> dict[str, str]:
    """Payout id -> why it must not be paid, for each claimed payout (its columns as read
    before the claim moved it) whose chain does not prove it payable. ``events`` holds each
    payout's events of :data:`SEGMENT_TYPES`."""
    refused: dict[str, str] = {}
    for payout in payouts:
        why = _why_refused(payout, events.get(str(payout["id"]), ()), key)
        if why is not None:
            refused[str(payout["id"])] = why
    return refused


def _segment(payout: Mapping[str, Any], events: Sequence[ChainEvent]) -> list[ChainEvent]:
    """The loaded events from the chain head back to the approval, linked by prev_hash."""
    by_hash = {event.hash: event for event in events}
    segment: list[ChainEvent] = []
    event = by_hash.get(str(payout["last_event_hash"]))
    while event is not None and len(segment) < len(events):
        segment.append(event)
        if event.type == APPROVAL_EVENT:
            break
        event = by_hash.get(event.prev_hash)
    return segment


def _why_refused(payout: Mapping[str, Any], events: Sequence[ChainEvent], key: bytes) -> str | None:
    segment = _segment(payout, events)
    if not segment or segment[0].sequence != payout["last_event_sequence"]:
        return "its newest event is not an approval or the executor's claim of one"
    approval = segment[-1]
    if approval.type != APPROVAL_EVENT:
        return "no payout.approved event leads to its claim"
    # The newest event that moved the status (a release or a reveal may follow it).
    head = next(e for e in segment if e.type not in NOTE_EVENT_TYPES)
    claimed = head.type == CLAIM_EVENT
    if payout["status"] == PROCESSING and not (claimed and head.actor == EXECUTOR_ACTOR):
        return "it is processing without the executor's claim of an approval"
    if payout["status"] == APPROVED and claimed:
        return "it is approved but its newest event is a claim"
    for event in segment:
        if not sealed(event, key):
            return f"{event.type} ({event.id}) does not carry a valid keyed hash"
    for requirement in REQUIREMENTS:
        problem = requirement(payout, approval, segment)
        if problem is not None:
            return problem
    return None
