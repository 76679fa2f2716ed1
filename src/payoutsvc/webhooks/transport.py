"""The sender's HTTP client: one shape of request (a POST of a small JSON body to a checked
IP address), HTTP/1.1, written and parsed directly on asyncio streams.

A general-purpose client spends most of a webhook attempt's CPU on generality (httpx's
request/response models, auth and event hooks, httpcore's pool scan, h11's state machine);
the sender makes hundreds of attempts per second, so this client does only what an attempt
needs: write the request bytes, read the status line and headers, read at most the capped
number of body bytes, and keep the connection when the exchange was complete.

Connections are reused (keep-alive) only for the same scheme, **hostname** (``Host`` and TLS
server name), address and port: a TLS connection verified for one hostname never carries a
request for another hostname that happens to share its address, which is why stock pools
(keyed by address) are not used with keep-alive. Every attempt still resolves and checks the
name first (``ssrf``), so a connection is only reused towards an address just checked again.
A connection goes back to the pool only after a complete exchange; a response cut short (the
body cap), an HTTP/1.0 answer or ``Connection: close`` from either side closes it. The client
refuses any host that is not an IP literal, so it never resolves a name itself; it follows
no redirects, uses no proxy and keeps no cookies.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from dataclasses import dataclass

__all__ = [
    "HttpReply",
    "PinnedHttp11Client",
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
        request = _request_bytes(target, host_header, headers, body, keep_alive)

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
                limit=MAX_HEADER_BYTES,
            )
        except (OSError, ssl.SSLError) as exc:
            raise TransportConnectError(str(exc) or type(exc).__name__) from None
        return _Connection(reader, writer)

    async def _exchange(
        self, connection: _Connection, request: bytes, cap: int
    ) -> tuple[HttpReply, bool]:
        """Send ``request`` and read the answer; returns it and whether the connection can
        carry another request."""
        received_any = False
        try:
            connection.writer.write(request)
            await connection.writer.drain()
            while True:
                try:
                    head = await connection.reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        raise TransportError("response head cut short") from None
                    raise _Stale from None
                except asyncio.LimitOverrunError:
                    raise TransportError("response head too large") from None
                received_any = True
                status, version, fields = _parse_head(head)
                if status >= 200 or status == 101:
                    break
                # 1xx informational (e.g. 100 Continue): the real answer follows.
            body, complete = await _read_body(connection.reader, status, fields, cap)
        except BaseException as exc:
            connection.close()
            if isinstance(exc, _Stale | TransportError):
                raise
            if isinstance(exc, OSError | ssl.SSLError):
                if not received_any:
                    raise _Stale from None
                raise TransportError(str(exc) or type(exc).__name__) from None
            raise  # cancellation / timeout from the caller
        reusable = (
            complete
            and version == b"HTTP/1.1"
            and b"close" not in fields.get(b"connection", b"").lower()
        )
        retry_after = fields.get(b"retry-after")
        return (
            HttpReply(status, retry_after.decode("latin-1") if retry_after else None, body),
            reusable,
        )


def _request_bytes(
    target: str, host_header: str, headers: dict[str, str], body: bytes, keep_alive: bool
) -> bytes:
    lines = [f"POST {target} HTTP/1.1", f"host: {host_header}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    lines.append(f"content-length: {len(body)}")
    if not keep_alive:
        lines.append("connection: close")
    for line in lines:
        if "\r" in line or "\n" in line:
            raise TransportConnectError("header values may not contain line breaks")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _parse_head(head: bytes) -> tuple[int, bytes, dict[bytes, bytes]]:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise TransportError("malformed status line")
    fields: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise TransportError("malformed header line")
        name = name.lower()
        value = value.strip()
        framing = name in (b"content-length", b"transfer-encoding")
        if framing and name in fields and fields[name] != value:
            raise TransportError(f"conflicting {name.decode()} headers")
        fields[name] = value
    return int(parts[1]), parts[0], fields


async def _read_body(
    reader: asyncio.StreamReader, status: int, fields: dict[bytes, bytes], cap: int
) -> tuple[bytes, bool]:
    """Up to ``cap`` body bytes, and whether the whole body was consumed (only then may the
    connection be reused)."""
    if status in (204, 304) or 100 <= status < 200:
        return b"", True
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        return await _read_chunked(reader, cap)
    length_field = fields.get(b"content-length")
    if length_field is not None:
        if not length_field.isdigit():
            raise TransportError("malformed content-length")
        length = int(length_field)
        wanted = min(length, cap)
        try:
            exact = await reader.readexactly(wanted) if wanted else b""
        except asyncio.IncompleteReadError:
            raise TransportError("response body cut short") from None
        return exact, wanted == length
    # No framing: the body runs to EOF; read only up to the cap.
    data = bytearray()
    while len(data) < cap:
        chunk = await reader.read(min(_READ_CHUNK, cap - len(data)))
        if not chunk:
            break
        data += chunk
    return bytes(data), False


async def _read_chunked(reader: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    data = bytearray()
    try:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise TransportError("malformed chunk size") from None
            if size == 0:
                # Trailers (usually none) end with an empty line.
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return bytes(data), True
            if len(data) + size > cap:
                data += await reader.readexactly(cap - len(data))
                return bytes(data), False
            data += await reader.readexactly(size)
            await reader.readexactly(2)  # the chunk's CRLF
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise TransportError("chunked body cut short") from None


def make_webhook_client(ssl_context: ssl.SSLContext | None = None) -> PinnedHttp11Client:
    """The client the sender hands to ``ssrf.deliver``."""
    return PinnedHttp11Client(ssl_context)
