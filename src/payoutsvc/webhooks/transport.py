"""The sender's HTTP client: one shape of request (a POST of a small JSON body to a checked
IP address), HTTP/1.1, written and parsed directly on asyncio streams.

A general-purpose client spends most of a webhook attempt's CPU on generality (httpx's
request/response models, auth and event hooks, httpcore's pool scan, h11's state machine);
the sender makes thousands of attempts per second, so this client does only what an attempt
needs: write the request bytes, read the status line and headers, read at most the capped
number of body bytes, and keep the connection when the exchange was complete. Parsing the
responses with h11 instead was measured (issue 12): it tripled the client's CPU per exchange
(about 28 -> 95 us) and cost the sender's delivery rate 20-30 %, so the parser stays, held
to h11's grammar by a hypothesis test that uses h11 as the oracle
(tests/webhooks/test_transport_fuzz.py); it is stricter only in refusing bare-LF line ends
and folded header lines.

Connections are reused (keep-alive) only for the same scheme, **hostname** (``Host`` and TLS
server name), address and port: a TLS connection verified for one hostname never carries a
request for another hostname that happens to share its address, which is why stock pools
(keyed by address) are not used with keep-alive. Every attempt still resolves and checks the
name first (``ssrf``), so a connection is only reused towards an address just checked again.

A connection goes back to the pool only after a complete exchange with nothing received
beyond the response (a second answer nobody asked for would be read as the next request's
answer); a response cut short (the body cap), a body that runs to EOF, an HTTP/1.0 answer,
``Connection: close`` from either side or any protocol error closes it. Interim answers
(``100 Continue``, ``103 Early Hints``, ...) are skipped and the final answer is used; a
``101 Switching Protocols`` (the sender never asks to switch) is a protocol error: the
attempt fails and the socket, no longer speaking HTTP/1.1, is closed. Response heads (and
chunk-size and trailer lines) are limited to ``MAX_HEADER_BYTES``. The client refuses any
host that is not an IP literal, so it never resolves a name itself; it follows no redirects,
uses no proxy and keeps no cookies.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
import time
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "HttpReply",
    "PinnedHttp11Client",
    "Response",
    "TransportConnectError",
    "TransportError",
    "make_webhook_client",
]

MAX_HEADER_BYTES = 16384
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
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

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
        method: str = "POST",
    ) -> HttpReply:
        """POST (or ``method``: a helpdesk connector's PUT or GET) ``body`` to
        ``address:port`` with ``Host: host_header`` (TLS to ``server_name`` for https).
        The caller bounds the whole call with a timeout; a cancelled call closes its
        connection. ``headers`` must not carry framing headers
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
        request = _request_bytes(method, target, host_header, headers, body, keep_alive)

        connection = self._take(key) if keep_alive else None
        if connection is not None:
            try:
                reply, reusable = await self._exchange(connection, request, max_response_bytes)
            except _Stale:
                connection = None  # the server had closed it: one fresh try
        if connection is None:
            connection = await self._connect(key, https)
            try:
                reply, reusable = await self._exchange(connection, request, max_response_bytes)
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
        self, connection: _Connection, request: bytes, cap: int
    ) -> tuple[HttpReply, bool]:
        """Send ``request`` and read the answer; returns it and whether the connection can
        carry another request."""
        incoming = _Incoming(connection.reader)
        try:
            connection.writer.write(request)
            await connection.writer.drain()
            response = await read_response(incoming, cap)
        except BaseException as exc:
            connection.close()
            if isinstance(exc, _Stale | TransportError):
                raise
            if isinstance(exc, OSError | ssl.SSLError):
                if not incoming.received:
                    raise _Stale from None
                raise TransportError(str(exc) or type(exc).__name__) from None
            raise  # cancellation / timeout from the caller
        return (
            HttpReply(response.status_code, response.retry_after, response.body),
            response.reusable,
        )


_METHODS = frozenset({"GET", "POST", "PUT"})


def _request_bytes(
    method: str,
    target: str,
    host_header: str,
    headers: dict[str, str],
    body: bytes,
    keep_alive: bool,
) -> bytes:
    if method not in _METHODS:
        raise TransportConnectError(f"unsupported method {method!r}")
    lines = [f"{method} {target} HTTP/1.1", f"host: {host_header}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    lines.append(f"content-length: {len(body)}")
    if not keep_alive:
        lines.append("connection: close")
    for line in lines:
        if "\r" in line or "\n" in line:
            raise TransportConnectError("header values may not contain line breaks")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# -- reading a response --------------------------------------------------------------------
#
# The grammar is h11's (RFC 9112), so that this parser refuses what h11 refuses and reads
# what it reads the same way (tests/webhooks/test_transport_fuzz.py holds it to h11 as the
# oracle). It is stricter in two places only: lines must end in CRLF (h11 also takes a bare
# LF), and obsolete line folding (a header line starting with a space) is an error.
_STATUS_LINE = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: (?:[ \t]|[^\x00\s])*)?")
_HEADER_FIELD = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*"
)
_CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*\r\n")
_DIGITS = re.compile(rb"[0-9]{1,20}")


class _ByteSource(Protocol):
    async def read(self, n: int = -1, /) -> bytes: ...


