"""Tamper evidence: verify every payout's and every anomaly's hash-chained history
(``payoutsvc audit verify``, ``GET /v1/audit/verify``) and record signed checkpoints
(``payoutsvc audit checkpoint``).

Each event stores ``hash = HMAC-SHA256(audit key, prev_hash + canonical content)`` and the
``prev_hash`` of its predecessor (``GENESIS_HASH`` for the first); the payouts row stores the
chain head (``last_event_sequence``, ``last_event_hash``). The audit key is derived from the
encryption key (or PAYOUTSVC_AUDIT_KEY) and never stored, so rewriting rows and recomputing
hashes needs the key. Rows written before migration 0009 carry ``hash_scheme = "sha256"``
(plain SHA-256) and verify as they always did; a plain row after a keyed one in a chain, or
dated on or after the checkpoint's ``keyed_since``, is a forgery.

What the events seal (README, "Audit"):

* ``payout.created``: ``payout_digest``, the immutable fields (keyed chains: also ticket URL,
  description, metadata, masked recipient, policy decision, gateway) and ``state_digest``;
* every status event: ``state_digest`` of status, gateway reference/status/details and
  failure code/message after the change (checked against the row unless it is
  ``processing``, when the executor updates the gateway fields between events);
* every operator decision (approve, reject, cancel, resolve, gateway notice):
  ``approvals_digest`` of the approval rows at that moment;
* the manual release: ``payout.created`` and every ``payout.approved`` record
  ``release_required``; ``payout.released`` is the release (its actor and time are the row's
  ``released_by`` / ``released_at``). Events that do not move the status (a release, a look
  at the recipient) carry ``state_digest`` but no ``status``.

What a walk names, per payout, is the FIRST problem found:

* ``altered``: an event's content no longer matches its hash, or an event was re-hashed after
  an edit so its successor (or the head) no longer links to it, or the payouts row / its
  approval rows differ from what its events sealed;
* ``removed``: a sequence number is missing (in the middle, or at the end per the head), or,
  against the latest checkpoint, a payout or the events up to its recorded head;
* ``inserted``: an event after the head, or one slipped in by renumbering its successors, or
  a payout absent from the checkpoint although created before it;
* ``unauthorized``: a status history that does not follow the arrows of API.md, or an
  approval without the approvals its decision required.

An anomaly's history (review/, ``anomaly_events``) is the same keyed chain with the anomaly
id in the payout id's place and the anomalies row as its head; its walk names an edited,
re-hashed, deleted or inserted event, and an anomalies row whose status, severity, subjects,
payout ids or explanation differ from what its last event recorded (problems carry the
anomaly's ``an_…`` id). Checkpoints pin payout heads only, so an anomaly deleted together
with all its events is not named.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.executor.evidence import approval_problem
from payoutsvc.payouts.events import (
    GENESIS_HASH,
    KEYED_SCHEME,
    PLAIN_SCHEME,
    ChainLink,
    approvals_digest,
    canonical_json,
    event_hash,
    payout_digest,
    state_digest,
)
from payoutsvc.payouts.models import AuditCheckpoint, Payout, PayoutApproval, PayoutEvent
from payoutsvc.payouts.repository import PayoutRepository
from payoutsvc.payouts.status import ALLOWED_TRANSITIONS, RELEASED_EVENT, PayoutStatus
from payoutsvc.review.models import ANOMALY_ID_PREFIX, Anomaly, AnomalyEvent
from payoutsvc.review.repository import ReviewRepository

__all__ = [
    "AuditReport",
    "ChainProblem",
    "checkpoint_if_due",
    "checkpoint_json",
    "record_checkpoint",
    "verify_all",
    "verify_anomaly_chain",
    "verify_payout_chain",
]

ProblemKind = Literal["altered", "removed", "inserted", "unauthorized"]
ChainOwner = Literal["payout", "anomaly"]


class _ChainHead(Protocol):
    """The row that records a chain's head: a payout or an anomaly."""

    @property
    def id(self) -> str: ...
    @property
    def last_event_sequence(self) -> int: ...
    @property
    def last_event_hash(self) -> str: ...


