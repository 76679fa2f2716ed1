"""Starting reconciliations and showing them. Never commits (the request's transaction or
the worker step's does); the run itself is runner.py's."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.base import utcnow
from payoutsvc.errors import FieldError, NotFound, ValidationFailed
from payoutsvc.gateways.registry import configured_gateways
from payoutsvc.ids import new_id
from payoutsvc.money import format_amount
from payoutsvc.policy.service import PolicyService
from payoutsvc.reconciliation.compare import StatementRow
from payoutsvc.reconciliation.models import (
    FINDINGS,
    ItemKind,
    Reconciliation,
    ReconciliationItem,
    RunStatus,
)
from payoutsvc.reconciliation.repository import ReconciliationRepository
from payoutsvc.runtime import Runtime
from payoutsvc.timestamps import rfc3339

# Gateways that book nothing a status query could find (finance pays offline): they are
# reconciled against an uploaded statement only.
STATEMENT_ONLY = frozenset({"manual"})
MAX_PERIOD = timedelta(days=31)
ITEMS_SHOWN = 1000
DAILY_REQUESTER = "worker:daily"


def day_bounds(first: date, last: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC ``[start, end)`` of the local days ``first``..``last`` (inclusive)."""
    start = datetime.combine(first, time(0), tzinfo=zone)
    end = datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def askable_gateways(runtime: Runtime) -> list[str]:
    """The configured gateways a reconciliation can ask (the daily run's list)."""
    return sorted(configured_gateways(runtime.settings) - STATEMENT_ONLY)


class ReconciliationService:
    def __init__(self, session: AsyncSession, runtime: Runtime) -> None:
        self.session = session
        self.runtime = runtime
        self.repo = ReconciliationRepository(session)

    async def start(
        self,
        gateway: str,
        period: tuple[date | datetime, date | datetime],
        requested_by: str,
        statement: list[StatementRow] | None = None,
    ) -> Reconciliation:
        """Record a run for the worker; checks the gateway and the period first."""
        self._check_gateway(gateway, statement is not None)
        since, until = await self._period(*period)
        run = Reconciliation(
            id=new_id("rc"),
            gateway=gateway,
            period_from=since,
            period_to=until,
            source="gateway" if statement is None else "statement",
            status=RunStatus.RUNNING.value,
            requested_by=requested_by,
            statement=None if statement is None else [asdict(row) for row in statement],
            payouts_checked=0,
            gateway_calls=0,
            attempts=0,
            created_at=utcnow(),
        )
        await self.repo.insert(run)
        return run

    def _check_gateway(self, gateway: str, with_statement: bool) -> None:
        known = configured_gateways(self.runtime.settings) | STATEMENT_ONLY
        if gateway not in known:
            raise ValidationFailed(
                f"{gateway!r} is not a configured gateway.",
                errors=[
                    FieldError("gateway", "unknown_gateway", f"One of {', '.join(sorted(known))}.")
                ],
            )
        if gateway in STATEMENT_ONLY and not with_statement:
            raise ValidationFailed(
                f"The {gateway} gateway books nothing to ask: upload the bank statement "
                "(Content-Type: text/csv).",
                errors=[FieldError("gateway", "statement_required", "Upload a CSV statement.")],
            )

    async def _period(
        self, first: date | datetime, last: date | datetime
    ) -> tuple[datetime, datetime]:
        if isinstance(first, datetime) != isinstance(last, datetime):
            raise _period_error("Give both as days or both as timestamps.")
        if isinstance(first, datetime) and isinstance(last, datetime):
            if first.tzinfo is None or last.tzinfo is None:
                raise _period_error("Timestamps need an offset (Z or +08:00).")
            since, until = first.astimezone(UTC), last.astimezone(UTC)
        else:
            policy = await PolicyService.of(self.session, self.runtime).current()
            since, until = day_bounds(first, last, policy.zone)
        if until <= since:
            raise _period_error("`to` must be after `from`.")
        if until - since > MAX_PERIOD:
            raise _period_error("A period is at most 31 days.")
        return since, until

    async def schedule_daily(self, now: datetime) -> list[str]:
        """The worker's daily run: once the policy-timezone clock has passed
        ``PAYOUTSVC_RECONCILE_AT``, record a reconciliation of the previous day for every
        gateway that can be asked, unless one exists (``daily_key`` is unique: several
        workers and restarts record one). Returns the ids recorded by this call."""
        at = self.runtime.settings.reconcile_at
        if not at:
            return []
        zone = (await PolicyService.of(self.session, self.runtime).current()).zone
        local = now.astimezone(zone)
        hour, minute = (int(part) for part in at.split(":"))
        if local.time() < time(hour, minute):
            return []
        day = local.date() - timedelta(days=1)
        since, until = day_bounds(day, day, zone)
        recorded = []
        for gateway in askable_gateways(self.runtime):
            run_id = new_id("rc")
            inserted = await self.repo.insert_daily(
                {
                    "id": run_id,
                    "gateway": gateway,
                    "period_from": since,
                    "period_to": until,
                    "source": "gateway",
                    "status": RunStatus.RUNNING.value,
                    "requested_by": DAILY_REQUESTER,
                    "daily_key": f"{gateway}:{day.isoformat()}",
                    "payouts_checked": 0,
                    "gateway_calls": 0,
                    "attempts": 0,
                    "created_at": now,
                }
            )
            if inserted:
                recorded.append(run_id)
        return recorded

    # -- views ----------------------------------------------------------------------------
    async def detail(self, run_id: str) -> dict[str, Any]:
        run = await self.repo.get(run_id)
        if run is None:
            raise NotFound(f"No reconciliation {run_id}.")
        items = await self.repo.items(run_id, ITEMS_SHOWN)
        return {
            **present(run),
            "items": [present_item(item) for item in items],
            "items_total": await self.repo.count_items(run_id),
        }

    async def page(
        self, limit: int, before_id: str | None, gateway: str | None, status: str | None
    ) -> list[Reconciliation]:
        return list(await self.repo.page(limit, before_id, gateway, status))


