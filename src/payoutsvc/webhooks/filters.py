"""Event-type filters for webhook endpoints.

An endpoint subscribes with a list of filters (API.md "Webhooks to the helpdesk"):

* an exact event name, e.g. ``payout.succeeded``;
* a namespace wildcard ``<prefix>.*``, e.g. ``payout.*`` (matches ``payout.<anything>``);
* ``*``, matching every event.

Matching is case-sensitive; event names are lower-case by contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic.config import JsonDict

__all__ = [
    "ACCEPTED_FILTERS",
    "EVENT_FILTERS_SCHEMA",
    "KNOWN_EVENT_TYPES",
    "event_matches",
    "filter_matches",
    "validate_event_filters",
]

KNOWN_EVENT_TYPES: tuple[str, ...] = (
    "payout.created",
    "payout.approved",
    "payout.rejected",
    "payout.canceled",
    "payout.processing",
    "payout.succeeded",
    "payout.failed",
    "payout.needs_review",
    # A person released a payout that waited for it (payouts/finance.py). Not here:
    # payout.recipient_revealed and payout.exported, which stay in the audit chain
    # (AUDIT_ONLY_EVENT_TYPES).
    "payout.released",
    # To back-office endpoints of any integration; `payout.*` does not match it, `*` does.
    "reconciliation.completed",
    "anomaly.detected",
)

# Every filter validate_event_filters accepts (the namespace wildcards that match some known
# event), as the document's enum for a filter list's items.
ACCEPTED_FILTERS: tuple[str, ...] = (
    "*",
    *sorted({event.split(".", 1)[0] + ".*" for event in KNOWN_EVENT_TYPES}),
    *KNOWN_EVENT_TYPES,
)
EVENT_FILTERS_SCHEMA: JsonDict = {"items": {"type": "string", "enum": list(ACCEPTED_FILTERS)}}

MAX_FILTERS = 64
MAX_FILTER_LENGTH = 128


def filter_matches(event_filter: str, event_type: str) -> bool:
    """Whether a single filter matches ``event_type``."""
    if event_filter == "*":
        return True
    if event_filter.endswith(".*"):
        # "payout.*" -> prefix "payout." ; must match at least one more character.
        prefix = event_filter[:-1]
        return event_type.startswith(prefix) and len(event_type) > len(prefix)
    return event_filter == event_type


def event_matches(filters: Sequence[str], event_type: str) -> bool:
    """Whether any of ``filters`` matches ``event_type`` (an empty list matches nothing)."""
    return any(filter_matches(f, event_type) for f in filters)


def validate_event_filters(
    filters: Iterable[str], known_events: Sequence[str] = KNOWN_EVENT_TYPES
) -> list[str]:
    """Validate an endpoint's filter list and return it de-duplicated (order kept).

    Raises ``ValueError`` when the list is empty, too long, contains a non-string or
    empty entry, or contains a filter that matches none of ``known_events``.
    """
    if isinstance(filters, str):
        # ValueError, not TypeError: pydantic turns only ValueError into a 422 field error.
        raise ValueError("event filters must be a list of strings, not a single string")  # noqa: TRY004
    result: list[str] = []
    seen: set[str] = set()
    for raw in filters:
        if not isinstance(raw, str):
            raise ValueError(f"event filter must be a string, got {type(raw).__name__}")  # noqa: TRY004
        f = raw.strip()
        if not f:
            raise ValueError("event filter must not be empty")
        if len(f) > MAX_FILTER_LENGTH:
            raise ValueError(f"event filter longer than {MAX_FILTER_LENGTH} characters")
        if not any(filter_matches(f, event) for event in known_events):
            raise ValueError(
                f"event filter {f!r} matches no known event; use an exact event name "
                f"({', '.join(known_events)}), 'payout.*', 'anomaly.*' or '*'"
            )
        if f not in seen:
            seen.add(f)
            result.append(f)
    if not result:
        raise ValueError("at least one event filter is required")
    if len(result) > MAX_FILTERS:
        raise ValueError(f"at most {MAX_FILTERS} event filters are allowed")
    return result
