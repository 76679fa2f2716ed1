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
* Test: ``GET /api/v2/agents/me`` (https://developers.freshdesk.com/api/#me).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import datetime

from payoutsvc.connectors.kinds.base import (
    HelpdeskKind,
    basic_auth,
    check_secret_header,
    json_request,
    segment,
    url_of,
)
from payoutsvc.connectors.notes import Note
from payoutsvc.webhooks.render import RenderedRequest


def verify(
    credentials: Mapping[str, str], headers: Mapping[str, str], body: bytes, now: datetime
) -> None:
    check_secret_header(headers, credentials["inbound_secret"])


def _auth(credentials: Mapping[str, str]) -> str:
    return basic_auth(credentials["api_key"], "X")


def note_request(
    base_url: str, credentials: Mapping[str, str], note: Note, tags: bool
) -> RenderedRequest:
    text = "<br>".join(html.escape(line) for line in note.text.split("\n"))
    path = f"/api/v2/tickets/{segment(note.ticket_id)}/notes"
    body = {"body": text, "private": True}
    return json_request("POST", url_of(base_url, path), _auth(credentials), body)


def test_request(base_url: str, credentials: Mapping[str, str]) -> RenderedRequest:
    return json_request("GET", url_of(base_url, "/api/v2/agents/me"), _auth(credentials), None)


FRESHDESK = HelpdeskKind(
    kind="freshdesk",
    credential_fields=("api_key", "inbound_secret"),
    verify=verify,
    note_request=note_request,
    test_request=test_request,
)
