"""The periodic review's use cases: the scan (worker), listing, reviewing and exporting
anomalies (API). Services never commit: the request's or the worker step's transaction does."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.base import utcnow
from payoutsvc.errors import invalid_status_transition, not_found
from payoutsvc.ids import id_floor, new_id
from payoutsvc.metrics import ANOMALIES_DETECTED
from payoutsvc.operators.service import OperatorService
from payoutsvc.payouts.acting import Credential, deciding_operator
from payoutsvc.payouts.events import GENESIS_HASH, KEYED_SCHEME, event_hash
from payoutsvc.policy.document import Policy
from payoutsvc.policy.service import PolicyService
from payoutsvc.review.detectors import (
    DETECTORS,
    MAX_PAYOUT_IDS,
    ApprovalRow,
    ApproverConcentration,
    Finding,
    PayoutRow,
    RequesterVelocity,
    ScanData,
    ThresholdSplitting,
)
from payoutsvc.review.models import ANOMALY_ID_PREFIX, Anomaly, AnomalyStatus
from payoutsvc.review.repository import ReviewRepository
from payoutsvc.runtime import Runtime
from payoutsvc.timestamps import rfc3339
from payoutsvc.webhooks.outbox import endpoint_presence, enqueue_deliveries

log = structlog.get_logger(__name__)

SYSTEM_ACTOR = "system"
# A scan reads payouts and approvals created at least this long ago, so a transaction that
# began before the previous scan and committed after it is not skipped (requests take far
# less; the next scan sees what this one leaves).
SCAN_LAG = timedelta(seconds=60)
# The first scan (no watermark yet) looks this far back; older history is only baseline.
FIRST_SCAN_LOOKBACK = timedelta(days=1)
# A policy day is at most 25 hours long (DST); the day's payouts are read by id range.
_LONGEST_DAY_SECONDS = 26 * 3600
_DAY_SECONDS = 86400
ReviewOutcome = Literal["dismissed", "confirmed"]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class ScanResult:
    new_payouts: int
    new_approvals: int
    detected: int  # new anomalies
    updated: int  # open anomalies the scan found again
    complete: bool = True  # False: a chunk that stopped at its size; more is waiting


@dataclass(frozen=True, slots=True)
class _AnomalyEvent:
    """An anomaly's event as the webhook outbox sees it (webhooks/outbox.py OutboxEvent):
    the anomaly's id stands in the payout's place, ordering its deliveries."""

    id: str
    payout_id: str
    integration_id: str
    sequence: int
    type: str
    at: datetime
    body: dict[str, Any]

    def snapshot(self) -> dict[str, Any]:
        return self.body


def anomaly_json(anomaly: Anomaly) -> dict[str, Any]:
    """The API's anomaly (API.md "Periodic review")."""
    review = None
    if anomaly.reviewed_at is not None:
        review = {
            "operator_id": anomaly.reviewed_by,
            "outcome": anomaly.status,
            "comment": anomaly.review_comment,
            "reviewed_at": rfc3339(anomaly.reviewed_at),
        }
    return {
        "id": anomaly.id,
        "kind": anomaly.kind,
        "severity": anomaly.severity,
        "status": anomaly.status,
        "subjects": anomaly.subjects,
        "payout_ids": anomaly.payout_ids,
        "explanation": anomaly.explanation,
        "window_start": rfc3339(anomaly.window_start),
        "window_end": rfc3339(anomaly.window_end),
        "detected_at": rfc3339(anomaly.detected_at),
        "updated_at": rfc3339(anomaly.updated_at),
        "review": review,
    }


