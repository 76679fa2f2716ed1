"""SSRF guard and pinned HTTP delivery for webhook endpoints.

Endpoint URLs are chosen by API clients, so a delivery must never reach the service's own
network: loopback, private ranges, cloud metadata (169.254.169.254), and every encoding of
those (IPv4-mapped/-compatible IPv6, 6to4, NAT64, integer/octal/hex hosts, ...).

The flow used by :func:`deliver`:

1. :func:`check_url_syntax` -- scheme (https unless private targets are allowed), no
   credentials, a well-formed host/port, canonical IP literals only, IP literals public.
2. :func:`resolve_and_check` -- resolve the host once and refuse if *any* address is not
   public (:func:`is_public_address`).
3. :func:`post_pinned` -- POST to the checked IP itself (the URL host is replaced by the IP,
   the ``Host`` header and TLS SNI / certificate verification keep the hostname), so there
   is no second DNS lookup an attacker could rebind.  Redirects are never followed, the
   response body read is bounded, and every failure becomes a :class:`DeliveryResult`.

``allow_private=True`` (``PAYOUTSVC_WEBHOOK_ALLOW_PRIVATE=true``, dev/test only) permits
``http://`` and non-public addresses; the other checks still apply.

:func:`deliver` posts through the sender's own client
(:func:`payoutsvc.webhooks.transport.make_webhook_client`): no proxy (a proxy would do its
own DNS lookup), connections reused only for the same hostname *and* address (so a TLS
session verified for one hostname never carries a request for another that shares its IP),
no cookies, no redirects followed.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final, Protocol

import httpx

from payoutsvc.webhooks.transport import (
    PinnedHttp11Client,
    TransportConnectError,
    TransportError,
)

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "EXCERPT_MAX_CHARS",
    "REFUSAL_CODES",
    "CheckedUrl",
    "DeliveryResult",
    "Resolver",
    "UnsafeWebhookUrl",
    "check_url",
    "check_url_syntax",
    "deliver",
    "effective_port",
    "is_public_address",
    "post_pinned",
    "resolve_and_check",
    "system_resolver",
]

DEFAULT_MAX_RESPONSE_BYTES: Final = 65536
EXCERPT_MAX_CHARS: Final = 4096
MAX_URL_LENGTH: Final = 2048
MAX_ADDRESS_ATTEMPTS: Final = 3
_MAX_RETRY_AFTER_CHARS: Final = 256

#: Every ``UnsafeWebhookUrl.code`` value (stable; safe to return to API clients).
REFUSAL_CODES: Final = frozenset(
    {
        "invalid_url",  # unparseable, too long, bad host/port syntax, IPv6 zone id
        "https_required",  # not https while private targets are not allowed
        "unsupported_scheme",  # neither http nor https (private targets allowed)
        "credentials_in_url",  # user:password@ in the URL
        "non_canonical_ip",  # integer/octal/hex/short IPv4 forms such as 2130706433, 0x7f.1
        "private_address",  # host is / resolves to a non-public address
        "unresolvable_host",  # DNS failure or no usable address
    }
)


class UnsafeWebhookUrl(ValueError):
    """A webhook URL that must not be contacted; ``code`` is one of :data:`REFUSAL_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# --------------------------------------------------------------------------------------
# Address classification
# --------------------------------------------------------------------------------------

_BLOCKED_V4: Final[tuple[IPv4Network, ...]] = tuple(
    IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network", incl. unspecified 0.0.0.0
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, incl. cloud metadata 169.254.169.254
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, incl. broadcast 255.255.255.255
    )
)

# Only global unicast space is acceptable for IPv6 (after unwrapping embedded IPv4 forms).
_GLOBAL_UNICAST_V6: Final = IPv6Network("2000::/3")
_NAT64_WELL_KNOWN: Final = IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE: Final = IPv6Network("::/96")
_BLOCKED_V6: Final[tuple[IPv6Network, ...]] = tuple(
    IPv6Network(net)
    for net in (
        "2001::/23",  # IETF protocol assignments: Teredo 2001::/32, benchmarking, ORCHID
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
    )
)


def _is_public_v4(ip: IPv4Address) -> bool:
    if any(ip in net for net in _BLOCKED_V4):
        return False
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def is_public_address(ip: IPv4Address | IPv6Address) -> bool:
    """Whether ``ip`` is a globally routable unicast address that webhooks may reach.

    IPv6 forms that embed an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64
    ``64:ff9b::a.b.c.d``, 6to4 ``2002:AABB:CCDD::``) are judged by the embedded address;
    IPv4-compatible ``::a.b.c.d``, Teredo, site-local, ULA, link-local, multicast and
    anything outside 2000::/3 are refused outright.
    """
    if isinstance(ip, IPv4Address):
        return _is_public_v4(ip)
    if ip.scope_id:
        return False
    if ip.ipv4_mapped is not None:
        return _is_public_v4(ip.ipv4_mapped)
    if ip in _NAT64_WELL_KNOWN:
        return _is_public_v4(IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip in _IPV4_COMPATIBLE:  # also covers :: and ::1
        return False
    if ip.teredo is not None:
        return False
    if ip.sixtofour is not None:
        return _is_public_v4(ip.sixtofour)
    if ip not in _GLOBAL_UNICAST_V6 or any(ip in net for net in _BLOCKED_V6):
        return False
    return not (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_site_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_private
        or ip.is_reserved
    )


# --------------------------------------------------------------------------------------
# URL syntax
# --------------------------------------------------------------------------------------

_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


def _ends_in_number(host: str) -> bool:
    """WHATWG URL rule: a host whose last label is numeric is parsed as an IPv4 address."""
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()
    return bool(_NUMERIC_LABEL.fullmatch(labels[-1]))


def effective_port(url: httpx.URL) -> int:
    """The explicit port of ``url`` or the scheme default (443 for https, 80 for http)."""
    if url.port is not None:
        return url.port
    return 443 if url.scheme == "https" else 80


def _refuse_private(host: str) -> UnsafeWebhookUrl:
    return UnsafeWebhookUrl("private_address", f"host {host} is a non-public address")


@functools.lru_cache(maxsize=4096)  # pure; the sender checks the same few URLs all day
def check_url_syntax(url: str, allow_private: bool) -> httpx.URL:
    """Validate a webhook URL without any network access and return it parsed.

    Raises :class:`UnsafeWebhookUrl` with code ``invalid_url``, ``https_required``,
    ``unsupported_scheme``, ``credentials_in_url``, ``non_canonical_ip`` or
    ``private_address`` (an IP literal that is not public, or ``localhost``).
    """
    if not isinstance(url, str) or not url:
        raise UnsafeWebhookUrl("invalid_url", "URL is required")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeWebhookUrl("invalid_url", f"URL longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise UnsafeWebhookUrl("invalid_url", "URL contains whitespace or control characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise UnsafeWebhookUrl("invalid_url", f"URL cannot be parsed: {exc}") from None

    scheme = parsed.scheme
    if not allow_private:
        if scheme != "https":
            raise UnsafeWebhookUrl("https_required", "webhook URLs must use https")
    elif scheme not in ("http", "https"):
        raise UnsafeWebhookUrl("unsupported_scheme", "webhook URLs must use https or http")

    if parsed.userinfo:
        raise UnsafeWebhookUrl(
            "credentials_in_url", "webhook URLs must not contain a user name or password"
        )

    try:
        host = parsed.raw_host.decode("ascii").lower()
    except UnicodeDecodeError:
        raise UnsafeWebhookUrl("invalid_url", "host is not valid") from None
    if not host:
        raise UnsafeWebhookUrl("invalid_url", "URL has no host")

    port = parsed.port
    if port is not None and not 1 <= port <= 65535:
        raise UnsafeWebhookUrl("invalid_url", "port must be between 1 and 65535")
    _check_host(host, allow_private)
    return parsed


def _check_host(host: str, allow_private: bool) -> None:
    """The host part of :func:`check_url_syntax`: an IP literal must be canonical (and public
    unless private addresses are allowed), anything else a valid DNS name."""
    if ":" in host:  # IPv6 literal (httpx strips the brackets)
        if "%" in host:
            raise UnsafeWebhookUrl("invalid_url", "IPv6 zone identifiers are not allowed")
        try:
            ip6 = IPv6Address(host)
        except ValueError:
            raise UnsafeWebhookUrl("invalid_url", "host is not a valid IPv6 address") from None
        if not allow_private and not is_public_address(ip6):
            raise _refuse_private(host)
        return

    if _ends_in_number(host):
        # Only the canonical dotted quad is accepted: 2130706433, 0x7f.1, 017700000001,
        # 127.1 and 0177.0.0.1 all mean 127.0.0.1 to getaddrinfo/inet_aton.
        try:
            ip4 = IPv4Address(host)
        except ValueError:
            ip4 = None
        if ip4 is None or str(ip4) != host:
            raise UnsafeWebhookUrl(
                "non_canonical_ip",
                "numeric hosts must be written as a canonical dotted-quad IPv4 address",
            )
        if not allow_private and not is_public_address(ip4):
            raise _refuse_private(host)
        return

    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
        raise UnsafeWebhookUrl("invalid_url", "host is not a valid DNS name")
    if not allow_private and (host == "localhost" or host.endswith(".localhost")):
        raise _refuse_private(host)


# --------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------


class Resolver(Protocol):
    """Resolves ``host`` to IP address strings (like ``getaddrinfo``; injectable in tests).

    May raise ``OSError`` (e.g. ``socket.gaierror``) when the name does not resolve.
    """

    async def __call__(self, host: str, port: int, /) -> Sequence[str]: ...


def installed_resolver(app_state: object) -> Resolver | None:
    """The DNS resolver the guard uses for calls an HTTP request makes (webhook endpoints,
    helpdesk connectors): None in production; tests and tools install their own on the
    app's state as ``webhook_resolver``."""
    resolver: Resolver | None = getattr(app_state, "webhook_resolver", None)
    return resolver


async def system_resolver(host: str, port: int, /) -> list[str]:
    """The default :class:`Resolver`: the event loop's ``getaddrinfo`` (TCP addresses)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


# Address objects are immutable; the sender parses the same few addresses all day.
_parse_ip = functools.lru_cache(maxsize=4096)(ipaddress.ip_address)


def _canonical_ip_literal(host: str) -> IPv4Address | IPv6Address | None:
    try:
        ip = _parse_ip(host)
    except ValueError:
        return None
    if isinstance(ip, IPv4Address) and str(ip) != host:
        return None
    return ip


async def resolve_and_check(
    host: str, port: int, allow_private: bool, resolver: Resolver | None = None
) -> list[str]:
    """Resolve ``host`` once and return its addresses, all of them checked.

    A canonical IP literal is used as is (no lookup).  Raises :class:`UnsafeWebhookUrl`
    ``unresolvable_host`` when resolution fails or yields nothing usable, and
    ``private_address`` when *any* address is not public (unless ``allow_private``).
    """
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    literal = _canonical_ip_literal(name)
    if literal is not None:
        raw: Sequence[str] = [name]
    else:
        lookup = resolver if resolver is not None else system_resolver
        try:
            raw = await lookup(name, port)
        except (OSError, UnicodeError) as exc:
            raise UnsafeWebhookUrl("unresolvable_host", f"cannot resolve {name}: {exc}") from None

    addresses: list[IPv4Address | IPv6Address] = []
    for text in raw:
        try:
            ip = _parse_ip(text)
        except ValueError:
            raise UnsafeWebhookUrl(
                "unresolvable_host", f"{name} resolved to an unusable address"
            ) from None
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise UnsafeWebhookUrl("unresolvable_host", f"{name} did not resolve to any address")
    if not allow_private and not all(is_public_address(ip) for ip in addresses):
        # The address itself is deliberately not echoed (it may be internal).
        raise UnsafeWebhookUrl("private_address", "resolves to a non-public address")
    return [str(ip) for ip in addresses]


@dataclass(frozen=True, slots=True)
class CheckedUrl:
    url: httpx.URL
    host: str
    port: int
    addresses: tuple[str, ...]


async def check_url(
    url: str, *, allow_private: bool, resolver: Resolver | None = None
) -> CheckedUrl:
    """:func:`check_url_syntax` + :func:`resolve_and_check` (e.g. when an endpoint is saved)."""
    parsed = check_url_syntax(url, allow_private)
    host = parsed.raw_host.decode("ascii")
    port = effective_port(parsed)
    addresses = await resolve_and_check(host, port, allow_private, resolver)
    return CheckedUrl(url=parsed, host=host, port=port, addresses=tuple(addresses))


# --------------------------------------------------------------------------------------
# Delivery
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """Outcome of one delivery attempt; never raised, always returned.

    ``status_code`` is None when no response was received.  ``error`` is None only for a
    2xx response; otherwise it is a short human-readable reason ("timeout after 15.0s",
    "redirect not followed (HTTP 302)", "HTTP 503", "refused: resolves to a non-public
    address", ...).  ``error_code`` is a stable machine-readable counterpart: "timeout",
    "connect_error", "protocol_error", "redirect", "http_status", or a
    :data:`REFUSAL_CODES` value.  ``retry_after`` is the raw ``Retry-After`` header.
    """

    status_code: int | None
    latency_ms: float
    error: str | None
    response_excerpt: str = ""
    retry_after: str | None = None
    error_code: str | None = None
    # The whole body read (up to max_response_bytes) of a 2xx answer, for a request whose
    # follow-up is built from it (render.RenderedRequest.then); never stored.
    response_body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


def _excerpt(raw: bytes) -> str:
    text = raw[: EXCERPT_MAX_CHARS * 4].decode("utf-8", errors="replace")[:EXCERPT_MAX_CHARS]
    return text.replace("\x00", "\ufffd")  # NUL cannot be stored in PostgreSQL text


def _elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


_HOP_HEADERS: Final = frozenset(
    {"host", "connection", "content-length", "transfer-encoding", "accept-encoding"}
)


async def post_pinned(
    client: PinnedHttp11Client,
    url: httpx.URL | str,
    ip: str,
    headers: Mapping[str, str],
    body: bytes,
    timeout: float,  # noqa: ASYNC109 -- part of the contract; enforced with asyncio.timeout
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    keep_alive: bool = False,
    method: str = "POST",
) -> DeliveryResult:
    """POST (or ``method``) ``body`` to ``url`` over a connection to ``ip`` (no DNS lookup
    happens here).

    The request line goes to ``ip`` with the original ``Host`` header; for https, TLS SNI
    and certificate verification use the URL's hostname (httpcore's ``sni_hostname``
    request extension).  Redirects are not followed; at most ``max_response_bytes`` of
    the body are read; ``timeout`` bounds the whole exchange.  ``ip`` must already have
    been checked (:func:`resolve_and_check`).

    ``keep_alive=True`` leaves out ``Connection: close``; use it only with a client that
    reuses a connection for the same hostname *and* address alone (the sender's
    :class:`~payoutsvc.webhooks.transport.PinnedHttp11Client`), never with a stock pool,
    which keys connections by address.
    """
    target = httpx.URL(url) if isinstance(url, str) else url
    pinned = _parse_ip(ip)  # ValueError for a non-IP: a programming error
    host = target.raw_host.decode("ascii")

    request_headers = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
    request_headers["accept-encoding"] = "identity"
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            reply = await client.post(
                scheme=target.scheme,
                address=str(pinned),
                port=effective_port(target),
                host_header=target.netloc.decode("ascii"),
                server_name=host,
                target=(target.raw_path or b"/").decode("ascii"),
                headers=request_headers,
                body=body,
                max_response_bytes=max_response_bytes,
                keep_alive=keep_alive,
                method=method,
            )
    except (TimeoutError, TransportError, OSError) as exc:
        return _not_answered(exc, _elapsed_ms(start), timeout)
    return _answered(reply.status_code, reply.retry_after, reply.body, _elapsed_ms(start))


def _not_answered(exc: Exception, latency: float, timeout: float) -> DeliveryResult:
    """No (complete) answer: a timeout, no connection (certainly not received), or a broken
    exchange."""
    if isinstance(exc, TimeoutError):
        return DeliveryResult(
            None, latency, f"timeout after {float(timeout)}s", "", None, "timeout"
        )
    if isinstance(exc, TransportConnectError):
        return DeliveryResult(None, latency, f"connection error: {exc}", "", None, "connect_error")
    error = f"{type(exc).__name__}: {exc}"
    return DeliveryResult(None, latency, error, "", None, "protocol_error")


def _answered(status: int, retry_after: str | None, raw: bytes, latency: float) -> DeliveryResult:
    """A receiver's answer as a delivery result: 2xx delivered, anything else a failure
    (a redirect is never followed)."""
    if retry_after is not None:
        retry_after = retry_after[:_MAX_RETRY_AFTER_CHARS]
    excerpt = _excerpt(raw)
    if 200 <= status < 300:
        return DeliveryResult(status, latency, None, excerpt, retry_after, None, raw)
    if 300 <= status < 400:
        error, code = f"redirect not followed (HTTP {status})", "redirect"
    else:
        error, code = f"HTTP {status}", "http_status"
    return DeliveryResult(status, latency, error, excerpt, retry_after, code)


def _refused(exc: UnsafeWebhookUrl, start: float) -> DeliveryResult:
    prefix = "unresolvable host" if exc.code == "unresolvable_host" else "refused"
    return DeliveryResult(None, _elapsed_ms(start), f"{prefix}: {exc.message}", "", None, exc.code)


async def deliver(
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    allow_private: bool,
    timeout: float,  # noqa: ASYNC109 -- part of the contract; enforced with asyncio.timeout
    client: PinnedHttp11Client,
    resolver: Resolver | None = None,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    keep_alive: bool = False,
    method: str = "POST",
) -> DeliveryResult:
    """Check ``url``, resolve it once, and POST (or ``method``) to a checked address.

    Refusals (bad URL, non-public address, DNS failure) come back as a result with
    ``status_code=None`` -- e.g. error "refused: resolves to a non-public address" --
    without any connection being made.  DNS resolution and the HTTP exchange are each
    bounded by ``timeout``.  If connecting to the first address fails, up to
    :data:`MAX_ADDRESS_ATTEMPTS` addresses are tried (e.g. IPv6 then IPv4).
    """
    start = time.perf_counter()
    try:
        parsed = check_url_syntax(url, allow_private)
        host = parsed.raw_host.decode("ascii")
        async with asyncio.timeout(timeout):
            addresses = await resolve_and_check(
                host, effective_port(parsed), allow_private, resolver
            )
    except UnsafeWebhookUrl as exc:
        return _refused(exc, start)
    except TimeoutError:
        return DeliveryResult(
            None,
            _elapsed_ms(start),
            f"timeout after {float(timeout)}s resolving host",
            "",
            None,
            "timeout",
        )

    result: DeliveryResult | None = None
    for ip in addresses[:MAX_ADDRESS_ATTEMPTS]:
        result = await post_pinned(
            client, parsed, ip, headers, body, timeout, max_response_bytes, keep_alive, method
        )
        if result.error_code != "connect_error":
            break
    assert result is not None  # addresses is never empty
    return result