class _Incoming:
    """Bytes received and not yet parsed: what is left after a response is known, so a
    connection holding bytes nobody asked for is not reused."""

    __slots__ = ("buffer", "eof", "received", "source")

    def __init__(self, source: _ByteSource) -> None:
        self.source = source
        self.buffer = bytearray()
        self.received = 0
        self.eof = False

    async def fill(self) -> bool:
        """Read more; False at end of stream."""
        if self.eof:
            return False
        data = await self.source.read(_READ_CHUNK)
        if not data:
            self.eof = True
            return False
        self.buffer += data
        self.received += len(data)
        return True

    async def until(self, separator: bytes, what: str) -> bytes:
        """The bytes before ``separator`` (consumed with it), at most MAX_HEADER_BYTES."""
        searched = 0
        while True:
            end = self.buffer.find(separator, max(0, searched - len(separator) + 1))
            if end >= 0:
                if end > MAX_HEADER_BYTES:
                    raise TransportError(f"{what} too large")
                line = bytes(self.buffer[:end])
                del self.buffer[: end + len(separator)]
                return line
            if len(self.buffer) > MAX_HEADER_BYTES:
                raise TransportError(f"{what} too large")
            searched = len(self.buffer)
            if not await self.fill():
                if not self.received:
                    raise _Stale
                raise TransportError(f"{what} cut short")

    async def exactly(self, size: int, what: str) -> bytes:
        while len(self.buffer) < size:
            if not await self.fill():
                raise TransportError(f"{what} cut short")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


@dataclass(frozen=True, slots=True)
class Response:
    status_code: int
    http_version: bytes  # b"1.1"
    headers: list[tuple[bytes, bytes]]  # lower-case names, as h11 normalises them
    body: bytes  # at most the cap
    reusable: bool  # complete, keep-alive on both sides, and nothing received beyond it

    @property
    def retry_after(self) -> str | None:
        value = next((v for k, v in self.headers if k == b"retry-after"), None)
        return value.decode("latin-1") if value is not None else None


async def read_response(incoming: _Incoming, cap: int) -> Response:
    """The final answer to a request already sent (interim ``1xx`` answers skipped), with at
    most ``cap`` body bytes. Raises TransportError for anything h11 would refuse, and for a
    ``101``: the sender never asks to switch protocols."""
    while True:
        status, version, headers = _parse_head(await incoming.until(b"\r\n\r\n", "response head"))
        if status == 101:
            # The socket no longer speaks HTTP/1.1: the caller closes it.
            raise TransportError(
                "unexpected 101 Switching Protocols (a webhook never asks to switch)"
            )
        if status >= 200:
            break  # 100 Continue, 103 Early Hints...: the final answer follows
    content_length, chunked, close = _framing(headers)
    if status in (204, 304):
        body, complete = b"", True
    elif chunked:
        body, complete = await _read_chunked(incoming, cap)
    elif content_length is not None:
        if content_length > cap:
            body, complete = await incoming.exactly(cap, "response body"), False
        else:
            body, complete = await incoming.exactly(content_length, "response body"), True
    else:
        # No framing: the body runs to EOF, read only up to the cap; never reusable.
        while len(incoming.buffer) < cap and await incoming.fill():
            pass
        body, complete = bytes(incoming.buffer[:cap]), False
    reusable = complete and version >= b"1.1" and not close and not incoming.buffer
    return Response(status, version, headers, body, reusable)


def _framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool, bool]:
    """Content-Length, whether the body is chunked, and whether the server closes."""
    content_length: int | None = None
    chunked = False
    close = False
    for name, value in headers:
        if name == b"content-length":
            content_length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"connection":
            close = close or b"close" in (token.strip() for token in value.lower().split(b","))
    return content_length, chunked, close


def _parse_head(head: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    status_line, *lines = head.split(b"\r\n")
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise TransportError("malformed status line")
    status = int(match[2])
    if status < 100:
        raise TransportError("malformed status line")
    return status, match[1], _normalised_fields(lines)


def _normalised_fields(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Header (or trailer) lines as h11 normalises them; refuses what it refuses."""
    fields: list[tuple[bytes, bytes]] = []
    content_length: bytes | None = None
    transfer_encoding = False
    for line in lines:
        match = _HEADER_FIELD.fullmatch(line)
        if match is None:
            raise TransportError("malformed header line")
        name, value = match[1].lower(), match[2]
        if name == b"content-length":
            lengths = {length.strip() for length in value.split(b",")}
            if len(lengths) != 1:
                raise TransportError("conflicting content-length headers")
            value = lengths.pop()
            if _DIGITS.fullmatch(value) is None:
                raise TransportError("malformed content-length")
            if content_length is not None:
                if content_length != value:
                    raise TransportError("conflicting content-length headers")
                continue
            content_length = value
        elif name == b"transfer-encoding":
            value = value.lower()
            if transfer_encoding or value != b"chunked":
                raise TransportError("unsupported transfer-encoding")
            transfer_encoding = True
        fields.append((name, value))
    return fields


async def _read_chunked(incoming: _Incoming, cap: int) -> tuple[bytes, bool]:
    data = bytearray()
    while True:
        size_line = await incoming.until(b"\r\n", "chunk size line")
        match = _CHUNK_SIZE_LINE.fullmatch(size_line + b"\r\n")
        if match is None:
            raise TransportError("malformed chunk size")
        size = int(match[1], 16)
        if size == 0:
            break
        if len(data) + size > cap:
            data += await incoming.exactly(cap - len(data), "chunked body")
            return bytes(data), False
        data += await incoming.exactly(size, "chunked body")
        if await incoming.exactly(2, "chunked body") != b"\r\n":
            raise TransportError("malformed chunk end")
    # Trailer fields (usually none), then an empty line.
    while len(incoming.buffer) < 2:
        if not await incoming.fill():
            raise TransportError("chunked body cut short")
    if incoming.buffer[:2] == b"\r\n":
        del incoming.buffer[:2]
    else:
        _normalised_fields((await incoming.until(b"\r\n\r\n", "trailer")).split(b"\r\n"))
    return bytes(data), True


def make_webhook_client(ssl_context: ssl.SSLContext | None = None) -> PinnedHttp11Client:
    """The client the sender hands to ``ssrf.deliver``."""
    return PinnedHttp11Client(ssl_context)
