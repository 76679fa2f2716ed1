"""A real HTTP webhook receiver on 127.0.0.1 for tests: uvicorn serving a tiny ASGI app in its
own thread (and event loop), recording every request and answering as each test scripts."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the request arrived
    number: int  # position among every request this receiver got
    client_port: int  # tells connections apart: one port per TCP connection


@dataclass(frozen=True)
class Reply:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # seconds the receiver takes before answering


# (the request, how many requests reached this path before it) -> the reply
Behaviour = Callable[[Received, int], Reply]


def always(status: int = 204, **kwargs: Any) -> Behaviour:
    return lambda _request, _index: Reply(status, **kwargs)


def assert_each_waited_for_the_previous(receiver: Receiver, requests: list[Received]) -> None:
    """Each request arrived only after the one before it had been answered."""
    for earlier, later in itertools.pairwise(requests):
        answered = receiver.answered_at(earlier)
        assert answered is not None
        assert later.at >= answered, (earlier.headers["webhook-id"], later.headers["webhook-id"])


def first_then(first: list[Reply], then: Reply | None = None) -> Behaviour:
    """Answer the first requests with ``first`` in order, every later one with ``then``."""
    final = then or Reply()
    return lambda _request, index: first[index] if index < len(first) else final


class Receiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._behaviours: dict[str, Behaviour] = {}
        self._answered: dict[int, float] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str, behaviour: Behaviour) -> None:
        with self._lock:
            self._behaviours[path] = behaviour

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def answered_at(self, request: Received) -> float | None:
        """When the receiver finished answering ``request`` (None while it has not)."""
        with self._lock:
            return self._answered.get(request.number)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        with self._lock:
            request = Received(
                path=scope["path"],
                headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
                body=b"".join(chunks),
                at=time.monotonic(),
                number=len(self._requests),
                client_port=int(scope["client"][1]) if scope.get("client") else 0,
            )
            index = sum(1 for r in self._requests if r.path == request.path)
            self._requests.append(request)
            behaviour = self._behaviours.get(request.path, always(204))
        reply = behaviour(request, index)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        headers = [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        with self._lock:
            self._answered[request.number] = time.monotonic()

    def start(self, **uvicorn_options: Any) -> None:
        """Serve on a free loopback port; ``uvicorn_options`` e.g. ssl_certfile/ssl_keyfile."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            **uvicorn_options,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=lambda: server.run(sockets=[sock]), name="webhook-receiver", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("test webhook receiver did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


class ScriptedServer:
    """A raw HTTP/1.1 server on 127.0.0.1 in the test's own event loop that answers each
    request with the next scripted bytes, verbatim: for answers no well-behaved server
    (uvicorn) would send, such as a ``101`` to a POST or bytes nobody asked for. Records, per
    request, the client port it came from (one port per TCP connection)."""

    def __init__(self, answers: list[bytes], *, hang_up_after_each: bool = False) -> None:
        self.answers = list(answers)
        self.ports: list[int] = []
        # Close the connection after each answer (what ends a body sent without framing).
        self.hang_up_after_each = hang_up_after_each
        self._server: asyncio.Server | None = None
        self.port = 0

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.ports.append(writer.get_extra_info("peername")[1])
                writer.write(self.answers.pop(0))
                await writer.drain()
                if self.hang_up_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