_PAGE_SIZE = 500
_STATUSES = {status.value: status for status in PayoutStatus}
_CHECKPOINT = "checkpoint"


@dataclass(frozen=True, slots=True)
class ChainProblem:
    payout_id: str
    kind: ProblemKind
    message: str
    event_id: str | None = None  # the event named (None: a removed one, known by sequence)
    sequence: int | None = None
    # Whose chain: ``payout_id`` then holds the payout's or the anomaly's id.
    owner: ChainOwner = "payout"

    def describe(self) -> str:
        where = f"event {self.event_id}" if self.event_id else "event"
        if self.sequence is not None:
            where += f" (sequence {self.sequence})"
        return f"{self.payout_id}: {where} {self.kind}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {
            "payout_id": self.payout_id,
            "anomaly_id": self.payout_id if self.owner == "anomaly" else None,
            "kind": self.kind,
            "event_id": self.event_id,
            "sequence": self.sequence,
            "message": self.message,
        }


@dataclass
class AuditReport:
    payouts_checked: int = 0
    events_checked: int = 0
    anomalies_checked: int = 0
    anomaly_events_checked: int = 0
    problems: list[ChainProblem] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None  # the checkpoint verified against, if any

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "payouts_checked": self.payouts_checked,
            "events_checked": self.events_checked,
            "anomalies_checked": self.anomalies_checked,
            "anomaly_events_checked": self.anomaly_events_checked,
            "checkpoint": self.checkpoint,
            "problems": [p.as_json() for p in self.problems],
        }


@dataclass(frozen=True, slots=True)
class Seal:
    """What a walk checks hashes with: the audit key, and since when every event is keyed
    (from the latest checkpoint; None without one)."""

    key: bytes
    keyed_since: datetime | None = None


def _recomputed(
    event: ChainLink, owner_id: str, key: bytes, sequence: int | None = None
) -> str | None:
    """The event's hash under its own scheme; None for a scheme nobody writes."""
    if event.hash_scheme not in (KEYED_SCHEME, PLAIN_SCHEME):
        return None
    return event_hash(
        payout_id=owner_id,
        sequence=event.sequence if sequence is None else sequence,
        type=event.type,
        actor=event.actor,
        at=event.at,
        data=event.data,
        prev_hash=event.prev_hash,
        event_id=event.id,
        key=key if event.hash_scheme == KEYED_SCHEME else None,
    )


def _label(event: ChainLink) -> str:
    return f"{event.type} by {event.actor}"


def _data(event: ChainLink) -> dict[str, Any]:
    return event.data if isinstance(event.data, dict) else {}


@dataclass(frozen=True, slots=True)
class _Chain:
    """Whose chain a walk checks: the row holding its head, and what kind of row it is."""

    head: _ChainHead
    owner: ChainOwner

    def problem(
        self,
        kind: ProblemKind,
        message: str,
        event_id: str | None = None,
        sequence: int | None = None,
    ) -> ChainProblem:
        return ChainProblem(self.head.id, kind, message, event_id, sequence, self.owner)


def verify_payout_chain(
    payout: Payout,
    events: Sequence[PayoutEvent],
    seal: Seal,
    approvals: Sequence[PayoutApproval] = (),
) -> ChainProblem | None:
    """The first problem in one payout's history, or None when it is intact.

    ``events`` must be the payout's events in sequence order, ``approvals`` its rows."""
    chain = _Chain(payout, "payout")
    problem = _check_links(chain, events, seal) or _check_integration(payout, events)
    if problem is not None or not events:
        return problem
    return (
        _check_head(chain, events[-1])
        or _check_row(payout, events[0], events[-1])
        or _check_walk(payout, events)
        or _check_release(payout, events)
        or _check_approvals(payout, events, approvals)
    )


