"""Fakes of the three helpdesks' APIs, real HTTP servers on 127.0.0.1 (uvicorn in a thread),
written from each helpdesk's documentation. Each checks what the helpdesk checks: the auth
header and the request's shape; a request that fails a check gets the helpdesk's error
status and is not recorded as a note. Faults (429 with Retry-After, 5xx) are scripted.

* Zendesk: ``PUT /api/v2/tickets/{id}`` with ``{"ticket": {"comment": {"body", "public":
  false}, "additional_tags": [...]}}`` (https://developer.zendesk.com/api-reference/ticketing/tickets/tickets/#update-ticket),
  basic auth ``{email}/token:{api_token}``
  (https://developer.zendesk.com/api-reference/introduction/security-and-auth/);
  ``GET /api/v2/users/me`` answers an anonymous user (``id`` null) without valid auth
  (https://developer.zendesk.com/api-reference/ticketing/users/users/#show-the-currently-authenticated-user);
  429 + Retry-After (https://developer.zendesk.com/api-reference/introduction/rate-limits/).
* Jira Service Management: ``POST /rest/servicedeskapi/request/{issueKey}/comment`` with
  ``{"body", "public": false}`` → 201
  (https://developer.atlassian.com/cloud/jira/service-desk/rest/api-group-request/#api-rest-servicedeskapi-request-issueidorkey-comment-post),
  basic auth ``{email}:{api_token}`` (https://developer.atlassian.com/cloud/jira/platform/basic-auth-for-rest-apis/),
  ``GET /rest/api/3/myself`` 401 without it
  (https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-myself/).
* Freshdesk: ``POST /api/v2/tickets/{id}/notes`` with ``{"body", "private": true}`` → 201
  (https://developers.freshdesk.com/api/#add_note_to_a_ticket), basic auth ``{api_key}:X``
  (https://developers.freshdesk.com/api/#authentication), ``GET /api/v2/agents/me``
  (https://developers.freshdesk.com/api/#me), 429 + Retry-After
  (https://developers.freshdesk.com/api/#ratelimit).
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn


@dataclass(frozen=True)
class NoteSeen:
    ticket: str
    text: str
    tags: list[str]


@dataclass
class FakeHelpdesk:
    kind: str
    credentials: dict[str, str]
    notes: list[NoteSeen] = field(default_factory=list)
    faults: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (status, why)
    port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, count: int, status: int, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self.faults.extend([(status, headers or {})] * count)

    # -- the documented checks -----------------------------------------------------------------
    def _expected_auth(self) -> str:
        c = self.credentials
        user, password = {
            "zendesk": (f"{c.get('email')}/token", c.get("api_token")),
            "jira_service_management": (c.get("email"), c.get("api_token")),
            "freshdesk": (c.get("api_key"), "X"),
        }[self.kind]
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _route(self, method: str, path: str, body: bytes, authed: bool) -> tuple[int, Any]:
        route = {
            "zendesk": self._zendesk,
            "jira_service_management": self._jira,
            "freshdesk": self._freshdesk,
        }[self.kind]
        return route(method, path, body, authed)

    def _zendesk(self, method: str, path: str, body: bytes, authed: bool) -> tuple[int, Any]:
        if method == "GET" and path == "/api/v2/users/me":
            return 200, {"user": {"id": 361 if authed else None}}
        match = re.fullmatch(r"/api/v2/tickets/([0-9]+)", path)
        if not (method == "PUT" and match):
            return 404, {"error": "InvalidEndpoint"}
        if not authed:
            return 401, {"error": "Couldn't authenticate you"}
        ticket = json.loads(body)["ticket"]
        comment = ticket["comment"]
        if not isinstance(comment["body"], str) or comment["public"] is not False:
            return 422, {"error": "RecordInvalid"}
        return self._note(match[1], comment["body"], ticket.get("additional_tags", []), 200)

    def _jira(self, method: str, path: str, body: bytes, authed: bool) -> tuple[int, Any]:
        if method == "GET" and path == "/rest/api/3/myself":
            return (200, {"accountId": "5b10a2844c20165700ede21g"}) if authed else (401, {})
        match = re.fullmatch(r"/rest/servicedeskapi/request/([A-Z]+-[0-9]+)/comment", path)
        if not (method == "POST" and match):
            return 404, {}
        if not authed:
            return 401, {}
        comment = json.loads(body)
        if set(comment) != {"body", "public"} or comment["public"] is not False:
            return 400, {"errorMessage": "bad comment"}
        return self._note(match[1], comment["body"], [], 201)

    def _freshdesk(self, method: str, path: str, body: bytes, authed: bool) -> tuple[int, Any]:
        if method == "GET" and path == "/api/v2/agents/me":
            return (200, {"id": 19}) if authed else (401, {"code": "invalid_credentials"})
        match = re.fullmatch(r"/api/v2/tickets/([0-9]+)/notes", path)
        if not (method == "POST" and match):
            return 404, {}
        if not authed:
            return 401, {"code": "invalid_credentials"}
        note = json.loads(body)
        if not isinstance(note.get("body"), str) or note.get("private") is not True:
            return 400, {"description": "Validation failed"}
        return self._note(match[1], note["body"], [], 201)

    def _note(self, ticket: str, text: str, tags: list[str], status: int) -> tuple[int, Any]:
        with self._lock:
            self.notes.append(NoteSeen(ticket, text, list(tags)))
        return status, {"id": len(self.notes)}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        with self._lock:
            self.requests.append((method, path))
            fault = self.faults.pop(0) if self.faults and method != "GET" else None
        if fault is not None:
            status, reply_headers, reply = fault[0], fault[1], {"error": "injected"}
        else:
            authed = headers.get("authorization") == self._expected_auth()
            try:
                status, reply = self._route(method, path, b"".join(chunks), authed)
            except (KeyError, TypeError, ValueError) as exc:
                status, reply = 400, {"error": f"malformed: {exc!r}"}
            reply_headers = {}
            if status >= 400:
                with self._lock:
                    self.refused.append((status, json.dumps(reply)))
        raw = json.dumps(reply).encode()
        out = [(b"content-type", b"application/json")]
        out += [(k.lower().encode(), v.encode()) for k, v in reply_headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": raw})

    def start(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self, log_level="warning", access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=lambda: server.run(sockets=[sock]), name="fake-helpdesk", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake helpdesk did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
