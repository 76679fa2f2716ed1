"""Tamper evidence: verify every payout's hash-chained history (``payoutsvc audit verify``).

Each event stores ``hash = sha256(prev_hash + canonical content)`` and the ``prev_hash`` of its
predecessor (``GENESIS_HASH`` for the first); the payouts row stores the chain head
(``last_event_sequence``, ``last_event_hash``). The ``payout.created`` event also carries
``payout_digest``, a hash of the payout's immutable fields (who is paid how much, for which
ticket, decided under which policy and how many approvals), so an edit of the payouts row
itself is caught too.

What a walk names, per payout, is the FIRST problem found:

* ``altered``: an event's content no longer matches its hash, or an event was re-hashed after
  an edit so its successor (or the head) no longer links to it, or the payouts row's
  immutable fields / status / policy differ from what its events recorded;
* ``removed``: a sequence number is missing (in the middle, or at the end per the head);
* ``inserted``: an event after the head, or one slipped in by renumbering its successors.

Limit: someone who can rewrite the events AND the payouts row consistently (recomputing every
hash) is not caught by a self-contained chain; anchoring heads outside the database (e.g.
exporting ``last_event_hash`` values periodically) closes that gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.payouts.events import GENESIS_HASH, event_hash, payout_digest
from payoutsvc.payouts.models import Payout, PayoutEvent
from payoutsvc.payouts.repository import PayoutRepository

__all__ = [
    "AuditReport",
    "ChainProblem",
    "verify_all",
    "verify_payout_chain",
]

ProblemKind = Literal["altered", "removed", "inserted"]

_PAGE_SIZE = 500


@dataclass(frozen=True, slots=True)
class ChainProblem:
    payout_id: str
    kind: ProblemKind
    message: str
    event_id: str | None = None  # the event named (None: a removed one, known by sequence)
    sequence: int | None = None

    def describe(self) -> str:
        where = f"event {self.event_id}" if self.event_id else "event"
        if self.sequence is not None:
            where += f" (sequence {self.sequence})"
        return f"{self.payout_id}: {where} {self.kind}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {
            "payout_id": self.payout_id,
            "kind": self.kind,
            "event_id": self.event_id,
            "sequence": self.sequence,
            "message": self.message,
        }


@dataclass
class AuditReport:
    payouts_checked: int = 0
    events_checked: int = 0
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _recomputed(event: PayoutEvent, sequence: int | None = None) -> str:
    return event_hash(
        payout_id=event.payout_id,
        sequence=event.sequence if sequence is None else sequence,
        type=event.type,
        actor=event.actor,
        at=event.at,
        data=event.data,
        prev_hash=event.prev_hash,
        event_id=event.id,
    )


def _label(event: PayoutEvent) -> str:
    return f"{event.type} by {event.actor}"


def verify_payout_chain(payout: Payout, events: Sequence[PayoutEvent]) -> ChainProblem | None:
    """The first problem in one payout's history, or None when it is intact.

    ``events`` must be the payout's events in sequence order.
    """
    pid = payout.id
    previous: PayoutEvent | None = None
    for event in events:
        expected_sequence = 1 if previous is None else previous.sequence + 1
        expected_prev = GENESIS_HASH if previous is None else previous.hash
        if _recomputed(event) != event.hash:
            if previous is not None and _recomputed(event, event.sequence - 1) == event.hash:
                # This event was hashed one position earlier: the one before it was slipped in
                # and its successors renumbered.
                return ChainProblem(
                    pid,
                    "inserted",
                    f"{_label(previous)} was inserted; the events after it were renumbered.",
                    previous.id,
                    previous.sequence,
                )
            return ChainProblem(
                pid,
                "altered",
                f"{_label(event)}: its content does not match its hash.",
                event.id,
                event.sequence,
            )
        if event.sequence > expected_sequence:
            missing = (
                f"sequence {expected_sequence}"
                if event.sequence == expected_sequence + 1
                else f"sequences {expected_sequence}-{event.sequence - 1}"
            )
            return ChainProblem(
                pid,
                "removed",
                f"{missing} removed before {event.id} ({_label(event)}).",
                None,
                expected_sequence,
            )
        if event.prev_hash != expected_prev:
            if previous is None:
                return ChainProblem(
                    pid,
                    "altered",
                    f"{_label(event)} is first but does not start the chain.",
                    event.id,
                    event.sequence,
                )
            return ChainProblem(
                pid,
                "altered",
                f"{_label(previous)} was changed and re-hashed: the next event, {event.id}, "
                "recorded a different hash for it.",
                previous.id,
                previous.sequence,
            )
        if event.integration_id != payout.integration_id:
            return ChainProblem(
                pid,
                "altered",
                f"{_label(event)} was moved to integration {event.integration_id}.",
                event.id,
                event.sequence,
            )
        previous = event

    if previous is None:
        return ChainProblem(
            pid,
            "removed",
            f"every event is gone; the payout's head expects {payout.last_event_sequence}.",
            None,
            1,
        )
    return _check_head(payout, events[0], previous)


def _check_head(payout: Payout, first: PayoutEvent, last: PayoutEvent) -> ChainProblem | None:
    pid = payout.id
    if last.sequence > payout.last_event_sequence:
        return ChainProblem(
            pid,
            "inserted",
            f"{_label(last)} comes after the payout's head (sequence "
            f"{payout.last_event_sequence}).",
            last.id,
            last.sequence,
        )
    if last.sequence < payout.last_event_sequence:
        return ChainProblem(
            pid,
            "removed",
            f"the payout's head is sequence {payout.last_event_sequence} but the history ends "
            f"at {last.id} (sequence {last.sequence}).",
            None,
            last.sequence + 1,
        )
    if last.hash != payout.last_event_hash:
        return ChainProblem(
            pid,
            "altered",
            f"{_label(last)} was changed and re-hashed: the payout's head recorded a different "
            "hash for it.",
            last.id,
            last.sequence,
        )
    recorded_status = last.data.get("status") if isinstance(last.data, dict) else None
    if recorded_status is not None and recorded_status != payout.status:
        return ChainProblem(
            pid,
            "altered",
            f"the payouts row says status {payout.status!r} but its last event "
            f"({_label(last)}) says {recorded_status!r}: the payouts row was altered.",
            last.id,
            last.sequence,
        )
    created = first.data if isinstance(first.data, dict) else {}
    digest = created.get("payout_digest")
    if digest is not None and digest != payout_digest(payout):
        return ChainProblem(
            pid,
            "altered",
            "the payouts row's amount, recipient, ticket, requester or policy decision differs "
            "from what payout.created recorded: the payouts row was altered.",
            first.id,
            first.sequence,
        )
    if "policy" in created and created["policy"] != payout.policy:
        return ChainProblem(
            pid,
            "altered",
            "the payouts row's policy decision differs from what payout.created recorded.",
            first.id,
            first.sequence,
        )
    return None


async def verify_all(session: AsyncSession, payout_id: str | None = None) -> AuditReport:
    """Walk every payout's chain (or just ``payout_id``'s), a page at a time; read-only."""
    repo = PayoutRepository(session)
    report = AuditReport()
    if payout_id is not None:
        payout = await repo.get(payout_id, None)
        await _verify_page(repo, [payout] if payout is not None else [], report)
        return report
    after: str | None = None
    while page := await repo.payouts_page(after, _PAGE_SIZE):
        await _verify_page(repo, page, report)
        after = page[-1].id
        # Loaded rows are not needed again; keeps memory flat on a large database.
        session.expunge_all()
    return report


async def _verify_page(repo: PayoutRepository, page: Sequence[Payout], report: AuditReport) -> None:
    events = await repo.events_of([p.id for p in page])
    for payout in page:
        chain = events[payout.id]
        report.payouts_checked += 1
        report.events_checked += len(chain)
        problem = verify_payout_chain(payout, chain)
        if problem is not None:
            report.problems.append(problem)
