"""`payoutsvc listen`: see signed webhooks arrive on a laptop, like `stripe listen`.

It is a client of the HTTP API, nothing more: it starts a receiver on a free loopback port,
registers a temporary webhook endpoint for it (``POST /v1/webhook-endpoints``), verifies each
delivery's Standard Webhooks signature with the ``standardwebhooks`` library and the secret
the registration returned, prints it, optionally forwards it, and deletes the endpoint when
it stops (Ctrl-C and SIGTERM included).

The receiver speaks HTTP/1.1 through ``h11`` over asyncio streams (the same parser as the
webhook sender's transport), so it needs no server framework and its signal handling stays
ours: a stop always ends with the endpoint removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

import h11
import httpx
from rich.console import Console
from rich.markup import escape
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

MAX_BODY_BYTES = 1024 * 1024
API_TIMEOUT_SECONDS = 10.0
FORWARD_TIMEOUT_SECONDS = 10.0
#: The Standard Webhooks headers a forwarded delivery keeps, so the target verifies it too.
FORWARDED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type")
ALLOW_PRIVATE_HINT = (
    "the service refuses loopback webhook URLs: start it with "
    "PAYOUTSVC_WEBHOOK_ALLOW_PRIVATE=true (`make run` does)"
)


class ListenError(Exception):
    """Why listening could not start (printed as is, exit code 1)."""


@dataclass(frozen=True)
class ListenOptions:
    api: str
    api_key: str
    events: tuple[str, ...] = ("payout.*",)
    forward_to: str | None = None
    as_json: bool = False


@dataclass(frozen=True)
class Delivery:
    """One request the receiver got: verified (``payload`` set) or not (``problem`` set)."""

    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any] | None = None
    problem: str | None = None
    forwarded: str | None = None  # "200", "connection refused", ...


@dataclass
class Endpoint:
    id: str
    secret: str
    url: str


Handler = Callable[[dict[str, str], bytes], Awaitable[int]]


# -- the receiver ------------------------------------------------------------------------------
async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(65536))


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> tuple[dict[str, str], bytes] | None:
    """The next request's headers and body; None when the client closed the connection."""
    event = await _next_event(conn, reader)
    if not isinstance(event, h11.Request):
        return None
    headers = {name.decode().lower(): value.decode("latin-1") for name, value in event.headers}
    body = bytearray()
    while True:
        event = await _next_event(conn, reader)
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                raise h11.RemoteProtocolError("body too large", error_status_hint=413)
        elif isinstance(event, h11.EndOfMessage):
            return headers, bytes(body)
        else:
            return None


def _respond(conn: h11.Connection, writer: asyncio.StreamWriter, status: int) -> None:
    headers = [("content-length", "0"), ("server", "payoutsvc-listen")]
    writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
    writer.write(conn.send(h11.EndOfMessage()) or b"")


