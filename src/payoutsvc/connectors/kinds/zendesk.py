"""Zendesk.

* Inbound: a Zendesk webhook (called by a trigger or automation) signs every request:
  ``X-Zendesk-Webhook-Signature`` = base64(HMAC-SHA256(signing secret, timestamp + raw body))
  with the timestamp in ``X-Zendesk-Webhook-Signature-Timestamp``
  (https://developer.zendesk.com/documentation/webhooks/verifying/). Requests whose
  timestamp is more than 5 minutes away are refused (replays).
* Write-back: ``PUT /api/v2/tickets/{id}`` with ``{"ticket": {"comment": {"body", "public":
  false}}}`` adds an internal note
  (https://developer.zendesk.com/api-reference/ticketing/tickets/tickets/#update-ticket).
  Status tags are their own delivery: ``PUT /api/v2/tickets/update_many.json?ids={id}`` with
  ``{"ticket": {"additional_tags": [...], "remove_tags": [...]}}``, which adds and removes
  without replacing the ticket's other tags; Update Ticket's ``tags`` would replace them all,
  and ``additional_tags``/``remove_tags`` work only in this bulk form
  (https://developer.zendesk.com/documentation/ticketing/managing-tickets/adding-tags-to-tickets-without-overwriting-existing-tags/).
  Auth: basic ``{email}/token:{api_token}``
  (https://developer.zendesk.com/api-reference/introduction/security-and-auth/).
  Rate limits answer 429 with ``Retry-After``
  (https://developer.zendesk.com/api-reference/introduction/rate-limits/).
* Test: ``GET /api/v2/users/me``; unauthenticated it still answers 200 with an anonymous
  user whose ``id`` is null, so the body is checked too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from payoutsvc.connectors.kinds.base import (
    HelpdeskKind,
    InboundRefused,
    basic_auth,
    check_fresh,
    json_request,
    parse_timestamp,
    segment,
    url_of,
)
from payoutsvc.connectors.notes import Note, StatusTags
from payoutsvc.webhooks.render import RenderedRequest

SIGNATURE = "x-zendesk-webhook-signature"
TIMESTAMP = "x-zendesk-webhook-signature-timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(
    credentials: Mapping[str, str], headers: Mapping[str, str], body: bytes, now: datetime
) -> None:
    signature, timestamp = headers.get(SIGNATURE), headers.get(TIMESTAMP)
    if not signature or not timestamp:
        raise InboundRefused("X-Zendesk-Webhook-Signature and its timestamp are required")
    expected = sign(credentials["webhook_signing_secret"], timestamp, body)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise InboundRefused("the Zendesk webhook signature does not verify")
    check_fresh(parse_timestamp(timestamp), now)


def _auth(credentials: Mapping[str, str]) -> str:
    return basic_auth(f"{credentials['email']}/token", credentials["api_token"])


def note_request(base_url: str, credentials: Mapping[str, str], note: Note) -> RenderedRequest:
    ticket: dict[str, Any] = {"comment": {"body": note.text, "public": False}}
    url = url_of(base_url, f"/api/v2/tickets/{segment(note.ticket_id)}")
    return json_request("PUT", url, _auth(credentials), {"ticket": ticket})


def tags_request(
    base_url: str, credentials: Mapping[str, str], tags: StatusTags
) -> RenderedRequest:
    ticket = {"additional_tags": [tags.add], "remove_tags": list(tags.remove)}
    url = url_of(base_url, f"/api/v2/tickets/update_many.json?ids={segment(tags.ticket_id)}")
    return json_request("PUT", url, _auth(credentials), {"ticket": ticket})


def test_request(base_url: str, credentials: Mapping[str, str]) -> RenderedRequest:
    return json_request("GET", url_of(base_url, "/api/v2/users/me"), _auth(credentials), None)


def test_accepted(status: int, excerpt: str) -> bool:
    if status != 200:
        return False
    try:
        return json.loads(excerpt)["user"]["id"] is not None
    except (ValueError, KeyError, TypeError):
        return False


ZENDESK = HelpdeskKind(
    kind="zendesk",
    credential_fields=("email", "api_token", "webhook_signing_secret"),
    verify=verify,
    note_request=note_request,
    tags_request=tags_request,
    test_request=test_request,
    test_accepted=test_accepted,
)
