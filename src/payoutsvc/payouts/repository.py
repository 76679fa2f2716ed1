"""All SQL for payouts, their approvals, events and idempotency records.

Hot paths use Core statements (one round trip each, no unit-of-work flush).
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    Row,
    Table,
    bindparam,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import TextClause

from payoutsvc.db.base import UtcDateTime
from payoutsvc.db.bulk import BulkInsert, FoldableWrite, folded_writes, one_of
from payoutsvc.db.driver import DriverStatement
from payoutsvc.db.locks import advisory_lock_id
from payoutsvc.db.signals import signal_on_commit
from payoutsvc.payouts.models import (
    AuditCheckpoint,
    IdempotencyRecord,
    Payout,
    PayoutApproval,
    PayoutColumns,
    PayoutEvent,
)
from payoutsvc.payouts.status import PayoutStatus
from payoutsvc.policy.repository import POLICY_WRITE_LOCK

if TYPE_CHECKING:
    from payoutsvc.payouts.transitions import Move

# The wake-up name for "a payout became approved" (db/signals.py): executors wait on it.
PAYOUTS_DUE = "payouts-due"

_PAYOUTS = cast(Table, Payout.__table__)
_APPROVALS = cast(Table, PayoutApproval.__table__)
_COLUMN_ATTRS = tuple(inspect(Payout).column_attrs)


# What an export reads of a payout: never the encrypted recipient.
_EXPORT_COLUMNS = tuple(
    _PAYOUTS.c[name]
    for name in (
        "id",
        "status",
        "created_at",
        "updated_at",
        "ticket_system",
        "ticket_id",
        "reason",
        "amount_minor",
        "currency",
        "recipient_type",
        "recipient_public",
        "requested_by",
        "description",
        "required_approvals",
        "release_required",
        "released_by",
        "released_at",
        "gateway",
        "gateway_reference",
        "gateway_status",
        "failure_code",
        "attempts",
    )
)


def _list_conditions(
    integration_id: str | None,
    before_id: str | None,
    *,
    ticket_system: str | None = None,
    ticket_id: str | None = None,
    status: str | None = None,
    requested_by: str | None = None,
    created_gte: datetime | None = None,
    created_lt: datetime | None = None,
) -> list[Any]:
    """The WHERE of the payout list and its export: visibility, cursor and filters."""
    c = _PAYOUTS.c
    wanted: list[tuple[Any, Any]] = [
        (integration_id, lambda v: c.integration_id == v),
        (before_id, lambda v: c.id < v),
        (ticket_system, lambda v: c.ticket_system == v),
        (ticket_id, lambda v: c.ticket_id == v),
        (status, lambda v: c.status == v),
        (requested_by, lambda v: c.requested_by == v),
        (created_gte, lambda v: c.created_at >= v),
        (created_lt, lambda v: c.created_at < v),
    ]
    return [condition(value) for value, condition in wanted if value is not None]


def _claim_key_statement(guard: str, source: str = "") -> TextClause:
    """Claim keys: one (``:key``, ``:request_hash``), or every row of ``source`` (a FROM
    clause naming them ``v.key``, ``v.request_hash``), each only when ``guard`` holds."""
    keys = "v.key, v.request_hash" if source else ":key, :request_hash"
    return text(
        "INSERT INTO idempotency_keys (integration_id, key, request_hash, response_status,"
        " response_body, created_at, expires_at)"
        f" SELECT :integration_id, {keys}, 0, '', :now, :expires_at {source} WHERE {guard}"
        " ON CONFLICT (integration_id, key) DO UPDATE SET"
        " request_hash = excluded.request_hash, response_status = 0, response_body = '',"
        " created_at = excluded.created_at, expires_at = excluded.expires_at"
        " WHERE idempotency_keys.expires_at < excluded.created_at"
        " RETURNING key"
    ).bindparams(
        bindparam("now", type_=UtcDateTime()), bindparam("expires_at", type_=UtcDateTime())
    )


# The shared policy lock keeps a PUT that moves the policy day from recounting the limit
# counters while this payout is being counted under the old day (policy/repository.py).
_CLAIM_KEY_POSTGRES = _claim_key_statement(
    "pg_try_advisory_xact_lock(:lock_id) AND pg_advisory_xact_lock_shared(:policy_lock) IS NOT NULL"
)
# Many keys at once (a batch's items, or a create's one): each row takes its own key's
# advisory lock. A create's first statement, so it runs on the driver connection
# (db/driver.py), which begins the transaction.
_CLAIM_KEYS_POSTGRES = DriverStatement(
    _claim_key_statement(
        "pg_try_advisory_xact_lock(v.lock_id)"
        " AND pg_advisory_xact_lock_shared(:policy_lock) IS NOT NULL",
        "FROM unnest(CAST(:keys AS varchar[]), CAST(:request_hashes AS varchar[]),"
        " CAST(:lock_ids AS bigint[])) AS v(key, request_hash, lock_id)",
    )
)
_POLICY_LOCK_ID = advisory_lock_id(*POLICY_WRITE_LOCK)
_CLAIM_KEY_SQLITE = _claim_key_statement("1 = 1")
_IDEMPOTENCY = cast(Table, IdempotencyRecord.__table__)
# The stored answer, built once (an update() built per call re-derives its cache key), on the
# table rather than the mapped class: an ORM-enabled UPDATE would also evaluate its WHERE
# against every object in the session to synchronise them, for rows no one has loaded.
_COMPLETE_KEY = (
    update(_IDEMPOTENCY)
    .where(
        _IDEMPOTENCY.c.integration_id == bindparam("b_integration_id"),
        _IDEMPOTENCY.c.key == bindparam("b_key"),
    )
    .values(response_status=bindparam("b_status"), response_body=bindparam("b_body"))
)


# PostgreSQL: one answer by its primary key, in a form that folds into the create's last
# statement (db/bulk.py folded_writes). Not over arrays joined to the table: a plan made
# while the table was small seq-scans it and stays cached as it grows (measured: 1 -> 3 ms
# per create over a few thousand payouts).
_COMPLETE_KEY_POSTGRES = FoldableWrite(
    lambda p: (
        f"UPDATE idempotency_keys SET response_status = :{p}status, "  # noqa: S608
        f"response_body = :{p}body WHERE integration_id = :{p}integration_id AND key = :{p}key"
    )
)


@functools.cache
def _insert_payouts(names: tuple[str, ...]) -> BulkInsert:
    """The payouts insert for rows with these columns (a create's, a batch item's)."""
    return BulkInsert(_PAYOUTS, names)


class PayoutRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def is_postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    def folded_writes(self) -> AbstractAsyncContextManager[None]:
        """The bulk writes of the block in one statement at its end (db/bulk.py)."""
        return folded_writes(self.session)

    # -- idempotency -----------------------------------------------------------------------
    async def get_idempotency(self, integration_id: str, key: str) -> IdempotencyRecord | None:
        result = await self.session.execute(
            select(IdempotencyRecord).where(
                IdempotencyRecord.integration_id == integration_id, IdempotencyRecord.key == key
            )
        )
        return result.scalar_one_or_none()

    async def claim_idempotency_key(
        self, integration_id: str, key: str, request_hash: str, now: datetime, expires_at: datetime
    ) -> bool:
        """Insert the key's record (answer still empty) unless a live one exists.

        One statement: on PostgreSQL it also takes a transaction-scoped advisory lock on the
        key, so a concurrent request in another process neither blocks on the uncommitted row
        nor slips past it: it inserts nothing, finds no committed record, and answers 409.
        It also holds the policy write lock shared until commit (see ``_CLAIM_KEY_POSTGRES``).
        An expired record is taken over. Returns True when this transaction owns the key.
        """
        statement = _CLAIM_KEY_POSTGRES if self.is_postgres else _CLAIM_KEY_SQLITE
        params: dict[str, Any] = {
            "integration_id": integration_id,
            "key": key,
            "request_hash": request_hash,
            "now": now,
            "expires_at": expires_at,
        }
        if self.is_postgres:
            params["lock_id"] = advisory_lock_id("idem", integration_id, key)
            params["policy_lock"] = _POLICY_LOCK_ID
        result = await self.session.execute(statement, params)
        return result.first() is not None

    async def claim_idempotency_keys(
        self,
        integration_id: str,
        claims: Sequence[tuple[str, str]],
        now: datetime,
        expires_at: datetime,
    ) -> set[str]:
        """:meth:`claim_idempotency_key` for many (key, request_hash) at once; returns the
        keys this transaction now owns. PostgreSQL: one statement for all of them."""
        if not self.is_postgres:
            return {
                key
                for key, request_hash in claims
                if await self.claim_idempotency_key(
                    integration_id, key, request_hash, now, expires_at
                )
            }
        params: dict[str, Any] = {
            "integration_id": integration_id,
            "keys": [key for key, _ in claims],
            "request_hashes": [request_hash for _, request_hash in claims],
            "lock_ids": [advisory_lock_id("idem", integration_id, key) for key, _ in claims],
            "now": now,
            "expires_at": expires_at,
            "policy_lock": _POLICY_LOCK_ID,
        }
        return {str(row[0]) for row in await _CLAIM_KEYS_POSTGRES.fetch(self.session, params)}

    async def complete_idempotency_keys(
        self, integration_id: str, answers: Sequence[tuple[str, int, str]]
    ) -> None:
        """Store the answers (key, status, body) of claimed keys: a create's one folds into
        its last statement on PostgreSQL; a batch's are one executemany."""
        if not answers:
            return
        if self.is_postgres and len(answers) == 1:
            [(key, status, body)] = answers
            await _COMPLETE_KEY_POSTGRES.run(
                self.session,
                {"integration_id": integration_id, "key": key, "status": status, "body": body},
            )
            return
        await self.session.execute(
            _COMPLETE_KEY,
            [
                {"b_integration_id": integration_id, "b_key": k, "b_status": s, "b_body": b}
                for k, s, b in answers
            ],
        )

    async def purge_idempotency(self, now: datetime) -> int:
        result = await self.session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.expires_at < now)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    # -- payouts ---------------------------------------------------------------------------
    async def insert_payouts(self, rows: Sequence[PayoutColumns]) -> None:
        # One statement for any number of rows, built once per set of columns (db/bulk.py):
        # over arrays on PostgreSQL, where it folds into folded_writes; an executemany on
        # SQLite.
        if not rows:
            return
        await _insert_payouts(tuple(rows[0])).run(self.session, rows)
        if any(values["next_attempt_at"] is not None for values in rows):
            signal_on_commit(self.session, PAYOUTS_DUE)

    async def get(self, payout_id: str, integration_id: str | None) -> Payout | None:
        query = select(Payout).where(Payout.id == payout_id)
        if integration_id is not None:
            query = query.where(Payout.integration_id == integration_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def get_for_update(self, payout_id: str, integration_id: str | None) -> Payout | None:
        """The payout, row-locked until commit on PostgreSQL (SQLite serialises writers), so
        decisions that read then write it (approvals) cannot interleave on one payout."""
        query = select(Payout).where(Payout.id == payout_id).with_for_update()
        if integration_id is not None:
            query = query.where(Payout.integration_id == integration_id)
        # populate_existing: a row this session loaded earlier is refreshed, not reused stale.
        query = query.execution_options(populate_existing=True)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def list(
        self,
        *,
        integration_id: str | None,
        limit: int,
        before_id: str | None,
        **filters: Any,
    ) -> Sequence[Payout]:
        query = select(Payout).order_by(Payout.id.desc()).limit(limit)
        conditions = _list_conditions(integration_id, before_id, **filters)
        if conditions:
            query = query.where(*conditions)
        return (await self.session.execute(query)).scalars().all()

    async def export_page(
        self,
        *,
        integration_id: str | None,
        limit: int,
        before_id: str | None,
        **filters: Any,
    ) -> Sequence[Row[Any]]:
        """One page of the list's payouts (same filters and order, newest first), as Core
        rows of the columns an export writes: keyset pagination on the primary key, so
        every page costs the same however deep the export is."""
        query = select(*_EXPORT_COLUMNS).order_by(_PAYOUTS.c.id.desc()).limit(limit)
        conditions = _list_conditions(integration_id, before_id, **filters)
        if conditions:
            query = query.where(*conditions)
        return (await self.session.execute(query)).all()

    async def approvers_of(self, payout_ids: Sequence[str]) -> dict[str, builtins.list[str]]:
        """Who approved each payout, in order (the export's column)."""
        found: dict[str, builtins.list[str]] = {pid: [] for pid in payout_ids}
        if not payout_ids:
            return found
        result = await self.session.execute(
            select(_APPROVALS.c.payout_id, _APPROVALS.c.operator_id)
            .where(
                one_of(_APPROVALS.c.payout_id, payout_ids, postgres=self.is_postgres),
                _APPROVALS.c.decision == "approved",
            )
            .order_by(_APPROVALS.c.at, _APPROVALS.c.id)
        )
        for payout_id, operator_id in result.all():
            found[payout_id].append(operator_id)
        return found

    @staticmethod
    def columns_of(payout: Payout) -> dict[str, Any]:
        """A loaded payout as its columns by name (``metadata``, not the attribute's
        ``metadata_``): what a transition plans from."""
        return {attr.columns[0].name: getattr(payout, attr.key) for attr in _COLUMN_ATTRS}

    async def apply_move(self, move: Move) -> bool:
        """Write a planned status change, conditional on the payout still being where the
        plan started (its status and event sequence), so two racing actions end in exactly
        one outcome. False when the condition failed and nothing was written."""
        result = await self.session.execute(
            update(_PAYOUTS)
            .where(
                _PAYOUTS.c.id == move.payout_id,
                _PAYOUTS.c.status == move.source.value,
                _PAYOUTS.c.last_event_sequence == move.prev_sequence,
            )
            .values(**move.values)
            .returning(_PAYOUTS.c.id)
        )
        applied = result.first() is not None
        if (
            applied
            and move.target is PayoutStatus.APPROVED
            and move.values.get("next_attempt_at") is not None
        ):
            signal_on_commit(self.session, PAYOUTS_DUE)
        return applied

    async def current_status(self, payout_id: str, integration_id: str | None) -> str | None:
        query = select(Payout.status).where(Payout.id == payout_id)
        if integration_id is not None:
            query = query.where(Payout.integration_id == integration_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    # -- approvals and events ----------------------------------------------------------------
    async def approvals_for(
        self, payout_ids: Sequence[str]
    ) -> dict[str, builtins.list[PayoutApproval]]:
        found: dict[str, builtins.list[PayoutApproval]] = {pid: [] for pid in payout_ids}
        if not payout_ids:
            return found
        result = await self.session.execute(
            select(PayoutApproval)
            .where(one_of(_APPROVALS.c.payout_id, payout_ids, postgres=self.is_postgres))
            .order_by(PayoutApproval.at, PayoutApproval.id)
        )
        for approval in result.scalars():
            found[approval.payout_id].append(approval)
        return found

    async def insert_approval(self, values: dict[str, Any]) -> None:
        await self.session.execute(insert(PayoutApproval).values(**values))

    async def touch(self, payout_id: str, now: datetime) -> None:
        """Bump ``updated_at`` for a change outside the status (e.g. a recorded approval)."""
        await self.session.execute(
            update(Payout)
            .where(Payout.id == payout_id)
            .values(updated_at=now)
            .execution_options(synchronize_session=False)
        )

    async def opening_event(self, payout_id: str) -> PayoutEvent | None:
        """The payout's first event (``payout.created``), which seals what its create decided."""
        result = await self.session.execute(
            select(PayoutEvent).where(PayoutEvent.payout_id == payout_id, PayoutEvent.sequence == 1)
        )
        return result.scalar_one_or_none()

    async def events_for(self, payout_id: str) -> Sequence[PayoutEvent]:
        result = await self.session.execute(
            select(PayoutEvent)
            .where(PayoutEvent.payout_id == payout_id)
            .order_by(PayoutEvent.sequence)
        )
        return result.scalars().all()

    # -- audit ---------------------------------------------------------------------------------
    async def payouts_page(self, after_id: str | None, limit: int) -> Sequence[Payout]:
        """Payouts in id order (keyset pagination), for walking every audit chain."""
        query = select(Payout).order_by(Payout.id).limit(limit)
        if after_id is not None:
            query = query.where(Payout.id > after_id)
        return (await self.session.execute(query)).scalars().all()

    async def events_of(self, payout_ids: Sequence[str]) -> dict[str, builtins.list[PayoutEvent]]:
        """The events of several payouts, each list in sequence order."""
        found: dict[str, builtins.list[PayoutEvent]] = {pid: [] for pid in payout_ids}
        if not payout_ids:
            return found
        result = await self.session.execute(
            select(PayoutEvent)
            .where(PayoutEvent.payout_id.in_(payout_ids))
            .order_by(PayoutEvent.payout_id, PayoutEvent.sequence)
        )
        for event in result.scalars():
            found[event.payout_id].append(event)
        return found

    async def chain_heads(self) -> dict[str, tuple[int, str]]:
        """Every payout's chain head (sequence, hash): what an audit checkpoint records."""
        result = await self.session.execute(
            select(Payout.id, Payout.last_event_sequence, Payout.last_event_hash)
        )
        return {pid: (int(sequence), str(head)) for pid, sequence, head in result.all()}

    async def count_events(self) -> int:
        return int((await self.session.execute(select(func.count(PayoutEvent.id)))).scalar_one())

    async def first_event_at(self, scheme: str) -> datetime | None:
        """When the first event hashed under ``scheme`` was written."""
        query = select(func.min(PayoutEvent.at)).where(PayoutEvent.hash_scheme == scheme)
        found: datetime | None = (await self.session.execute(query)).scalar_one_or_none()
        return found

    async def latest_checkpoint(self) -> AuditCheckpoint | None:
        query = select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def insert_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        self.session.add(checkpoint)
        await self.session.flush()

    async def count_by_status(self) -> dict[str, int]:
        result = await self.session.execute(
            select(Payout.status, func.count()).group_by(Payout.status)
        )
        return {status: int(count) for status, count in result.all()}