def verify_anomaly_chain(
    anomaly: Anomaly, events: Sequence[AnomalyEvent], seal: Seal
) -> ChainProblem | None:
    """The first problem in one anomaly's history (review/), or None when it is intact:
    the same keyed chain as a payout's, its head on the anomalies row, and the row's
    reviewable fields equal to what the last event recorded.

    ``events`` must be the anomaly's events in sequence order."""
    chain = _Chain(anomaly, "anomaly")
    problem = _check_links(chain, events, seal)
    if problem is not None or not events:
        return problem
    return _check_head(chain, events[-1]) or _check_anomaly_row(chain, anomaly, events[-1])


# What every anomaly event records of its row (review/service.py ``_event``).
_ANOMALY_SEALED = ("status", "severity", "subjects", "payout_ids", "explanation")


def _check_anomaly_row(chain: _Chain, anomaly: Anomaly, last: AnomalyEvent) -> ChainProblem | None:
    recorded = _data(last)
    for name in _ANOMALY_SEALED:
        if name in recorded and canonical_json(recorded[name]) != canonical_json(
            getattr(anomaly, name)
        ):
            return chain.problem(
                "altered",
                f"the anomalies row's {name} differs from what {_label(last)} recorded: the "
                "anomalies row was altered.",
                last.id,
                last.sequence,
            )
    return None


def _check_links(chain: _Chain, events: Sequence[ChainLink], seal: Seal) -> ChainProblem | None:
    previous: ChainLink | None = None
    for event in events:
        problem = _check_hash(chain, event, previous, seal) or _check_position(
            chain, event, previous
        )
        if problem is not None:
            return problem
        previous = event
    if previous is None:
        return chain.problem(
            "removed",
            f"every event is gone; the {chain.owner}'s head expects "
            f"{chain.head.last_event_sequence}.",
            None,
            1,
        )
    return None


def _check_hash(
    chain: _Chain, event: ChainLink, previous: ChainLink | None, seal: Seal
) -> ChainProblem | None:
    if event.hash_scheme == PLAIN_SCHEME and (
        (previous is not None and previous.hash_scheme != PLAIN_SCHEME)
        or (seal.keyed_since is not None and event.at >= seal.keyed_since)
    ):
        return chain.problem(
            "altered",
            f"{_label(event)} carries a plain SHA-256 hash where only keyed hashes are "
            "written: it was rewritten without the audit key.",
            event.id,
            event.sequence,
        )
    owner_id = chain.head.id
    if _recomputed(event, owner_id, seal.key) == event.hash:
        return None
    if (
        previous is not None
        and _recomputed(event, owner_id, seal.key, event.sequence - 1) == event.hash
    ):
        # This event was hashed one position earlier: the one before it was slipped in
        # and its successors renumbered.
        return chain.problem(
            "inserted",
            f"{_label(previous)} was inserted; the events after it were renumbered.",
            previous.id,
            previous.sequence,
        )
    return chain.problem(
        "altered",
        f"{_label(event)}: its content does not match its hash.",
        event.id,
        event.sequence,
    )


def _check_position(
    chain: _Chain, event: ChainLink, previous: ChainLink | None
) -> ChainProblem | None:
    expected_sequence = 1 if previous is None else previous.sequence + 1
    if event.sequence > expected_sequence:
        missing = (
            f"sequence {expected_sequence}"
            if event.sequence == expected_sequence + 1
            else f"sequences {expected_sequence}-{event.sequence - 1}"
        )
        return chain.problem(
            "removed",
            f"{missing} removed before {event.id} ({_label(event)}).",
            None,
            expected_sequence,
        )
    expected_prev = GENESIS_HASH if previous is None else previous.hash
    if event.prev_hash != expected_prev:
        if previous is None:
            return chain.problem(
                "altered",
                f"{_label(event)} is first but does not start the chain.",
                event.id,
                event.sequence,
            )
        return chain.problem(
            "altered",
            f"{_label(previous)} was changed and re-hashed: the next event, {event.id}, "
            "recorded a different hash for it.",
            previous.id,
            previous.sequence,
        )
    return None


