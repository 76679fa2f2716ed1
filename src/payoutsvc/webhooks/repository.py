"""All SQL for webhook endpoints, deliveries and attempts.

The sender's statements are Core (one round trip each, batched with executemany) because
they run for every delivery; the API's reads use the ORM.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Row,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.bulk import BulkInsert, array_parameters, unnest_of
from payoutsvc.db.locks import advisory_lock_id
from payoutsvc.db.signals import signal_on_commit
from payoutsvc.webhooks.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

_endpoints = cast(Table, WebhookEndpoint.__table__)
# The wake-up name (db/signals.py) of "an endpoint may now exist that was not there": the
# outbox's EndpointPresence of every process forgets which integrations had none.
ENDPOINTS_CHANGED = "webhook-endpoints"
_deliveries = cast(Table, WebhookDelivery.__table__)
_attempts = cast(Table, WebhookAttempt.__table__)

AnyRow = Row[*tuple[Any, ...]]

# Recording a batch of attempts, built once: SQLite runs it as executemany, PostgreSQL as one
# statement over arrays (one plan and one round trip for the whole batch). An outcome's field
# and the delivery column it is matched against...
_OUTCOME_MATCH: tuple[tuple[str, str], ...] = (("id", "id"), ("token", "locked_by"))
# ...or written to.
_OUTCOME_SET: tuple[tuple[str, str], ...] = (
    ("status", "status"),
    ("next_attempt_at", "next_attempt_at"),
    ("at", "last_attempt_at"),
    ("status_code", "last_status_code"),
    ("latency_ms", "last_latency_ms"),
    ("error", "last_error"),
    ("response_excerpt", "last_response_excerpt"),
    ("delivered_at", "delivered_at"),
)
_RECORD_OUTCOME = (
    update(_deliveries)
    .where(_deliveries.c.id == bindparam("b_id"), _deliveries.c.locked_by == bindparam("b_token"))
    .values(
        {
            # b_: bind names that equal a column name are reserved in an UPDATE's SET.
            **{
                column: bindparam(f"b_{field}", type_=_deliveries.c[column].type)
                for field, column in _OUTCOME_SET
            },
            "locked_until": None,
            "locked_by": None,
        }
    )
)
_PG_RECORD_OUTCOMES = text(
    f"""
    UPDATE webhook_deliveries AS d SET
        {", ".join(f"{column} = v.{field}" for field, column in _OUTCOME_SET)},
        locked_until = NULL, locked_by = NULL
    FROM {unnest_of(_deliveries, (*_OUTCOME_MATCH, *_OUTCOME_SET))}
    WHERE d.id = v.id AND d.locked_by = v.token
    """  # noqa: S608  (column names from the Table)
)
_OUTCOME_FIELDS = [field for field, _ in (*_OUTCOME_MATCH, *_OUTCOME_SET)]
_INSERT_DELIVERIES = BulkInsert(_deliveries, [column.name for column in _deliveries.columns])
# Attempts are numbered by the database (autoincrement id).
_INSERT_ATTEMPTS = BulkInsert(_attempts, [c.name for c in _attempts.columns if c.name != "id"])

PENDING = DeliveryStatus.PENDING.value
# The wake-up name for "deliveries became due" (db/signals.py): the sender waits on it.
DELIVERIES_DUE = "webhook-deliveries"

# What the sender needs of a claimed delivery (never the whole row: no excerpts, no log).
CLAIM_COLUMNS = (
    _deliveries.c.id,
    _deliveries.c.endpoint_id,
    _deliveries.c.integration_id,
    _deliveries.c.event_id,
    _deliveries.c.payout_id,
    _deliveries.c.sequence,
    _deliveries.c.event_type,
    _deliveries.c.payload,
    _deliveries.c.attempts,
)

TARGET_COLUMNS = (
    _endpoints.c.id,
    _endpoints.c.url,
    _endpoints.c.enabled,
    _endpoints.c.secret_encrypted,
    _endpoints.c.previous_secret_encrypted,
    _endpoints.c.previous_secret_expires_at,
    _endpoints.c.failing_since,
    _endpoints.c.target_kind,
    _endpoints.c.target_options,
)
# The endpoints of the webhook-endpoints API: a helpdesk connector's target is managed
# through /v1/connectors instead.
_PLAIN = _endpoints.c.target_kind.is_(None)


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """One attempt's result as written on its delivery (fields as in _OUTCOME_MATCH/_SET)."""

    id: str
    token: str
    status: str
    next_attempt_at: datetime | None
    at: datetime
    status_code: int | None
    latency_ms: float | None
    error: str | None
    response_excerpt: str | None
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One webhook_attempts row (its id is numbered by the database)."""

    delivery_id: str
    attempt: int
    at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None
    response_excerpt: str | None


_ATTEMPT_FIELDS = tuple(AttemptRow.__dataclass_fields__)


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def is_postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    # -- endpoints -----------------------------------------------------------------------------
    async def lock_endpoint_list(self, integration_id: str) -> None:
        """Serialise endpoint creation per integration until this transaction ends, so two
        concurrent creations cannot both see room for one more (PostgreSQL: an advisory
        lock; SQLite: write transactions begin IMMEDIATE and run one at a time already)."""
        if self.is_postgres:
            await self.session.execute(
                text("SELECT pg_advisory_xact_lock(:lock_id)"),
                {"lock_id": advisory_lock_id("webhook-endpoints", integration_id)},
            )

    async def count_endpoints(self, integration_id: str) -> int:
        result = await self.session.execute(
            select(func.count()).where(_endpoints.c.integration_id == integration_id, _PLAIN)
        )
        return int(result.scalar_one())

    async def insert_endpoint(self, values: Mapping[str, Any]) -> None:
        await self.session.execute(insert(WebhookEndpoint).values(**values))
        signal_on_commit(self.session, ENDPOINTS_CHANGED)

    async def get_endpoint(
        self, endpoint_id: str, integration_id: str | None, *, connector: bool = False
    ) -> WebhookEndpoint | None:
        """A webhook endpoint, or with ``connector`` a connector's write-back target."""
        query = select(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id,
            _endpoints.c.target_kind.is_not(None) if connector else _PLAIN,
        )
        if integration_id is not None:
            query = query.where(WebhookEndpoint.integration_id == integration_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def list_endpoints(
        self, integration_id: str | None, limit: int, before_id: str | None
    ) -> Sequence[WebhookEndpoint]:
        query = (
            select(WebhookEndpoint).where(_PLAIN).order_by(WebhookEndpoint.id.desc()).limit(limit)
        )
        if integration_id is not None:
            query = query.where(WebhookEndpoint.integration_id == integration_id)
        if before_id is not None:
            query = query.where(WebhookEndpoint.id < before_id)
        return (await self.session.execute(query)).scalars().all()

    async def update_endpoint(
        self,
        endpoint_id: str,
        integration_id: str | None,
        values: Mapping[str, Any],
        *,
        connector: bool = False,
    ) -> AnyRow | None:
        condition = [_endpoints.c.id == endpoint_id]
        if integration_id is not None:
            condition.append(_endpoints.c.integration_id == integration_id)
        condition.append(_endpoints.c.target_kind.is_not(None) if connector else _PLAIN)
        result = await self.session.execute(
            update(_endpoints).where(*condition).values(**values).returning(*_endpoints.c)
        )
        if values.get("enabled") is True:
            signal_on_commit(self.session, ENDPOINTS_CHANGED)
        return result.first()

    async def delete_endpoint(
        self, endpoint_id: str, integration_id: str | None, *, connector: bool = False
    ) -> bool:
        """Delete an endpoint with its deliveries and their attempts (explicitly: SQLite
        enforces ON DELETE CASCADE only with foreign keys on, and order matters for both)."""
        endpoint = select(_endpoints.c.id).where(
            _endpoints.c.id == endpoint_id,
            _endpoints.c.target_kind.is_not(None) if connector else _PLAIN,
        )
        if integration_id is not None:
            endpoint = endpoint.where(_endpoints.c.integration_id == integration_id)
        # Lock the row first so a concurrent enqueue or sender write waits for us.
        found = (await self.session.execute(endpoint.with_for_update())).scalar_one_or_none()
        if found is None:
            return False
        delivery_ids = select(_deliveries.c.id).where(_deliveries.c.endpoint_id == endpoint_id)
        await self.session.execute(
            delete(_attempts).where(_attempts.c.delivery_id.in_(delivery_ids))
        )
        await self.session.execute(
            delete(_deliveries).where(_deliveries.c.endpoint_id == endpoint_id)
        )
        await self.session.execute(delete(_endpoints).where(_endpoints.c.id == endpoint_id))
        return True

    async def enabled_endpoints_for(self, integration_ids: Iterable[str]) -> Sequence[AnyRow]:
        """``(id, integration_id, events, target_kind, target_options)`` of every enabled
        endpoint of these integrations: one query for the whole batch of events (the outbox
        runs on every status change)."""
        ids = sorted(set(integration_ids))
        if not ids:
            return []
        result = await self.session.execute(
            select(
                _endpoints.c.id,
                _endpoints.c.integration_id,
                _endpoints.c.events,
                _endpoints.c.target_kind,
                _endpoints.c.target_options,
            )
            .where(_endpoints.c.integration_id.in_(ids), _endpoints.c.enabled.is_(True))
            .order_by(_endpoints.c.id)
        )
        return result.all()

    async def all_enabled_endpoints(self) -> Sequence[AnyRow]:
        """``(id, integration_id, events, target_kind)`` of every enabled endpoint of every
        integration (events about the service, not one integration's payout)."""
        result = await self.session.execute(
            select(
                _endpoints.c.id,
                _endpoints.c.integration_id,
                _endpoints.c.events,
                _endpoints.c.target_kind,
            )
            # A helpdesk connector's target takes only its own tickets' payout events.
            .where(_endpoints.c.enabled.is_(True), _PLAIN)
            .order_by(_endpoints.c.id)
        )
        return result.all()

    async def disable_endpoints(
        self, endpoint_ids: Iterable[str], reason: str, now: datetime
    ) -> list[str]:
        """Disable the still-enabled endpoints among ``endpoint_ids``; returns those it changed."""
        ids = sorted(set(endpoint_ids))
        if not ids:
            return []
        result = await self.session.execute(
            update(_endpoints)
            .where(_endpoints.c.id.in_(ids), _endpoints.c.enabled.is_(True))
            .values(enabled=False, disabled_reason=reason, disabled_at=now, updated_at=now)
            .returning(_endpoints.c.id)
        )
        return list(result.scalars().all())

    async def disable_failing_endpoints(
        self, endpoint_ids: Iterable[str], failing_before: datetime, reason: str, now: datetime
    ) -> list[str]:
        """Disable those of ``endpoint_ids`` failing non-stop since ``failing_before``."""
        ids = sorted(set(endpoint_ids))
        if not ids:
            return []
        result = await self.session.execute(
            update(_endpoints)
            .where(
                _endpoints.c.id.in_(ids),
                _endpoints.c.enabled.is_(True),
                _endpoints.c.failing_since.is_not(None),
                _endpoints.c.failing_since <= failing_before,
            )
            .values(enabled=False, disabled_reason=reason, disabled_at=now, updated_at=now)
            .returning(_endpoints.c.id)
        )
        return list(result.scalars().all())

    async def mark_endpoints_healthy(self, endpoint_ids: Iterable[str]) -> None:
        ids = sorted(set(endpoint_ids))
        if ids:
            await self.session.execute(
                update(_endpoints)
                .where(_endpoints.c.id.in_(ids), _endpoints.c.failing_since.is_not(None))
                .values(failing_since=None)
            )

    async def mark_endpoints_failing(self, endpoint_ids: Iterable[str], since: datetime) -> None:
        """Start the failing streak of healthy endpoints (an ongoing streak keeps its start)."""
        ids = sorted(set(endpoint_ids))
        if ids:
            await self.session.execute(
                update(_endpoints)
                .where(_endpoints.c.id.in_(ids), _endpoints.c.failing_since.is_(None))
                .values(failing_since=since)
            )

    # -- deliveries: writing -------------------------------------------------------------------
    async def insert_deliveries(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            await _INSERT_DELIVERIES.run(self.session, rows)
            signal_on_commit(self.session, DELIVERIES_DUE)

    async def cancel_pending(self, endpoint_ids: Iterable[str], reason: str, now: datetime) -> int:
        """Give up the pending deliveries of these endpoints (they were disabled or deleted)."""
        ids = sorted(set(endpoint_ids))
        if not ids:
            return 0
        result = await self.session.execute(
            update(_deliveries)
            .where(_deliveries.c.endpoint_id.in_(ids), _deliveries.c.status == PENDING)
            .values(
                status=DeliveryStatus.CANCELED.value,
                next_attempt_at=None,
                locked_until=None,
                locked_by=None,
                last_error=reason,
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def requeue_delivery(
        self, delivery_id: str, integration_id: str | None, now: datetime
    ) -> AnyRow | None:
        """Make a delivery due now with a fresh retry schedule, whatever its status."""
        condition = [_deliveries.c.id == delivery_id]
        if integration_id is not None:
            condition.append(_deliveries.c.integration_id == integration_id)
        result = await self.session.execute(
            update(_deliveries)
            .where(*condition)
            .values(
                status=PENDING,
                attempts=0,
                next_attempt_at=now,
                locked_until=None,
                locked_by=None,
                delivered_at=None,
            )
            .returning(*_deliveries.c)
        )
        signal_on_commit(self.session, DELIVERIES_DUE)
        return result.first()

    async def requeue_given_up(
        self, endpoint_id: str, since: datetime, statuses: Sequence[str], now: datetime
    ) -> int:
        """Bulk re-send: deliveries of the endpoint created at or after ``since`` whose status
        is one of ``statuses`` (given-up ones) become due now with a fresh schedule."""
        result = await self.session.execute(
            update(_deliveries)
            .where(
                _deliveries.c.endpoint_id == endpoint_id,
                _deliveries.c.created_at >= since,
                _deliveries.c.status.in_(list(statuses)),
            )
            .values(
                status=PENDING,
                attempts=0,
                next_attempt_at=now,
                locked_until=None,
                locked_by=None,
            )
        )
        signal_on_commit(self.session, DELIVERIES_DUE)
        return int(getattr(result, "rowcount", 0) or 0)

    # -- deliveries: reading -------------------------------------------------------------------
    async def get_delivery(
        self, delivery_id: str, integration_id: str | None
    ) -> WebhookDelivery | None:
        query = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
        if integration_id is not None:
            query = query.where(WebhookDelivery.integration_id == integration_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def list_deliveries(
        self,
        endpoint_id: str,
        limit: int,
        before_id: str | None,
        payout_id: str | None = None,
        status: str | None = None,
    ) -> Sequence[WebhookDelivery]:
        query = (
            select(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.id.desc())
            .limit(limit)
        )
        if before_id is not None:
            query = query.where(WebhookDelivery.id < before_id)
        if payout_id is not None:
            query = query.where(WebhookDelivery.payout_id == payout_id)
        if status is not None:
            query = query.where(WebhookDelivery.status == status)
        return (await self.session.execute(query)).scalars().all()

    async def attempts_for(self, delivery_id: str) -> Sequence[WebhookAttempt]:
        result = await self.session.execute(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id == delivery_id)
            .order_by(WebhookAttempt.id)
        )
        return result.scalars().all()

    async def pending_summary(self) -> tuple[int, datetime | None]:
        """How many deliveries are pending, and when the oldest of them was created."""
        result = await self.session.execute(
            select(func.count(), func.min(_deliveries.c.created_at)).where(
                _deliveries.c.status == PENDING
            )
        )
        count, oldest = result.one()
        if isinstance(oldest, str):  # SQLite hands aggregates back untyped
            oldest = datetime.fromisoformat(oldest)
        return int(count), oldest

    # -- the sender ----------------------------------------------------------------------------
    async def skip_commit_flush(self) -> None:
        """Let this transaction's COMMIT return before its WAL reaches the disk (PostgreSQL).

        Only for the sender's own bookkeeping: if the server crashes, the last few claims or
        outcomes can be lost, and the only effect is a delivery sent once more when its lease
        runs out, which at-least-once delivery allows. Nothing else is weakened: the database
        stays consistent, and the outbox rows are written by the payout's own, fully durable
        transaction.
        """
        if self.is_postgres:
            await self.session.execute(text("SET LOCAL synchronous_commit = off"))

    async def any_due(self, now: datetime) -> bool:
        """Whether some pending delivery is due and unleased (ignoring the ordering rule): a
        read-only look before claiming, so an idle sender does not take SQLite's write lock."""
        result = await self.session.execute(
            select(_deliveries.c.id)
            .where(
                _deliveries.c.status == PENDING,
                _deliveries.c.next_attempt_at <= now,
                or_(_deliveries.c.locked_until.is_(None), _deliveries.c.locked_until < now),
            )
            .limit(1)
        )
        return result.first() is not None

    async def next_retry_at(self, now: datetime) -> datetime | None:
        """When the earliest pending delivery not yet due falls due: an idle sender's next
        look. (Deliveries due already but left unclaimed wait for an earlier event of their
        payout, whose own retry time counts here, or for another sender's lease to end,
        which the idle sender's look every IDLE_LOOK_MAX_SECONDS catches.)"""
        result = await self.session.execute(
            select(_deliveries.c.next_attempt_at)
            .where(_deliveries.c.status == PENDING, _deliveries.c.next_attempt_at > now)
            .order_by(_deliveries.c.next_attempt_at)
            .limit(1)
        )
        found: datetime | None = result.scalar()
        return found

    async def claim_due(
        self, now: datetime, limit: int, lease_until: datetime, token: str
    ) -> Sequence[AnyRow]:
        """Lease up to ``limit`` due deliveries and count the attempt they are claimed for.

        Ordering: a delivery is claimable only when no earlier event of the same payout is
        still pending for the same endpoint (delivered or given up lets the next one go), so
        even several senders deliver a payout's events to an endpoint in sequence order: the
        earlier one stays ``pending`` while it is leased and in flight.
        PostgreSQL skips rows another sender is claiming (``FOR UPDATE SKIP LOCKED``); SQLite
        serialises writers, so the conditional UPDATE alone is the claim.
        """
        earlier = _deliveries.alias("earlier")
        blocked_by_earlier = exists().where(
            earlier.c.endpoint_id == _deliveries.c.endpoint_id,
            earlier.c.payout_id == _deliveries.c.payout_id,
            earlier.c.sequence < _deliveries.c.sequence,
            earlier.c.status == PENDING,
        )
        due = (
            select(_deliveries.c.id)
            .where(
                _deliveries.c.status == PENDING,
                _deliveries.c.next_attempt_at <= now,
                or_(_deliveries.c.locked_until.is_(None), _deliveries.c.locked_until < now),
                ~blocked_by_earlier,
            )
            .order_by(_deliveries.c.next_attempt_at)
            .limit(limit)
        )
        if self.is_postgres:
            due = due.with_for_update(skip_locked=True, of=_deliveries)
        result = await self.session.execute(
            update(_deliveries)
            .where(_deliveries.c.id.in_(due.scalar_subquery()))
            .values(
                locked_until=lease_until,
                locked_by=token,
                attempts=_deliveries.c.attempts + 1,
            )
            .returning(*CLAIM_COLUMNS)
        )
        return result.all()

    async def targets(self, endpoint_ids: Iterable[str]) -> Sequence[AnyRow]:
        """URL, state and encrypted secrets of the endpoints of claimed deliveries."""
        ids = sorted(set(endpoint_ids))
        if not ids:
            return []
        result = await self.session.execute(select(*TARGET_COLUMNS).where(_endpoints.c.id.in_(ids)))
        return result.all()

    async def record_outcomes(self, outcomes: Sequence[OutcomeRow]) -> list[str]:
        """Store each attempt's outcome on its delivery, only while the claim that made it
        still holds the lease; returns the ids of deliveries that still exist (an endpoint
        deleted meanwhile takes its deliveries with it)."""
        if not outcomes:
            return []
        if self.is_postgres:
            # In id order, like every batch writer of deliveries here (no lock-order cycles).
            ordered = [
                {f: getattr(o, f) for f in _OUTCOME_FIELDS}
                for o in sorted(outcomes, key=lambda o: o.id)
            ]
            parameters = array_parameters(_deliveries, (*_OUTCOME_MATCH, *_OUTCOME_SET), ordered)
            await self.session.execute(_PG_RECORD_OUTCOMES, parameters)
        else:
            await self.session.execute(
                _RECORD_OUTCOME,
                [{f"b_{f}": getattr(o, f) for f in _OUTCOME_FIELDS} for o in outcomes],
            )
        # The UPDATE above row-locked the deliveries it found, so none of these can vanish
        # before we commit; one that is missing now was deleted before us.
        ids = sorted({o.id for o in outcomes})
        result = await self.session.execute(
            select(_deliveries.c.id).where(_deliveries.c.id.in_(ids))
        )
        return list(result.scalars().all())

    async def insert_attempts(self, rows: Sequence[AttemptRow]) -> None:
        await _INSERT_ATTEMPTS.run(
            self.session, [{f: getattr(row, f) for f in _ATTEMPT_FIELDS} for row in rows]
        )

    async def purge_finished(self, created_before: datetime, batch_size: int) -> int:
        """Delete up to ``batch_size`` finished deliveries created before the cutoff, with
        their attempts. Pending ones are kept whatever their age."""
        doomed = list(
            (
                await self.session.execute(
                    select(_deliveries.c.id)
                    .where(
                        _deliveries.c.created_at < created_before,
                        _deliveries.c.status != PENDING,
                    )
                    .limit(batch_size)
                )
            )
            .scalars()
            .all()
        )
        if not doomed:
            return 0
        await self.session.execute(delete(_attempts).where(_attempts.c.delivery_id.in_(doomed)))
        await self.session.execute(
            delete(_deliveries).where(
                and_(_deliveries.c.id.in_(doomed), _deliveries.c.status != PENDING)
            )
        )
        return len(doomed)
