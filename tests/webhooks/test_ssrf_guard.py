"""SSRF guard and pinned delivery for webhooks.

Nothing here contacts anything but 127.0.0.1: every name is resolved by a fake resolver
(or getaddrinfo with AI_NUMERICHOST, which never queries DNS), and an autouse guard fails
the test if a socket connects anywhere else or a real DNS lookup is attempted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from payoutsvc.webhooks.ssrf import (
    EXCERPT_MAX_CHARS,
    REFUSAL_CODES,
    DeliveryResult,
    UnsafeWebhookUrl,
    check_url,
    check_url_syntax,
    deliver,
    is_public_address,
    post_pinned,
    resolve_and_check,
)
from payoutsvc.webhooks.transport import (
    HttpReply,
    PinnedHttp11Client,
    TransportConnectError,
    make_webhook_client,
)

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"
HEADERS = {"content-type": "application/json", "webhook-id": "evt_1"}
BODY = b'{"type":"payout.succeeded"}'

# ----------------------------------------------------------------------------- guards


@pytest.fixture(autouse=True)
def _only_loopback_network(monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def guarded_connect(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1"):
            raise AssertionError(f"test tried to connect to {address!r}")
        real_connect(self, address)  # type: ignore[arg-type]

    def guarded_getaddrinfo(
        host: object, port: object, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> object:
        if not flags & socket.AI_NUMERICHOST and host not in ("127.0.0.1", "::1"):
            raise AssertionError(f"test tried a real DNS lookup of {host!r}")
        return real_getaddrinfo(host, port, family, type, proto, flags)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)


@dataclass
class FakeResolver:
    table: dict[str, list[str]]
    calls: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int, /) -> Sequence[str]:
        self.calls.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


async def numeric_only_resolver(host: str, port: int, /) -> list[str]:
    """Real getaddrinfo, restricted to numeric hosts (interprets 2130706433, 0x7f.1, ...)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
    )
    return [str(info[4][0]) for info in infos]


class RecordingClient(PinnedHttp11Client):
    """The sender's client with the network taken out: records each pinned POST (address,
    port, Host header, TLS server name, target, headers, body) and answers with ``respond``."""

    def __init__(self, respond: Callable[[dict[str, Any]], HttpReply] | None = None) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []
        self._respond = respond or (lambda request: HttpReply(204, None, b""))

    async def post(self, **request: Any) -> HttpReply:  # type: ignore[override]
        self.requests.append(request)
        return self._respond(request)


# ------------------------------------------------------------------ address classification

NOT_PUBLIC = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "224.0.0.1",
    "239.255.255.250",
    "0.0.0.0",
    "0.1.2.3",
    "255.255.255.255",
    "240.0.0.1",
    "198.18.0.1",
    "198.19.255.255",
    "192.0.2.1",
    "198.51.100.7",
    "203.0.113.9",
    "192.0.0.9",
    "::",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",
    "::8.8.8.8",  # IPv4-compatible: deprecated, always refused
    "fe80::1",
    "fc00::1",
    "fd12:3456:789a::1",
    "fec0::1",
    "ff02::1",
    "2002:7f00:1::",
    "2002:a00:1::1",
    "2002:a9fe:a9fe::",
    "64:ff9b::7f00:1",
    "64:ff9b::a00:1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::1",
    "2001::1",  # Teredo
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2001:db8::1",
    "3fff::1",
    "100::1",
    "5f00::1",
]

PUBLIC = [
    PUBLIC_V4,
    "8.8.8.8",
    "1.1.1.1",
    "172.32.0.1",
    "100.128.0.1",
    PUBLIC_V6,
    "2606:4700:4700::1111",
    "::ffff:93.184.215.14",
    "64:ff9b::5db8:d70e",  # NAT64 of a public IPv4
    "2002:5db8:d70e::1",  # 6to4 of a public IPv4
]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is False


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is True