def _check_integration(payout: Payout, events: Sequence[PayoutEvent]) -> ChainProblem | None:
    moved = next((e for e in events if e.integration_id != payout.integration_id), None)
    if moved is None:
        return None
    return ChainProblem(
        payout.id,
        "altered",
        f"{_label(moved)} was moved to integration {moved.integration_id}.",
        moved.id,
        moved.sequence,
    )


def _check_head(chain: _Chain, last: ChainLink) -> ChainProblem | None:
    head = chain.head
    if last.sequence > head.last_event_sequence:
        return chain.problem(
            "inserted",
            f"{_label(last)} comes after the {chain.owner}'s head (sequence "
            f"{head.last_event_sequence}).",
            last.id,
            last.sequence,
        )
    if last.sequence < head.last_event_sequence:
        return chain.problem(
            "removed",
            f"the {chain.owner}'s head is sequence {head.last_event_sequence} but the history "
            f"ends at {last.id} (sequence {last.sequence}).",
            None,
            last.sequence + 1,
        )
    if last.hash != head.last_event_hash:
        return chain.problem(
            "altered",
            f"{_label(last)} was changed and re-hashed: the {chain.owner}'s head recorded a "
            "different hash for it.",
            last.id,
            last.sequence,
        )
    return None


def _row_altered(payout: Payout, event: PayoutEvent, what: str) -> ChainProblem:
    return ChainProblem(
        payout.id,
        "altered",
        f"the payouts row's {what} differs from what {_label(event)} recorded: the payouts "
        "row was altered.",
        event.id,
        event.sequence,
    )


def _check_row(payout: Payout, first: PayoutEvent, last: PayoutEvent) -> ChainProblem | None:
    """The payouts row against what its first and last events sealed."""
    recorded_status = _data(last).get("status")
    if recorded_status is not None and recorded_status != payout.status:
        return _row_altered(
            payout, last, f"status {payout.status!r} (recorded {recorded_status!r})"
        )
    sealed_state = _data(last).get("state_digest")
    # A processing payout's gateway fields move between events (retries, provider holds).
    if (
        sealed_state is not None
        and payout.status != PayoutStatus.PROCESSING.value
        and sealed_state != state_digest(payout)
    ):
        return _row_altered(payout, last, "gateway result or failure")
    created = _data(first)
    digest = created.get("payout_digest")
    keyed = first.hash_scheme == KEYED_SCHEME
    if digest is not None and digest != payout_digest(payout, keyed=keyed):
        return _row_altered(
            payout, first, "amount, recipient, ticket, description, metadata or requester"
        )
    if "policy" in created and created["policy"] != payout.policy:
        return _row_altered(payout, first, "policy decision")
    return None


def _check_walk(payout: Payout, events: Sequence[PayoutEvent]) -> ChainProblem | None:
    """The statuses the events record follow the arrows of API.md from pending_approval
    (payout.created records the status the row was inserted with; an auto-approved payout's
    own payout.approved event follows it), and every approval shows what it required."""
    status = PayoutStatus.PENDING_APPROVAL
    for event in events[1:]:
        recorded = _data(event).get("status")
        if recorded is None:
            continue  # an event that does not move the status
        target = _STATUSES.get(recorded) if isinstance(recorded, str) else None
        if target is None or target not in ALLOWED_TRANSITIONS[status]:
            return ChainProblem(
                payout.id,
                "unauthorized",
                f"{_label(event)} moves it from {status.value!r} to {recorded!r}, which is not "
                "an arrow of the status diagram.",
                event.id,
                event.sequence,
            )
        if target is PayoutStatus.APPROVED:
            why = approval_problem(
                _data(event), event.actor, payout.requested_by, payout.required_approvals
            )
            if why is not None:
                return ChainProblem(
                    payout.id, "unauthorized", f"{_label(event)}: {why}.", event.id, event.sequence
                )
        status = target
    return None


