"""Fakes of the three helpdesks' APIs, real HTTP servers on 127.0.0.1 (uvicorn in a thread),
written from each helpdesk's documentation. Each checks what the helpdesk checks: the auth
header and the request's shape; a request that fails a check gets the helpdesk's error
status and is not recorded as a note. Faults (429 with Retry-After, 5xx) are scripted. Each
keeps its tickets' tags (``tags``, seedable with an agent's own) and changes them exactly as
the helpdesk's tag calls do.

* Zendesk: ``PUT /api/v2/tickets/{id}`` with ``{"ticket": {"comment": {"body", "public":
  false}}}`` (https://developer.zendesk.com/api-reference/ticketing/tickets/tickets/#update-ticket;
  its ``tags`` replace the ticket's tags, ``additional_tags``/``remove_tags`` are ignored
  there); ``PUT /api/v2/tickets/update_many.json?ids={ids}`` with ``{"ticket":
  {"additional_tags", "remove_tags"}}`` adds and removes tags, answering a job status
  (https://developer.zendesk.com/documentation/ticketing/managing-tickets/adding-tags-to-tickets-without-overwriting-existing-tags/,
  https://developer.zendesk.com/api-reference/ticketing/tickets/tickets/#update-many-tickets);
  basic auth ``{email}/token:{api_token}``
  (https://developer.zendesk.com/api-reference/introduction/security-and-auth/);
  ``GET /api/v2/users/me`` answers an anonymous user (``id`` null) without valid auth
  (https://developer.zendesk.com/api-reference/ticketing/users/users/#show-the-currently-authenticated-user);
  429 + Retry-After (https://developer.zendesk.com/api-reference/introduction/rate-limits/).
* Jira Service Management: ``POST /rest/servicedeskapi/request/{issueKey}/comment`` with
  ``{"body", "public": false}`` → 201
  (https://developer.atlassian.com/cloud/jira/service-desk/rest/api-group-request/#api-rest-servicedeskapi-request-issueidorkey-comment-post),
  ``PUT /rest/api/3/issue/{issueIdOrKey}`` with ``{"update": {"labels": [{"add": l} |
  {"remove": l} | {"set": [...]}]}}`` → 204, one verb per operation
  (https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issues/#api-rest-api-3-issue-issueidorkey-put,
  https://developer.atlassian.com/server/jira/platform/updating-an-issue-via-the-jira-rest-apis-6848604/),
  basic auth ``{email}:{api_token}`` (https://developer.atlassian.com/cloud/jira/platform/basic-auth-for-rest-apis/),
  ``GET /rest/api/3/myself`` 401 without it
  (https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-myself/).
* Freshdesk: ``POST /api/v2/tickets/{id}/notes`` with ``{"body", "private": true}`` → 201
  (https://developers.freshdesk.com/api/#add_note_to_a_ticket); ``GET /api/v2/tickets/{id}``
  answers the ticket with its ``tags`` (and a long description: the answer is larger than a
  log excerpt) (https://developers.freshdesk.com/api/#view_a_ticket); ``PUT
  /api/v2/tickets/{id}`` with ``{"tags": [...]}`` REPLACES the ticket's tags
  (https://developers.freshdesk.com/api/#update_ticket); basic auth ``{api_key}:X``
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
from urllib.parse import parse_qs

import uvicorn


@dataclass(frozen=True)
class NoteSeen:
    ticket: str
    text: str


@dataclass
class FakeHelpdesk:
    kind: str
    credentials: dict[str, str]
    notes: list[NoteSeen] = field(default_factory=list)
    faults: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (status, why)
    tags: dict[str, list[str]] = field(default_factory=dict)  # ticket -> its tags, in order
    tag_writes: int = 0  # accepted requests that changed tags
    # Tag writes that are applied but answered with this status (a lost answer): (status, n)
    lost_tag_answers: list[int] = field(default_factory=list)
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

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, authed: bool
    ) -> tuple[int, Any]:
        if self.kind == "zendesk":
            return self._zendesk(method, path, query, body, authed)
        route = {"jira_service_management": self._jira, "freshdesk": self._freshdesk}[self.kind]
        return route(method, path, body, authed)

    def _zendesk(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, authed: bool
    ) -> tuple[int, Any]:
        if method == "GET" and path == "/api/v2/users/me":
            return 200, {"user": {"id": 361 if authed else None}}
        many = method == "PUT" and path == "/api/v2/tickets/update_many.json"
        match = re.fullmatch(r"/api/v2/tickets/([0-9]+)", path)
        if not (many or (method == "PUT" and match)):
            return 404, {"error": "InvalidEndpoint"}
        if not authed:
            return 401, {"error": "Couldn't authenticate you"}
        ticket = json.loads(body)["ticket"]
        if many:
            ids = query["ids"][0].split(",")
            if not all(i.isdigit() for i in ids) or not set(ticket) <= {
                "additional_tags",
                "remove_tags",
            }:
                return 400, {"error": "InvalidValue"}
            for ticket_id in ids:
                add, remove = ticket.get("additional_tags", []), ticket.get("remove_tags", [])
                self._change_tags(ticket_id, add=add, remove=remove)
            return self._tags_written(200, {"job_status": {"id": "82de0b04", "status": "queued"}})
        assert match is not None
        if "tags" in ticket:
            self._replace_tags(match[1], ticket["tags"])
        comment = ticket["comment"]
        if not isinstance(comment["body"], str) or comment["public"] is not False:
            return 422, {"error": "RecordInvalid"}
        return self._note(match[1], comment["body"], 200)

    def _jira(self, method: str, path: str, body: bytes, authed: bool) -> tuple[int, Any]:
        if method == "GET" and path == "/rest/api/3/myself":
            return (200, {"accountId": "5b10a2844c20165700ede21g"}) if authed else (401, {})
        issue = re.fullmatch(r"/rest/api/3/issue/([A-Z]+-[0-9]+)", path)
        if method == "PUT" and issue:
            if not authed:
                return 401, {}
            return self._jira_labels(issue[1], json.loads(body))
        match = re.fullmatch(r"/rest/servicedeskapi/request/([A-Z]+-[0-9]+)/comment", path)
        if not (method == "POST" and match):
            return 404, {}
        if not authed:
            return 401, {}
        comment = json.loads(body)
        if set(comment) != {"body", "public"} or comment["public"] is not False:
            return 400, {"errorMessage": "bad comment"}
        return self._note(match[1], comment["body"], 201)

    def _jira_labels(self, key: str, edit: dict[str, Any]) -> tuple[int, Any]:
        """Only ``update.labels`` verbs are expected; ``fields.labels`` would replace them."""
        operations = edit["update"]["labels"]
        if set(edit) != {"update"} or set(edit["update"]) != {"labels"}:
            return 400, {"errorMessages": ["unexpected fields"]}
        for operation in operations:
            if len(operation) != 1 or not set(operation) <= {"add", "remove", "set"}:
                return 400, {"errors": {"labels": "one verb per operation"}}
            verb, value = next(iter(operation.items()))
            if verb == "set":
                self._replace_tags(key, value)
            elif not isinstance(value, str) or " " in value:
                return 400, {"errors": {"labels": "a label is one word"}}
            elif verb == "add":
                self._change_tags(key, add=[value], remove=[])
            else:
                self._change_tags(key, add=[], remove=[value])
        return self._tags_written(204, None)

    def _freshdesk(self, method: str, path: str, body: bytes, authed: bool) -> tuple[int, Any]:
        if method == "GET" and path == "/api/v2/agents/me":
            return (200, {"id": 19}) if authed else (401, {"code": "invalid_credentials"})
        ticket = re.fullmatch(r"/api/v2/tickets/([0-9]+)", path)
        if ticket and method in ("GET", "PUT"):
            if not authed:
                return 401, {"code": "invalid_credentials"}
            if method == "PUT":
                update = json.loads(body)
                tags = update.get("tags")
                if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                    return 400, {"description": "Validation failed"}
                self._replace_tags(ticket[1], tags)
            with self._lock:
                current = list(self.tags.get(ticket[1], []))
            answer = {"id": int(ticket[1]), "tags": current, "description": "<p>x</p>" * 2000}
            return self._tags_written(200, answer) if method == "PUT" else (200, answer)
        match = re.fullmatch(r"/api/v2/tickets/([0-9]+)/notes", path)
        if not (method == "POST" and match):
            return 404, {}
        if not authed:
            return 401, {"code": "invalid_credentials"}
        note = json.loads(body)
        if not isinstance(note.get("body"), str) or note.get("private") is not True:
            return 400, {"description": "Validation failed"}
        return self._note(match[1], note["body"], 201)

    def _note(self, ticket: str, text: str, status: int) -> tuple[int, Any]:
        with self._lock:
            self.notes.append(NoteSeen(ticket, text))
        return status, {"id": len(self.notes)}

    def _change_tags(self, ticket: str, add: list[str], remove: list[str]) -> None:
        with self._lock:
            tags = [t for t in self.tags.get(ticket, []) if t not in remove]
            self.tags[ticket] = tags + [t for t in add if t not in tags]

    def _replace_tags(self, ticket: str, tags: list[str]) -> None:
        with self._lock:
            self.tags[ticket] = list(dict.fromkeys(tags))

    def _tags_written(self, status: int, reply: Any) -> tuple[int, Any]:
        with self._lock:
            self.tag_writes += 1
            if self.lost_tag_answers:
                return self.lost_tag_answers.pop(0), {"error": "injected after applying"}
        return status, reply

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
        query = parse_qs(scope.get("query_string", b"").decode())
        with self._lock:
            self.requests.append((method, path))
            fault = self.faults.pop(0) if self.faults and method != "GET" else None
        if fault is not None:
            status, reply_headers, reply = fault[0], fault[1], {"error": "injected"}
        else:
            authed = headers.get("authorization") == self._expected_auth()
            try:
                status, reply = self._route(method, path, query, b"".join(chunks), authed)
            except (KeyError, TypeError, ValueError) as exc:
                status, reply = 400, {"error": f"malformed: {exc!r}"}
            reply_headers = {}
            if status >= 400:
                with self._lock:
                    self.refused.append((status, json.dumps(reply)))
        raw = b"" if reply is None else json.dumps(reply).encode()
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
