"""The ``manual`` gateway: finance pays through a bank portal, outside this service.

Routed like any adapter (``PAYOUTSVC_GATEWAY_ROUTES=bank_card_cn=manual``), it books nothing
and calls nobody. Its answer to a submit, and to a status query after a crash, is always the
same: pending, ``awaiting_manual_payment``, :attr:`TransferResult.offline`. The executor then
leaves the payout ``processing`` with no next attempt, so it is never checked again and never
reaches ``needs_review`` by itself however long finance takes; only
``POST /v1/payouts/{id}/record-payment`` (payouts/finance.py) settles it, with the bank's
reference as ``gateway_reference``.
"""

from __future__ import annotations

from collections.abc import Mapping

from payoutsvc.gateways.base import (
    CallbackNotice,
    CallbackReply,
    InvalidCallback,
    TransferRequest,
    TransferResult,
    TransferState,
)

NAME = "manual"
AWAITING_MANUAL_PAYMENT = "awaiting_manual_payment"
# gateway_status once finance recorded the result.
PAID_MANUALLY = "paid_manually"
MANUAL_PAYMENT_FAILED = "manual_payment_failed"

_AWAITING = TransferResult(
    TransferState.PENDING, gateway_status=AWAITING_MANUAL_PAYMENT, offline=True
)


class ManualGateway:
    """Every transfer waits for finance; idempotent because it books nothing at all."""

    name = NAME
    callback_reply: CallbackReply | None = None

    async def submit(self, request: TransferRequest) -> TransferResult:
        return _AWAITING

    async def get_status(
        self, idempotency_key: str, *, reference: str | None = None
    ) -> TransferResult:
        # Nothing was booked anywhere: the transfer is what finance will do, not a record.
        return _AWAITING

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackNotice:
        raise InvalidCallback(
            "the manual gateway has no callbacks: record the result with "
            "POST /v1/payouts/{id}/record-payment"
        )

    async def aclose(self) -> None:
        return None