def _unauthorized(payout: Payout, event: PayoutEvent, why: str) -> ChainProblem:
    return ChainProblem(
        payout.id, "unauthorized", f"{_label(event)}: {why}.", event.id, event.sequence
    )


def _check_release(payout: Payout, events: Sequence[PayoutEvent]) -> ChainProblem | None:
    """The manual release as payout.created decided it (``release_required``; a chain from
    before releases existed decided none): every approval recorded the same decision, a
    release happened only while approved after such an approval, never by the requester,
    and before the executor's claim; the row's release columns are what the events say."""
    required = _data(events[0]).get("release_required") is True
    status = PayoutStatus.PENDING_APPROVAL.value
    released: PayoutEvent | None = None
    for event in events[1:]:
        data = _data(event)
        if event.type == RELEASED_EVENT:
            if not required or status != PayoutStatus.APPROVED.value or released is not None:
                return _unauthorized(payout, event, "a release of a payout not waiting for one")
            if event.actor == payout.requested_by:
                return _unauthorized(payout, event, "released by its own requester")
            released = event
        recorded = data.get("status")
        if (
            recorded == PayoutStatus.APPROVED.value
            and (data.get("release_required") is True) != required
        ):
            return _unauthorized(
                payout, event, "its release_required differs from what payout.created decided"
            )
        if recorded == PayoutStatus.PROCESSING.value and required and released is None:
            return _unauthorized(payout, event, "claimed without the release its decision required")
        if isinstance(recorded, str):
            status = recorded
    if payout.release_required != required:
        return _row_altered(payout, events[0], "release_required")
    expected = (None, None) if released is None else (released.actor, released.at)
    if (payout.released_by, payout.released_at) != expected:
        return _row_altered(payout, released or events[0], "released_by / released_at")
    return None


def _check_approvals(
    payout: Payout, events: Sequence[PayoutEvent], approvals: Sequence[PayoutApproval]
) -> ChainProblem | None:
    """The approval rows equal what the newest event sealing them recorded: its
    ``approvals_digest`` (keyed chains), else its ``approvals`` list (who decided what: all a
    legacy event or the policy's auto-approval records). Rows recorded since (a first
    approval of a payout still pending) are sealed by the decision to come."""
    if payout.status == PayoutStatus.PENDING_APPROVAL.value:
        return None
    sealing = next(
        (e for e in reversed(events) if {"approvals_digest", "approvals"} & _data(e).keys()),
        None,
    )
    if sealing is None:
        if approvals and events[-1].hash_scheme == KEYED_SCHEME:
            return ChainProblem(
                payout.id,
                "inserted",
                f"{len(approvals)} approval row(s) that no event of its history recorded.",
            )
        return None
    if not _approvals_match(_data(sealing), approvals):
        return ChainProblem(
            payout.id,
            "altered",
            f"its approval rows differ from what {_label(sealing)} recorded.",
            sealing.id,
            sealing.sequence,
        )
    return None


def _approvals_match(sealed: Mapping[str, Any], approvals: Sequence[PayoutApproval]) -> bool:
    if "approvals_digest" in sealed:
        return bool(sealed["approvals_digest"] == approvals_digest(approvals))
    listed = sealed["approvals"] if isinstance(sealed["approvals"], list) else []
    recorded = sorted(
        (str(a.get("operator_id")), str(a.get("decision"))) for a in listed if isinstance(a, dict)
    )
    return recorded == sorted((a.operator_id, a.decision) for a in approvals)


