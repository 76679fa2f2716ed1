"""Freshdesk.

* Inbound: automation rules' "Trigger webhook" action sends a JSON body of our template with
  Freshdesk placeholders and lets you add custom headers or basic auth; it does not sign
  requests (https://support.freshdesk.com/support/solutions/articles/132589-using-webhooks-in-automation-rules).
  So the connector's ``inbound_secret`` travels in the custom header ``X-Payoutsvc-Secret``
  (over HTTPS) and is compared in constant time. Freshdesk offers no request timestamp, so
  none is required; a ``timestamp`` in the body is bounded to 5 minutes when present, and
  ``event_id`` de-duplicates redeliveries.
* Write-back: ``POST /api/v2/tickets/{id}/notes`` with ``{"body", "private": true}`` (HTML
  body) is a private note (https://developers.freshdesk.com/api/#add_note_to_a_ticket);
  auth: basic ``{api_key}:X`` (https://developers.freshdesk.com/api/#authentication); rate
  limits answer 429 with ``Retry-After`` (https://developers.freshdesk.com/api/#ratelimit).
* Status tags: Freshdesk has no add- or remove-tag call; ``PUT /api/v2/tickets/{id}`` with
  ``{"tags": [...]}`` replaces the whole list (https://developers.freshdesk.com/api/#update_ticket).
  A blind replace would wipe the agents' own tags, so the tag delivery is a
  read-modify-write in one attempt (webhooks/render.py ``then``): ``GET
  /api/v2/tickets/{id}`` (https://developers.freshdesk.com/api/#view_a_ticket), then the PUT
  with the ticket's tags less every other ``payout_*`` status tag, plus this one. A retry
  repeats both and lands on the same tags. What it cannot rule out: Freshdesk has no
  conditional update, so a tag an agent changes between our GET and PUT (one round trip)
  is overwritten by the list we read; the window is milliseconds and the next status
  write does not restore it.
* Test: ``GET /api/v2/agents/me`` (https://developers.freshdesk.com/api/#me).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from payoutsvc.connectors.kinds.base import (
    HelpdeskKind,
    basic_auth,
    check_secret_header,
    json_request,
    segment,
    url_of,
)
from payoutsvc.connectors.notes import Note, StatusTags
from payoutsvc.webhooks.render import RenderedRequest


def verify(
    credentials: Mapping[str, str], headers: Mapping[str, str], body: bytes, now: datetime
) -> None:
    check_secret_header(headers, credentials["inbound_secret"])


def _auth(credentials: Mapping[str, str]) -> str:
    return basic_auth(credentials["api_key"], "X")


def note_request(base_url: str, credentials: Mapping[str, str], note: Note) -> RenderedRequest:
    text = "<br>".join(html.escape(line) for line in note.text.split("\n"))
    path = f"/api/v2/tickets/{segment(note.ticket_id)}/notes"
    body = {"body": text, "private": True}
    return json_request("POST", url_of(base_url, path), _auth(credentials), body)


def tags_request(
    base_url: str, credentials: Mapping[str, str], tags: StatusTags
) -> RenderedRequest:
    url = url_of(base_url, f"/api/v2/tickets/{segment(tags.ticket_id)}")
    auth = _auth(credentials)

    def write(ticket_json: bytes) -> RenderedRequest:
        try:
            current = json.loads(ticket_json)["tags"]
        except (KeyError, TypeError, ValueError):
            current = None
        if not isinstance(current, list):
            raise ValueError("the ticket's answer has no tags list")  # noqa: TRY004
        kept = [t for t in current if t not in tags.remove and t != tags.add]
        return json_request("PUT", url, auth, {"tags": [*kept, tags.add]})

    return replace(json_request("GET", url, auth, None), then=write)


def test_request(base_url: str, credentials: Mapping[str, str]) -> RenderedRequest:
    return json_request("GET", url_of(base_url, "/api/v2/agents/me"), _auth(credentials), None)


FRESHDESK = HelpdeskKind(
    kind="freshdesk",
    credential_fields=("api_key", "inbound_secret"),
    verify=verify,
    note_request=note_request,
    tags_request=tags_request,
    test_request=test_request,
)
