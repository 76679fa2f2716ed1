"""The periodic review's detectors, one small class each, run in ``DETECTORS`` order.

Every detector reads only a ``ScanData`` (what the scan loaded: the new payouts and
approvals since the last scan and the windows around them) and returns ``Finding``s. A
finding names its subjects (recipients only masked), lists its payout ids and explains itself
in one sentence a finance auditor understands. A detector reports a finding only when it
includes something new since the last scan, so a reviewed (dismissed or confirmed) finding
is not raised again unless new activity adds to it. Thresholds come from the policy's
``review`` section (policy/document.py ``ReviewIn``). ``kind``s are part of the API: never
rename one.
"""

from __future__ import annotations

import hashlib
import statistics
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, Literal, NamedTuple

from payoutsvc.money import format_money
from payoutsvc.policy.document import Policy

__all__ = [
    "DETECTORS",
    "ApprovalRow",
    "ApproverConcentration",
    "CounterRow",
    "Detector",
    "Finding",
    "OffHours",
    "PayoutRow",
    "RecipientManyTickets",
    "RequesterVelocity",
    "ScanData",
    "ThresholdSplitting",
]

Severity = Literal["low", "medium", "high"]
# Payouts a person stopped (rejected) or withdrew (canceled) are no activity to review.
IGNORED_STATUSES = frozenset({"rejected", "canceled"})
# The most payout ids one anomaly lists (the newest); the explanation gives the full count.
MAX_PAYOUT_IDS = 200
_WEEKDAYS = ("", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class PayoutRow(NamedTuple):
    """One payout as the detectors see it (a tuple: a scan builds tens of thousands)."""

    id: str
    integration_id: str
    requested_by: str
    recipient_fingerprint: str
    recipient_masked: str
    ticket: str  # "system:id"
    amount_minor: int
    currency: str
    status: str
    created_at: datetime
    limit_day: int  # the policy day (UTC epoch seconds of its local midnight)


@dataclass(frozen=True, slots=True)
class ApprovalRow:
    """One approval (a person's ``approved`` decision) with the payout it approved."""

    id: int
    payout_id: str
    operator_id: str
    at: datetime
    requester: str
    integration_id: str


@dataclass(frozen=True, slots=True)
class CounterRow:
    """A requester's counted payouts in one currency on one policy day (limit_counters)."""

    day: int
    payouts: int
    amount_minor: int


@dataclass(frozen=True, slots=True)
class ScanData:
    """What one scan loaded; every mapping is read-only."""

    policy: Policy
    new_payouts: Sequence[PayoutRow]
    new_approvals: Sequence[ApprovalRow]
    # The payouts of each policy day a new payout falls on that are counted (not rejected
    # or canceled) and just under some limit of the policy: the database filters the day by
    # ThresholdSplitting.bands, so the day's other payouts are never read.
    near_limit_payouts: Sequence[PayoutRow]
    # requester -> role, for the requesters of ``near_limit_payouts``.
    roles: Mapping[str, str]
    # fingerprint -> its payouts in the recipient_many_tickets window, for new payouts' recipients.
    recipient_payouts: Mapping[str, Sequence[PayoutRow]]
    # (requester, currency) -> day counters, oldest first, for new payouts' requesters.
    requester_days: Mapping[tuple[str, str], Sequence[CounterRow]]
    # (requester, currency, day) -> that day's counted payouts, for the days
    # RequesterVelocity.elevated names (few; the counters decide, the rows are only listed).
    elevated_payouts: Mapping[tuple[str, str, int], Sequence[PayoutRow]]
    # approver -> requester -> approvals in the approver_concentration window, for the
    # approvers of ``new_approvals`` (counted by the database).
    approval_counts: Mapping[str, Mapping[str, int]]
    # The approvals in that window of the pairs ApproverConcentration.concentrated names.
    pair_approvals: Mapping[tuple[str, str], Sequence[ApprovalRow]]
    new_ids: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        # New payouts only: a later approval of an old payout is not new activity of the
        # payout-based findings (the approval-based detectors read new_approvals).
        object.__setattr__(self, "new_ids", frozenset(p.id for p in self.new_payouts))

    def local_date(self, moment: datetime) -> date:
        return moment.astimezone(self.policy.zone).date()

    def day_label(self, day: int) -> str:
        return datetime.fromtimestamp(day, UTC).astimezone(self.policy.zone).date().isoformat()


@dataclass(frozen=True, slots=True)
class Finding:
    """One anomaly as a detector reports it; ``key`` names its kind, subjects and window."""

    kind: str
    severity: Severity
    key: str
    subjects: dict[str, Any]
    payout_ids: tuple[str, ...]
    integration_ids: frozenset[str]
    explanation: str
    window_start: datetime
    window_end: datetime
    requester: str | None = None
    recipient: str | None = None  # fingerprint, never shown
    approver: str | None = None

    @property
    def open_key(self) -> str:
        return hashlib.sha256(self.key.encode()).hexdigest()


def _finding(
    kind: str,
    severity: Severity,
    key_parts: Iterable[object],
    payouts: Sequence[PayoutRow],
    explanation: str,
    **subjects: Any,
) -> Finding:
    """A finding over ``payouts`` (its window spans their creation times)."""
    newest = sorted(payouts, key=lambda p: p.id, reverse=True)[:MAX_PAYOUT_IDS]
    shown = {k: v for k, v in subjects.items() if k not in ("recipient",) and v is not None}
    return Finding(
        kind=kind,
        severity=severity,
        key="\x1f".join([kind, *(str(part) for part in key_parts)]),
        subjects=shown,
        payout_ids=tuple(sorted(p.id for p in newest)),
        integration_ids=frozenset(p.integration_id for p in payouts),
        explanation=explanation,
        window_start=min(p.created_at for p in payouts),
        window_end=max(p.created_at for p in payouts),
        requester=subjects.get("requester"),
        recipient=subjects.get("recipient"),
        approver=subjects.get("approver"),
    )


def _single(values: Iterable[str]) -> str | None:
    found = set(values)
    return found.pop() if len(found) == 1 else None


class Detector(ABC):
    """One detector. ``kind`` is stable API."""

    kind: ClassVar[str]

    @abstractmethod
    def find(self, data: ScanData) -> list[Finding]:
        """The findings in ``data`` that include something new since the last scan."""

    def __repr__(self) -> str:
        return f"<detector {self.kind}>"


class ThresholdSplitting(Detector):
    """Several payouts on one policy day, each just under a limit, that together exceed it.

    Catches one large refund split into pieces that each stay under the requester role's
    auto-approval limit (so nobody has to approve them) or under ``dual_approval_over`` (so
    one approver suffices). "Just under" is ``near_percent`` of the limit up to the limit;
    it takes ``min_payouts`` of them by one requester, or to one recipient from several
    requesters, whose sum exceeds the limit.
    """

    kind = "threshold_splitting"

    @staticmethod
    def bands(policy: Policy) -> list[tuple[str, int, int]]:
        """(currency, lowest, highest amount in minor units) just under each of the policy's
        limits (any role's): what the scan reads of a day."""
        near_percent = policy.review.threshold_splitting.near_percent
        limits = {
            (currency, limit)
            for role in policy.roles.values()
            for currency, limit in role.auto_approve_max.items()
        } | set(policy.dual_approval_over.items())
        # The lowest amount with amount * 100 >= limit * near_percent (the test in find).
        return sorted(
            (currency, -(-limit * near_percent // 100), limit)
            for currency, limit in limits
            if limit > 0
        )

    def find(self, data: ScanData) -> list[Finding]:
        settings = data.policy.review.threshold_splitting
        groups: dict[tuple[str, str, int, str, str, int], list[PayoutRow]] = defaultdict(list)
        for payout in data.near_limit_payouts:
            for name, limit in self._limits(payout, data):
                if limit > 0 and limit * settings.near_percent <= payout.amount_minor * 100 <= (
                    limit * 100
                ):
                    day, c = payout.limit_day, payout.currency
                    groups["requester", payout.requested_by, day, c, name, limit].append(payout)
                    groups["recipient", payout.recipient_fingerprint, day, c, name, limit].append(
                        payout
                    )
        findings: list[Finding] = []
        for key, payouts in groups.items():
            total = sum(p.amount_minor for p in payouts)
            if len(payouts) < settings.min_payouts or total <= key[5]:
                continue
            if not data.new_ids.intersection(p.id for p in payouts):
                continue
            requester = _single(p.requested_by for p in payouts)
            if key[0] == "recipient" and requester is not None:
                continue  # the requester's own group says it
            findings.append(self._finding(key, payouts, total, requester, data))
        return findings

    @staticmethod
    def _limits(payout: PayoutRow, data: ScanData) -> list[tuple[str, int]]:
        policy = data.policy
        limits: list[tuple[str, int]] = []
        role = policy.role(data.roles.get(payout.requested_by))
        if role is not None and payout.currency in role.auto_approve_max:
            limits.append((f"{role.name} auto-approval", role.auto_approve_max[payout.currency]))
        if payout.currency in policy.dual_approval_over:
            limits.append(("dual-approval", policy.dual_approval_over[payout.currency]))
        return limits

    def _finding(
        self,
        key: tuple[str, str, int, str, str, int],
        payouts: Sequence[PayoutRow],
        total: int,
        requester: str | None,
        data: ScanData,
    ) -> Finding:
        side, _, day, currency, name, limit = key
        recipient = _single(p.recipient_fingerprint for p in payouts)
        masked = _single(p.recipient_masked for p in payouts)
        amounts = sorted(p.amount_minor for p in payouts)
        who = f"{requester} requested" if requester else "Several requesters requested"
        to = f" to recipient {masked}" if recipient and masked else ""
        if side == "recipient":
            who = f"{len({p.requested_by for p in payouts})} requesters requested"
        explanation = (
            f"{who} {len(payouts)} payouts{to} on {data.day_label(day)} of "
            f"{format_money(amounts[0], currency)} to {format_money(amounts[-1], currency)}, "
            f"each just under the {name} limit of {format_money(limit, currency)}, together "
            f"{format_money(total, currency)}."
        )
        return _finding(
            self.kind,
            "high" if total > 2 * limit else "medium",
            key,
            payouts,
            explanation,
            requester=requester,
            recipient=recipient,
            recipient_masked=masked if recipient else None,
            currency=currency,
            day=data.day_label(day),
            limit=name,
        )


class RecipientManyTickets(Detector):
    """One recipient paid on many tickets or by many requesters within ``window_days``.

    Catches an insider's or a fraud ring's account collecting small sums across tickets and
    agents, where every per-ticket, per-requester and per-recipient-day cap holds: at least
    ``min_tickets`` distinct tickets or ``min_requesters`` distinct requesters.
    """

    kind = "recipient_many_tickets"

    def find(self, data: ScanData) -> list[Finding]:
        settings = data.policy.review.recipient_many_tickets
        findings: list[Finding] = []
        window = timedelta(days=settings.window_days)
        for fingerprint, rows in data.recipient_payouts.items():
            counted = [p for p in rows if p.status not in IGNORED_STATUSES]
            if not counted or not data.new_ids.intersection(p.id for p in counted):
                continue
            since = max(p.created_at for p in counted) - window
            payouts = [p for p in counted if p.created_at > since]
            tickets = {p.ticket for p in payouts}
            requesters = {p.requested_by for p in payouts}
            many_tickets = len(tickets) >= settings.min_tickets
            many_requesters = len(requesters) >= settings.min_requesters
            if not (many_tickets or many_requesters):
                continue
            masked = payouts[-1].recipient_masked
            last_day = data.local_date(max(p.created_at for p in payouts))
            explanation = (
                f"Recipient {masked} was paid on {len(tickets)} tickets by {len(requesters)} "
                f"requesters in the {settings.window_days} days to {last_day.isoformat()} "
                f"({len(payouts)} payouts: {_totals(payouts)})."
            )
            findings.append(
                _finding(
                    self.kind,
                    "high" if many_tickets and many_requesters else "medium",
                    [fingerprint],
                    payouts,
                    explanation,
                    recipient=fingerprint,
                    recipient_masked=masked,
                    requester=_single(requesters),
                    tickets=len(tickets),
                    requesters=len(requesters),
                )
            )
        return findings


def _totals(payouts: Iterable[PayoutRow]) -> str:
    by_currency: dict[str, int] = defaultdict(int)
    for payout in payouts:
        by_currency[payout.currency] += payout.amount_minor
    return ", ".join(format_money(a, c) for c, a in sorted(by_currency.items()))


class RequesterVelocity(Detector):
    """A requester's count or amount on one policy day far above their own usual.

    The usual is the median of their last ``history_days`` active days before it (days with
    at least one counted payout, from the limit counters); it takes ``min_history_days`` of
    history, at least ``min_payouts`` payouts that day, and ``factor`` times the median
    count or amount. Catches a hijacked account or an agent suddenly paying out far more.
    """

    kind = "requester_velocity"

    @staticmethod
    def _usual(
        counters: Sequence[CounterRow], day: int, policy: Policy
    ) -> tuple[CounterRow, int, float, float] | None:
        """(that day's counter, active days of history, median count, median amount) when the
        day is far above the requester's usual, else None."""
        settings = policy.review.requester_velocity
        today = next((c for c in counters if c.day == day), None)
        history = [c for c in counters if c.day < day and c.payouts > 0]
        history = history[-settings.history_days :]
        if today is None or len(history) < settings.min_history_days:
            return None
        usual_count = statistics.median(c.payouts for c in history)
        usual_amount = statistics.median(c.amount_minor for c in history)
        by_count = today.payouts >= settings.factor * usual_count
        by_amount = today.amount_minor >= settings.factor * usual_amount
        if today.payouts < settings.min_payouts or not (by_count or by_amount):
            return None
        return today, len(history), usual_count, usual_amount

    @classmethod
    def elevated(
        cls,
        new_payouts: Iterable[PayoutRow],
        requester_days: Mapping[tuple[str, str], Sequence[CounterRow]],
        policy: Policy,
    ) -> list[tuple[str, str, int]]:
        """The (requester, currency, day)s of new payouts whose day is far above the usual."""
        touched = {(p.requested_by, p.currency, p.limit_day) for p in new_payouts}
        return [
            (requester, currency, day)
            for requester, currency, day in sorted(touched)
            if cls._usual(requester_days.get((requester, currency), ()), day, policy)
        ]

    def find(self, data: ScanData) -> list[Finding]:
        settings = data.policy.review.requester_velocity
        findings: list[Finding] = []
        for requester, currency, day in self.elevated(
            data.new_payouts, data.requester_days, data.policy
        ):
            counters = data.requester_days[requester, currency]
            usual = self._usual(counters, day, data.policy)
            payouts = data.elevated_payouts.get((requester, currency, day), ())
            if usual is None or not payouts:
                continue
            today, active_days, usual_count, usual_amount = usual
            explanation = (
                f"{requester} requested {today.payouts} payouts totalling "
                f"{format_money(today.amount_minor, currency)} on {data.day_label(day)}; their "
                f"median over the last {active_days} active days is {usual_count:g} payouts "
                f"and {format_money(int(usual_amount), currency)}."
            )
            ratio = max(today.payouts / usual_count, today.amount_minor / max(usual_amount, 1))
            findings.append(
                _finding(
                    self.kind,
                    "high" if ratio >= 2 * settings.factor else "medium",
                    [requester, currency, day],
                    payouts,
                    explanation,
                    requester=requester,
                    currency=currency,
                    day=data.day_label(day),
                )
            )
        return findings


class ApproverConcentration(Detector):
    """An approver whose approvals within ``window_days`` mostly go to one requester.

    Catches a pair that waves each other's payouts through (four eyes that are really two):
    at least ``min_approvals`` approvals, of which ``share_percent`` or more approve one
    requester's payouts.
    """

    kind = "approver_concentration"

    @staticmethod
    def concentrated(
        counts: Mapping[str, Mapping[str, int]], policy: Policy
    ) -> dict[str, tuple[str, int, int]]:
        """approver -> (requester, their approvals, all approvals) where the threshold holds."""
        settings = policy.review.approver_concentration
        found: dict[str, tuple[str, int, int]] = {}
        for approver, by_requester in counts.items():
            total = sum(by_requester.values())
            if total < settings.min_approvals:
                continue
            requester, top = max(by_requester.items(), key=lambda item: (item[1], item[0]))
            if top * 100 >= settings.share_percent * total:
                found[approver] = (requester, top, total)
        return found

    def find(self, data: ScanData) -> list[Finding]:
        settings = data.policy.review.approver_concentration
        new_pairs = {(a.operator_id, a.requester) for a in data.new_approvals}
        findings: list[Finding] = []
        concentrated = self.concentrated(data.approval_counts, data.policy)
        for approver, (requester, top, total) in sorted(concentrated.items()):
            pair = data.pair_approvals.get((approver, requester), ())
            if (approver, requester) not in new_pairs or not pair:
                continue
            share = top * 100 // total
            explanation = (
                f"{approver} gave {top} of their {total} approvals in the last "
                f"{settings.window_days} days ({share}%) to payouts requested by {requester}."
            )
            findings.append(
                _approval_finding(
                    self.kind,
                    "high" if top == total else "medium",
                    [approver, requester],
                    pair,
                    explanation,
                    approver=approver,
                    requester=requester,
                    share_percent=share,
                )
            )
        return findings


def _approval_finding(
    kind: str,
    severity: Severity,
    key_parts: Iterable[object],
    approvals: Sequence[ApprovalRow],
    explanation: str,
    **subjects: Any,
) -> Finding:
    newest = sorted(approvals, key=lambda a: a.id, reverse=True)[:MAX_PAYOUT_IDS]
    return Finding(
        kind=kind,
        severity=severity,
        key="\x1f".join([kind, *(str(part) for part in key_parts)]),
        subjects={k: v for k, v in subjects.items() if v is not None},
        payout_ids=tuple(sorted({a.payout_id for a in newest})),
        integration_ids=frozenset(a.integration_id for a in approvals),
        explanation=explanation,
        window_start=min(a.at for a in approvals),
        window_end=max(a.at for a in approvals),
        requester=subjects.get("requester"),
        approver=subjects.get("approver"),
    )


class OffHours(Detector):
    """Requests or approvals outside the policy's ``review.working_hours`` (in the policy
    timezone), one finding per person and local day; silent while working hours are unset.

    Catches activity at 3 a.m. or on a Sunday, when nobody is around to notice it.
    """

    kind = "off_hours"

    def find(self, data: ScanData) -> list[Finding]:
        hours = data.policy.review.working_hours
        if hours is None:
            return []
        zone = data.policy.zone

        def outside(moment: datetime) -> bool:
            local = moment.astimezone(zone)
            return (
                local.isoweekday() not in hours.days
                or not hours.start <= local.strftime("%H:%M") < hours.end
            )

        requests: dict[tuple[str, date], list[PayoutRow]] = defaultdict(list)
        for payout in data.new_payouts:
            if outside(payout.created_at):
                requests[payout.requested_by, data.local_date(payout.created_at)].append(payout)
        approvals: dict[tuple[str, date], list[ApprovalRow]] = defaultdict(list)
        for approval in data.new_approvals:
            if outside(approval.at):
                approvals[approval.operator_id, data.local_date(approval.at)].append(approval)
        days = ", ".join(_WEEKDAYS[d] for d in sorted(hours.days))
        when = f"{hours.start}-{hours.end} {days}, {data.policy.timezone}"
        findings = [
            self._requests(person, day, payouts, when, data)
            for (person, day), payouts in requests.items()
        ]
        for (person, day), rows in approvals.items():
            times = ", ".join(sorted(a.at.astimezone(zone).strftime("%H:%M") for a in rows))
            explanation = (
                f"{person} approved {len(rows)} payouts outside working hours ({when}) on "
                f"{day.isoformat()}, at {times}."
            )
            findings.append(
                _approval_finding(
                    self.kind,
                    "low",
                    ["approver", person, day],
                    rows,
                    explanation,
                    approver=person,
                    day=day.isoformat(),
                )
            )
        return findings

    def _requests(
        self, person: str, day: date, payouts: Sequence[PayoutRow], when: str, data: ScanData
    ) -> Finding:
        zone = data.policy.zone
        times = ", ".join(sorted(p.created_at.astimezone(zone).strftime("%H:%M") for p in payouts))
        explanation = (
            f"{person} requested {len(payouts)} payouts outside working hours ({when}) on "
            f"{day.isoformat()}, at {times}."
        )
        return _finding(
            self.kind,
            "low",
            ["requester", person, day],
            payouts,
            explanation,
            requester=person,
            day=day.isoformat(),
        )


DETECTORS: tuple[Detector, ...] = (
    ThresholdSplitting(),
    RecipientManyTickets(),
    RequesterVelocity(),
    ApproverConcentration(),
    OffHours(),
)