# -- checkpoints -----------------------------------------------------------------------------
def _signature(key: bytes, document: Mapping[str, Any]) -> str:
    # A distinct prefix: no event content can ever be replayed as a checkpoint.
    message = b"payoutsvc audit checkpoint v1\n" + canonical_json(document).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _signed_part(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    return {
        "id": checkpoint.id,
        "created_at": checkpoint.created_at.isoformat(),
        "payouts": checkpoint.payouts,
        "events": checkpoint.events,
        "keyed_since": checkpoint.keyed_since.isoformat(),
        "heads": checkpoint.heads,
    }


def checkpoint_json(checkpoint: AuditCheckpoint, *, heads: bool = False) -> dict[str, Any]:
    document = _signed_part(checkpoint)
    if not heads:
        document.pop("heads")
        # One digest over every head, so a printed checkpoint kept elsewhere still pins them.
        document["heads_sha256"] = hashlib.sha256(
            canonical_json(checkpoint.heads).encode()
        ).hexdigest()
    document["signature"] = checkpoint.signature
    return document


async def record_checkpoint(session: AsyncSession, key: bytes, now: datetime) -> AuditCheckpoint:
    """Record (and return) a signed checkpoint: every payout's chain head, the counts, and
    since when every event is keyed (carried over from the last valid checkpoint)."""
    repo = PayoutRepository(session)
    previous = await repo.latest_checkpoint()
    keyed_since = (
        previous.keyed_since
        if previous is not None and _signature(key, _signed_part(previous)) == previous.signature
        else await repo.first_event_at(KEYED_SCHEME) or now
    )
    heads = await repo.chain_heads()
    payouts = len(heads)
    # The anomalies' heads too, so verify names an anomaly deleted with all its events
    # (its own chain cannot show that it is gone).
    heads |= await ReviewRepository(session).chain_heads()
    checkpoint = AuditCheckpoint(
        created_at=now,
        payouts=payouts,
        events=await repo.count_events(),
        keyed_since=keyed_since,
        heads={pid: [sequence, head] for pid, (sequence, head) in heads.items()},
        signature="",
    )
    await repo.insert_checkpoint(checkpoint)  # assigns the id, which the signature covers
    checkpoint.signature = _signature(key, _signed_part(checkpoint))
    await session.flush()
    return checkpoint


async def checkpoint_if_due(
    session: AsyncSession, key: bytes, now: datetime, interval_seconds: float
) -> AuditCheckpoint | None:
    """The worker's periodic checkpoint: recorded when the latest is older than the
    interval (or there is none)."""
    latest = await PayoutRepository(session).latest_checkpoint()
    if latest is not None and (now - latest.created_at).total_seconds() < interval_seconds:
        return None
    return await record_checkpoint(session, key, now)


def _against_checkpoint(
    payout: Payout, events: Sequence[PayoutEvent], checkpoint: AuditCheckpoint
) -> ChainProblem | None:
    if checkpoint.heads.get(payout.id) is None and payout.created_at <= checkpoint.created_at:
        return ChainProblem(
            payout.id,
            "inserted",
            f"absent from checkpoint {checkpoint.id} although created before it.",
        )
    return _head_kept(payout.id, events, checkpoint)


def _head_kept(
    chain_id: str,
    events: Sequence[ChainLink],
    checkpoint: AuditCheckpoint,
    owner: ChainOwner = "payout",
) -> ChainProblem | None:
    """The problem when the head ``checkpoint`` recorded for this chain is gone from it or
    differs (events removed from its tail and the head rewritten to match), else None."""
    recorded = checkpoint.heads.get(chain_id)
    if recorded is None:
        return None
    sequence, head = int(recorded[0]), str(recorded[1])
    found = next((e for e in events if e.sequence == sequence), None)
    if found is None or found.hash != head:
        return ChainProblem(
            chain_id,
            "removed",
            f"checkpoint {checkpoint.id} recorded event sequence {sequence} with hash "
            f"{head[:12]}…; the history now {'lacks it' if found is None else 'differs'}.",
            None,
            sequence,
            owner=owner,
        )
    return None


# -- walking everything ----------------------------------------------------------------------
@dataclass
class _Walk:
    seal: Seal
    report: AuditReport
    checkpoint: AuditCheckpoint | None = None
    seen: set[str] = field(default_factory=set)


async def verify_all(
    session: AsyncSession, key: bytes, payout_id: str | None = None
) -> AuditReport:
    """Walk every payout's chain (or just ``payout_id``'s), a page at a time, against the
    latest checkpoint when there is one, then every anomaly's chain; read-only."""
    repo = PayoutRepository(session)
    walk = await _start(repo, key)
    if payout_id is not None:
        payout = await repo.get(payout_id, None)
        await _verify_page(repo, [payout] if payout is not None else [], walk)
        return walk.report
    after: str | None = None
    while page := await repo.payouts_page(after, _PAGE_SIZE):
        await _verify_page(repo, page, walk)
        after = page[-1].id
        # Loaded rows are not needed again; keeps memory flat on a large database.
        session.expunge_all()
    await _verify_anomalies(ReviewRepository(session), walk)
    if walk.checkpoint is not None:
        for missing in sorted(set(walk.checkpoint.heads) - walk.seen):
            owner: ChainOwner = (
                "anomaly" if missing.startswith(ANOMALY_ID_PREFIX + "_") else "payout"
            )
            walk.report.problems.append(
                ChainProblem(
                    missing,
                    "removed",
                    f"the {owner} and its events were deleted since checkpoint "
                    f"{walk.checkpoint.id}.",
                    owner=owner,
                )
            )
    return walk.report


async def _start(repo: PayoutRepository, key: bytes) -> _Walk:
    report = AuditReport()
    checkpoint = await repo.latest_checkpoint()
    if checkpoint is None:
        return _Walk(Seal(key), report)
    report.checkpoint = checkpoint_json(checkpoint)
    if _signature(key, _signed_part(checkpoint)) != checkpoint.signature:
        report.problems.append(
            ChainProblem(
                _CHECKPOINT,
                "altered",
                f"checkpoint {checkpoint.id} does not match its signature; not used.",
            )
        )
        return _Walk(Seal(key), report)
    return _Walk(Seal(key, checkpoint.keyed_since), report, checkpoint)


async def _verify_page(repo: PayoutRepository, page: Sequence[Payout], walk: _Walk) -> None:
    ids = [p.id for p in page]
    events = await repo.events_of(ids)
    approvals = await repo.approvals_for(ids)
    for payout in page:
        chain = events[payout.id]
        walk.seen.add(payout.id)
        walk.report.payouts_checked += 1
        walk.report.events_checked += len(chain)
        problem = verify_payout_chain(payout, chain, walk.seal, approvals[payout.id])
        if problem is None and walk.checkpoint is not None:
            problem = _against_checkpoint(payout, chain, walk.checkpoint)
        if problem is not None:
            walk.report.problems.append(problem)


async def _verify_anomalies(repo: ReviewRepository, walk: _Walk) -> None:
    """Every anomaly's chain, a page at a time."""
    after: str | None = None
    while page := await repo.anomalies_page(after, _PAGE_SIZE):
        events = await repo.events_of(page)
        for anomaly in page:
            chain = events[anomaly.id]
            walk.report.anomalies_checked += 1
            walk.report.anomaly_events_checked += len(chain)
            walk.seen.add(anomaly.id)
            problem = verify_anomaly_chain(anomaly, chain, walk.seal)
            if problem is None and walk.checkpoint is not None:
                # Anomalies are keyed from their first event, so one absent from the
                # checkpoint cannot be a forgery that its own chain would not show.
                problem = _head_kept(anomaly.id, chain, walk.checkpoint, "anomaly")
            if problem is not None:
                walk.report.problems.append(problem)
        after = page[-1].id
        repo.session.expunge_all()
