"""Transactional outbox: webhook deliveries for payout events, written with the event.

Runs inside the transaction that changes a payout's status, so a delivery exists exactly when
its event committed. It is on the hot path of every payout creation and status change: one
query finds the enabled endpoints of every integration in the batch (a just-created or
just-disabled endpoint counts at once) and one INSERT writes all the rows. Integrations known
to have no endpoint skip the query (:class:`EndpointPresence`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.signals import Signals
from payoutsvc.ids import new_id
from payoutsvc.runtime import Runtime
from payoutsvc.timestamps import rfc3339
from payoutsvc.webhooks.filters import event_matches
from payoutsvc.webhooks.models import DeliveryStatus
from payoutsvc.webhooks.repository import ENDPOINTS_CHANGED, WebhookRepository


class OutboxEvent(Protocol):
    """What the outbox needs of an event (payouts.events.NewEvent is one): the outbox sits
    below the domains whose events it carries and knows them only by this shape."""

    @property
    def id(self) -> str: ...
    @property
    def payout_id(self) -> str: ...
    @property
    def integration_id(self) -> str: ...
    @property
    def sequence(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def at(self) -> datetime: ...

    def snapshot(self) -> dict[str, Any]:
        """The masked object the webhook carries, as it is after this event."""
        ...


# How long "this integration has no endpoint" is believed without hearing of a change: the
# most a process misses a new endpoint by while the wake-up channel cannot reach it.
NO_ENDPOINT_TTL_SECONDS = 1.0


class EndpointPresence:
    """Which integrations had no enabled endpoint a moment ago, per process (on the Runtime),
    so the outbox does not look up endpoints for every event of an integration that has none.

    Only "none" is remembered: an integration with endpoints is looked up every time, so a
    disabled or deleted endpoint stops at once. Creating or enabling an endpoint announces
    :data:`ENDPOINTS_CHANGED` at commit, which clears what this process remembered, and
    through PostgreSQL's NOTIFY what every other process remembered; an entry also expires
    after :data:`NO_ENDPOINT_TTL_SECONDS`, for when the notice cannot arrive.
    """

    def __init__(self, signals: Signals, clock: Callable[[], float] = time.monotonic) -> None:
        self._changed = signals.subscribe(ENDPOINTS_CHANGED)
        self._clock = clock
        self._none_since: dict[str, float] = {}

    def without_endpoints(self, integration_ids: Collection[str]) -> set[str]:
        if self._changed.is_set():
            self._changed.clear()
            self._none_since.clear()
        now = self._clock()
        return {
            integration_id
            for integration_id in integration_ids
            if now - self._none_since.get(integration_id, -NO_ENDPOINT_TTL_SECONDS)
            < NO_ENDPOINT_TTL_SECONDS
        }

    def remember_none(self, integration_ids: Collection[str]) -> None:
        now = self._clock()
        for integration_id in integration_ids:
            self._none_since[integration_id] = now


def endpoint_presence(runtime: Runtime) -> EndpointPresence:
    """This process's EndpointPresence."""
    return runtime.per_process(EndpointPresence, lambda: EndpointPresence(runtime.db.signals))