class ReviewService:
    def __init__(self, session: AsyncSession, runtime: Runtime) -> None:
        self.session = session
        self.runtime = runtime
        self.repo = ReviewRepository(session)

    # -- the scan -----------------------------------------------------------------------------
    async def scan(
        self,
        now: datetime,
        *,
        min_interval: timedelta | None = None,
        max_payouts: int | None = None,
        max_approvals: int | None = None,
    ) -> ScanResult:
        """Read what was created since the last scan (at most ``max_payouts`` payouts and
        ``max_approvals`` approvals: one chunk of a paced scan, review/scanner.py), run every
        detector over it and the windows around it, record what they find, move the
        watermark past what was read; all in the caller's transaction, under the watermark's
        lock. ``ScanResult.complete`` says whether it read everything up to ``now`` (less the
        lag); a paced scan calls again with the same ``now`` until it has."""
        upper = now - SCAN_LAG
        first_floor = id_floor("po", _ms(upper - FIRST_SCAN_LOOKBACK))
        await self.repo.one_core()
        mark = await self.repo.lock_watermark(first_floor, now)
        fresh = min_interval is not None and now - mark.scanned_at < min_interval
        if fresh and mark.last_payout_id != first_floor:
            return ScanResult(0, 0, 0, 0)
        after_approval = mark.last_approval_id or await self.repo.last_approval_id_before(
            upper - FIRST_SCAN_LOOKBACK
        )
        before_id = id_floor("po", _ms(upper))
        last_id = await self.repo.chunk_end(mark.last_payout_id, before_id, max_payouts)
        new_payouts = await self.repo.payouts_between(mark.last_payout_id, last_id)
        new_approvals = await self.repo.approvals_between(after_approval, upper, max_approvals)
        policy = await PolicyService.of(self.session, self.runtime).current()
        data = await self._load(policy, mark.last_payout_id, new_payouts, new_approvals, now)
        found: dict[str, Finding] = {}
        for detector in DETECTORS:
            for finding in detector.find(data):
                found.setdefault(finding.open_key, finding)
        detected, updated = await self._record(list(found.values()), now)
        await self.repo.move_watermark(
            last_id,
            new_approvals[-1].id if new_approvals else after_approval,
            now,
        )
        complete = (max_payouts is None or len(new_payouts) < max_payouts) and (
            max_approvals is None or len(new_approvals) < max_approvals
        )
        result = ScanResult(len(new_payouts), len(new_approvals), detected, updated, complete)
        log.info("review.scan.finished", **dataclasses.asdict(result))
        return result

    async def _load(
        self,
        policy: Policy,
        watermark: str,
        new_payouts: list[PayoutRow],
        new_approvals: Sequence[ApprovalRow],
        now: datetime,
    ) -> ScanData:
        """The windows the detectors need around the new rows, each read on an index; the
        database filters and counts, so only rows a detector may list are built."""
        days = sorted({p.limit_day for p in new_payouts})
        review = policy.review
        recipients: dict[str, list[PayoutRow]] = {}
        if new_payouts:
            window = timedelta(days=review.recipient_many_tickets.window_days)
            # The older payouts from the database, the new ones as already read.
            recipients = await self.repo.recipient_payouts(
                {p.recipient_fingerprint for p in new_payouts},
                min(p.created_at for p in new_payouts) - window,
                watermark,
            )
            for payout in new_payouts:
                recipients[payout.recipient_fingerprint].append(payout)
        history_days = review.requester_velocity.history_days
        requester_days = await self.repo.requester_days(
            {p.requested_by for p in new_payouts},
            (days[0] if days else 0) - 2 * history_days * _DAY_SECONDS,
        )
        since = now - timedelta(days=review.approver_concentration.window_days)
        counts = await self.repo.approval_counts({a.operator_id for a in new_approvals}, since)
        new_pairs = {(a.operator_id, a.requester) for a in new_approvals}
        pairs = await self.repo.pair_approvals(
            [
                (approver, requester)
                for approver, (requester, _, _) in ApproverConcentration.concentrated(
                    counts, policy
                ).items()
                if (approver, requester) in new_pairs
            ],
            since,
        )
        near_limit = await self.repo.near_limit_payouts(
            days, _LONGEST_DAY_SECONDS, ThresholdSplitting.bands(policy)
        )
        elevated = await self.repo.day_payouts_of(
            RequesterVelocity.elevated(new_payouts, requester_days, policy), _LONGEST_DAY_SECONDS
        )
        return ScanData(
            policy=policy,
            new_payouts=new_payouts,
            new_approvals=new_approvals,
            near_limit_payouts=near_limit,
            roles=await self.repo.roles({p.requested_by for p in near_limit}),
            recipient_payouts=recipients,
            requester_days=requester_days,
            elevated_payouts=elevated,
            approval_counts=counts,
            pair_approvals=pairs,
        )

    async def _record(self, findings: Sequence[Finding], now: datetime) -> tuple[int, int]:
        """Open an anomaly per new finding, update the open one a finding repeats; each with
        its chained event; ``anomaly.detected`` webhooks for the new ones."""
        existing = await self.repo.open_by_keys([f.open_key for f in findings])
        events: list[dict[str, Any]] = []
        outbox: list[_AnomalyEvent] = []
        for finding in findings:
            anomaly = existing.get(finding.open_key)
            if anomaly is None:
                anomaly = await self._open(finding, now)
                event = self._event(anomaly, "anomaly.detected", SYSTEM_ACTOR, now)
                outbox.extend(
                    _AnomalyEvent(
                        event["id"],
                        anomaly.id,
                        integration,
                        1,
                        event["type"],
                        now,
                        anomaly_json(anomaly),
                    )
                    for integration in sorted(finding.integration_ids)
                )
                ANOMALIES_DETECTED.labels(kind=finding.kind).inc()
            else:
                self._merge(anomaly, finding, now)
                event = self._event(anomaly, "anomaly.updated", SYSTEM_ACTOR, now)
            events.append(event)
            if finding.open_key not in existing:
                self.repo.add(anomaly)  # an existing one is updated by the session's flush
        await self.repo.insert_events(events)
        await enqueue_deliveries(self.session, outbox, endpoint_presence(self.runtime))
        return len(findings) - len(existing), len(existing)

    async def _open(self, finding: Finding, now: datetime) -> Anomaly:
        return Anomaly(
            id=new_id(ANOMALY_ID_PREFIX, _ms(now)),
            kind=finding.kind,
            severity=finding.severity,
            status=AnomalyStatus.OPEN.value,
            open_key=finding.open_key,
            subjects=finding.subjects,
            subject_requester=finding.requester,
            subject_recipient=finding.recipient,
            subject_approver=finding.approver,
            payout_ids=list(finding.payout_ids),
            explanation=finding.explanation,
            window_start=finding.window_start,
            window_end=finding.window_end,
            detected_at=now,
            updated_at=now,
            reviewed_by=None,
            reviewed_at=None,
            review_comment=None,
            last_event_sequence=0,
            last_event_hash=GENESIS_HASH,
        )

    @staticmethod
    def _merge(anomaly: Anomaly, finding: Finding, now: datetime) -> None:
        ids = sorted(set(anomaly.payout_ids) | set(finding.payout_ids))[-MAX_PAYOUT_IDS:]
        anomaly.payout_ids = ids
        anomaly.severity = finding.severity
        anomaly.subjects = finding.subjects
        anomaly.explanation = finding.explanation
        anomaly.window_start = min(anomaly.window_start, finding.window_start)
        anomaly.window_end = max(anomaly.window_end, finding.window_end)
        anomaly.updated_at = now

    def _event(
        self,
        anomaly: Anomaly,
        type_: str,
        actor: str,
        at: datetime,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The anomaly's next chained event, hashed under the audit key like a payout's
        (payouts/events.py ``event_hash``); moves the anomaly's chain head."""
        data = {
            "status": anomaly.status,
            "severity": anomaly.severity,
            "subjects": anomaly.subjects,
            "payout_ids": anomaly.payout_ids,
            "explanation": anomaly.explanation,
            **(extra or {}),
        }
        event_id = new_id("evt", _ms(at))
        sequence = anomaly.last_event_sequence + 1
        digest = event_hash(
            payout_id=anomaly.id,
            sequence=sequence,
            type=type_,
            actor=actor,
            at=at,
            data=data,
            prev_hash=anomaly.last_event_hash,
            event_id=event_id,
            key=self.runtime.audit_key,
        )
        row = {
            "id": event_id,
            "anomaly_id": anomaly.id,
            "sequence": sequence,
            "type": type_,
            "actor": actor,
            "data": data,
            "at": at,
            "prev_hash": anomaly.last_event_hash,
            "hash": digest,
            "hash_scheme": KEYED_SCHEME,
        }
        anomaly.last_event_sequence = sequence
        anomaly.last_event_hash = digest
        return row

    # -- the API ------------------------------------------------------------------------------
    async def list_json(
        self,
        limit: int,
        before_id: str | None,
        status: AnomalyStatus | None,
        kind: str | None,
        since: datetime | None,
    ) -> list[dict[str, Any]]:
        anomalies = await self.repo.list(
            limit=limit, before_id=before_id, status=status, kind=kind, since=since
        )
        return [anomaly_json(a) for a in anomalies]

    async def get_json(self, anomaly_id: str) -> dict[str, Any]:
        anomaly = await self.repo.get(anomaly_id)
        if anomaly is None:
            raise not_found("Anomaly", anomaly_id)
        return anomaly_json(anomaly)

    async def events_json(self, anomaly_id: str) -> list[dict[str, Any]]:
        if await self.repo.get(anomaly_id) is None:
            raise not_found("Anomaly", anomaly_id)
        return [
            {
                "id": e.id,
                "sequence": e.sequence,
                "type": e.type,
                "actor": e.actor,
                "at": rfc3339(e.at),
                "data": e.data,
                "hash": e.hash,
            }
            for e in await self.repo.events_for(anomaly_id)
        ]

    async def review(
        self,
        credential: Credential,
        anomaly_id: str,
        named: str | None,
        outcome: ReviewOutcome,
        comment: str | None,
    ) -> dict[str, Any]:
        """Close an open anomaly as dismissed or confirmed; the decision is an operator's
        (payouts/acting.py ``deciding_operator``: a bound key when the policy requires it)
        and is chained into the anomaly's audited history."""
        policy = await PolicyService.of(self.session, self.runtime).current()
        acting = deciding_operator(credential, named, policy)
        await OperatorService(self.session).require_active(
            acting.operator_id, discreet=acting.discreet_for(credential)
        )
        anomaly = await self.repo.get(anomaly_id, for_update=True)
        if anomaly is None:
            raise not_found("Anomaly", anomaly_id)
        if anomaly.status != AnomalyStatus.OPEN.value:
            raise invalid_status_transition(anomaly_id, anomaly.status, "review")
        now = utcnow()
        anomaly.status = outcome
        anomaly.open_key = None
        anomaly.reviewed_by = acting.operator_id
        anomaly.reviewed_at = now
        anomaly.review_comment = comment
        anomaly.updated_at = now
        event = self._event(
            anomaly,
            "anomaly.reviewed",
            acting.operator_id,
            now,
            {"outcome": outcome, "comment": comment, "operator_verified": acting.verified},
        )
        await self.repo.insert_events([event])
        log.info("review.anomaly.reviewed", anomaly_id=anomaly_id, outcome=outcome)
        return anomaly_json(anomaly)

    async def export_csv(
        self, status: AnomalyStatus | None, kind: str | None, since: datetime | None
    ) -> str:
        """Every matching anomaly, newest first, as CSV for the review meeting."""
        anomalies = await self.repo.list(
            limit=0, before_id=None, status=status, kind=kind, since=since
        )
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(_CSV_COLUMNS)
        for a in anomalies:
            s = a.subjects
            writer.writerow(
                _cell(v)
                for v in (
                    a.id,
                    a.kind,
                    a.severity,
                    a.status,
                    rfc3339(a.detected_at),
                    s.get("requester", ""),
                    s.get("approver", ""),
                    s.get("recipient_masked", ""),
                    len(a.payout_ids),
                    " ".join(a.payout_ids),
                    a.explanation,
                    a.reviewed_by or "",
                    rfc3339(a.reviewed_at) if a.reviewed_at else "",
                    a.review_comment or "",
                )
            )
        return out.getvalue()


_CSV_COLUMNS = (
    "id",
    "kind",
    "severity",
    "status",
    "detected_at",
    "requester",
    "approver",
    "recipient_masked",
    "payouts",
    "payout_ids",
    "explanation",
    "reviewed_by",
    "reviewed_at",
    "review_comment",
)


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: a leading = + - @ would make it a formula
    (CSV injection through an operator id or a review comment)."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
