"""The payout history: append-only events chained by hash, plus their outbox rows.

Every status change goes through :func:`append_events` in the transaction that changes the
status, so the event and its webhook deliveries commit or roll back with it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.bulk import BulkInsert
from payoutsvc.ids import new_id
from payoutsvc.payouts.limits import LimitsRepository
from payoutsvc.payouts.models import Payout, PayoutApproval, PayoutEvent
from payoutsvc.payouts.status import AUDIT_ONLY_EVENT_TYPES, RELEASING_EVENT_TYPES
from payoutsvc.webhooks.outbox import EndpointPresence, enqueue_deliveries

GENESIS_HASH = "0" * 64
# payout_events.hash_scheme: how a row's hash was computed. Rows written before migration
# 0009 are plain SHA-256 (anyone who can write the table can recompute them); every row
# written since is HMAC-SHA256 under the audit key, which the database never holds.
PLAIN_SCHEME = "sha256"
KEYED_SCHEME = "hmac-sha256"
# Core insert (executemany) rather than the ORM bulk-insert path: same SQL, less Python.
_EVENTS = cast(Table, PayoutEvent.__table__)
_INSERT_EVENTS = BulkInsert(_EVENTS, [column.name for column in _EVENTS.columns])


@dataclass(frozen=True, slots=True)
class NewEvent:
    payout_id: str
    integration_id: str
    sequence: int
    type: str
    actor: str
    data: dict[str, Any]
    at: datetime
    prev_hash: str
    # The masked payout as it is after this change: what webhooks carry. Given as a
    # function when building it is not free (the executor's events), so it is only built
    # when an endpoint subscribes to the event.
    payout_snapshot: dict[str, Any] | Callable[[], dict[str, Any]]
    id: str = ""

    def snapshot(self) -> dict[str, Any]:
        built = self.payout_snapshot
        return built() if callable(built) else built

    def __post_init__(self) -> None:
        if not self.id:  # frozen: the id is minted once, here, with the event's own time
            object.__setattr__(self, "id", new_id("evt", int(self.at.timestamp() * 1000)))


# One encoder for every hash: json.dumps with options builds a new encoder per call, a
# measurable share of the executor's CPU per payout (every move hashes an event).
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
)


def canonical_json(value: Any) -> str:
    return _CANONICAL.encode(value)


def event_hash(
    *,
    payout_id: str,
    sequence: int,
    type: str,
    actor: str,
    at: datetime,
    data: dict[str, Any],
    prev_hash: str,
    event_id: str,
    key: bytes | None,
) -> str:
    """HMAC-SHA256 under ``key`` over the previous hash and this event's canonical content;
    plain SHA-256 when ``key`` is None (how rows of the legacy scheme were hashed)."""
    # Byte for byte canonical_json({"id": …, "payout_id": …, …, "data": data}), its keys
    # written in sorted order rather than sorted per call: the executor hashes three events
    # per payout (claim, evidence check, finish). tests/payouts/test_event_hash.py holds it
    # to the documented formula.
    content = (
        f'{{"actor":{_STRING(actor)},"at":{_STRING(at.isoformat())},'
        f'"data":{_CANONICAL.encode(data)},"id":{_STRING(event_id)},'
        f'"payout_id":{_STRING(payout_id)},"sequence":{_CANONICAL.encode(sequence)},"type":{_STRING(type)}}}'
    )
    message = (prev_hash + content).encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return _hmac_sha256(key).hexdigest(message)


# How the encoder above writes a string (ensure_ascii=False: the C encoder's own function).
_STRING = json.encoder.encode_basestring


class _KeyedSha256:
    """HMAC-SHA256 (RFC 2104) under one key, its padded-key states computed once:
    ``hmac.new`` redoes them per message, more than the hashing itself costs here."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256().block_size
        padded = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def hexdigest(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


@functools.lru_cache(maxsize=8)
def _hmac_sha256(key: bytes) -> _KeyedSha256:
    # Keyed by the key itself: a process holds one audit key (two while rotating, tests more).
    return _KeyedSha256(key)


class LinkContent(Protocol):
    """What any keyed chain's event holds besides its owner's id (a payout's, or an
    anomaly's: review/models.py ``AnomalyEvent``)."""

    @property
    def id(self) -> str: ...
    @property
    def sequence(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def actor(self) -> str: ...
    @property
    def at(self) -> datetime: ...
    @property
    def data(self) -> Any: ...
    @property
    def prev_hash(self) -> str: ...


class ChainLink(LinkContent, Protocol):
    """A stored event of any keyed chain, with the hash and scheme it was stored with."""

    @property
    def hash(self) -> str: ...
    @property
    def hash_scheme(self) -> str: ...


class EventContent(LinkContent, Protocol):
    """What an event's hash covers: a new event, or a stored row being checked."""

    @property
    def payout_id(self) -> str: ...


def hash_of(event: EventContent, key: bytes) -> str:
    """The keyed hash every new event is stored with (and a stored one is checked against)."""
    return event_hash(
        payout_id=event.payout_id,
        sequence=event.sequence,
        type=event.type,
        actor=event.actor,
        at=event.at,
        data=event.data,
        prev_hash=event.prev_hash,
        event_id=event.id,
        key=key,
    )


class StoredEvent(EventContent, ChainLink, Protocol):
    """A stored event: its content, and the hash and scheme it was stored with."""


def sealed(event: StoredEvent, key: bytes) -> bool:
    """The stored event is keyed and its content still matches its HMAC."""
    return event.hash_scheme == KEYED_SCHEME and hash_of(event, key) == event.hash


async def append_events(
    session: AsyncSession,
    events: list[NewEvent],
    key: bytes,
    endpoints: EndpointPresence | None = None,
) -> list[tuple[NewEvent, str]]:
    """Insert events (one statement for the batch) and enqueue their webhook deliveries.

    Returns each event with its hash; the caller stores the last hash on the payout row as the
    head of that payout's chain.
    """
    hashed = [(e, hash_of(e, key)) for e in events]
    await insert_hashed_events(session, hashed, endpoints)
    return hashed


async def insert_hashed_events(
    session: AsyncSession,
    hashed: list[tuple[NewEvent, str]],
    endpoints: EndpointPresence | None = None,
) -> None:
    """:func:`append_events` for events already hashed (the executor needs the new chain
    heads before it knows which payouts are still its own). ``endpoints``: the process's
    memory of integrations without webhook endpoints (``endpoint_presence(runtime)``)."""
    if not hashed:
        return
    await _INSERT_EVENTS.run(
        session,
        [
            {
                "id": e.id,
                "payout_id": e.payout_id,
                "integration_id": e.integration_id,
                "sequence": e.sequence,
                "type": e.type,
                "actor": e.actor,
                "data": e.data,
                "at": e.at,
                "prev_hash": e.prev_hash,
                "hash": h,
                "hash_scheme": KEYED_SCHEME,
            }
            for e, h in hashed
        ],
    )
    await enqueue_deliveries(
        session, [e for e, _ in hashed if e.type not in AUDIT_ONLY_EVENT_TYPES], endpoints
    )
    # Every status change writes its event here, so this is the one place the limit counters
    # learn that a payout's money will never move (rejected, canceled, failed).
    released = [e.payout_id for e, _ in hashed if e.type in RELEASING_EVENT_TYPES]
    if released:
        await LimitsRepository(session).release(released)


# Fixed when the payout is created and never changed by any code path.
_IMMUTABLE_FIELDS = (
    "id",
    "integration_id",
    "idempotency_key",
    "ticket_system",
    "ticket_id",
    "reason",
    "amount_minor",
    "currency",
    "recipient_type",
    "recipient_fingerprint",
    "requested_by",
    "gateway_idempotency_key",
    "required_approvals",
    "policy_version",
)
# What a keyed chain's payout.created seals on top of them: every other field the create
# path writes once (the words the helpdesk sent, the masked recipient, the decision).
_IMMUTABLE_FIELDS_KEYED = (
    *_IMMUTABLE_FIELDS,
    "ticket_url",
    "description",
    "metadata",
    "recipient_public",
    "policy",
    "gateway",
)
# The fields a status change sets and nothing changes until the next status event
# (except while processing, see audit.py): each status event seals their digest.
STATE_FIELDS = (
    "status",
    "gateway_reference",
    "gateway_status",
    "gateway_details",
    "failure_code",
    "failure_message",
)


_STATE_ITEMS = operator.itemgetter(*STATE_FIELDS)
_STATE_ATTRS = operator.attrgetter(*STATE_FIELDS)


def _field(payout: Mapping[str, Any] | Payout, name: str) -> Any:
    if isinstance(payout, Mapping):
        return payout[name]
    return getattr(payout, "metadata_" if name == "metadata" else name)


def payout_digest(payout: Mapping[str, Any] | Payout, *, keyed: bool = True) -> str:
    """sha256 of the payout's immutable fields (values being inserted, or a loaded row).

    ``keyed=False`` is the digest legacy (plain-hash) chains recorded, over fewer fields;
    the event that carries either digest is what the chain's key protects."""
    names = _IMMUTABLE_FIELDS_KEYED if keyed else _IMMUTABLE_FIELDS
    content: dict[str, Any] = {name: _field(payout, name) for name in names}
    content["recipient_encrypted"] = hashlib.sha256(
        bytes(_field(payout, "recipient_encrypted"))
    ).hexdigest()
    content["created_at"] = _field(payout, "created_at").isoformat()
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()


def state_digest(payout: Mapping[str, Any] | Payout) -> str:
    """sha256 of the payout's status and the fields that change with it (gateway result,
    failure): the status events of a keyed chain carry it as ``state_digest``."""
    # A list in STATE_FIELDS order (not a dict), read by one getter: every move pays for it.
    values = _STATE_ITEMS(payout) if isinstance(payout, Mapping) else _STATE_ATTRS(payout)
    return hashlib.sha256(canonical_json(values).encode()).hexdigest()


def approvals_digest(approvals: Sequence[PayoutApproval]) -> str:
    """sha256 of a payout's approval rows (who decided what, when, with which comment):
    every event an operator's action writes carries it as ``approvals_digest``."""
    content = sorted(
        (
            {
                "operator_id": a.operator_id,
                "decision": a.decision,
                "comment": a.comment,
                "at": a.at.isoformat(),
            }
            for a in approvals
        ),
        key=lambda a: (str(a["operator_id"]), str(a["at"])),
    )
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()