def webhook_body(event: OutboxEvent) -> str:
    """The exact JSON body of this event's webhook (API.md): built once, sent on every attempt,
    so the signature a receiver checks covers the same bytes every time."""
    # An anomaly.* event carries the anomaly (review/); its payout_id is the anomaly's id.
    carried = "anomaly" if event.type.startswith("anomaly.") else "payout"
    body: dict[str, Any] = {
        "type": event.type,
        "timestamp": rfc3339(event.at),
        "data": {carried: event.snapshot(), "sequence": event.sequence},
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


# A connector target whose options ask for ``tags`` gets a second delivery per payout event,
# marked ``"write": "tags"`` in its body, under the event's id plus TAGS_EVENT_SUFFIX (so the
# (endpoint, event) uniqueness still makes a re-run outbox write it once). It has the event's
# sequence: it goes after the payout's earlier notes and tags, alongside its own note, and
# each delivery is one HTTP request, so retrying the tags never repeats the note.
WRITE_KEY = "write"
TAGS_WRITE = "tags"
TAGS_EVENT_SUFFIX = ".tags"


def connector_body(event: OutboxEvent, snapshot: dict[str, Any], write: str | None = None) -> str:
    """The stored body of a helpdesk connector's delivery: the webhook's, plus who acted
    (the note names them), and for the tag delivery its ``write`` mark; the connector's
    renderer turns it into the note (or tags) request."""
    body: dict[str, Any] = {
        "type": event.type,
        "timestamp": rfc3339(event.at),
        # Who acted (payouts.events.NewEvent has it); events without one were the system's.
        "actor": str(getattr(event, "actor", None) or "system"),
        "data": {"payout": snapshot, "sequence": event.sequence},
    }
    if write is not None:
        body[WRITE_KEY] = write
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _ticket_system(event: OutboxEvent) -> str | None:
    ticket = event.snapshot().get("ticket")
    return ticket.get("system") if isinstance(ticket, dict) else None


def _delivery_row(
    event: OutboxEvent | NoteEvent, endpoint_id: str, body: str, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": new_id("wd", int(event.at.timestamp() * 1000)),
        "endpoint_id": endpoint_id,
        "integration_id": event.integration_id,
        "event_id": event_id or event.id,
        "payout_id": event.payout_id,
        "sequence": event.sequence,
        "event_type": event.type,
        "payload": body,
        "status": DeliveryStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": event.at,
        "locked_until": None,
        "locked_by": None,
        "last_attempt_at": None,
        "last_status_code": None,
        "last_latency_ms": None,
        "last_error": None,
        "last_response_excerpt": None,
        "created_at": event.at,
        "delivered_at": None,
    }


# (endpoint id, event filters, target kind, target options) of an enabled endpoint
EndpointRow = tuple[str, list[str], str | None, dict[str, Any] | None]


def _rows_for(event: OutboxEvent, endpoints: Sequence[EndpointRow]) -> list[dict[str, Any]]:
    """One row per matching endpoint. A helpdesk connector's target (a kind set) takes only
    the events of payouts on its own tickets (``ticket.system`` is the connector id), and
    with ``tags`` in its options a second row for the status tags (TAGS_WRITE)."""
    rows: list[dict[str, Any]] = []
    body: str | None = None
    for endpoint_id, filters, kind, options in endpoints:
        if not event_matches(filters, event.type):
            continue
        if kind is not None:
            if _ticket_system(event) == endpoint_id:
                snapshot = event.snapshot()
                rows.append(_delivery_row(event, endpoint_id, connector_body(event, snapshot)))
                if options and options.get("tags"):
                    tags_body = connector_body(event, snapshot, TAGS_WRITE)
                    tags_id = event.id + TAGS_EVENT_SUFFIX
                    rows.append(_delivery_row(event, endpoint_id, tags_body, tags_id))
            continue
        body = body if body is not None else webhook_body(event)
        rows.append(_delivery_row(event, endpoint_id, body))
    return rows


async def enqueue_deliveries(
    session: AsyncSession,
    events: Sequence[OutboxEvent],
    presence: EndpointPresence | None = None,
) -> None:
    """Create one delivery row per (event, matching enabled endpoint of its integration)."""
    if not events:
        return
    integration_ids = {e.integration_id for e in events}
    if presence is not None:
        integration_ids -= presence.without_endpoints(integration_ids)
        if not integration_ids:
            return
    repo = WebhookRepository(session)
    endpoints = await repo.enabled_endpoints_for(integration_ids)
    if presence is not None:
        presence.remember_none(integration_ids - {e.integration_id for e in endpoints})
    if not endpoints:
        return
    by_integration: dict[str, list[EndpointRow]] = {}
    for endpoint in endpoints:
        by_integration.setdefault(endpoint.integration_id, []).append(
            (endpoint.id, endpoint.events, endpoint.target_kind, endpoint.target_options)
        )
    rows: list[dict[str, Any]] = []
    for event in events:
        rows.extend(_rows_for(event, by_integration.get(event.integration_id, ())))
    await repo.insert_deliveries(rows)


@dataclass(frozen=True, slots=True)
class NoteEvent:
    """A delivery that is not a payout event: a note for a connector's ticket (an inbound
    trigger refused) or a notice about the service (``enqueue_notice``). It goes out like any
    event, under its own id and "payout" key, so it waits for nothing and holds nothing up."""

    id: str
    payout_id: str
    integration_id: str
    type: str
    at: datetime
    body: dict[str, Any]
    sequence: int = 0


async def enqueue_note(session: AsyncSession, endpoint_id: str, note: NoteEvent) -> None:
    """One delivery of ``note`` to a connector's target, in the caller's transaction."""
    body = json.dumps(
        {"type": note.type, "timestamp": rfc3339(note.at), **note.body},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    await WebhookRepository(session).insert_deliveries([_delivery_row(note, endpoint_id, body)])


async def enqueue_notice(
    session: AsyncSession, event_type: str, subject_id: str, data: dict[str, Any], at: datetime
) -> int:
    """Deliveries of an event about the service rather than one payout
    (``reconciliation.completed``): to every enabled webhook endpoint, of any integration,
    whose filters match it (``*`` does, ``payout.*`` does not); never to a helpdesk
    connector's target, whose notes are about its own tickets' payouts. The subject's id
    stands in the delivery's ``payout_id`` column as its ordering key (sequence 1: one event
    per subject). Returns how many deliveries were written."""
    repo = WebhookRepository(session)
    # all_enabled_endpoints leaves connector targets out.
    endpoints = [
        e for e in await repo.all_enabled_endpoints() if event_matches(e.events, event_type)
    ]
    if not endpoints:
        return 0
    body = json.dumps(
        {"type": event_type, "timestamp": rfc3339(at), "data": data},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    event_id = new_id("evt", int(at.timestamp() * 1000))
    rows = [
        _delivery_row(
            NoteEvent(event_id, subject_id, e.integration_id, event_type, at, {}, sequence=1),
            e.id,
            body,
        )
        for e in endpoints
    ]
    await repo.insert_deliveries(rows)
    return len(rows)