async def serve_connection(
    handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answer the requests of one connection (keep-alive included) until it closes."""
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            try:
                request = await _read_request(conn, reader)
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    _respond(conn, writer, exc.error_status_hint)
                    await writer.drain()
                return
            if request is None:
                return
            _respond(conn, writer, await handler(*request))
            await writer.drain()
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (ConnectionError, h11.LocalProtocolError):
        return
    finally:
        writer.close()


# -- verifying, forwarding, printing -----------------------------------------------------------
def verify(secret: str, headers: dict[str, str], body: bytes) -> Delivery:
    """Check the Standard Webhooks signature (and timestamp tolerance) of one request."""
    try:
        payload = Webhook(secret).verify(body, headers)
    except (WebhookVerificationError, ValueError, TypeError) as exc:
        return Delivery(headers, body, problem=str(exc) or type(exc).__name__)
    if not isinstance(payload, dict):
        return Delivery(headers, body, problem="the body is not a JSON object")
    return Delivery(headers, body, payload=payload)


async def forward(http: httpx.AsyncClient, url: str, delivery: Delivery) -> tuple[int, str]:
    """Re-post a verified delivery, body and signature headers unchanged, to ``url``.

    Answers the status to give the sender: the target's, or 502 when it could not be reached
    (so the sender retries, as it would for the real receiver)."""
    headers = {k: v for k, v in delivery.headers.items() if k in FORWARDED_HEADERS}
    try:
        answer = await http.post(url, content=delivery.body, headers=headers)
    except httpx.HTTPError as exc:
        return 502, f"forward failed: {type(exc).__name__}"
    return answer.status_code, str(answer.status_code)


def pretty_line(delivery: Delivery) -> str:
    """One rich-markup line per delivery."""
    clock = datetime.now().strftime("%H:%M:%S")  # the reader's wall clock
    webhook_id = escape(delivery.headers.get("webhook-id", "-"))
    if delivery.payload is None:
        reason = escape(delivery.problem or "")
        return f"{clock}  [bold red]UNVERIFIED[/]  {webhook_id}  {reason}  (not forwarded)"
    data = delivery.payload.get("data")
    payout = data.get("payout") if isinstance(data, dict) else None
    summary = ""
    if isinstance(payout, dict):
        summary = (
            f"{payout.get('id', '')}  {payout.get('status', '')}  "
            f"{payout.get('amount', '')} {payout.get('currency', '')}"
        )
    forwarded = f"  → {escape(delivery.forwarded)}" if delivery.forwarded else ""
    kind = escape(str(delivery.payload.get("type", "?")))
    return (
        f"{clock}  [green]verified[/]  [bold]{kind:<20}[/]  {escape(summary)}  "
        f"[dim]{webhook_id}[/]{forwarded}"
    )


@dataclass
class Printer:
    """Pretty lines (rich) on stdout, or with ``as_json`` each verified payload as one JSON
    line on stdout and everything else on stderr, so stdout can be piped to ``jq``."""

    as_json: bool
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def __post_init__(self) -> None:
        self.console = Console(file=self.out, highlight=False, soft_wrap=True)
        self.err_console = Console(file=self.err, highlight=False, soft_wrap=True)

    def delivery(self, delivery: Delivery) -> None:
        if not self.as_json:
            self.console.print(pretty_line(delivery))
            return
        if delivery.payload is not None:
            self.out.write(json.dumps(delivery.payload, ensure_ascii=False) + "\n")
            self.out.flush()
            return
        record = {
            "verified": False,
            "webhook_id": delivery.headers.get("webhook-id"),
            "error": delivery.problem,
        }
        self.err.write(json.dumps(record) + "\n")
        self.err.flush()

    def note(self, text: str) -> None:
        self.err_console.print(text)


# -- the API: register and remove the temporary endpoint ---------------------------------------
def _problem_text(answer: httpx.Response) -> str:
    try:
        problem = answer.json()
    except ValueError:
        return f"HTTP {answer.status_code}"
    if not isinstance(problem, dict):
        return f"HTTP {answer.status_code}"
    return f"{answer.status_code} {problem.get('code', '')}: {problem.get('detail', '')}"


async def register(http: httpx.AsyncClient, url: str, events: tuple[str, ...]) -> Endpoint:
    body = {"url": url, "events": list(events), "description": "payoutsvc listen (temporary)"}
    try:
        answer = await http.post("/v1/webhook-endpoints", json=body)
    except httpx.HTTPError as exc:
        raise ListenError(f"cannot reach the API at {http.base_url}: {exc!r}") from None
    if answer.status_code == 201:
        created = answer.json()
        return Endpoint(id=created["id"], secret=created["secret"], url=url)
    text = _problem_text(answer)
    if answer.status_code == 422 and "webhook_url_refused" in text:
        text = f"{text}\n{ALLOW_PRIVATE_HINT}"
    raise ListenError(f"could not register a webhook endpoint: {text}")


async def unregister(http: httpx.AsyncClient, endpoint: Endpoint) -> str | None:
    """Delete the endpoint; the reason it could not be, or None."""
    try:
        answer = await http.delete(f"/v1/webhook-endpoints/{endpoint.id}")
    except httpx.HTTPError as exc:
        return f"cannot reach the API: {exc!r}"
    if answer.status_code in (200, 204, 404):
        return None
    return _problem_text(answer)


# -- putting it together -----------------------------------------------------------------------
@dataclass
class Listener:
    options: ListenOptions
    printer: Printer
    secret: str = ""
    forward_http: httpx.AsyncClient | None = None
    connections: set[asyncio.StreamWriter] = field(default_factory=set)

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        try:
            await serve_connection(self.handle, reader, writer)
        finally:
            self.connections.discard(writer)

    async def close(self, server: asyncio.Server) -> None:
        """Stop accepting, and end idle keep-alive connections (the sender pools them), so
        that the server closes at once."""
        server.close()
        for writer in list(self.connections):
            writer.close()
        await server.wait_closed()

    async def handle(self, headers: dict[str, str], body: bytes) -> int:
        if not self.secret:
            return 503  # arrived before the registration's answer: the sender retries
        delivery = verify(self.secret, headers, body)
        status = 200 if delivery.payload is not None else 401
        if delivery.payload is not None and self.options.forward_to and self.forward_http:
            status, outcome = await forward(self.forward_http, self.options.forward_to, delivery)
            delivery = Delivery(headers, body, payload=delivery.payload, forwarded=outcome)
        self.printer.delivery(delivery)
        return status


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not on Windows: there Ctrl-C cancels the main task, whose `finally` still deletes.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)


async def listen(options: ListenOptions, printer: Printer, stop: asyncio.Event) -> int:
    """Run until ``stop`` is set; the exit code (0, or 1 when the endpoint could not be
    registered or removed)."""
    listener = Listener(options, printer)
    server = await asyncio.start_server(listener.connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    auth = {"Authorization": f"Bearer {options.api_key}"}
    async with (
        httpx.AsyncClient(base_url=options.api, headers=auth, timeout=API_TIMEOUT_SECONDS) as api,
        httpx.AsyncClient(timeout=FORWARD_TIMEOUT_SECONDS, trust_env=False) as forward_http,
    ):
        try:
            endpoint = await register(api, f"http://127.0.0.1:{port}/", options.events)
        except ListenError as exc:
            await listener.close(server)
            printer.note(f"[red]{escape(str(exc))}[/]")
            return 1
        listener.secret, listener.forward_http = endpoint.secret, forward_http
        target = f", forwarding to {options.forward_to}" if options.forward_to else ""
        printer.note(
            f"Ready: listening on {endpoint.url} as endpoint {endpoint.id} for "
            f"{escape(', '.join(options.events))}{escape(target)}.\n"
            f"Webhook signing secret: {endpoint.secret}\nCtrl-C stops and removes the endpoint."
        )
        try:
            await stop.wait()
        finally:
            await listener.close(server)
            failed = await unregister(api, endpoint)
        if failed:
            printer.note(f"[red]could not delete endpoint {endpoint.id}: {escape(failed)}[/]")
            return 1
        printer.note(f"Stopped; endpoint {endpoint.id} deleted.")
        return 0


def run(options: ListenOptions) -> int:
    async def main() -> int:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        return await listen(options, Printer(options.as_json), stop)

    return asyncio.run(main())