def test_scoped_ipv6_is_not_public() -> None:
    assert is_public_address(ipaddress.IPv6Address("2606:4700:4700::1111%eth0")) is False


# ------------------------------------------------------------------------ refusal table

REFUSALS = [
    ("https://127.0.0.1/hook", "private_address"),
    ("https://localhost/hook", "private_address"),
    ("https://LOCALHOST:8443/hook", "private_address"),
    ("https://api.localhost/hook", "private_address"),
    ("https://10.0.0.1/hook", "private_address"),
    ("https://172.16.0.1/hook", "private_address"),
    ("https://192.168.1.1/hook", "private_address"),
    ("https://169.254.169.254/latest/meta-data/", "private_address"),
    ("https://100.64.0.1/hook", "private_address"),
    ("https://224.0.0.1/hook", "private_address"),
    ("https://0.0.0.0/hook", "private_address"),
    ("https://[::1]/hook", "private_address"),
    ("https://[::]/hook", "private_address"),
    ("https://[::ffff:127.0.0.1]/hook", "private_address"),
    ("https://[::ffff:7f00:1]/hook", "private_address"),
    ("https://[::127.0.0.1]/hook", "private_address"),
    ("https://[fe80::1]/hook", "private_address"),
    ("https://[fc00::1]/hook", "private_address"),
    ("https://[fec0::1]/hook", "private_address"),
    ("https://[2002:7f00:1::]/hook", "private_address"),
    ("https://[64:ff9b::7f00:1]/hook", "private_address"),
    ("https://[2001::1]/hook", "private_address"),
    ("https://2130706433/hook", "non_canonical_ip"),
    ("https://0x7f.1/hook", "non_canonical_ip"),
    ("https://017700000001/hook", "non_canonical_ip"),
    ("https://127.1/hook", "non_canonical_ip"),
    ("https://0x7f000001/hook", "non_canonical_ip"),
    ("https://1572395042/hook", "non_canonical_ip"),  # integer form of a public address too
    ("https://example.0x10/hook", "non_canonical_ip"),
    ("https://127.0.0.1./hook", "non_canonical_ip"),
    ("https://0177.0.0.1/hook", "invalid_url"),  # httpx itself rejects leading zeros
    ("http://example.com/hook", "https_required"),
    ("ftp://example.com/hook", "https_required"),
    ("example.com/hook", "https_required"),
    ("https://user:pass@example.com/hook", "credentials_in_url"),
    ("https://user@example.com/hook", "credentials_in_url"),
    ("https://:pass@example.com/hook", "credentials_in_url"),
    ("https:///hook", "invalid_url"),
    ("https://exa mple.com/hook", "invalid_url"),
    ("https://example.com\r\n/hook", "invalid_url"),
    ("https://example.com:0/hook", "invalid_url"),
    ("https://example.com:70000/hook", "invalid_url"),
    ("https://-bad-.example.com/hook", "invalid_url"),
    ("https://example.com./hook", "invalid_url"),
    ("https://[fe80::1%25eth0]/hook", "invalid_url"),
    ("https://" + "a" * 2048 + ".com/", "invalid_url"),
    ("", "invalid_url"),
]

