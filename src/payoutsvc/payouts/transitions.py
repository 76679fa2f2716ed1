"""THE place a payout's status moves.

Every status change, whoever causes it (an operator's approve, reject, cancel or resolve, a
gateway's notice, the executor's claim and its finishing write), is planned by :func:`move`:
it checks the action's :class:`Arrow`, returns the payout columns to write (the status, the
lease columns, the head of the event chain) and the chained event to insert with them. The
callers only choose the arrow and write what they are given, in one transaction, so the
bookkeeping of the audit chain (sequence, previous hash, head) exists once.

Modelled on Prefect's orchestration rules: each arrow is a small named rule that says which
statuses one action may start from and end in, and is checked against
:data:`~payoutsvc.payouts.status.ALLOWED_TRANSITIONS` (the arrows of API.md) when this module
is imported, so no action can take an arrow the contract does not draw. SQL that moves a
status derives its ``WHERE status IN (…)`` from the same arrow (:attr:`Arrow.sql_sources`).

How a reader can check that every status change goes through here: the payouts ``status``
column is written only by :meth:`PayoutRepository.apply_move` and by the executor's lease and
finish statements, whose new status comes from a :class:`Move` (or stays ``processing``), and
by the insert of a new payout, whose first event :func:`open_chain` writes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from payoutsvc.errors import invalid_status_transition
from payoutsvc.payouts.events import GENESIS_HASH, NewEvent, hash_of, state_digest
from payoutsvc.payouts.status import (
    ALLOWED_TRANSITIONS,
    EVENT_FOR_STATUS,
    NOT_COUNTED_FOR_LIMITS,
    NOTE_EVENT_TYPES,
    PayoutStatus,
)

S = PayoutStatus

# Builds the masked payout a webhook carries from the payout's columns after the change.
Presenter = Callable[[Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Arrow:
    """One action's arrows: the statuses it may start from and end in."""

    action: str  # as the 409 names it: "Cannot approve po_…: its status is 'canceled'."
    sources: frozenset[PayoutStatus]
    targets: frozenset[PayoutStatus]

    def __post_init__(self) -> None:
        for source in self.sources:
            for target in self.targets:
                if target not in ALLOWED_TRANSITIONS[source]:
                    raise ValueError(f"{self.action}: {source} → {target} is not an arrow")
                # The limit counters drop a payout when its event is one of
                # RELEASING_EVENT_TYPES (events.py): true only if no arrow moves between two
                # uncounted statuses, or from one back into the counted set.
                if source in NOT_COUNTED_FOR_LIMITS:
                    raise ValueError(f"{self.action}: {source} is not counted, nothing leaves it")

    @property
    def sql_sources(self) -> str:
        """The sources as SQL literals, for the ``IN (…)`` of a conditional update."""
        return ", ".join(f"'{status.value}'" for status in sorted(self.sources))

    @property
    def source_values(self) -> tuple[str, ...]:
        return tuple(status.value for status in sorted(self.sources))

    def require(self, payout_id: str, current: str) -> PayoutStatus:
        """The current status, if this action may start from it (409 otherwise)."""
        if current not in self.sources:
            raise invalid_status_transition(payout_id, current, self.action)
        return PayoutStatus(current)


