"""The sender's HTTP client: one shape of request (a POST of a small JSON body to a checked
IP address), HTTP/1.1 on asyncio streams, with the protocol itself (request serialisation,
response parsing and framing, keep-alive rules) left to ``h11``'s state machine.

This module keeps what is particular to webhooks: its own sockets, the address pinning (it
connects only to an IP literal that ``ssrf`` has just checked), its own pool, the size limits
and the refusal of header injection. It leaves out what makes a general-purpose client cost
a webhook attempt 2-5 ms of CPU (httpx's request/response models, auth and event hooks,
httpcore's pool scan); h11 itself costs about 0.05 ms per exchange.

Connections are reused (keep-alive) only for the same scheme, **hostname** (``Host`` and TLS
server name), address and port: a TLS connection verified for one hostname never carries a
request for another hostname that happens to share its address, which is why stock pools
(keyed by address) are not used with keep-alive. Every attempt still resolves and checks the
name first (``ssrf``), so a connection is only reused towards an address just checked again.

A connection goes back to the pool only when h11 says both sides finished the exchange and
may start another (``our_state`` and ``their_state`` ``DONE``, nothing received beyond the
response). Anything else closes it: a body cut at the cap, a body that runs to EOF, an
HTTP/1.0 answer, ``Connection: close`` from either side, bytes after the response, any
protocol error. Interim answers (``100 Continue``, ``103 Early Hints``, ...) are skipped and
the final answer is used; a ``101 Switching Protocols`` (the sender never asks to switch) is a
protocol error, so the attempt fails and the socket, no longer speaking HTTP/1.1, is closed.
The response head is limited to ``MAX_HEADER_BYTES``. The client refuses any host that is not
an IP literal, so it never resolves a name itself; it follows no redirects, uses no proxy and
keeps no cookies.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from dataclasses import dataclass

import h11

__all__ = [
    "HttpReply",
    "PinnedHttp11Client",
    "TransportConnectError",
    "TransportError",
    "make_webhook_client",
]

MAX_HEADER_BYTES = 16384  # a response's heads, interim answers included
IDLE_SECONDS = 30.0  # below the usual 60 s+ server keep-alive, so reuse rarely meets a close
MAX_IDLE_PER_KEY = 256  # ≥ the sender's concurrency: one receiver gets all of it kept alive
MAX_IDLE_TOTAL = 1024
_READ_CHUNK = 65536

# scheme, Host header, TLS server name (SNI, "" for http), address, port
PoolKey = tuple[str, str, str, str, int]


class TransportError(Exception):
    """The exchange failed after connecting (reset, malformed or missing response)."""


class TransportConnectError(TransportError):
    """No connection (refused, unreachable, TLS handshake or certificate failure): the
    request was certainly not received."""


@dataclass(frozen=True, slots=True)
class HttpReply:
    status_code: int
    retry_after: str | None
    body: bytes  # at most the cap the caller asked for


class _Connection:
    __slots__ = ("idle_since", "protocol", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.protocol = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)

    def close(self) -> None:
        self.writer.close()

    @property
    def still_open(self) -> bool:
        # An idle keep-alive connection the server closed has EOF waiting in its reader.
        return not self.writer.is_closing() and not self.reader.at_eof()


class _Stale(Exception):
    """A reused connection ended before any response byte: safe to try a fresh one."""


class PinnedHttp11Client:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        # Certificates are verified against the hostname (SNI), not the address connected to.
        # Built on first https use: loading the system CA store costs milliseconds.
        self._ssl_context = ssl_context
        self._idle: dict[PoolKey, list[_Connection]] = {}
        self._idle_count = 0
        self._last_sweep = time.monotonic()

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    # -- the pool ----------------------------------------------------------------------------
    def _take(self, key: PoolKey) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if now - connection.idle_since < IDLE_SECONDS and connection.still_open:
                return connection
            connection.close()
        return None

    def _put(self, key: PoolKey, connection: _Connection) -> None:
        now = time.monotonic()
        self.sweep_idle(now)
        idle = self._idle.setdefault(key, [])
        if len(idle) >= MAX_IDLE_PER_KEY or self._idle_count >= MAX_IDLE_TOTAL:
            connection.close()
            return
        connection.idle_since = now
        idle.append(connection)
        self._idle_count += 1

    def sweep_idle(self, now: float | None = None) -> None:
        """Close idle connections that expired or that the server closed (cheap when called
        often: it works at most every few seconds)."""
        now = time.monotonic() if now is None else now
        if now - self._last_sweep < IDLE_SECONDS / 4:
            return
        self._last_sweep = now
        for key in list(self._idle):
            keep = []
            for connection in self._idle[key]:
                if now - connection.idle_since < IDLE_SECONDS and connection.still_open:
                    keep.append(connection)
                else:
                    connection.close()
                    self._idle_count -= 1
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        self._idle_count = 0

    # -- one exchange ------------------------------------------------------------------------
    async def post(
        self,
        *,
        scheme: str,
        address: str,
        port: int,
        host_header: str,
        server_name: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        max_response_bytes: int,
        keep_alive: bool,
    ) -> HttpReply:
        """POST ``body`` to ``address:port`` with ``Host: host_header`` (TLS to
        ``server_name`` for https). The caller bounds the whole call with a timeout; a
        cancelled call closes its connection. ``headers`` must not carry framing headers
        (host, content-length, connection, transfer-encoding): this client writes those."""
        if scheme not in ("http", "https"):
            raise TransportConnectError(f"unsupported scheme {scheme!r}")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise TransportConnectError(
                "the webhook client connects only to checked IP addresses"
            ) from None
        https = scheme == "https"
        key: PoolKey = (
            scheme,
            host_header.lower(),
            server_name.lower() if https else "",
            address,
            port,
        )
        request = _request(target, host_header, headers, len(body), keep_alive)

        connection = self._take(key) if keep_alive else None
        if connection is not None:
            try:
                reply, reusable = await self._exchange(
                    connection, request, body, max_response_bytes
                )
            except _Stale:
                connection = None  # the server had closed it: one fresh try
        if connection is None:
            connection = await self._connect(key, https)
            try:
                reply, reusable = await self._exchange(
                    connection, request, body, max_response_bytes
                )
            except _Stale:
                raise TransportError("connection closed without a response") from None
        if keep_alive and reusable:
            self._put(key, connection)
        else:
            connection.close()
        return reply

    async def _connect(self, key: PoolKey, https: bool) -> _Connection:
        _, _, server_name, address, port = key
        try:
            reader, writer = await asyncio.open_connection(
                address,
                port,
                ssl=self._tls() if https else None,
                server_hostname=server_name if https else None,
                limit=_READ_CHUNK,
            )
        except (OSError, ssl.SSLError) as exc:
            raise TransportConnectError(str(exc) or type(exc).__name__) from None
        return _Connection(reader, writer)

    async def _exchange(
        self, connection: _Connection, request: h11.Request, body: bytes, cap: int
    ) -> tuple[HttpReply, bool]:
        """Send the request and read the answer; returns it and whether the connection can
        carry another request."""
        protocol = connection.protocol
        received = 0
        try:
            head = _sent(protocol, request)
            body_bytes = _sent(protocol, h11.Data(data=body))
            connection.writer.write(head + body_bytes + _sent(protocol, h11.EndOfMessage()))
            await connection.writer.drain()
            response: h11.Response | None = None
            kept = bytearray()
            complete = False
            while True:
                event = protocol.next_event()
                if event is h11.NEED_DATA:
                    if response is not None and len(kept) >= cap:
                        break  # the cap is reached and the rest is not here yet: stop
                    data = await connection.reader.read(_READ_CHUNK)
                    if not data and not received:
                        raise _Stale
                    received += len(data)
                    protocol.receive_data(data)  # b"" tells h11 the server closed
                elif isinstance(event, h11.Data):
                    room = cap - len(kept)
                    kept += event.data[:room]
                    if len(event.data) > room:
                        break  # more than the cap: the rest is not read
                elif isinstance(event, h11.EndOfMessage):
                    complete = True
                    break
                elif isinstance(event, h11.Response):
                    # h11 bounds only a head still incomplete; one that arrived whole in a
                    # single read is measured here (the interim heads before it included).
                    if received > MAX_HEADER_BYTES and (
                        received - len(protocol.trailing_data[0]) > MAX_HEADER_BYTES
                    ):
                        raise TransportError("response head too large")
                    response = event
                elif isinstance(event, h11.InformationalResponse):
                    continue  # 100 Continue, 103 Early Hints...: the final answer follows
                else:  # ConnectionClosed or PAUSED cannot come before EndOfMessage
                    raise TransportError(f"unexpected {type(event).__name__} in the response")
        except BaseException as exc:
            connection.close()
            if isinstance(exc, _Stale | TransportError):
                raise
            if isinstance(exc, h11.RemoteProtocolError):
                raise TransportError(_protocol_error_text(exc)) from None
            if isinstance(exc, OSError | ssl.SSLError):
                if not received:
                    raise _Stale from None
                raise TransportError(str(exc) or type(exc).__name__) from None
            raise  # cancellation / timeout from the caller
        assert response is not None  # h11 gives the Response before any Data or EndOfMessage
        reusable = _reusable(protocol) if complete else False
        retry_after = next((v for k, v in response.headers if k == b"retry-after"), None)
        return (
            HttpReply(
                response.status_code,
                retry_after.decode("latin-1") if retry_after is not None else None,
                bytes(kept),
            ),
            reusable,
        )


def _request(
    target: str, host_header: str, headers: dict[str, str], body_length: int, keep_alive: bool
) -> h11.Request:
    """The request's head, validated by h11 before any connection is made."""
    fields = [("host", host_header), *headers.items(), ("content-length", str(body_length))]
    if not keep_alive:
        fields.append(("connection", "close"))
    for name, value in fields:
        # h11 refuses these too; this says why in words the endpoint's owner can act on.
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise TransportConnectError("header values may not contain line breaks")
    try:
        return h11.Request(
            method="POST",
            target=target.encode("ascii"),
            headers=[(name.encode("latin-1"), value.encode("latin-1")) for name, value in fields],
        )
    except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
        raise TransportConnectError(f"invalid request: {exc}") from None


def _sent(protocol: h11.Connection, event: h11.Event) -> bytes:
    data = protocol.send(event)
    assert data is not None  # None only for ConnectionClosed, never sent here
    return data


def _reusable(protocol: h11.Connection) -> bool:
    """Whether the exchange left the connection ready for another request; if so, resets
    h11 for it. Bytes beyond the response (a second answer nobody asked for) would be read
    as the next request's answer, so they close the connection too."""
    if protocol.our_state is not h11.DONE or protocol.their_state is not h11.DONE:
        return False  # HTTP/1.0, Connection: close, or our own keep_alive=False
    leftover, closed = protocol.trailing_data
    if leftover or closed:
        return False
    protocol.start_next_cycle()
    return True


def _protocol_error_text(exc: h11.RemoteProtocolError) -> str:
    # h11 refuses a 101 it did not ask for, in its own terms.
    if "_SWITCH_UPGRADE" in str(exc):
        return "unexpected 101 Switching Protocols (a webhook never asks to switch)"
    return f"malformed response: {exc}"


def make_webhook_client(ssl_context: ssl.SSLContext | None = None) -> PinnedHttp11Client:
    """The client the sender hands to ``ssrf.deliver``."""
    return PinnedHttp11Client(ssl_context)