# Names a hostile DNS could return; the fake resolver maps them, nothing is looked up.
HOSTILE_DNS = {
    "evil.example": ["10.0.0.5"],
    "metadata.example": ["169.254.169.254"],
    "mixed.example": [PUBLIC_V4, "127.0.0.1"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "nat64.example": ["64:ff9b::a00:5"],
    "sixtofour.example": ["2002:c0a8:101::1"],
    "public.example": [PUBLIC_V4, PUBLIC_V6],
    "localhost": ["127.0.0.1", "::1"],
}


@pytest.mark.parametrize(("url", "code"), REFUSALS)
async def test_refusal_table(url: str, code: str) -> None:
    assert code in REFUSAL_CODES
    resolver = FakeResolver(dict(HOSTILE_DNS))
    with pytest.raises(UnsafeWebhookUrl) as info:
        await check_url(url, allow_private=False, resolver=resolver)
    assert info.value.code == code
    assert info.value.message
    assert isinstance(info.value, ValueError)
    assert resolver.calls == []  # refused before any resolution


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "metadata.example",
        "mixed.example",
        "mapped.example",
        "nat64.example",
        "sixtofour.example",
        "localhost",
    ],
)
async def test_hostile_dns_refused(host: str) -> None:
    resolver = FakeResolver(dict(HOSTILE_DNS))
    with pytest.raises(UnsafeWebhookUrl) as info:
        await resolve_and_check(host, 443, allow_private=False, resolver=resolver)
    assert info.value.code == "private_address"
    assert info.value.message == "resolves to a non-public address"
    assert resolver.calls == [host]
    # The same names are fine when private targets are allowed (dev/test).
    assert await resolve_and_check(host, 443, allow_private=True, resolver=resolver)


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "017700000001", "127.1", "0177.0.0.1"])
async def test_numeric_hosts_are_interpreted_by_getaddrinfo_and_refused(host: str) -> None:
    # Defence in depth: even past the syntax check, resolution reveals 127.0.0.1.
    assert await numeric_only_resolver(host, 80) == ["127.0.0.1"]
    with pytest.raises(UnsafeWebhookUrl) as info:
        await resolve_and_check(host, 80, allow_private=False, resolver=numeric_only_resolver)
    assert info.value.code == "private_address"


async def test_unresolvable_host() -> None:
    with pytest.raises(UnsafeWebhookUrl) as info:
        await resolve_and_check("nxdomain.example", 443, False, FakeResolver({}))
    assert info.value.code == "unresolvable_host"
    with pytest.raises(UnsafeWebhookUrl) as info:
        await resolve_and_check("empty.example", 443, False, FakeResolver({"empty.example": []}))
    assert info.value.code == "unresolvable_host"
    with pytest.raises(UnsafeWebhookUrl) as info:
        await resolve_and_check("junk.example", 443, False, FakeResolver({"junk.example": ["x"]}))
    assert info.value.code == "unresolvable_host"


async def test_public_address_allowed_without_connecting() -> None:
    resolver = FakeResolver(dict(HOSTILE_DNS))
    checked = await check_url(
        "https://public.example/hooks/payouts?x=1", allow_private=False, resolver=resolver
    )
    assert checked.host == "public.example"
    assert checked.port == 443
    assert checked.addresses == (PUBLIC_V4, PUBLIC_V6)
    literal = await check_url(f"https://{PUBLIC_V4}:8443/h", allow_private=False)
    assert literal.addresses == (PUBLIC_V4,)
    assert literal.port == 8443
    v6 = await check_url(f"https://[{PUBLIC_V6}]/h", allow_private=False)
    assert v6.addresses == (PUBLIC_V6,)


def test_syntax_with_allow_private() -> None:
    assert check_url_syntax("http://127.0.0.1:8080/h", allow_private=True).port == 8080
    assert check_url_syntax("http://localhost/h", allow_private=True).host == "localhost"
    assert check_url_syntax("https://[::1]/h", allow_private=True).host == "::1"
    for url, code in [
        ("ftp://127.0.0.1/h", "unsupported_scheme"),
        ("http://u:p@127.0.0.1/h", "credentials_in_url"),
        ("http://2130706433/h", "non_canonical_ip"),
    ]:
        with pytest.raises(UnsafeWebhookUrl) as info:
            check_url_syntax(url, allow_private=True)
        assert info.value.code == code


def test_idn_host_is_punycoded() -> None:
    parsed = check_url_syntax("https://bücher.example/h", allow_private=False)
    assert parsed.raw_host == b"xn--bcher-kva.example"


# ------------------------------------------------------------------- deliver, no network