# Each arrow's docstring-worthy reason is the race or abuse its narrow source set prevents.
# Approve and reject only while a decision is pending: a late approval must not revive a
# canceled or rejected payout.
APPROVE = Arrow("approve", frozenset({S.PENDING_APPROVAL}), frozenset({S.APPROVED}))
REJECT = Arrow("reject", frozenset({S.PENDING_APPROVAL}), frozenset({S.REJECTED}))
# Cancel only before the executor has claimed the payout: after that, money may be moving.
CANCEL = Arrow("cancel", frozenset({S.PENDING_APPROVAL, S.APPROVED}), frozenset({S.CANCELED}))
# The executor claims approved payouts only: a cancel that committed first always wins.
CLAIM = Arrow("claim", frozenset({S.APPROVED}), frozenset({S.PROCESSING}))
# The executor's result; only for a payout still processing (a notice may have settled it).
FINISH = Arrow(
    "finish", frozenset({S.PROCESSING}), frozenset({S.SUCCEEDED, S.FAILED, S.NEEDS_REVIEW})
)
# An operator settles only what the executor gave up on, never a payout still in flight.
RESOLVE = Arrow("resolve", frozenset({S.NEEDS_REVIEW}), frozenset({S.SUCCEEDED, S.FAILED}))
# A verified gateway notice is the provider's own word: it settles a payout in flight or
# one the executor gave up on, as an operator's resolve would.
SETTLE = Arrow(
    "apply a gateway notice to",
    frozenset({S.PROCESSING, S.NEEDS_REVIEW}),
    frozenset({S.SUCCEEDED, S.FAILED}),
)
# Finance records what it paid through a bank portal (the manual gateway): only a payout
# still waiting for that, never one the executor gave up on.
RECORD_PAYMENT = Arrow(
    "record a payment for", frozenset({S.PROCESSING}), frozenset({S.SUCCEEDED, S.FAILED})
)


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a payout's event chain stands: its newest event's sequence and hash."""

    sequence: int
    hash: str


@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's claim on a payout: only a processing payout is leased."""

    token: str
    until: datetime


@dataclass(frozen=True, slots=True)
class Move:
    """One planned status change: write ``values`` (conditional on the payout still being in
    ``source`` at the sequence it was read at) and insert ``event`` with hash ``head.hash``."""

    payout_id: str
    source: PayoutStatus
    target: PayoutStatus
    prev_sequence: int
    event: NewEvent
    head: ChainHead
    values: dict[str, Any]


# The columns a move itself decides: a caller's extra values may not override them.
_PLANNED_HERE = frozenset(
    {
        "status",
        "updated_at",
        "locked_by",
        "locked_until",
        "next_attempt_at",
        "last_event_sequence",
        "last_event_hash",
    }
)


def lease_columns(
    target: PayoutStatus, at: datetime, lease: Lease | None, *, held: bool = False
) -> dict[str, Any]:
    """Whose job the payout is after moving to ``target``: a processing payout is its
    worker's until the lease ends; an approved one is the executor's as of now, unless
    ``held`` (it waits for a manual release: no due time, so no claim finds it); any other
    is nobody's."""
    if target is S.PROCESSING:
        if lease is None:
            raise ValueError("a payout is processing only under a worker's lease")
        return {
            "locked_by": lease.token,
            "locked_until": lease.until,
            "next_attempt_at": lease.until,
        }
    if lease is not None:
        raise ValueError(f"a {target} payout is nobody's lease")
    return {
        "locked_by": None,
        "locked_until": None,
        "next_attempt_at": at if target is S.APPROVED and not held else None,
    }


