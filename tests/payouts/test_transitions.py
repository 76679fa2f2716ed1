"""payouts/transitions.py: the one place a status moves."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from payoutsvc.db.base import utcnow
from payoutsvc.errors import InvalidStatusTransition
from payoutsvc.payouts import transitions
from payoutsvc.payouts.events import GENESIS_HASH, hash_of, state_digest
from payoutsvc.payouts.status import ALLOWED_TRANSITIONS, PayoutStatus

S = PayoutStatus
KEY = b"k" * 32
ARROWS = [
    transitions.APPROVE,
    transitions.REJECT,
    transitions.CANCEL,
    transitions.CLAIM,
    transitions.FINISH,
    transitions.RESOLVE,
    transitions.SETTLE,
]


def payout(status: PayoutStatus, sequence: int = 3) -> dict[str, Any]:
    return {
        "id": "po_1",
        "integration_id": "int_1",
        "status": status.value,
        "last_event_sequence": sequence,
        "last_event_hash": "a" * 64,
        "locked_by": "w/1",
        "locked_until": utcnow(),
        "next_attempt_at": utcnow(),
        "gateway_reference": None,
        "gateway_status": None,
        "gateway_details": None,
        "failure_code": None,
        "failure_message": None,
    }


def test_every_arrow_is_an_arrow_of_the_contract() -> None:
    for arrow in ARROWS:
        for source in arrow.sources:
            assert arrow.targets <= ALLOWED_TRANSITIONS[source], arrow
    with pytest.raises(ValueError, match="not an arrow"):
        transitions.Arrow("revive", frozenset({S.CANCELED}), frozenset({S.APPROVED}))
    # Every arrow of the contract is taken by some action.
    taken = {(s, t) for a in ARROWS for s in a.sources for t in a.targets}
    drawn = {(s, t) for s, targets in ALLOWED_TRANSITIONS.items() for t in targets}
    assert taken == drawn


@pytest.mark.parametrize(
    ("arrow", "current"),
    [
        (transitions.APPROVE, S.CANCELED),
        (transitions.CANCEL, S.PROCESSING),
        (transitions.RESOLVE, S.PROCESSING),
        (transitions.CLAIM, S.PENDING_APPROVAL),
        (transitions.SETTLE, S.SUCCEEDED),
    ],
)
def test_an_action_from_a_status_it_may_not_start_from_is_a_409(
    arrow: transitions.Arrow, current: PayoutStatus
) -> None:
    target = next(iter(arrow.targets))
    lease = transitions.Lease("w/2", utcnow()) if target is S.PROCESSING else None
    with pytest.raises(InvalidStatusTransition) as refused:
        transitions.move(
            arrow,
            payout(current),
            target,
            actor="x",
            data={},
            at=utcnow(),
            present=dict,
            key=KEY,
            lease=lease,
        )
    assert refused.value.status == 409
    assert arrow.action in refused.value.detail


def test_a_move_chains_its_event_and_sets_whose_job_the_payout_is() -> None:
    now = utcnow()
    approved = transitions.move(
        transitions.APPROVE,
        payout(S.PENDING_APPROVAL),
        S.APPROVED,
        actor="sup-2",
        data={"comment": "ok"},
        at=now,
        present=dict,
        key=KEY,
    )
    assert approved.event.sequence == 4
    assert approved.event.prev_hash == "a" * 64
    assert approved.event.data == {
        "status": "approved",
        "comment": "ok",
        # Seals the state after the move: the status and the gateway/failure columns.
        "state_digest": state_digest({**payout(S.PENDING_APPROVAL), "status": "approved"}),
    }
    assert approved.head == transitions.ChainHead(4, hash_of(approved.event, KEY))
    assert approved.values["last_event_hash"] == approved.head.hash
    assert approved.values["next_attempt_at"] == now  # the executor's job as of now
    assert approved.values["locked_by"] is None
    assert approved.event.snapshot()["status"] == "approved"

    lease = transitions.Lease("w/9", now + timedelta(seconds=60))
    claimed = transitions.move(
        transitions.CLAIM,
        {**payout(S.APPROVED), **approved.values},
        S.PROCESSING,
        actor="executor",
        data={},
        at=now,
        present=dict,
        key=KEY,
        lease=lease,
    )
    assert claimed.event.prev_hash == approved.head.hash
    assert claimed.values["locked_by"] == "w/9"
    assert claimed.values["next_attempt_at"] == lease.until
    with pytest.raises(ValueError, match="lease"):
        transitions.move(
            transitions.CLAIM,
            payout(S.APPROVED),
            S.PROCESSING,
            actor="executor",
            data={},
            at=now,
            present=dict,
            key=KEY,
        )


def test_a_chain_opens_from_the_genesis_hash() -> None:
    created, head = transitions.open_chain(
        {**payout(S.PENDING_APPROVAL), "created_at": utcnow()},
        actor="agent-17",
        data={"required_approvals": 1},
        snapshot={},
        key=KEY,
    )
    assert (created.sequence, created.prev_hash, created.type) == (
        1,
        GENESIS_HASH,
        "payout.created",
    )
    assert head == transitions.ChainHead(1, hash_of(created, KEY))


def test_a_caller_cannot_override_what_the_move_decides() -> None:
    for column in ("status", "locked_by", "next_attempt_at", "last_event_hash"):
        with pytest.raises(ValueError, match="set by the transition"):
            transitions.move(
                transitions.RESOLVE,
                payout(S.NEEDS_REVIEW),
                S.FAILED,
                actor="fin-1",
                data={},
                at=utcnow(),
                present=dict,
                key=KEY,
                values={column: "x", "failure_code": "manual_review_failed"},
            )


def test_the_typed_payout_row_names_every_column_of_the_table() -> None:
    """PayoutColumns mirrors the payouts table, so a column added to one and not the other
    fails here (the create path's keys are checked against it by mypy)."""
    from payoutsvc.payouts.models import Payout, PayoutColumns

    assert set(PayoutColumns.__annotations__) == {c.name for c in Payout.__table__.columns}