async def test_deliver_refuses_private_resolution_without_connecting() -> None:
    client = RecordingClient()
    resolver = FakeResolver({"hooks.evil.example": ["10.0.0.5"]})
    result = await deliver(
        "https://hooks.evil.example/webhook",
        HEADERS,
        BODY,
        allow_private=False,
        timeout=5.0,
        client=client,
        resolver=resolver,
    )
    assert result.status_code is None
    assert result.error == "refused: resolves to a non-public address"
    assert result.error_code == "private_address"
    assert not result.ok
    assert resolver.calls == ["hooks.evil.example"]
    assert client.requests == []


@pytest.mark.parametrize(
    ("url", "error_code"),
    [
        ("http://public.example/h", "https_required"),
        ("https://169.254.169.254/latest", "private_address"),
        ("https://2130706433/", "non_canonical_ip"),
        ("https://nxdomain.example/", "unresolvable_host"),
    ],
)
async def test_deliver_returns_refusals(url: str, error_code: str) -> None:
    client = RecordingClient()
    result = await deliver(
        url,
        HEADERS,
        BODY,
        allow_private=False,
        timeout=5.0,
        client=client,
        resolver=FakeResolver(dict(HOSTILE_DNS)),
    )
    assert result.status_code is None
    assert result.error_code == error_code
    assert result.error is not None
    assert client.requests == []


async def test_deliver_pins_the_checked_address() -> None:
    client = RecordingClient(lambda request: HttpReply(200, None, b"ok"))
    resolver = FakeResolver({"hooks.example.com": [PUBLIC_V4]})
    result = await deliver(
        "https://hooks.example.com:8443/in?tenant=7#frag",
        {**HEADERS, "Host": "attacker.example", "Connection": "keep-alive"},
        BODY,
        allow_private=False,
        timeout=5.0,
        client=client,
        resolver=resolver,
    )
    assert result.ok
    assert result.response_excerpt == "ok"
    [request] = client.requests
    assert (request["scheme"], request["address"], request["port"]) == ("https", PUBLIC_V4, 8443)
    assert request["target"] == "/in?tenant=7"
    assert request["host_header"] == "hooks.example.com:8443"  # never the caller's Host
    assert request["server_name"] == "hooks.example.com"  # SNI and certificate check
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert "host" not in headers
    assert "connection" not in headers
    assert request["keep_alive"] is False  # the client then sends Connection: close
    assert headers["accept-encoding"] == "identity"
    assert headers["webhook-id"] == "evt_1"
    assert request["body"] == BODY
    assert resolver.calls == ["hooks.example.com"]  # resolved exactly once


async def test_deliver_pins_ipv6() -> None:
    client = RecordingClient()
    resolver = FakeResolver({"v6.example.com": [PUBLIC_V6]})
    result = await deliver(
        "https://v6.example.com/h",
        HEADERS,
        BODY,
        allow_private=False,
        timeout=5.0,
        client=client,
        resolver=resolver,
    )
    assert result.status_code == 204
    [request] = client.requests
    assert request["address"] == PUBLIC_V6
    assert request["host_header"] == "v6.example.com"


async def test_deliver_falls_back_to_next_address_on_connect_error() -> None:
    def respond(request: dict[str, Any]) -> HttpReply:
        if request["address"] == PUBLIC_V6:
            raise TransportConnectError("Network is unreachable")
        return HttpReply(202, None, b"")

    client = RecordingClient(respond)
    result = await deliver(
        "https://public.example/h",
        HEADERS,
        BODY,
        allow_private=False,
        timeout=5.0,
        client=client,
        resolver=FakeResolver({"public.example": [PUBLIC_V6, PUBLIC_V4]}),
    )
    assert result.status_code == 202
    assert result.ok
    assert [r["address"] for r in client.requests] == [PUBLIC_V6, PUBLIC_V4]


