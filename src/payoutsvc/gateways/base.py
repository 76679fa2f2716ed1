"""The gateway interface every bank/wallet adapter implements, and its error hierarchy.

An adapter speaks one provider's wire format. The executor only ever sees this module:
``submit`` a transfer under the payout's idempotency key, ask its ``get_status`` by that
key, and ``parse_callback`` (verify and decode) an asynchronous notice.

Errors are deliberately shallow, split by what the executor may safely do next:

- :class:`Rejected`: the provider definitely refused the transfer; final, carries a failure
  code (``recipient_account_invalid``, ``insufficient_funds``, …).
- :class:`NotDone`: the provider definitely did not act (connection refused before sending,
  429, a documented "not processed" answer); retrying with the same key is safe.
- :class:`OutcomeUnknown`: the request may have been acted on (timeout, reset, 5xx after
  sending). Only a status query or a re-submit with the *same* key can tell.

Adapters map provider and transport errors onto these at their boundary, so no httpx or
SDK exception ever reaches the executor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from payoutsvc.recipients.masking import mask_account


class TransferState(StrEnum):
    """A provider's answer about one transfer, mapped to what the executor acts on."""

    PENDING = "pending"  # accepted, result not known yet: poll later
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # final decline after acceptance (failure_code says why)
    NOT_FOUND = "not_found"  # no transfer under this key: never booked, safe to submit


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """What an adapter needs to pay one payout. ``recipient`` is the full, decrypted
    recipient: adapters send it to the provider and never log or store it."""

    payout_id: str
    idempotency_key: str
    amount_minor: int
    currency: str
    recipient: Mapping[str, str | None] = field(repr=False)
    description: str | None = None

    def summary(self) -> dict[str, Any]:
        """A loggable, storable description of the request: no account number."""
        return {
            "idempotency_key": self.idempotency_key,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "recipient_type": self.recipient.get("type"),
            "account_masked": mask_account(self.recipient.get("account") or ""),
        }


@dataclass(frozen=True, slots=True)
class ProviderHold:
    """The provider keeps a transfer pending for a reason of its own (a user who must
    confirm it, a receiver who must claim it, a bank channel still dealing with it) and has
    its own deadline for that. Pending is then not "outcome unknown": the executor checks
    the payout on its slow schedule (``PAYOUTSVC_EXECUTOR_HOLD_CHECK_SECONDS``) without
    using up the unknown-outcome retry schedule, until the deadline has passed, and only
    then sets ``needs_review``. A verified callback settles it at any time.

    Once a payout is held, it stays on the slow schedule until it finishes or the deadline
    passes, whatever the later checks answer (a timeout while a user has hours left to
    confirm is no reason to give up)."""

    reason: str  # the provider's own status word, e.g. "WAIT_USER_CONFIRM", "UNCLAIMED"
    patience: timedelta  # how long the provider may hold the transfer
    # When the provider's clock started (its own create time for the transfer), if it says;
    # otherwise the deadline counts from the first answer that reported the hold.
    since: datetime | None = None
    # Re-sending under the same idempotency key is documented as safe and moves a stuck
    # transfer on (WeChat Pay: a bill stuck in ACCEPTED/PROCESSING): each slow check
    # re-submits instead of only asking.
    resend: bool = False
    # An ordinary in-flight state that only counts as a hold once the normal retry schedule
    # is used up (a transfer stuck in processing), rather than from the first answer.
    after_schedule: bool = False


@dataclass(frozen=True, slots=True)
class TransferResult:
    state: TransferState
    reference: str | None = None  # the provider's id for the transfer
    gateway_status: str | None = None  # the provider's own status word, for humans
    failure_code: str | None = None
    failure_message: str | None = None
    # Provider data the helpdesk needs to act on the transfer (e.g. WeChat Pay's
    # ``package_info`` for the user's confirmation); shown on the payout as
    # ``gateway_details``. Never secrets or account numbers.
    details: Mapping[str, str] | None = None
    # Only with PENDING: the provider holds the transfer for a reason of its own.
    hold: ProviderHold | None = None
    # Only with PENDING: a person pays it outside any gateway (the manual adapter). The
    # payout stays processing with no next check until its result is recorded.
    offline: bool = False
    # What the provider says it moved, in our minor units, when its answer says so
    # (reconciliation compares it with the payout; None: this adapter's answer does not tell).
    amount_minor: int | None = None
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class CallbackReply:
    """The exact answer a provider expects to a notice it sent (Alipay wants the text
    ``success``); adapters without one get the service's JSON acknowledgement."""

    media_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class CallbackNotice:
    """A verified asynchronous notice about one transfer."""

    idempotency_key: str
    result: TransferResult
    notice_id: str | None = None


@dataclass(frozen=True, slots=True)
class ListedTransfer:
    """One transfer from a provider's own list of what it booked (reconciliation)."""

    reference: str  # the provider's id
    idempotency_key: str  # the key it was booked under; "" when it carries none of ours
    amount_minor: int
    currency: str
    state: TransferState
    created_at: datetime


class GatewayError(Exception):
    """Base of everything an adapter raises."""

    def __init__(self, message: str, *, gateway_status: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.gateway_status = gateway_status


class Rejected(GatewayError):
    """The provider refused the transfer for good; do not retry, the payout fails."""

    def __init__(self, code: str, message: str, *, gateway_status: str | None = None) -> None:
        super().__init__(message, gateway_status=gateway_status)
        self.code = code


class NotDone(GatewayError):
    """The provider certainly did not act on the request; retrying with the same key is safe."""


class OutcomeUnknown(GatewayError):
    """The request may or may not have been acted on; resolve by status query or by
    re-submitting with the same idempotency key, never with a new one."""


class InvalidCallback(GatewayError):
    """A callback whose shape is wrong; nothing may change because of it."""


class InvalidSignature(InvalidCallback):
    """A callback whose signature is missing, stale or wrong: not from the provider."""


@runtime_checkable
class Gateway(Protocol):
    """One provider. Implementations must be idempotent on ``idempotency_key``: a second
    submit with the same key returns the existing transfer and never books another."""

    name: str
    # What to answer a verified notice with, when the provider insists on a format.
    callback_reply: CallbackReply | None

    async def submit(self, request: TransferRequest) -> TransferResult:
        """Ask the provider to pay. Returns PENDING or SUCCEEDED (or FAILED for a decline
        the provider reports as a transfer state); raises Rejected/NotDone/OutcomeUnknown."""
        ...

    async def get_status(
        self, idempotency_key: str, *, reference: str | None = None
    ) -> TransferResult:
        """The provider's state of the transfer booked under this key (NOT_FOUND if none).
        ``reference`` is the provider's id from an earlier answer, when one was received
        (some providers can only be asked by their own id)."""
        ...

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackNotice:
        """Verify the provider's signature and decode the notice; raises InvalidCallback."""
        ...

    async def aclose(self) -> None:
        """Release connections and background tasks."""
        ...


@runtime_checkable
class TransferLister(Protocol):
    """A gateway that can list the transfers it booked in a period (the sandbox's ledger,
    Stripe's ``GET /v1/transfers``): reconciliation then also finds transfers we know
    nothing of. Raises GatewayError subclasses when the list cannot be read."""

    async def list_transfers(self, since: datetime, until: datetime) -> list[ListedTransfer]:
        """Every transfer created in ``[since, until)``."""
        ...
