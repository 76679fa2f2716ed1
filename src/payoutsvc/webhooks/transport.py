"""A lean httpx transport for webhook attempts: HTTP/1.1 to checked IP addresses only.

``ssrf.post_pinned`` sends each attempt through an ``httpx.AsyncClient`` to the checked IP
address, with the hostname carried as ``Host`` and TLS SNI. For that one shape of request
httpcore's general-purpose pool is mostly overhead (a pool scan, several anyio cancel scopes
per request); this transport opens connections itself, writes the request with h11 and
streams the response back, several times cheaper per attempt.

Connections are reused (keep-alive) only for the same scheme, **hostname** (``Host`` and TLS
server name), address and port: a TLS connection verified for one hostname never carries a
request for another hostname that happens to share its address, which is why stock pools
(keyed by address) are not used with keep-alive. Every attempt still resolves and checks the
name first (``ssrf``), so a connection is only reused towards an address just checked again.
A connection goes back to the pool only after a complete exchange; a response cut short (the
body cap) or ``Connection: close`` from either side closes it. The transport refuses any
host that is not an IP literal, so it never resolves a name itself; redirects, proxies and
cookies stay off in the client (``make_webhook_client``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy

import h11
import httpx

__all__ = ["PinnedHttp11Transport", "make_webhook_client"]

READ_CHUNK_BYTES = 65536
MAX_HEADER_BYTES = 16384
IDLE_SECONDS = 30.0  # below the usual 60 s+ server keep-alive, so reuse rarely meets a close
MAX_IDLE_PER_KEY = 64
MAX_IDLE_TOTAL = 1024

# scheme, Host header, TLS server name (SNI, "" for http), address, port
PoolKey = tuple[str, str, str, str, int]


class _Connection:
    __slots__ = ("h11", "idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.idle_since = 0.0

    def close(self) -> None:
        self.writer.close()

    @property
    def reusable(self) -> bool:
        """A complete exchange on a connection neither side asked to close."""
        return (
            self.h11.our_state is h11.DONE
            and self.h11.their_state is h11.DONE
            and not self.writer.is_closing()
        )

    @property
    def still_open(self) -> bool:
        # An idle keep-alive connection the server closed has EOF waiting in its reader.
        return not self.writer.is_closing() and not self.reader.at_eof()


class _StaleConnection(Exception):
    """A reused connection failed before any response byte: safe to try a fresh one."""


class PinnedHttp11Transport(httpx.AsyncBaseTransport):
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        # Certificates are verified against the hostname (SNI), not the address connected to.
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._idle: dict[PoolKey, list[_Connection]] = {}
        self._idle_count = 0
        self._last_sweep = time.monotonic()

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
        connection.h11.start_next_cycle()
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

    def release(self, key: PoolKey, connection: _Connection) -> None:
        if connection.reusable:
            self._put(key, connection)
        else:
            connection.close()

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        self._idle_count = 0

    # -- one exchange ------------------------------------------------------------------------
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {url.scheme!r}", request=request)
        try:
            ipaddress.ip_address(url.host)
        except ValueError:
            raise httpx.UnsupportedProtocol(
                "the webhook transport connects only to checked IP addresses", request=request
            ) from None
        https = url.scheme == "https"
        port = url.port or (443 if https else 80)
        sni = request.extensions.get("sni_hostname")
        server_name = (sni if isinstance(sni, str) and sni else url.host) if https else ""
        host_header = request.headers.get("host", "").lower()
        key: PoolKey = (url.scheme, host_header, server_name.lower(), url.host, port)
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        wants_close = request.headers.get("connection", "").lower() == "close"

        connection = None if wants_close else self._take(key)
        if connection is not None:
            try:
                head = await self._exchange(connection, request, body, timeouts, reused=True)
            except _StaleConnection:
                connection = None  # the server had closed it: one fresh try
        if connection is None:
            connection = await self._connect(request, key, https, timeouts)
            head = await self._exchange(connection, request, body, timeouts, reused=False)
        return httpx.Response(
            status_code=head.status_code,
            headers=list(head.headers),
            stream=_ResponseBody(self, key, connection, timeouts.get("read"), request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
            request=request,
        )

    async def _connect(
        self,
        request: httpx.Request,
        key: PoolKey,
        https: bool,
        timeouts: dict[str, float | None],
    ) -> _Connection:
        _, _, server_name, address, port = key
        try:
            async with asyncio.timeout(timeouts.get("connect")):
                reader, writer = await asyncio.open_connection(
                    address,
                    port,
                    ssl=self._ssl_context if https else None,
                    server_hostname=server_name if https else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("timed out connecting", request=request) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        return _Connection(reader, writer)

    async def _exchange(
        self,
        connection: _Connection,
        request: httpx.Request,
        body: bytes,
        timeouts: dict[str, float | None],
        *,
        reused: bool,
    ) -> h11.Response:
        conn = connection.h11
        try:
            outgoing = (
                conn.send(
                    h11.Request(
                        method=request.method.encode(),
                        target=url_target(request.url),
                        headers=list(request.headers.raw),
                    )
                )
                or b""
            )
            if body:
                outgoing += conn.send(h11.Data(data=body)) or b""
            outgoing += conn.send(h11.EndOfMessage()) or b""
            connection.writer.write(outgoing)
            async with asyncio.timeout(timeouts.get("write")):
                await connection.writer.drain()
            async with asyncio.timeout(timeouts.get("read")):
                return await _response_head(connection)
        except BaseException as exc:
            connection.close()
            stale = isinstance(exc, OSError | h11.RemoteProtocolError | _NoResponse)
            if reused and stale and conn.their_state is h11.SEND_RESPONSE:
                raise _StaleConnection from None
            raise _mapped(exc, request) from None


def url_target(url: httpx.URL) -> bytes:
    return url.raw_path or b"/"


class _NoResponse(Exception):
    """The connection closed before a response arrived."""


async def _next_event(connection: _Connection) -> object:
    while True:
        event = connection.h11.next_event()
        if event is h11.NEED_DATA:
            data = await connection.reader.read(READ_CHUNK_BYTES)  # b"" is EOF
            connection.h11.receive_data(data)
            continue
        return event


async def _response_head(connection: _Connection) -> h11.Response:
    while True:
        try:
            event = await _next_event(connection)
        except h11.RemoteProtocolError:
            if connection.h11.their_state is h11.SEND_RESPONSE:
                raise _NoResponse from None  # EOF (or garbage) before a status line
            raise
        if isinstance(event, h11.Response):
            return event
        if isinstance(event, h11.ConnectionClosed):
            raise _NoResponse
        # h11.InformationalResponse (e.g. 100 Continue): keep reading.


def _mapped(exc: BaseException, request: httpx.Request) -> BaseException:
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout("timed out waiting for the response", request=request)
    if isinstance(exc, _NoResponse):
        return httpx.RemoteProtocolError("connection closed without a response", request=request)
    if isinstance(exc, h11.RemoteProtocolError | h11.LocalProtocolError):
        return httpx.RemoteProtocolError(str(exc), request=request)
    if isinstance(exc, OSError | ssl.SSLError):
        return httpx.ReadError(str(exc) or type(exc).__name__, request=request)
    return exc


class _ResponseBody(httpx.AsyncByteStream):
    """The response body as it arrives; closing it returns the connection to the pool when
    the exchange was complete, and closes it otherwise."""

    def __init__(
        self,
        transport: PinnedHttp11Transport,
        key: PoolKey,
        connection: _Connection,
        read_timeout: float | None,
        request: httpx.Request,
    ) -> None:
        self._transport = transport
        self._key = key
        self._connection: _Connection | None = connection
        self._read_timeout = read_timeout
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            return
        while True:
            try:
                async with asyncio.timeout(self._read_timeout):
                    event = await _next_event(connection)
            except BaseException as exc:
                connection.close()
                self._connection = None
                raise _mapped(exc, self._request) from None
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return

    async def aclose(self) -> None:
        if self._connection is not None:
            self._transport.release(self._key, self._connection)
            self._connection = None


def make_webhook_client(
    ssl_context: ssl.SSLContext | None = None, transport: PinnedHttp11Transport | None = None
) -> httpx.AsyncClient:
    """The client the sender hands to ``ssrf.deliver``: this transport, no proxies from the
    environment, no redirects, no cookies kept."""
    return httpx.AsyncClient(
        transport=transport or PinnedHttp11Transport(ssl_context),
        trust_env=False,
        follow_redirects=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )
