"""Batch use cases. Services never commit: the request's transaction does.

A batch is many ``POST /v1/payouts`` in one transaction, made by
:meth:`PayoutService.create_many` (the pieces of ``create`` itself, never a copy of them), so
every item is decided by the policy exactly as if it had been created alone, in the batch's
order: the limit counters it counts in are the ones single creates count in, locked until
commit, so a cap holds across a batch and the single requests running beside it; only the
writes are gathered (keys, payouts, events, answers: one statement each).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.batches.export import Debtor, ExportRow, cn_bank_csv, sepa_credit_transfer
from payoutsvc.batches.models import PayoutBatch
from payoutsvc.batches.parsing import ParsedBatch, batch_invalid, item_errors
from payoutsvc.batches.repository import BatchRepository
from payoutsvc.db.base import utcnow
from payoutsvc.errors import (
    AlreadyApproved,
    ApprovalLimitExceeded,
    FieldError,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidRecipient,
    InvalidStatusTransition,
    NotFound,
    NothingToExport,
    OperatorDisabled,
    OperatorMismatch,
    PayoutInFlight,
    SelfApprovalForbidden,
    SelfReleaseForbidden,
    SepaDebtorNotConfigured,
    ServiceError,
    UnknownOperator,
    ValidationFailed,
    not_found,
)
from payoutsvc.gateways.manual import AWAITING_MANUAL_PAYMENT
from payoutsvc.gateways.manual import NAME as MANUAL_GATEWAY
from payoutsvc.ids import new_id
from payoutsvc.payouts import transitions
from payoutsvc.payouts.acting import Credential
from payoutsvc.payouts.approvals import ApprovalService
from payoutsvc.payouts.events import NewEvent, canonical_json, insert_hashed_events
from payoutsvc.payouts.finance import FinanceService
from payoutsvc.payouts.models import Payout
from payoutsvc.payouts.presenter import payout_json_of
from payoutsvc.payouts.repository import PayoutRepository
from payoutsvc.payouts.service import PayoutService, StoredResponse
from payoutsvc.payouts.status import EXPORTED_EVENT, TERMINAL, PayoutStatus
from payoutsvc.recipients.storage import unseal
from payoutsvc.runtime import Runtime
from payoutsvc.timestamps import rfc3339
from payoutsvc.webhooks.outbox import endpoint_presence

PAIN_001 = "pain.001"
CSV = "csv"
# What each file pays: (recipient type, currency).
_FORMATS = {CSV: ("bank_card_cn", "CNY"), PAIN_001: ("iban", "EUR")}

# What one item of a batch may answer that makes it a bad item (the 422 lists it) rather
# than a failure of the whole request (which propagates as it is: 409, 503).
_ITEM_REFUSALS: tuple[type[ServiceError], ...] = (
    ValidationFailed,
    InvalidRecipient,
    UnknownOperator,
    OperatorDisabled,
    OperatorMismatch,
    IdempotencyKeyReused,
)
# What one payout may answer to a batch release likewise (ReleaseNotAllowed is the caller's).
RELEASE_REFUSALS: tuple[type[ServiceError], ...] = (
    SelfReleaseForbidden,
    InvalidStatusTransition,
    PayoutInFlight,
    NotFound,
)
# What one payout may answer to a batch approve without saying anything about the others.
# Errors about the caller (operator_key_required, unknown operator, ...) are the same for
# every payout and fail the whole request instead, approving none.
APPROVE_REFUSALS: tuple[type[ServiceError], ...] = (
    SelfApprovalForbidden,
    ApprovalLimitExceeded,
    AlreadyApproved,
    InvalidStatusTransition,
    NotFound,
    NothingToExport,
)


@dataclass(frozen=True, slots=True)
class ExportFile:
    content: bytes
    format: str
    name: str
    rows: int


def item_idempotency_key(batch_key: str, item_key: str) -> str:
    """An item's own Idempotency-Key (what POST /v1/payouts would be sent), stable for the
    batch's key and the item's: a replayed batch meets its stored answers, not new payouts."""
    digest = hashlib.sha256(f"{batch_key}\x00{item_key}".encode()).hexdigest()
    return f"pb:{digest}"


def _key_in_use() -> IdempotencyKeyInUse:
    return IdempotencyKeyInUse(
        "A batch with this Idempotency-Key is still being processed; retry shortly.",
        headers={"Retry-After": "1"},
    )


class BatchService:
    def __init__(self, session: AsyncSession, runtime: Runtime) -> None:
        self.session = session
        self.runtime = runtime
        self.repo = BatchRepository(session)
        self.payouts = PayoutService(session, runtime)

    # -- create ----------------------------------------------------------------------------
    async def create(
        self, credential: Credential, integration_id: str, key: str, batch: ParsedBatch
    ) -> StoredResponse:
        """All items or none: any bad item (schema, recipient, requester, policy) makes the
        answer a 422 listing every bad item, and the transaction, with every payout already
        made for the batch, rolls back. A replay (same key, same items) gets the stored 201;
        the same key with other items is 422 ``idempotency_key_reused``."""
        fingerprint = hashlib.sha256(canonical_json(batch.fingerprint_content()).encode())
        request_hash = fingerprint.hexdigest()
        if not await self.repo.lock_key(integration_id, key):
            raise _key_in_use()
        existing = await self.repo.by_key(integration_id, key)
        if existing is not None:
            if existing.request_hash != request_hash:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was used for a batch with different items; "
                    "use a new key for a new batch."
                )
            return StoredResponse(201, json.loads(existing.response_body), replayed=True)
        created = await self._create_items(credential, integration_id, key, batch)
        now = utcnow()
        batch_id = new_id("pb", int(now.timestamp() * 1000))
        await self.repo.attach(batch_id, [payout_id for _, payout_id, _ in created])
        body = _created_json(batch_id, batch, created, now)
        await self.repo.insert(
            PayoutBatch(
                id=batch_id,
                integration_id=integration_id,
                idempotency_key=key,
                request_hash=request_hash,
                response_body=json.dumps(body, ensure_ascii=False),
                description=batch.description,
                source=batch.source,
                item_count=len(created),
                items=[{"item_key": k, "payout_id": p} for k, p, _ in created],
                created_at=now,
            )
        )
        return StoredResponse(201, body)

    async def _create_items(
        self, credential: Credential, integration_id: str, key: str, batch: ParsedBatch
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """Create every item in order; (item_key, payout_id, payout) each. Raises the 422
        of all bad items when there is one (the caller's transaction then rolls back)."""
        created: list[tuple[str, str, dict[str, Any]]] = []
        errors: list[FieldError] = []
        refused: set[int] = set()
        valid = batch.items.valid
        answers = await self.payouts.create_many(
            credential,
            integration_id,
            [(item_idempotency_key(key, item_key), body) for _, item_key, body in valid],
            _ITEM_REFUSALS,
        )
        for (index, item_key, _), answer in zip(valid, answers, strict=True):
            if isinstance(answer, ServiceError):
                errors += item_errors(
                    index, answer.errors or [FieldError("", answer.code, answer.detail)]
                )
                refused.add(index)
            elif answer.status_code != 201:  # the policy forbids it (a stored 422)
                errors += item_errors(index, _problem_errors(answer.body))
                refused.add(index)
            else:
                created.append((item_key, str(answer.body["id"]), answer.body))
        if errors or batch.items.errors:
            everything = sorted([*batch.items.errors, *errors], key=_item_index)
            raise batch_invalid(everything, batch.items.bad + len(refused), batch.items.total)
        return created

    # -- read ------------------------------------------------------------------------------
    async def get_json(self, batch_id: str, visible_integration: str | None) -> dict[str, Any]:
        batch = await self._batch(batch_id, visible_integration)
        totals = await self.repo.totals([batch.id])
        statuses = await self.repo.statuses(batch.id)
        return batch_json(batch, totals[batch.id], statuses)

    async def list_json(
        self, visible_integration: str | None, limit: int, before_id: str | None
    ) -> list[dict[str, Any]]:
        batches = await self.repo.list(visible_integration, limit, before_id)
        totals = await self.repo.totals([b.id for b in batches])
        return [batch_json(b, totals[b.id], None) for b in batches]

    async def _batch(self, batch_id: str, visible_integration: str | None) -> PayoutBatch:
        batch = await self.repo.get(batch_id, visible_integration)
        if batch is None:
            raise not_found("Payout batch", batch_id)
        return batch

    # -- bank files --------------------------------------------------------------------------
    async def export(
        self, actor: str, key_id: str, batch_id: str, visible_integration: str | None, fmt: str
    ) -> ExportFile:
        """The bank file paying the batch's payouts that await offline payment: those the
        executor handed to the ``manual`` gateway (``processing``, so approved, released and
        evidence-checked), of the format's recipient type and currency. Each exported payout
        gets a ``payout.exported`` event in its audit chain (who, which file by its sha256),
        in the transaction that reads it: no file leaves without its record."""
        batch = await self._batch(batch_id, visible_integration)
        debtor = self._debtor() if fmt == PAIN_001 else None
        recipient_type, currency = _FORMATS[fmt]
        payouts = [
            p
            for p in await self.repo.payouts_in(batch.id, [PayoutStatus.PROCESSING.value])
            if (p.gateway, p.gateway_status) == (MANUAL_GATEWAY, AWAITING_MANUAL_PAYMENT)
            and (p.recipient_type, p.currency) == (recipient_type, currency)
        ]
        if not payouts:
            raise NothingToExport(
                f"No payout of batch {batch.id} awaits offline payment as a {recipient_type} "
                f"transfer in {currency} (status processing through the manual gateway)."
            )
        item_keys = {str(i["payout_id"]): str(i["item_key"]) for i in batch.items}
        # The file lists them in the batch's order (ids made in one millisecond are not).
        position = {payout_id: n for n, payout_id in enumerate(item_keys)}
        payouts.sort(key=lambda p: position.get(p.id, len(position)))
        rows = [
            ExportRow(
                payout_id=p.id,
                item_key=item_keys.get(p.id, ""),
                reason=p.reason,
                amount_minor=p.amount_minor,
                currency=p.currency,
                recipient=unseal(self.runtime.cipher, p.recipient_encrypted, p.id),
            )
            for p in payouts
        ]
        now = utcnow()
        if debtor is not None:
            content = sepa_credit_transfer(rows, debtor, now.date())
        else:
            content = cn_bank_csv(rows)
        digest = hashlib.sha256(content).hexdigest()
        data = {"batch_id": batch.id, "format": fmt, "file_sha256": digest, "api_key_id": key_id}
        await self._record_export(payouts, actor, data, now)
        return ExportFile(content, fmt, f"{batch.id}-{fmt}", len(rows))

    def _debtor(self) -> Debtor:
        settings = self.runtime.settings
        if not (settings.sepa_debtor_name and settings.sepa_debtor_iban):
            raise SepaDebtorNotConfigured(
                "A pain.001 file names the account it pays from: set PAYOUTSVC_SEPA_DEBTOR_NAME "
                "and PAYOUTSVC_SEPA_DEBTOR_IBAN (and PAYOUTSVC_SEPA_DEBTOR_BIC) and restart."
            )
        return Debtor(
            settings.sepa_debtor_name, settings.sepa_debtor_iban, settings.sepa_debtor_bic
        )

    async def _record_export(
        self, payouts: Sequence[Payout], actor: str, data: dict[str, Any], now: datetime
    ) -> None:
        """A ``payout.exported`` note in each payout's chain (audit-only: not sent to the
        helpdesk's webhooks), written like a move: conditional on the head it was read at."""
        repository = PayoutRepository(self.session)
        approvals = await repository.approvals_for([p.id for p in payouts])
        hashed: list[tuple[NewEvent, str]] = []
        for payout in payouts:
            planned = transitions.note(
                repository.columns_of(payout),
                EXPORTED_EVENT,
                actor=actor,
                data=data,
                at=now,
                present=functools.partial(payout_json_of, approvals=approvals[payout.id]),
                key=self.runtime.audit_key,
            )
            if not await repository.apply_move(planned):
                # The rows are locked (PostgreSQL) or every writer waits (SQLite): unreachable
                # unless something wrote a payout without its lock; the export rolls back.
                raise RuntimeError(f"{payout.id}'s audit chain moved while its export was recorded")
            hashed.append((planned.event, planned.head.hash))
        await insert_hashed_events(self.session, hashed, endpoint_presence(self.runtime))

    # -- actions on every payout of a batch ----------------------------------------------------
    async def approve(
        self,
        credential: Credential,
        batch_id: str,
        visible_integration: str | None,
        named: str | None,
        comment: str | None,
    ) -> dict[str, Any]:
        """POST /v1/payouts/{id}/approve on each payout still ``pending_approval``, by the
        same ApprovalService, so the same rules hold per payout (four eyes, approve_max)."""
        approvals = ApprovalService(self.session, self.runtime)

        async def approve(payout_id: str) -> dict[str, Any]:
            return await approvals.approve(
                credential, payout_id, visible_integration, named, comment
            )

        batch = await self._batch(batch_id, visible_integration)
        # A caller who may approve nothing is refused as a whole, even with nothing to approve.
        await approvals.require_approver(credential, named)
        results = await self._each(
            batch, _awaits_approval, approve, APPROVE_REFUSALS, _approve_outcome
        )
        return _action_json(batch.id, "approve", results)

    async def release(
        self,
        credential: Credential,
        batch_id: str,
        visible_integration: str | None,
        named: str | None,
        comment: str | None,
    ) -> dict[str, Any]:
        """POST /v1/payouts/{id}/release on each payout of the batch that waits for one
        (approved, release required, not released), by the same FinanceService, so the same
        rules hold per payout (can_release, never the requester)."""
        finance = FinanceService(self.session, self.runtime)

        async def release(payout_id: str) -> dict[str, Any]:
            return await finance.release(credential, payout_id, visible_integration, named, comment)

        batch = await self._batch(batch_id, visible_integration)
        # A caller who may release nothing is refused as a whole, even with nothing to release.
        await finance.require_releaser(credential, named)
        results = await self._each(
            batch, _awaits_release, release, RELEASE_REFUSALS, lambda _payout: "released"
        )
        return _action_json(batch.id, "release", results)

    async def _each(
        self,
        batch: PayoutBatch,
        startable: Callable[[Payout], bool],
        action: Callable[[str], Awaitable[dict[str, Any]]],
        refusals: tuple[type[ServiceError], ...],
        outcome_of: Callable[[dict[str, Any]], str],
    ) -> list[dict[str, Any]]:
        """Run ``action`` on each of the batch's payouts that are ``startable`` (the others
        are ``skipped``), each in its own savepoint: a payout that refuses (one of
        ``refusals``) is rolled back alone and listed with its error, the others keep their
        result. Any other error (one about the caller, the same for every payout)
        propagates and the whole request changes nothing."""
        payouts = await self.repo.payouts_of(batch.id)
        results: list[dict[str, Any]] = []
        for item in batch.items:
            item_key, payout_id = str(item["item_key"]), str(item["payout_id"])
            found = payouts.get(payout_id)
            status = found.status if found is not None else "unknown"
            result: dict[str, Any] = {"item_key": item_key, "payout_id": payout_id}
            if found is None or not startable(found):
                results.append({**result, "outcome": "skipped", "status": status, "error": None})
                continue
            try:
                async with self.session.begin_nested():
                    payout = await action(payout_id)
            except refusals as exc:
                current = await PayoutRepository(self.session).current_status(payout_id, None)
                error = {"code": exc.code, "title": exc.title, "detail": exc.detail or exc.title}
                results.append(
                    {**result, "outcome": "refused", "status": current or status, "error": error}
                )
                continue
            results.append(
                {**result, "outcome": outcome_of(payout), "status": payout["status"], "error": None}
            )
        return results


def _item_index(error: FieldError) -> int:
    """``items[12].amount`` → 12: the 422 lists the items' problems in the items' order."""
    return int(error.field[len("items[") :].split("]", 1)[0])


def _awaits_approval(payout: Payout) -> bool:
    return payout.status == PayoutStatus.PENDING_APPROVAL.value


def _awaits_release(payout: Payout) -> bool:
    return (
        payout.status == PayoutStatus.APPROVED.value
        and payout.release_required
        and payout.released_at is None
    )


def _approve_outcome(payout: dict[str, Any]) -> str:
    return "approved" if payout["status"] == PayoutStatus.APPROVED.value else "approval_recorded"


def _problem_errors(problem: dict[str, Any]) -> list[FieldError]:
    listed = [FieldError(e["field"], e["code"], e["message"]) for e in problem.get("errors", [])]
    return listed or [FieldError("", str(problem["code"]), str(problem["detail"]))]


def _created_json(
    batch_id: str,
    batch: ParsedBatch,
    created: Sequence[tuple[str, str, dict[str, Any]]],
    now: Any,
) -> dict[str, Any]:
    counts: dict[str, int] = {}
    total: dict[str, int] = {}
    for _, _, payout in created:
        counts[payout["status"]] = counts.get(payout["status"], 0) + 1
        total[payout["currency"]] = total.get(payout["currency"], 0) + int(payout["amount_minor"])
    return {
        "id": batch_id,
        "status": "open",
        "description": batch.description,
        "source": batch.source,
        "item_count": len(created),
        "counts": counts,
        "total_minor": total,
        "items": [
            {"item_key": key, "payout_id": payout_id, "status": payout["status"]}
            for key, payout_id, payout in created
        ],
        "created_at": rfc3339(now),
    }


def batch_json(
    batch: PayoutBatch,
    totals: Sequence[tuple[str, str, int, int]],
    statuses: dict[str, str] | None,
) -> dict[str, Any]:
    """A batch as it is now: counts per status and totals per currency from its payouts;
    the items (with each payout's status) when ``statuses`` is given."""
    counts: dict[str, int] = {}
    total: dict[str, int] = {}
    for status, currency, count, amount in totals:
        counts[status] = counts.get(status, 0) + count
        total[currency] = total.get(currency, 0) + amount
    done = sum(n for s, n in counts.items() if PayoutStatus(s) in TERMINAL)
    items = None
    if statuses is not None:
        items = [{**item, "status": statuses.get(str(item["payout_id"]))} for item in batch.items]
    return {
        "id": batch.id,
        "status": "completed" if done == batch.item_count else "open",
        "description": batch.description,
        "source": batch.source,
        "item_count": batch.item_count,
        "counts": counts,
        "total_minor": total,
        "items": items,
        "created_at": rfc3339(batch.created_at),
    }


def _action_json(batch_id: str, action: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    for result in results:
        outcomes[result["outcome"]] = outcomes.get(result["outcome"], 0) + 1
    return {"id": batch_id, "action": action, "outcomes": outcomes, "results": results}
