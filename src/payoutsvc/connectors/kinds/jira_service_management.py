"""Jira Service Management (Jira Cloud).

* Inbound: a Jira admin webhook registered with a secret signs the raw body:
  ``X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, body)>`` (WebSub style,
  https://developer.atlassian.com/cloud/jira/platform/webhooks/#secure-admin-webhooks).
  Jira automation's "Send web request" action cannot sign, but it sends custom headers
  (https://support.atlassian.com/cloud-automation/docs/jira-automation-actions/#Send-web-request):
  there the secret itself goes in ``X-Payoutsvc-Secret`` and is compared in constant time.
  A ``timestamp`` in the body (Jira webhooks carry one in milliseconds; an automation sends
  ``{{now}}``, https://support.atlassian.com/cloud-automation/docs/jira-smart-values-date-and-time/)
  is bounded to 5 minutes by the inbound service.
* Write-back: ``POST /rest/servicedeskapi/request/{issueKey}/comment`` with
  ``{"body", "public": false}`` is an internal comment
  (https://developer.atlassian.com/cloud/jira/service-desk/rest/api-group-request/#api-rest-servicedeskapi-request-issueidorkey-comment-post),
  basic auth ``{email}:{api_token}``
  (https://developer.atlassian.com/cloud/jira/platform/basic-auth-for-rest-apis/); rate
  limits answer 429 with ``Retry-After``
  (https://developer.atlassian.com/cloud/jira/platform/rate-limiting/).
  Status tags are Jira labels, their own delivery: ``PUT /rest/api/3/issue/{issueIdOrKey}``
  with ``{"update": {"labels": [{"add": ...}, {"remove": ...}, ...]}}`` (204); the ``update``
  verbs change only the labels named, whereas ``fields.labels`` would replace them all
  (https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issues/#api-rest-api-3-issue-issueidorkey-put,
  https://developer.atlassian.com/server/jira/platform/updating-an-issue-via-the-jira-rest-apis-6848604/).
  A service desk request is a Jira issue, so its key works here.
* Test: ``GET /rest/api/3/myself``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime

from payoutsvc.connectors.kinds.base import (
    HelpdeskKind,
    InboundRefused,
    basic_auth,
    check_secret_header,
    json_request,
    segment,
    url_of,
)
from payoutsvc.connectors.notes import Note, StatusTags
from payoutsvc.webhooks.render import RenderedRequest

SIGNATURE = "x-hub-signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(
    credentials: Mapping[str, str], headers: Mapping[str, str], body: bytes, now: datetime
) -> None:
    secret = credentials["webhook_secret"]
    signature = headers.get(SIGNATURE)
    if signature is None:
        check_secret_header(headers, secret)
        return
    if not hmac.compare_digest(signature.encode(), sign(secret, body).encode()):
        raise InboundRefused("the X-Hub-Signature does not verify")


def _auth(credentials: Mapping[str, str]) -> str:
    return basic_auth(credentials["email"], credentials["api_token"])


def note_request(base_url: str, credentials: Mapping[str, str], note: Note) -> RenderedRequest:
    path = f"/rest/servicedeskapi/request/{segment(note.ticket_id)}/comment"
    body = {"body": note.text, "public": False}
    return json_request("POST", url_of(base_url, path), _auth(credentials), body)


def tags_request(
    base_url: str, credentials: Mapping[str, str], tags: StatusTags
) -> RenderedRequest:
    verbs = [{"add": tags.add}, *({"remove": label} for label in tags.remove)]
    path = f"/rest/api/3/issue/{segment(tags.ticket_id)}"
    body = {"update": {"labels": verbs}}
    return json_request("PUT", url_of(base_url, path), _auth(credentials), body)


def test_request(base_url: str, credentials: Mapping[str, str]) -> RenderedRequest:
    return json_request("GET", url_of(base_url, "/rest/api/3/myself"), _auth(credentials), None)


JIRA_SERVICE_MANAGEMENT = HelpdeskKind(
    kind="jira_service_management",
    credential_fields=("email", "api_token", "webhook_secret"),
    verify=verify,
    note_request=note_request,
    tags_request=tags_request,
    test_request=test_request,
)
