"""The facts a policy decision reads about one payout request, and the limit counters that
make the check-and-insert race-free. All SQL.

The facts (operator, blocklist, duplicate, current policy version) come from ONE statement of
scalar subqueries, each on its own index: creating a payout is the hot path. The totals the
caps compare with are running counters (policy/models.py LimitCounter), one row per cap:
creating a payout adds to its rows with one upsert that also locks them (until commit) and
returns their totals, so two requests on one requester, ticket or recipient are serialised
from that statement on, and the day's size costs nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    String,
    bindparam,
    column,
    exists,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.base import UtcDateTime
from payoutsvc.db.driver import DriverStatement
from payoutsvc.operators.models import Operator
from payoutsvc.payouts.models import Payout
from payoutsvc.payouts.status import NOT_COUNTED_FOR_LIMITS
from payoutsvc.policy.models import LimitCounter, PolicyVersion
from payoutsvc.recipients.models import RecipientBlock

if TYPE_CHECKING:
    from payoutsvc.policy.service import PayoutRequest

_NOT_COUNTED = [s.value for s in NOT_COUNTED_FOR_LIMITS]

# (scope, subject, day, currency, amount): one counter row and what a payout adds to it.
CounterDelta = tuple[str, str, int, str, int]


def _upsert(rows: int, *, returning: bool) -> Any:
    """Add (count, amount) to ``rows`` counters, creating missing ones: INSERT … ON CONFLICT DO
    UPDATE, the same text on PostgreSQL and SQLite. On PostgreSQL the update takes the row
    lock and reads the newest committed row even after waiting, so the returned totals are
    exact for a READ COMMITTED transaction. Built once per shape (no per-call cache key)."""
    values = ", ".join(f"(:s{i}, :j{i}, :d{i}, :c{i}, :n{i}, :a{i})" for i in range(rows))
    statement = text(
        "INSERT INTO limit_counters (scope, subject, day, currency, payouts, amount_minor)"  # noqa: S608  (values: bind parameter names)
        f" VALUES {values}"
        " ON CONFLICT (scope, subject, day, currency) DO UPDATE SET"
        " payouts = limit_counters.payouts + excluded.payouts,"
        " amount_minor = limit_counters.amount_minor + excluded.amount_minor"
        + (" RETURNING scope, currency, payouts, amount_minor" if returning else "")
    )
    return statement.bindparams(
        *(bindparam(f"d{i}", type_=BigInteger()) for i in range(rows)),
        *(bindparam(f"n{i}", type_=BigInteger()) for i in range(rows)),
        *(bindparam(f"a{i}", type_=BigInteger()) for i in range(rows)),
    )


def _count_in_parameters(rows: Sequence[CounterDelta]) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    for i, (scope, subject, day, currency, amount) in enumerate(rows):
        parameters.update(
            {
                f"s{i}": scope,
                f"j{i}": subject,
                f"d{i}": day,
                f"c{i}": currency,
                f"n{i}": 1,
                f"a{i}": amount,
            }
        )
    return parameters


# A new payout's four rows (PayoutRequest.limit_counters).
_COUNT_IN = DriverStatement(_upsert(4, returning=True))
_ADJUST_ONE = _upsert(1, returning=False)  # executemany, for any number of rows
_RELEASED = select(
    Payout.requested_by,
    Payout.ticket_system,
    Payout.ticket_id,
    Payout.recipient_fingerprint,
    Payout.currency,
    Payout.amount_minor,
    Payout.limit_day,
).where(Payout.id.in_(bindparam("ids", expanding=True)))


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
    ticket_payouts: int  # the ticket's counted payouts in this currency when read


def _counter(scope: str, subject: str, day: str | None, currency: str, column: str) -> Any:
    """One counter's column by its key's bind parameters (0 when the row does not exist)."""
    c = LimitCounter.__table__.c
    return func.coalesce(
        select(c[column])
        .where(
            c.scope == literal(scope),
            c.subject == bindparam(subject, type_=String()),
            c.day == (literal(0) if day is None else bindparam(day, type_=BigInteger())),
            c.currency
            == (literal("*") if currency == "*" else bindparam(currency, type_=String())),
        )
        .scalar_subquery(),
        0,
    )


def _duplicate() -> ColumnElement[bool]:
    """Any live payout like this one, whatever its idempotency key: the same key would have
    replayed the first answer, unless its record had expired, which is no less suspicious."""
    return exists().where(
        Payout.ticket_system == bindparam("ticket_system", type_=String()),
        Payout.ticket_id == bindparam("ticket_id", type_=String()),
        Payout.recipient_fingerprint == bindparam("fingerprint", type_=String()),
        Payout.amount_minor == bindparam("amount_minor", type_=BigInteger()),
        Payout.currency == bindparam("currency", type_=String()),
        Payout.created_at >= bindparam("duplicate_since", type_=UtcDateTime()),
        # Inline constants, not an expanding parameter: the statement is compiled once
        # (db/driver.py) and a list parameter would be rendered per call.
        Payout.status.not_in([literal_column(f"'{status}'") for status in _NOT_COUNTED]),
    )


_DUPLICATE = select(_duplicate())


def duplicate_likeness(request: PayoutRequest) -> tuple[Any, ...]:
    """The columns ``_duplicate`` compares, of a request: how a batch's duplicate check sees
    the items it planned but has not inserted yet (keep the two in step)."""
    return (
        request.ticket_system,
        request.ticket_id,
        request.recipient_fingerprint,
        request.amount_minor,
        request.currency,
    )


# The review's anomalies (review/models.py Anomaly), named here rather than imported: the
# review domain reads payouts, so payouts must not import it. Served by the partial indexes
# on open anomalies' subjects (migration 0014).
_ANOMALIES = table(
    "anomalies", column("status"), column("subject_requester"), column("subject_recipient")
)
_OPEN_ANOMALY = select(
    exists().where(
        _ANOMALIES.c.status == "open",
        or_(
            _ANOMALIES.c.subject_requester == bindparam("requester_id", type_=String()),
            _ANOMALIES.c.subject_recipient == bindparam("fingerprint", type_=String()),
        ),
    )
)


def _facts_statement(*, with_duplicate: bool, with_totals: bool) -> Select[Any]:
    """The facts of one payout request as ONE statement of scalar subqueries, each served by
    its own index; built once with bind parameters (building and cache-keying a statement
    this size per request costs more CPU than running it).

    ``with_totals``: the cap totals from their counters as they are (a preview); a create
    takes them from its own upsert instead (LimitsRepository.count_in), which locks them.
    """
    requester_id = bindparam("requester_id", type_=String())
    fingerprint = bindparam("fingerprint", type_=String())
    duplicate: ColumnElement[Any] = _duplicate() if with_duplicate else false()
    totals: tuple[Any, ...] = (literal(0),) * 4
    if with_totals:
        totals = (
            _counter("requester", "requester_id", "day", "currency", "amount_minor"),
            _counter("ticket", "ticket", None, "currency", "amount_minor"),
            _counter("recipient", "fingerprint", "day", "*", "payouts"),
            _counter("recipient", "fingerprint", "day", "currency", "amount_minor"),
        )
    return select(
        select(Operator.role).where(Operator.id == requester_id).scalar_subquery(),
        select(Operator.disabled).where(Operator.id == requester_id).scalar_subquery(),
        *totals,
        exists().where(RecipientBlock.fingerprint == fingerprint),
        duplicate,
        select(func.max(PolicyVersion.version)).scalar_subquery(),
        # What the duplicate check saw of the ticket (LimitsRepository.count_in).
        _counter("ticket", "ticket", None, "currency", "payouts"),
    )


_FACTS = {
    (duplicate, totals): DriverStatement(
        _facts_statement(with_duplicate=duplicate, with_totals=totals)
    )
    for duplicate in (False, True)
    for totals in (False, True)
}
_COUNTED_COLUMNS = (
    column("scope", String()),
    column("currency", String()),
    column("payouts", BigInteger()),
    column("amount_minor", BigInteger()),
)


def _counted_facts_statement(*, with_duplicate: bool) -> Select[Any]:
    """PostgreSQL: a create's facts and its counters' upsert (``_COUNT_IN``) as ONE
    statement, one round trip fewer: the facts as ``_facts_statement`` reads them (the
    statement's snapshot, taken before the upsert waits for any row lock), then the four
    counters' totals after the upsert, as ``count_in`` reads them from its RETURNING."""
    counted = _upsert(4, returning=True).columns(*_COUNTED_COLUMNS).cte("counted")

    def total(scope: str, name: str, across_currencies: bool | None = None) -> Any:
        found = select(counted.c[name]).where(counted.c.scope == literal(scope))
        if across_currencies is not None:
            star = counted.c.currency == literal("*")
            found = found.where(star if across_currencies else ~star)
        return found.scalar_subquery()

    return _facts_statement(with_duplicate=with_duplicate, with_totals=False).add_columns(
        total("requester", "amount_minor"),
        total("ticket", "amount_minor"),
        total("ticket", "payouts"),
        total("recipient", "payouts", across_currencies=True),
        total("recipient", "amount_minor", across_currencies=False),
    )


_COUNTED_FACTS = {
    duplicate: DriverStatement(_counted_facts_statement(with_duplicate=duplicate))
    for duplicate in (False, True)
}


def _facts_of(row: Sequence[Any]) -> RequestFacts:
    """The first ten columns of ``_facts_statement`` (and of ``_counted_facts_statement``)."""
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
        ticket_payouts=int(row[9]),
    )


class LimitsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- payout facts ---------------------------------------------------------------------------
    @property
    def counts_with_facts(self) -> bool:
        """Whether :meth:`count_in_with_facts` is available (PostgreSQL: SQLite has no
        INSERT inside WITH)."""
        return self.session.get_bind().dialect.name == "postgresql"

    async def count_in_with_facts(
        self,
        request: PayoutRequest,
        rows: Sequence[CounterDelta],
        *,
        duplicate_since: datetime | None,
    ) -> RequestFacts:
        """:meth:`request_facts` then :meth:`count_in`, in one statement
        (``_counted_facts_statement``). The caller checks the facts' policy version as
        after ``request_facts``, and counts the payout out again if it differs."""
        statement = _COUNTED_FACTS[duplicate_since is not None]
        params = {
            **self._facts_parameters(request, day=None, duplicate_since=duplicate_since),
            **_count_in_parameters(rows),
        }
        [row] = await statement.fetch(self.session, params)
        facts = _facts_of(row)
        requester_amount, ticket_amount, ticket_payouts, recipient_count, recipient_amount = (
            int(value) for value in row[10:15]
        )
        after = {
            ("requester", request.currency): (0, requester_amount),
            ("ticket", request.currency): (ticket_payouts, ticket_amount),
            ("recipient", "*"): (recipient_count, 0),
            ("recipient", request.currency): (0, recipient_amount),
        }
        return await self._counted(request, facts, after, duplicate_since)

    async def request_facts(
        self,
        request: PayoutRequest,
        *,
        day: int,
        duplicate_since: datetime | None,
        with_totals: bool,
    ) -> RequestFacts:
        """Every fact the policy rules read, in one statement (see ``_facts_statement``);
        the totals are 0 unless ``with_totals``."""
        statement = _FACTS[(duplicate_since is not None, with_totals)]
        params = self._facts_parameters(
            request, day=day if with_totals else None, duplicate_since=duplicate_since
        )
        [row] = await statement.fetch(self.session, params)
        return _facts_of(row)

    @staticmethod
    def _facts_parameters(
        request: PayoutRequest, *, day: int | None, duplicate_since: datetime | None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "requester_id": request.requester_id,
            "currency": request.currency,
            "fingerprint": request.recipient_fingerprint,
            "ticket_system": request.ticket_system,
            "ticket_id": request.ticket_id,
        }
        params["ticket"] = f"{request.ticket_system}:{request.ticket_id}"
        if day is not None:
            params["day"] = day
        if duplicate_since is not None:
            params["duplicate_since"] = duplicate_since
            params["amount_minor"] = request.amount_minor
        return params

    async def open_anomaly(self, requester_id: str, fingerprint: str) -> bool:
        """Whether the requester or the recipient is a subject of an open review anomaly."""
        found = await self.session.execute(
            _OPEN_ANOMALY, {"requester_id": requester_id, "fingerprint": fingerprint}
        )
        return bool(found.scalar_one())

    # -- limit counters -------------------------------------------------------------------------
    async def count_in(
        self,
        request: PayoutRequest,
        facts: RequestFacts,
        rows: Sequence[CounterDelta],
        duplicate_since: datetime | None,
    ) -> RequestFacts:
        """Add a new payout to its four counters (``PayoutRequest.limit_counters``), locking
        them until commit, and return ``facts`` with the totals they held before it.

        The duplicate fact was read before the lock: a like payout (same ticket, currency)
        that committed or was in flight meanwhile changed the ticket's count, which the
        upsert waited for; then the check is asked again, now serialised by the lock."""
        result = await _COUNT_IN.fetch(self.session, _count_in_parameters(rows))
        after = {(r[0], r[1]): (int(r[2]), int(r[3])) for r in result}
        return await self._counted(request, facts, after, duplicate_since)

    async def _counted(
        self,
        request: PayoutRequest,
        facts: RequestFacts,
        after: dict[tuple[str, str], tuple[int, int]],
        duplicate_since: datetime | None,
    ) -> RequestFacts:
        """``facts`` with the totals the counters held before this payout, from their
        (payouts, amount) ``after`` it was counted in, by (scope, currency)."""
        amount, currency = request.amount_minor, request.currency
        ticket_payouts = after["ticket", currency][0] - 1
        counted = replace(
            facts,
            requester_daily_total_minor=after["requester", currency][1] - amount,
            ticket_total_minor=after["ticket", currency][1] - amount,
            recipient_daily_count=after["recipient", "*"][0] - 1,
            recipient_daily_total_minor=after["recipient", currency][1] - amount,
            ticket_payouts=ticket_payouts,
        )
        if duplicate_since is None or ticket_payouts == facts.ticket_payouts:
            return counted
        found = await self.session.execute(
            _DUPLICATE,
            {
                "ticket_system": request.ticket_system,
                "ticket_id": request.ticket_id,
                "fingerprint": request.recipient_fingerprint,
                "amount_minor": amount,
                "currency": currency,
                "duplicate_since": duplicate_since,
            },
        )
        return replace(counted, duplicate_suspected=bool(found.scalar_one()))

    async def count_out(self, rows: Sequence[CounterDelta]) -> None:
        """Take back what :meth:`count_in` added (the request was refused after all)."""
        await self._adjust([(*row[:4], -1, -row[4]) for row in rows])

    async def release(self, payout_ids: Sequence[str]) -> None:
        """Subtract payouts that left the counted statuses (rejected, canceled, failed) from
        their counters, in the transaction that moves them (payouts/events.py)."""
        if not payout_ids:
            return
        found = await self.session.execute(_RELEASED, {"ids": list(payout_ids)})
        deltas: dict[tuple[str, str, int, str], list[int]] = defaultdict(lambda: [0, 0])
        for requester, system, ticket, fingerprint, currency, amount, day in found.all():
            for key, counted in (
                (("requester", requester, day, currency), amount),
                (("ticket", f"{system}:{ticket}", 0, currency), amount),
                (("recipient", fingerprint, day, currency), amount),
                (("recipient", fingerprint, day, "*"), 0),
            ):
                deltas[key][0] -= 1
                deltas[key][1] -= counted
        await self._adjust([(*key, n, a) for key, (n, a) in deltas.items()])

    async def _adjust(self, rows: Sequence[tuple[str, str, int, str, int, int]]) -> None:
        """Add (count, amount) to each row, in key order (the order every writer locks
        counters in, so two writers cannot deadlock on them)."""
        parameters = [
            {"s0": s, "j0": j, "d0": d, "c0": c, "n0": n, "a0": a}
            for s, j, d, c, n, a in sorted(rows)
        ]
        if parameters:
            await self.session.execute(_ADJUST_ONE, parameters)
