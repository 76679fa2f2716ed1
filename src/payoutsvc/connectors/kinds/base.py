"""What every helpdesk kind supplies: how it authenticates the requests it sends us, how its
API takes an internal note and a change of the ticket's status tags, and a cheap
authenticated call to test credentials."""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from payoutsvc.connectors.notes import Note, StatusTags, note_of, status_tags_of
from payoutsvc.webhooks.outbox import TAGS_WRITE, WRITE_KEY
from payoutsvc.webhooks.render import RenderedRequest, TargetRenderer

# Inbound requests older (or further in the future) than this are refused where the helpdesk
# gives a timestamp (Zendesk documents five minutes as the window to accept).
MAX_SKEW_SECONDS = 300.0
# Sent by helpdesks that cannot sign (Freshdesk automations, Jira automation's "Send web
# request"): the connector's inbound secret, typed into the automation as a custom header.
SECRET_HEADER = "x-payoutsvc-secret"  # noqa: S105  (a header name)
USER_AGENT = "payoutsvc-connectors/1"


class InboundRefused(Exception):
    """The inbound request's signature or secret does not verify, or it is stale."""


@dataclass(frozen=True, slots=True)
class HelpdeskKind:
    kind: str
    credential_fields: tuple[str, ...]
    # (credentials, lower-cased headers, raw body, now) -> None, or InboundRefused
    verify: Callable[[Mapping[str, str], Mapping[str, str], bytes, datetime], None]
    # (base URL, credentials, note) -> the request that writes the internal note
    note_request: Callable[[str, Mapping[str, str], Note], RenderedRequest]
    # (base URL, credentials, tags) -> the one request that adds the status tag and removes
    # the other status tags, leaving the ticket's other tags alone
    tags_request: Callable[[str, Mapping[str, str], StatusTags], RenderedRequest]
    # (base URL, credentials) -> a cheap authenticated GET
    test_request: Callable[[str, Mapping[str, str]], RenderedRequest]
    # (status, response excerpt) -> whether the credentials were accepted
    test_accepted: Callable[[int, str], bool] = lambda status, _excerpt: status == 200

    def renderer(self) -> TargetRenderer:
        def render(
            base_url: str,
            credentials: Mapping[str, str],
            options: Mapping[str, Any],
            delivery_body: bytes,
        ) -> RenderedRequest:
            # One request per delivery: a note, or (its own delivery, webhooks/outbox.py) the
            # status tags, so retrying one never repeats the other.
            if json.loads(delivery_body).get(WRITE_KEY) == TAGS_WRITE:
                return self.tags_request(base_url, credentials, status_tags_of(delivery_body))
            note = note_of(delivery_body, str(options.get("locale") or "en"))
            return self.note_request(base_url, credentials, note)

        return render


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def url_of(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


def segment(value: str) -> str:
    """A ticket id or key as one path segment (nothing in it can change the path)."""
    return quote(value, safe="")


def json_request(method: str, url: str, auth: str, body: dict[str, Any] | None) -> RenderedRequest:
    headers = {"authorization": auth, "accept": "application/json", "user-agent": USER_AGENT}
    raw = b""
    if body is not None:
        headers["content-type"] = "application/json; charset=utf-8"
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return RenderedRequest(method, url, headers, raw)


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison (a timing difference must not reveal the secret)."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def check_secret_header(headers: Mapping[str, str], secret: str) -> None:
    if not same_secret(headers.get(SECRET_HEADER), secret):
        raise InboundRefused(f"the {SECRET_HEADER} header does not match the inbound secret")


def check_fresh(at: datetime, now: datetime) -> None:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if abs((now - at).total_seconds()) > MAX_SKEW_SECONDS:
        raise InboundRefused("the request's timestamp is more than 5 minutes away from now")


def parse_timestamp(value: object) -> datetime:
    """An ISO 8601 / RFC 3339 string, or unix seconds (or milliseconds, as Jira sends)."""
    try:
        if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
            number = float(value)
            return datetime.fromtimestamp(number / 1000 if number > 1e11 else number, UTC)
        if isinstance(value, str):
            return datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        pass
    raise InboundRefused("the request's timestamp is not a valid time")