# ---------------------------------------------------------------- real local HTTP server


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class LocalServer:
    port: int
    received: list[Received]
    server_names: list[str | None]

    def url(self, path: str, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


def _response(status: str, body: bytes = b"", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{extra}connection: close\r\n\r\n"
    return head.encode() + body


async def _serve_one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list[Received]
) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, path, _ = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        if line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    log.append(Received(method, path, headers, body))

    if path.startswith("/ok"):
        writer.write(_response("200 OK", b'{"received":true}'))
    elif path == "/redirect":
        writer.write(_response("302 Found", b"moved", "location: /ok-after-redirect\r\n"))
    elif path == "/unavailable":
        writer.write(_response("503 Service Unavailable", b"later", "retry-after: 120\r\n"))
    elif path == "/binary":
        writer.write(_response("500 Internal Server Error", b"bad\x00\xff\xfebytes"))
    elif path == "/slow":
        await asyncio.sleep(30)
    elif path == "/slow-body":
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(30)
    elif path == "/huge":
        total = 100 * 1024 * 1024
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n".encode())
        chunk = b"x" * 65536
        for _ in range(total // len(chunk)):
            writer.write(chunk)
            await writer.drain()
    else:
        writer.write(_response("404 Not Found"))
    await writer.drain()


@contextlib.asynccontextmanager
async def _local_server(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[LocalServer]:
    received: list[Received] = []
    server_names: list[str | None] = []
    tasks: set[asyncio.Task[object]] = set()
    if ssl_context is not None:
        ssl_context.sni_callback = lambda sock, name, ctx: server_names.append(name)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await _serve_one(reader, writer, received)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield LocalServer(port, received, server_names)
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@pytest.fixture
async def local_server() -> AsyncIterator[LocalServer]:
    async with _local_server() as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[PinnedHttp11Client]:
    pinned = make_webhook_client()
    try:
        yield pinned
    finally:
        await pinned.aclose()


async def _deliver_local(client: PinnedHttp11Client, url: str, **kwargs: object) -> DeliveryResult:
    options: dict[str, object] = {"allow_private": True, "timeout": 5.0, "client": client}
    options.update(kwargs)
    return await deliver(url, HEADERS, BODY, **options)  # type: ignore[arg-type]


async def test_local_delivery_succeeds(
    local_server: LocalServer, client: PinnedHttp11Client
) -> None:
    result = await _deliver_local(client, local_server.url("/ok"))
    assert result.ok
    assert result.status_code == 200
    assert result.error is None
    assert result.error_code is None
    assert result.response_excerpt == '{"received":true}'
    assert result.latency_ms > 0
    [received] = local_server.received
    assert received.method == "POST"
    assert received.body == BODY
    assert received.headers["webhook-id"] == "evt_1"
    assert received.headers["content-type"] == "application/json"
    assert received.headers["host"] == f"127.0.0.1:{local_server.port}"


async def test_local_delivery_by_name_uses_resolved_address(
    local_server: LocalServer, client: PinnedHttp11Client
) -> None:
    resolver = FakeResolver({"receiver.test": ["127.0.0.1"]})
    result = await _deliver_local(
        client, local_server.url("/ok", host="receiver.test"), resolver=resolver
    )
    assert result.ok
    assert local_server.received[0].headers["host"] == f"receiver.test:{local_server.port}"
    assert resolver.calls == ["receiver.test"]


async def test_local_delivery_refused_when_private_not_allowed(
    local_server: LocalServer, client: PinnedHttp11Client
) -> None:
    result = await _deliver_local(
        client, local_server.url("/ok", scheme="https"), allow_private=False
    )
    assert result.error_code == "private_address"
    assert local_server.received == []


async def test_redirect_is_not_followed(
    local_server: LocalServer, client: PinnedHttp11Client
) -> None:
    result = await _deliver_local(client, local_server.url("/redirect"))
    assert result.status_code == 302
    assert not result.ok
    assert result.error == "redirect not followed (HTTP 302)"
    assert result.error_code == "redirect"
    assert [r.path for r in local_server.received] == ["/redirect"]


async def test_non_2xx_reports_status_and_retry_after(
    local_server: LocalServer, client: PinnedHttp11Client
) -> None:
    result = await _deliver_local(client, local_server.url("/unavailable"))
    assert result.status_code == 503
    assert result.error == "HTTP 503"
    assert result.error_code == "http_status"
    assert result.retry_after == "120"
    assert result.response_excerpt == "later"


async def test_binary_body_is_made_storable(
    local_server: LocalServer, client: PinnedHttp11Client
) -> None:
    result = await _deliver_local(client, local_server.url("/binary"))
    assert result.status_code == 500
    assert "\x00" not in result.response_excerpt
    assert result.response_excerpt.startswith("bad")


async def test_slow_server_times_out(local_server: LocalServer, client: PinnedHttp11Client) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await _deliver_local(client, local_server.url("/slow"), timeout=0.5)
    assert loop.time() - started < 3
    assert result.status_code is None
    assert result.error == "timeout after 0.5s"
    assert result.error_code == "timeout"
    assert 400 <= result.latency_ms < 3000


async def test_slow_body_times_out(local_server: LocalServer, client: PinnedHttp11Client) -> None:
    result = await _deliver_local(client, local_server.url("/slow-body"), timeout=0.5)
    assert result.error == "timeout after 0.5s"
    assert not result.ok


async def test_huge_response_is_truncated(
    local_server: LocalServer, client: PinnedHttp11Client
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await _deliver_local(client, local_server.url("/huge"))
    assert loop.time() - started < 5  # did not download 100 MiB
    assert result.ok
    assert result.response_excerpt == "x" * EXCERPT_MAX_CHARS


async def test_connection_refused_is_an_error_string(client: PinnedHttp11Client) -> None:
    async with _local_server() as server:
        url = server.url("/ok")
    result = await _deliver_local(client, url)  # server is gone now
    assert result.status_code is None
    assert result.error_code == "connect_error"
    assert result.error is not None
    assert result.error.startswith("connection error")


async def test_post_pinned_directly(local_server: LocalServer, client: PinnedHttp11Client) -> None:
    # The URL names a host that is never resolved; the connection goes to the given IP.
    result = await post_pinned(
        client,
        f"http://never-resolved.invalid:{local_server.port}/ok",
        "127.0.0.1",
        HEADERS,
        BODY,
        timeout=5.0,
        max_response_bytes=5,
    )
    assert result.ok
    assert result.response_excerpt == '{"rec'
    assert local_server.received[0].headers["host"] == f"never-resolved.invalid:{local_server.port}"


# -------------------------------------------------------------------- TLS to pinned IP


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.example.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.example.test")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_to_pinned_ip_uses_hostname_for_sni_and_verification(
    tls_files: tuple[Path, Path],
) -> None:
    cert_path, key_path = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_path, key_path)
    resolver = FakeResolver(
        {"hooks.example.test": ["127.0.0.1"], "other.example.test": ["127.0.0.1"]}
    )
    client = make_webhook_client(ssl.create_default_context(cafile=str(cert_path)))
    async with _local_server(server_ctx) as server:
        ok = await _deliver_local(
            client, server.url("/ok", scheme="https", host="hooks.example.test"), resolver=resolver
        )
        assert ok.ok, ok.error
        assert server.server_names == ["hooks.example.test"]
        assert server.received[0].headers["host"] == f"hooks.example.test:{server.port}"

        # The certificate is checked against the URL's hostname, not the pinned IP.
        mismatch = await _deliver_local(
            client, server.url("/ok", scheme="https", host="other.example.test"), resolver=resolver
        )
        assert mismatch.status_code is None
        assert mismatch.error_code == "connect_error"
        assert "CERTIFICATE_VERIFY_FAILED" in (mismatch.error or ""), mismatch.error
        assert len(server.received) == 1
    await client.aclose()