def move(
    arrow: Arrow,
    payout: Mapping[str, Any],
    target: PayoutStatus,
    *,
    actor: str,
    data: Mapping[str, Any],
    at: datetime,
    present: Presenter,
    key: bytes,
    values: Mapping[str, Any] | None = None,
    lease: Lease | None = None,
    held: bool = False,
) -> Move:
    """Plan ``payout`` (its current columns) moving to ``target`` by ``arrow``'s action.

    Raises InvalidStatusTransition (409) when the action may not start from the payout's
    status. The event carries ``{"status": target, **data}``; ``values`` are further columns
    the caller sets with the change (a failure code, the gateway's reference). The event is
    hashed with the audit ``key`` and seals the digest of the payout's state after the move
    (``state_digest``: status, gateway result, failure), so an edit of those columns shows."""
    if target not in arrow.targets:
        raise ValueError(f"{arrow.action} never leads to {target}")
    if values and (planned_here := _PLANNED_HERE.intersection(values)):
        raise ValueError(f"{sorted(planned_here)} are set by the transition, not its caller")
    source = arrow.require(str(payout["id"]), str(payout["status"]))
    columns: dict[str, Any] = {
        "status": target.value,
        "updated_at": at,
        **lease_columns(target, at, lease, held=held),
        **(values or {}),
    }
    after = {**payout, **columns}
    prev_sequence = int(payout["last_event_sequence"])
    event = NewEvent(
        payout_id=str(payout["id"]),
        integration_id=str(payout["integration_id"]),
        sequence=prev_sequence + 1,
        type=EVENT_FOR_STATUS[target],
        actor=actor,
        data={"status": target.value, **data, "state_digest": state_digest(after)},
        at=at,
        prev_hash=str(payout["last_event_hash"]),
        # Built only when an endpoint subscribes (the executor moves thousands a second).
        payout_snapshot=functools.partial(present, after),
    )
    head = ChainHead(event.sequence, hash_of(event, key))
    columns.update(last_event_sequence=head.sequence, last_event_hash=head.hash)
    after.update(last_event_sequence=head.sequence, last_event_hash=head.hash)
    return Move(event.payout_id, source, target, prev_sequence, event, head, columns)


# The columns a note may set besides its chain head: the release's own.
_NOTE_VALUES = frozenset({"released_by", "released_at"})


def note(
    payout: Mapping[str, Any],
    event_type: str,
    *,
    actor: str,
    data: Mapping[str, Any],
    at: datetime,
    present: Presenter,
    key: bytes,
    values: Mapping[str, Any] | None = None,
    due: bool = False,
) -> Move:
    """Plan a chained event that does not move the status (NOTE_EVENT_TYPES: a release, a
    reveal): written like a move (conditional on the status and sequence it was read at),
    its event carries no ``status`` (audit verify reads only status events as arrows) but
    seals the ``state_digest`` as it is. ``due``: the payout becomes the executor's job now
    (a release)."""
    if event_type not in NOTE_EVENT_TYPES:
        raise ValueError(f"{event_type} is not an event that leaves the status alone")
    if values and (other := set(values) - _NOTE_VALUES):
        raise ValueError(f"{sorted(other)} are not set by a note")
    status = PayoutStatus(str(payout["status"]))
    columns: dict[str, Any] = {"updated_at": at, **(values or {})}
    if due:
        columns["next_attempt_at"] = at
    after = {**payout, **columns}
    prev_sequence = int(payout["last_event_sequence"])
    event = NewEvent(
        payout_id=str(payout["id"]),
        integration_id=str(payout["integration_id"]),
        sequence=prev_sequence + 1,
        type=event_type,
        actor=actor,
        data={**data, "state_digest": state_digest(after)},
        at=at,
        prev_hash=str(payout["last_event_hash"]),
        payout_snapshot=functools.partial(present, after),
    )
    head = ChainHead(event.sequence, hash_of(event, key))
    columns.update(last_event_sequence=head.sequence, last_event_hash=head.hash)
    return Move(event.payout_id, status, status, prev_sequence, event, head, columns)


def open_chain(
    payout: Mapping[str, Any],
    *,
    actor: str,
    data: Mapping[str, Any],
    snapshot: dict[str, Any],
    key: bytes,
) -> tuple[NewEvent, ChainHead]:
    """The first event of a new payout (``payout.created``), chained from the genesis hash.
    ``payout`` holds the columns being inserted; the event's time is its ``created_at``."""
    event = NewEvent(
        payout_id=str(payout["id"]),
        integration_id=str(payout["integration_id"]),
        sequence=1,
        type="payout.created",
        actor=actor,
        data={"status": payout["status"], **data, "state_digest": state_digest(payout)},
        at=payout["created_at"],
        prev_hash=GENESIS_HASH,
        payout_snapshot=snapshot,
    )
    return event, ChainHead(1, hash_of(event, key))
