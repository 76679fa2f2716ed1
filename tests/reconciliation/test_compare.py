"""The verdict table of reconciliation/compare.py, one row at a time."""

from __future__ import annotations

import pytest

from payoutsvc.gateways.base import TransferState
from payoutsvc.reconciliation.compare import OurPayout, Theirs, verdict
from payoutsvc.reconciliation.models import ItemKind

T = TransferState
K = ItemKind


def ours(status: str) -> OurPayout:
    return OurPayout("po_1", status, 1250, "CNY", "key-1", "tr_1")


@pytest.mark.parametrize(
    ("status", "state", "amount", "expected"),
    [
        ("processing", T.PENDING, None, K.MATCHED),
        ("processing", T.SUCCEEDED, 1250, K.STATUS_MISMATCH),
        ("processing", T.NOT_FOUND, None, K.MISSING_AT_GATEWAY),
        ("succeeded", T.SUCCEEDED, 1250, K.MATCHED),
        ("succeeded", T.SUCCEEDED, None, K.MATCHED),  # the answer states no amount
        ("succeeded", T.SUCCEEDED, 1200, K.AMOUNT_MISMATCH),
        ("succeeded", T.PENDING, 1250, K.STATUS_MISMATCH),
        ("succeeded", T.FAILED, 1250, K.STATUS_MISMATCH),
        ("succeeded", T.NOT_FOUND, None, K.MISSING_AT_GATEWAY),
        ("failed", T.FAILED, 1250, K.MATCHED),
        ("failed", T.NOT_FOUND, None, K.MATCHED),  # a decline books nothing
        ("failed", T.SUCCEEDED, 1250, K.STATUS_MISMATCH),
        ("needs_review", T.SUCCEEDED, 1250, K.STATUS_MISMATCH),
        ("needs_review", T.NOT_FOUND, None, K.MISSING_AT_GATEWAY),
    ],
)
def test_verdict(status: str, state: TransferState, amount: int | None, expected: ItemKind) -> None:
    assert verdict(ours(status), Theirs(state, state.value, "tr_1", amount, "CNY")).kind is expected


def test_another_currency_is_an_amount_mismatch() -> None:
    theirs = Theirs(T.SUCCEEDED, "succeeded", "tr_1", 1250, "usd")
    assert verdict(ours("succeeded"), theirs).kind is K.AMOUNT_MISMATCH
