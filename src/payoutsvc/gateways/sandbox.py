"""The sandbox gateway: pays nobody, behaves like a real provider, deterministically.

Behaviour by the amount's minor units modulo 1000 (API.md, "Sandbox gateway"):

====  =======================================================================================
999   declined: ``recipient_account_invalid``
998   the first submit books the transfer and then times out; a retry with the same key
      finds it: succeeded, one transfer
997   accepted as pending; succeeds after :data:`POLLS_UNTIL_SUCCESS` status queries
996   declined: ``insufficient_funds``
995   answers 5xx twice (booking nothing), then books and succeeds
994   books a pending transfer and never answers again in time: every call times out
else  succeeded
====  =======================================================================================

The ledger (transfers, per-key submit counters) is in the service's database, so it
survives restarts and all workers share it. Idempotent on the key: a second submit with a
known key returns the existing transfer. Bookings from concurrent calls are written in
batches (group commit); a call only answers "accepted" after its booking has committed.
``PAYOUTSVC_SANDBOX_LATENCY_MS`` is added to every call.

Callbacks: the sandbox signs notices with a secret kept in its ledger, header
``Sandbox-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from payoutsvc.batching import GroupCommit
from payoutsvc.db.base import utcnow
from payoutsvc.db.engine import Database
from payoutsvc.gateways.base import (
    CallbackNotice,
    CallbackReply,
    InvalidCallback,
    InvalidSignature,
    ListedTransfer,
    OutcomeUnknown,
    Rejected,
    TransferRequest,
    TransferResult,
    TransferState,
)
from payoutsvc.gateways.sandbox_ledger import SandboxLedgerRepository
from payoutsvc.ids import new_id
from payoutsvc.recipients.masking import mask_account

NAME = "sandbox"
POLLS_UNTIL_SUCCESS = 3
FLAKY_FAILURES = 2
SIGNATURE_HEADER = "sandbox-signature"
SIGNATURE_TOLERANCE_SECONDS = 300
MAX_BOOKING_BATCH = 500


class Behaviour(Enum):
    SUCCEED = "succeed"
    DECLINE_ACCOUNT = "decline_recipient_account_invalid"
    TIMEOUT_AFTER_BOOKING = "timeout_after_booking"
    PENDING_THEN_SUCCESS = "pending_then_success"
    DECLINE_FUNDS = "decline_insufficient_funds"
    FLAKY_5XX = "5xx_twice_then_success"
    NEVER_RESOLVES = "never_resolves"


_BY_REMAINDER = {
    999: Behaviour.DECLINE_ACCOUNT,
    998: Behaviour.TIMEOUT_AFTER_BOOKING,
    997: Behaviour.PENDING_THEN_SUCCESS,
    996: Behaviour.DECLINE_FUNDS,
    995: Behaviour.FLAKY_5XX,
    994: Behaviour.NEVER_RESOLVES,
}
_DECLINES = {
    Behaviour.DECLINE_ACCOUNT: (
        "recipient_account_invalid",
        "The recipient account does not exist or cannot receive funds.",
    ),
    Behaviour.DECLINE_FUNDS: (
        "insufficient_funds",
        "The payout account has insufficient funds for this transfer.",
    ),
}
# Behaviours whose answer depends on how often the key was submitted before.
_COUNTED = frozenset({Behaviour.TIMEOUT_AFTER_BOOKING, Behaviour.FLAKY_5XX})


def behaviour_for(amount_minor: int) -> Behaviour:
    return _BY_REMAINDER.get(amount_minor % 1000, Behaviour.SUCCEED)


@dataclass(frozen=True, slots=True)
class _Submit:
    request: TransferRequest
    behaviour: Behaviour


def _state_of(status: str) -> TransferState:
    return TransferState.SUCCEEDED if status == "succeeded" else TransferState.PENDING


def _result_of(status: str, reference: str, row: Any = None) -> TransferResult:
    """The answer about a transfer; with its ledger ``row``, also what it moved."""
    return TransferResult(
        state=_state_of(status),
        reference=reference,
        gateway_status=status,
        amount_minor=None if row is None else row.amount_minor,
        currency=None if row is None else row.currency,
    )


class SandboxGateway:
    name = NAME
    callback_reply: CallbackReply | None = None

    def __init__(self, db: Database, *, latency_ms: float = 0.0) -> None:
        self._db = db
        self._latency = latency_ms / 1000.0
        self._bookings: GroupCommit[_Submit, TransferResult] = GroupCommit(
            "sandbox-bookings",
            self._write_bookings,
            max_batch=MAX_BOOKING_BATCH,
        )
        self._secret: bytes | None = None

    async def _network(self) -> None:
        if self._latency > 0:
            await asyncio.sleep(self._latency)

    # -- Gateway protocol ---------------------------------------------------------------
    async def submit(self, request: TransferRequest) -> TransferResult:
        await self._network()
        behaviour = behaviour_for(request.amount_minor)
        decline = _DECLINES.get(behaviour)
        if decline is not None:
            raise Rejected(decline[0], decline[1], gateway_status="declined")
        try:
            return await self._bookings.submit(_Submit(request, behaviour))
        except (OutcomeUnknown, Rejected):
            raise
        except Exception as exc:
            # The ledger write may or may not have committed: exactly what a client of a
            # real provider sees when the connection drops mid-request.
            raise OutcomeUnknown(f"sandbox ledger error: {type(exc).__name__}") from exc

    async def get_status(
        self, idempotency_key: str, *, reference: str | None = None
    ) -> TransferResult:
        await self._network()
        async with self._db.transaction() as session:
            ledger = SandboxLedgerRepository(session)
            row = await ledger.for_update(idempotency_key)
            if row is None:
                return TransferResult(TransferState.NOT_FOUND, gateway_status="not_found")
            behaviour = behaviour_for(row.amount_minor)
            if behaviour is Behaviour.NEVER_RESOLVES:
                raise OutcomeUnknown("sandbox status query timed out", gateway_status="timeout")
            status = row.status
            if status == "pending" and behaviour is Behaviour.PENDING_THEN_SUCCESS:
                checks = row.status_checks + 1
                status = "succeeded" if checks >= POLLS_UNTIL_SUCCESS else "pending"
                await ledger.record_status_check(idempotency_key, status, checks, utcnow())
            return _result_of(status, row.id, row)

    async def list_transfers(self, since: datetime, until: datetime) -> list[ListedTransfer]:
        """The ledger's transfers booked in ``[since, until)`` (reconciliation)."""
        await self._network()
        async with self._db.transaction(write=False) as session:
            rows = await SandboxLedgerRepository(session).created_between(since, until)
        return [
            ListedTransfer(
                reference=row.id,
                idempotency_key=row.idempotency_key,
                amount_minor=row.amount_minor,
                currency=row.currency,
                state=_state_of(row.status),
                created_at=row.created_at,
            )
            for row in rows
        ]

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackNotice:
        lowered = {k.lower(): v for k, v in headers.items()}
        signature = lowered.get(SIGNATURE_HEADER)
        if not signature:
            raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
        parts = dict(p.strip().split("=", 1) for p in signature.split(",") if "=" in p)
        timestamp, given = parts.get("t", ""), parts.get("v1", "")
        if not timestamp.isdigit() or not given:
            raise InvalidSignature("malformed signature header")
        if abs(time.time() - int(timestamp)) > SIGNATURE_TOLERANCE_SECONDS:
            raise InvalidSignature("signature timestamp outside the tolerance")
        expected = self._sign(await self.callback_secret(), timestamp, body)
        if not hmac.compare_digest(expected, given):
            raise InvalidSignature("signature does not match")
        return _notice_from(body)

    async def aclose(self) -> None:
        await self._bookings.aclose()

    # -- callbacks ------------------------------------------------------------------------
    async def callback_secret(self) -> bytes:
        if self._secret is None:
            async with self._db.transaction() as session:
                value = await SandboxLedgerRepository(session).secret(
                    "callback", secrets.token_hex(32), utcnow()
                )
            self._secret = value.encode()
        return self._secret

    @staticmethod
    def _sign(secret: bytes, timestamp: str, body: bytes) -> str:
        return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()

    async def signed_notice(
        self, notice: Mapping[str, Any], *, timestamp: int | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """Body and headers of a notice as the sandbox would send it (tests, dev tools)."""
        body = json.dumps(dict(notice), separators=(",", ":")).encode()
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._sign(await self.callback_secret(), stamp, body)
        return body, {"Sandbox-Signature": f"t={stamp},v1={signature}"}

    async def notice_for(self, idempotency_key: str) -> dict[str, Any] | None:
        """The notice the sandbox sends about a booked transfer, or None if there is none."""
        async with self._db.transaction(write=False) as session:
            rows = await SandboxLedgerRepository(session).by_keys([idempotency_key])
        row = rows.get(idempotency_key)
        if row is None:
            return None
        return {
            "notice_id": new_id("ntc"),
            "idempotency_key": idempotency_key,
            "reference": row.id,
            "status": row.status,
            "failure_code": None,
            "failure_message": None,
        }

    # -- the batched ledger write ----------------------------------------------------------
    async def _write_bookings(
        self, items: list[_Submit]
    ) -> Sequence[TransferResult | BaseException]:
        # One upsert statement may touch a key only once; a key submitted twice within one
        # batch (two callers racing on one payout) is answered from a later round.
        answers: dict[int, TransferResult | BaseException] = {}
        remaining = items
        while remaining:
            first: dict[str, _Submit] = {}
            for item in remaining:
                first.setdefault(item.request.idempotency_key, item)
            answers.update(await self._book_distinct(list(first.values())))
            remaining = [i for i in remaining if id(i) not in answers]
        return [answers[id(item)] for item in items]

    async def _book_distinct(
        self, items: list[_Submit]
    ) -> dict[int, TransferResult | BaseException]:
        now = utcnow()
        new_rows: dict[str, dict[str, Any]] = {}
        async with self._db.transaction() as session:
            ledger = SandboxLedgerRepository(session)
            counts = await ledger.count_submits(
                [i.request.idempotency_key for i in items if i.behaviour in _COUNTED], now
            )
            to_book = [
                i
                for i in items
                if not (
                    i.behaviour is Behaviour.FLAKY_5XX
                    and counts[i.request.idempotency_key] <= FLAKY_FAILURES
                )
            ]
            for item in to_book:
                request = item.request
                pending = item.behaviour in (
                    Behaviour.PENDING_THEN_SUCCESS,
                    Behaviour.NEVER_RESOLVES,
                )
                new_rows[request.idempotency_key] = {
                    "id": new_id("tr"),
                    "idempotency_key": request.idempotency_key,
                    "payout_id": request.payout_id,
                    "amount_minor": request.amount_minor,
                    "currency": request.currency,
                    "recipient_type": request.recipient.get("type") or "",
                    "account_masked": mask_account(request.recipient.get("account") or ""),
                    "status": "pending" if pending else "succeeded",
                    "status_checks": 0,
                    "created_at": now,
                    "updated_at": now,
                }
            booked = await ledger.book(list(new_rows.values()))
            existing = await ledger.by_keys([k for k in new_rows if k not in booked])
        answers: dict[int, TransferResult | BaseException] = {}
        for item in items:
            key = item.request.idempotency_key
            submits = counts.get(key, 0)
            if item.behaviour is Behaviour.FLAKY_5XX and submits <= FLAKY_FAILURES:
                answers[id(item)] = OutcomeUnknown(
                    "sandbox answered HTTP 503", gateway_status="http_503"
                )
            elif item.behaviour is Behaviour.NEVER_RESOLVES or (
                item.behaviour is Behaviour.TIMEOUT_AFTER_BOOKING and submits == 1
            ):
                answers[id(item)] = OutcomeUnknown(
                    "sandbox timed out after accepting", gateway_status="timeout"
                )
            elif key in booked:
                answers[id(item)] = _result_of(new_rows[key]["status"], new_rows[key]["id"])
            else:
                row = existing[key]
                answers[id(item)] = _result_of(row.status, row.id)
        return answers


def _notice_from(body: bytes) -> CallbackNotice:
    try:
        data = json.loads(body)
    except ValueError:
        raise InvalidCallback("body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidCallback("body is not a JSON object")
    key, status = data.get("idempotency_key"), data.get("status")
    if not isinstance(key, str) or not key:
        raise InvalidCallback("idempotency_key missing")
    states = {
        "succeeded": TransferState.SUCCEEDED,
        "pending": TransferState.PENDING,
        "failed": TransferState.FAILED,
    }
    if status not in states:
        raise InvalidCallback("status must be succeeded, pending or failed")
    failure_code = data.get("failure_code")
    if status == "failed" and not isinstance(failure_code, str):
        raise InvalidCallback("a failed notice needs a failure_code")
    reference, message, notice_id = (
        data.get("reference"),
        data.get("failure_message"),
        data.get("notice_id"),
    )
    return CallbackNotice(
        idempotency_key=key,
        notice_id=notice_id if isinstance(notice_id, str) else None,
        result=TransferResult(
            state=states[status],
            reference=reference if isinstance(reference, str) else None,
            gateway_status=str(status),
            failure_code=failure_code if isinstance(failure_code, str) else None,
            failure_message=message if isinstance(message, str) else None,
        ),
    )