def _period_error(message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[FieldError("to", "invalid_period", message)])


def empty_summary() -> dict[str, int]:
    return {ItemKind.MATCHED.value: 0, **{kind.value: 0 for kind in FINDINGS}}


def present(run: Reconciliation) -> dict[str, Any]:
    return {
        "id": run.id,
        "gateway": run.gateway,
        "source": run.source,
        "period": {"from": rfc3339(run.period_from), "to": rfc3339(run.period_to)},
        "status": run.status,
        "requested_by": run.requested_by,
        "daily": run.daily_key is not None,
        "summary": None if run.summary is None else {**empty_summary(), **run.summary},
        "payouts_checked": run.payouts_checked,
        "gateway_calls": run.gateway_calls,
        "error": run.error,
        "created_at": rfc3339(run.created_at),
        "started_at": None if run.started_at is None else rfc3339(run.started_at),
        "finished_at": None if run.finished_at is None else rfc3339(run.finished_at),
    }


def _side(status: str | None, amount: int | None, currency: str | None) -> dict[str, Any]:
    shown = None
    if amount is not None and currency is not None:
        try:
            shown = format_amount(amount, currency)
        except ValueError:  # a currency the gateway named that we do not know
            shown = str(amount)
    return {"status": status, "amount": shown, "currency": currency}


def present_item(item: ReconciliationItem) -> dict[str, Any]:
    return {
        "kind": item.kind,
        "payout_id": item.payout_id,
        "gateway_reference": item.gateway_reference,
        "ours": _side(item.ours_status, item.ours_amount_minor, item.ours_currency),
        "theirs": _side(item.theirs_status, item.theirs_amount_minor, item.theirs_currency),
        "detail": item.detail,
    }
