"""All SQL for the policy: its versions, and the recount of its limit counters (the facts a
payout decision reads, and the counters' running updates, are the payouts domain's:
payouts/limits.py).

The recount reads the payouts table by name: the policy package sits below payouts in the
import graph (payouts imports policy), so it cannot import the Payout model."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.base import UtcDateTime
from payoutsvc.db.locks import advisory_lock_id
from payoutsvc.policy.models import LimitCounter, PolicyVersion

# One key for "who writes the next policy version" (PostgreSQL advisory lock). Creating a
# payout holds it shared (PayoutRepository.claim_idempotency_key), so a PUT that moves the
# policy day waits for in-flight payouts and recounts with all of them committed.
POLICY_WRITE_LOCK = ("policy_versions",)

# Statuses whose money will never move (payouts/status.py NOT_COUNTED_FOR_LIMITS; the policy
# package cannot import payouts, tests/policy/test_limit_counters.py checks they agree).
NOT_COUNTED_SQL = "('canceled', 'failed', 'rejected')"


def _recount_select(where: str) -> str:
    """The limit counters as a recount of the counted payouts matching ``where``: the
    definition the running counters must always equal."""
    counted = f"FROM payouts WHERE status NOT IN {NOT_COUNTED_SQL} AND {where}"
    return f"""
    SELECT 'requester' AS scope, requested_by AS subject, limit_day AS day,
           currency AS currency, COUNT(*) AS payouts, SUM(amount_minor) AS amount_minor
      {counted} GROUP BY requested_by, limit_day, currency
    UNION ALL
    SELECT 'ticket', ticket_system || ':' || ticket_id, 0, currency, COUNT(*), SUM(amount_minor)
      {counted} GROUP BY ticket_system, ticket_id, currency
    UNION ALL
    SELECT 'recipient', recipient_fingerprint, limit_day, currency, COUNT(*), SUM(amount_minor)
      {counted} GROUP BY recipient_fingerprint, limit_day, currency
    UNION ALL
    SELECT 'recipient', recipient_fingerprint, limit_day, '*', COUNT(*), 0
      {counted} GROUP BY recipient_fingerprint, limit_day
    """


_RECOUNT_ALL = text(_recount_select("1 = 1"))
_COUNTER_COLUMNS = "scope, subject, day, currency, payouts, amount_minor"
_REBUILD_ALL = text(f"INSERT INTO limit_counters ({_COUNTER_COLUMNS}) " + _recount_select("1 = 1"))
# The daily rows of some days (the ticket rows, which have no day, are left as they are).
_RECOUNT_DAYS = text(
    f"INSERT INTO limit_counters ({_COUNTER_COLUMNS}) SELECT * FROM ("  # noqa: S608  (constant)
    + _recount_select("limit_day IN :days")
    + ") AS recount WHERE scope <> 'ticket'"
).bindparams(bindparam("days", expanding=True))
_DAYS_SINCE = text("SELECT DISTINCT limit_day FROM payouts WHERE created_at >= :since").bindparams(
    bindparam("since", type_=UtcDateTime())
)
_MOVE_DAY = text("UPDATE payouts SET limit_day = :day WHERE created_at >= :since").bindparams(
    bindparam("since", type_=UtcDateTime())
)


class PolicyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def is_postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    async def lock_policy_writes(self) -> None:
        """Serialise PUT /v1/policy across processes so version numbers never collide."""
        if self.is_postgres:
            await self.session.execute(
                text("SELECT pg_advisory_xact_lock(:k)"),
                {"k": advisory_lock_id(*POLICY_WRITE_LOCK)},
            )

    # -- versions -------------------------------------------------------------------------------
    async def newest_version(self) -> int | None:
        result = await self.session.execute(select(func.max(PolicyVersion.version)))
        value = result.scalar_one_or_none()
        return None if value is None else int(value)

    async def get_version(self, version: int) -> PolicyVersion | None:
        result = await self.session.execute(
            select(PolicyVersion).where(PolicyVersion.version == version)
        )
        return result.scalar_one_or_none()

    async def insert_version(
        self, version: int, document: dict[str, Any], created_by: str, at: datetime
    ) -> None:
        await self.session.execute(
            insert(PolicyVersion).values(
                version=version, document=document, created_by=created_by, created_at=at
            )
        )

    async def insert_version_if_absent(
        self, version: int, document: dict[str, Any], created_by: str, at: datetime
    ) -> bool:
        """INSERT … ON CONFLICT DO NOTHING: several replicas may create version 1 at once and
        exactly one row survives. Returns whether this call inserted it."""
        dialect_insert = postgresql.insert if self.is_postgres else sqlite.insert
        statement = (
            dialect_insert(PolicyVersion)
            .values(version=version, document=document, created_by=created_by, created_at=at)
            .on_conflict_do_nothing(index_elements=[PolicyVersion.version])
            .returning(PolicyVersion.version)
        )
        result = await self.session.execute(statement)
        return result.first() is not None

    # -- limit counters -------------------------------------------------------------------------
    async def move_policy_day(self, day: int, since: datetime) -> None:
        """The policy day now starts at ``since`` (a new timezone): count the payouts created
        since then in the new day's rows, and recount the rows they leave. Runs under the
        policy write lock, so no payout is being created meanwhile (see POLICY_WRITE_LOCK)."""
        left = (await self.session.execute(_DAYS_SINCE, {"since": since})).scalars().all()
        days = sorted({day, *(int(d) for d in left)})
        await self.session.execute(_MOVE_DAY, {"day": day, "since": since})
        await self.session.execute(
            delete(LimitCounter).where(LimitCounter.scope != "ticket", LimitCounter.day.in_(days))
        )
        await self.session.execute(_RECOUNT_DAYS, {"days": days})

    async def rebuild_limit_counters(self) -> None:
        """Replace every counter by its recount (repair after payouts were edited by hand)."""
        await self.session.execute(delete(LimitCounter))
        await self.session.execute(_REBUILD_ALL)

    async def recount_limit_counters(self) -> dict[tuple[str, str, int, str], tuple[int, int]]:
        """What every counter would hold if recounted from the payouts now (key → count,
        amount); rows that are zero are left out."""
        rows = (await self.session.execute(_RECOUNT_ALL)).all()
        return {(r[0], r[1], int(r[2]), r[3]): (int(r[4]), int(r[5])) for r in rows}

    async def limit_counters(self) -> dict[tuple[str, str, int, str], tuple[int, int]]:
        """The stored counters that are not zero (key → count, amount)."""
        query = select(LimitCounter).where(
            or_(LimitCounter.payouts != 0, LimitCounter.amount_minor != 0)
        )
        rows = (await self.session.execute(query)).scalars().all()
        return {(r.scope, r.subject, r.day, r.currency): (r.payouts, r.amount_minor) for r in rows}
