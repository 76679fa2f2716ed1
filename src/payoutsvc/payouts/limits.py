"""The facts a policy decision reads about one payout request, and the locks that make the
check-and-insert race-free. All SQL.

The facts (operator, totals, blocklist, duplicate, current policy version) come from ONE
statement of scalar subqueries, each on its own index: creating a payout is the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    String,
    bindparam,
    exists,
    false,
    func,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.base import UtcDateTime
from payoutsvc.db.locks import advisory_lock_id
from payoutsvc.operators.models import Operator
from payoutsvc.payouts.models import Payout
from payoutsvc.payouts.status import NOT_COUNTED_FOR_LIMITS
from payoutsvc.policy.models import PolicyVersion
from payoutsvc.recipients.models import RecipientBlock

_NOT_COUNTED = [s.value for s in NOT_COUNTED_FOR_LIMITS]


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the database knows about one payout request; totals exclude the request itself."""

    requester_role: str | None
    requester_disabled: bool
    requester_daily_total_minor: int
    ticket_total_minor: int
    recipient_daily_count: int
    recipient_daily_total_minor: int
    recipient_blocked: bool
    duplicate_suspected: bool
    policy_version: int | None  # the newest policy version when the facts were read


def _facts_statement(*, with_duplicate: bool) -> Select[Any]:
    """The facts of one payout request as ONE statement of scalar subqueries, each served by
    its own index; built once with bind parameters (building and cache-keying a statement
    this size per request costs more CPU than running it).

    Counted payouts are those whose money may still move (not rejected, canceled or failed);
    totals are company-wide, across integrations, like operators and the policy.
    """
    requester_id = bindparam("requester_id", type_=String())
    currency = bindparam("currency", type_=String())
    fingerprint = bindparam("fingerprint", type_=String())
    ticket_system = bindparam("ticket_system", type_=String())
    ticket_id = bindparam("ticket_id", type_=String())
    counted = Payout.status.not_in(_NOT_COUNTED)
    today = (
        Payout.created_at >= bindparam("day_start", type_=UtcDateTime()),
        Payout.created_at < bindparam("day_end", type_=UtcDateTime()),
    )
    same_ticket = (Payout.ticket_system == ticket_system, Payout.ticket_id == ticket_id)
    same_recipient = Payout.recipient_fingerprint == fingerprint

    def amount_total(*conditions: ColumnElement[bool]) -> Any:
        return (
            select(func.coalesce(func.sum(Payout.amount_minor), 0))
            .where(*conditions, counted)
            .scalar_subquery()
        )

    duplicate: ColumnElement[Any] = false()
    if with_duplicate:
        # Any live payout like this one, whatever its idempotency key: the same key would
        # have replayed the first answer, unless its record had expired, which is no less
        # suspicious.
        duplicate = exists().where(
            *same_ticket,
            same_recipient,
            Payout.amount_minor == bindparam("amount_minor", type_=BigInteger()),
            Payout.currency == currency,
            Payout.created_at >= bindparam("duplicate_since", type_=UtcDateTime()),
            counted,
        )
    return select(
        select(Operator.role).where(Operator.id == requester_id).scalar_subquery(),
        select(Operator.disabled).where(Operator.id == requester_id).scalar_subquery(),
        amount_total(Payout.requested_by == requester_id, *today, Payout.currency == currency),
        amount_total(*same_ticket, Payout.currency == currency),
        select(func.count()).where(same_recipient, *today, counted).scalar_subquery(),
        amount_total(same_recipient, *today, Payout.currency == currency),
        exists().where(RecipientBlock.fingerprint == fingerprint),
        duplicate,
        select(func.max(PolicyVersion.version)).scalar_subquery(),
    )


_FACTS = _facts_statement(with_duplicate=True)
_FACTS_WITHOUT_DUPLICATE = _facts_statement(with_duplicate=False)
# Locks are taken three at a time (requester, ticket, recipient): one constant statement.
_LOCK_THREE = text(
    "SELECT pg_advisory_xact_lock(:k0), pg_advisory_xact_lock(:k1), pg_advisory_xact_lock(:k2)"
)


class LimitsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def is_postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    # -- locks ----------------------------------------------------------------------------------
    async def lock_limit_keys(self, keys: Sequence[tuple[str, ...]]) -> None:
        """Wait for transaction-scoped advisory locks on ``keys`` (PostgreSQL; SQLite already
        serialises writers), in one round trip.

        Taken in ascending lock-id order (the target list is evaluated left to right), the
        same order PayoutRepository.lock uses, so two requests sharing some keys cannot
        deadlock. Must run in its own statement BEFORE the totals are read: a READ COMMITTED
        statement's snapshot is taken when it starts, i.e. before it waited for a lock.
        """
        if not self.is_postgres or not keys:
            return
        ids = sorted(advisory_lock_id(*key) for key in keys)
        if len(ids) == 3:
            await self.session.execute(_LOCK_THREE, {"k0": ids[0], "k1": ids[1], "k2": ids[2]})
            return
        for lock_id in ids:
            await self.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_id})

    # -- payout facts ---------------------------------------------------------------------------
    async def request_facts(
        self,
        *,
        requester_id: str,
        currency: str,
        amount_minor: int,
        ticket_system: str,
        ticket_id: str,
        recipient_fingerprint: str,
        day_start: datetime,
        day_end: datetime,
        duplicate_since: datetime | None,
    ) -> RequestFacts:
        """Every fact the policy rules read, in one statement (see ``_FACTS``)."""
        statement = _FACTS_WITHOUT_DUPLICATE if duplicate_since is None else _FACTS
        params: dict[str, Any] = {
            "requester_id": requester_id,
            "currency": currency,
            "amount_minor": amount_minor,
            "ticket_system": ticket_system,
            "ticket_id": ticket_id,
            "fingerprint": recipient_fingerprint,
            "day_start": day_start,
            "day_end": day_end,
        }
        if duplicate_since is not None:
            params["duplicate_since"] = duplicate_since
        row = (await self.session.execute(statement, params)).one()
        return RequestFacts(
            requester_role=row[0],
            requester_disabled=bool(row[1]),
            requester_daily_total_minor=int(row[2]),
            ticket_total_minor=int(row[3]),
            recipient_daily_count=int(row[4]),
            recipient_daily_total_minor=int(row[5]),
            recipient_blocked=bool(row[6]),
            duplicate_suspected=bool(row[7]),
            policy_version=None if row[8] is None else int(row[8]),
        )
