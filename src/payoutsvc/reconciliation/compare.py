"""The verdicts: one payout of ours against what the gateway (or a bank statement) says.

Pure functions over plain values, so each rule is tested without a database or gateway.

=====================  ====================================================================
ours                   theirs → verdict
=====================  ====================================================================
processing             pending → matched; succeeded/failed → ``status_mismatch`` (the
                       executor has not settled it yet, or missed the result);
                       not found → ``missing_at_gateway``
succeeded              succeeded → matched, then ``amount_mismatch`` when the amount or
                       currency differ; pending/failed → ``status_mismatch``;
                       not found → ``missing_at_gateway``
failed                 failed or not found (a decline books nothing) → matched;
                       succeeded/pending → ``status_mismatch`` (money moved after all?)
needs_review           anything the gateway knows → ``status_mismatch`` (it tells the
                       reviewer what the gateway says); not found → ``missing_at_gateway``
=====================  ====================================================================

An answer that is not certain (timeout, 5xx, a gateway not configured) is never a verdict:
it is recorded as ``unknown`` with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from payoutsvc.gateways.base import ListedTransfer, TransferResult, TransferState
from payoutsvc.payouts.status import PayoutStatus
from payoutsvc.reconciliation.models import ItemKind

S = PayoutStatus
T = TransferState

# The statuses a payout of the period is compared in: it was (or is being) sent.
COMPARED_STATUSES: tuple[str, ...] = (
    S.PROCESSING.value,
    S.SUCCEEDED.value,
    S.FAILED.value,
    S.NEEDS_REVIEW.value,
)

_AGREES: dict[str, frozenset[TransferState]] = {
    S.PROCESSING.value: frozenset({T.PENDING}),
    S.SUCCEEDED.value: frozenset({T.SUCCEEDED}),
    S.FAILED.value: frozenset({T.FAILED, T.NOT_FOUND}),
    S.NEEDS_REVIEW.value: frozenset(),
}


@dataclass(frozen=True, slots=True)
class OurPayout:
    id: str
    status: str
    amount_minor: int
    currency: str
    idempotency_key: str
    reference: str | None


@dataclass(frozen=True, slots=True)
class Theirs:
    """What the other side says about one transfer."""

    state: TransferState
    status_word: str  # their own word, shown to people
    reference: str | None = None
    amount_minor: int | None = None
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    kind: ItemKind
    payout: OurPayout | None
    theirs: Theirs | None = None
    detail: str | None = None


def theirs_of(result: TransferResult) -> Theirs:
    return Theirs(
        state=result.state,
        status_word=result.gateway_status or result.state.value,
        reference=result.reference,
        amount_minor=result.amount_minor,
        currency=result.currency,
    )


def theirs_listed(transfer: ListedTransfer) -> Theirs:
    return Theirs(
        state=transfer.state,
        status_word=transfer.state.value,
        reference=transfer.reference,
        amount_minor=transfer.amount_minor,
        currency=transfer.currency,
    )


def verdict(ours: OurPayout, theirs: Theirs) -> Finding:
    """Compare one payout with the gateway's certain answer about it."""
    if theirs.state is T.NOT_FOUND and ours.status != S.FAILED.value:
        return Finding(ItemKind.MISSING_AT_GATEWAY, ours, theirs, "the gateway has no transfer")
    if theirs.state not in _AGREES[ours.status]:
        return Finding(ItemKind.STATUS_MISMATCH, ours, theirs, None)
    if theirs.state is T.SUCCEEDED and _amount_differs(ours, theirs):
        return Finding(ItemKind.AMOUNT_MISMATCH, ours, theirs, None)
    return Finding(ItemKind.MATCHED, ours, theirs)


def _amount_differs(ours: OurPayout, theirs: Theirs) -> bool:
    if theirs.amount_minor is None:  # this gateway's answer does not say: nothing to compare
        return False
    return theirs.amount_minor != ours.amount_minor or (
        theirs.currency is not None and theirs.currency.upper() != ours.currency
    )


def unknown(ours: OurPayout, reason: str) -> Finding:
    return Finding(ItemKind.UNKNOWN, ours, None, reason)


def strangers(
    listed: Iterable[ListedTransfer], known_keys: frozenset[str], known_refs: frozenset[str]
) -> list[Finding]:
    """Transfers in the gateway's own list that belong to no payout of ours."""
    return [
        Finding(ItemKind.UNKNOWN_TO_US, None, theirs_listed(t), "no payout has this transfer")
        for t in listed
        if t.idempotency_key not in known_keys and t.reference not in known_refs
    ]


# -- bank statements ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StatementRow:
    reference: str
    amount_minor: int
    currency: str
    status: str  # succeeded | failed | pending
    date: str


_STATEMENT_STATES = {"succeeded": T.SUCCEEDED, "failed": T.FAILED, "pending": T.PENDING}


def statement_keys(payout: OurPayout) -> tuple[str, ...]:
    """What a statement row's reference may name a payout by: the bank reference finance
    recorded, our payout id (put in the transfer's remark), or its idempotency key."""
    return tuple(k for k in (payout.reference, payout.id, payout.idempotency_key) if k)


def compare_statement(payouts: Sequence[OurPayout], rows: Sequence[StatementRow]) -> list[Finding]:
    """Each payout against the statement row naming it. A payout the statement does not
    name is matched when nothing was paid by our records (processing: still awaiting
    payment; failed), else ``missing_at_gateway``; a row naming no payout is
    ``unknown_to_us``."""
    by_reference: Mapping[str, StatementRow] = {row.reference: row for row in rows}
    used: set[str] = set()
    findings: list[Finding] = []
    for payout in payouts:
        row = next((by_reference[k] for k in statement_keys(payout) if k in by_reference), None)
        if row is None:
            paid = payout.status in (S.SUCCEEDED.value, S.NEEDS_REVIEW.value)
            theirs = Theirs(T.NOT_FOUND, "not_in_statement")
            kind = ItemKind.MISSING_AT_GATEWAY if paid else ItemKind.MATCHED
            findings.append(Finding(kind, payout, theirs, "not in the statement"))
            continue
        used.add(row.reference)
        theirs = Theirs(
            _STATEMENT_STATES[row.status], row.status, row.reference, row.amount_minor, row.currency
        )
        if payout.status == S.PROCESSING.value and theirs.state is T.SUCCEEDED:
            # Paid at the bank, not yet recorded here (record-payment): worth a look.
            findings.append(Finding(ItemKind.STATUS_MISMATCH, payout, theirs, "not recorded"))
            continue
        findings.append(verdict(payout, theirs))
    for row in rows:
        if row.reference not in used:
            theirs = Theirs(
                _STATEMENT_STATES[row.status],
                row.status,
                row.reference,
                row.amount_minor,
                row.currency,
            )
            findings.append(Finding(ItemKind.UNKNOWN_TO_US, None, theirs, f"dated {row.date}"))
    return findings
