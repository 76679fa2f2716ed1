"""The sender's HTTP transport through ``ssrf.deliver``, against real servers on loopback:
connections are reused only for the same hostname and address, TLS is verified against the
hostname while connecting to the checked address, and nothing but IP literals is dialled."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from payoutsvc.webhooks.ssrf import DEFAULT_MAX_RESPONSE_BYTES, DeliveryResult, deliver
from payoutsvc.webhooks.transport import (
    MAX_HEADER_BYTES,
    PinnedHttp11Client,
    TransportConnectError,
    make_webhook_client,
)
from tests.webhooks.receiver import Receiver, ScriptedServer, always

BODY = b'{"type":"payout.created"}'
HEADERS = {"content-type": "application/json", "webhook-id": "evt_test"}


async def to_loopback(host: str, port: int, /) -> Sequence[str]:
    """Every name resolves to 127.0.0.1 (the tests' stand-in for a checked public address)."""
    return ["127.0.0.1"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def client() -> AsyncIterator[PinnedHttp11Client]:
    http = make_webhook_client()
    try:
        yield http
    finally:
        await http.aclose()


async def send(
    client: PinnedHttp11Client, url: str, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
) -> DeliveryResult:
    return await deliver(
        url,
        HEADERS,
        BODY,
        allow_private=True,
        timeout=5.0,
        client=client,
        resolver=to_loopback,
        max_response_bytes=max_response_bytes,
        keep_alive=True,
    )


async def test_connections_are_reused_only_for_the_same_hostname_and_address(
    receiver: Receiver, client: PinnedHttp11Client
) -> None:
    port = receiver.port
    for url in (
        f"http://a.test:{port}/one",
        f"http://a.test:{port}/one",
        f"http://b.test:{port}/one",
        f"http://127.0.0.1:{port}/one",
        f"http://a.test:{port}/one",
    ):
        result = await send(client, url)
        assert result.ok, result
    first, second, other_name, by_address, again = receiver.received("/one")
    assert first.headers["host"] == f"a.test:{port}"
    assert other_name.headers["host"] == f"b.test:{port}"
    assert second.client_port == first.client_port == again.client_port
    assert other_name.client_port != first.client_port
    assert by_address.client_port not in {first.client_port, other_name.client_port}
    assert all(r.body == BODY for r in receiver.received("/one"))


async def test_a_response_cut_at_the_size_cap_is_not_reused(
    receiver: Receiver, client: PinnedHttp11Client
) -> None:
    receiver.on("/big", always(200, body=b"x" * 200_000))
    url = f"http://a.test:{receiver.port}/big"
    result = await send(client, url, max_response_bytes=1000)
    assert result.ok
    assert len(result.response_excerpt) == 1000
    await send(client, url, max_response_bytes=1000)
    first, second = receiver.received("/big")
    assert first.client_port != second.client_port


async def test_connection_close_from_the_receiver_is_respected(
    receiver: Receiver, client: PinnedHttp11Client
) -> None:
    receiver.on("/bye", always(204, headers={"connection": "close"}))
    url = f"http://a.test:{receiver.port}/bye"
    for _ in range(2):
        assert (await send(client, url)).ok
    first, second = receiver.received("/bye")
    assert first.client_port != second.client_port


async def test_redirects_are_not_followed(receiver: Receiver, client: PinnedHttp11Client) -> None:
    receiver.on("/moved", always(302, headers={"location": "http://169.254.169.254/"}))
    result = await send(client, f"http://a.test:{receiver.port}/moved")
    assert result.status_code == 302
    assert result.error == "redirect not followed (HTTP 302)"
    assert len(receiver.received()) == 1


async def test_a_server_that_hangs_up_without_answering(client: PinnedHttp11Client) -> None:
    async def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await send(client, f"http://a.test:{port}/")
    finally:
        server.close()
        await server.wait_closed()
    assert result.status_code is None
    assert result.error_code in {"protocol_error", "connect_error"}


async def test_only_ip_addresses_are_dialled() -> None:
    http = make_webhook_client()
    with pytest.raises(TransportConnectError, match="checked IP addresses"):
        await http.post(
            scheme="http",
            address="localhost",
            port=9,
            host_header="localhost:9",
            server_name="localhost",
            target="/",
            headers={},
            body=b"{}",
            max_response_bytes=100,
            keep_alive=True,
        )


# -- TLS ---------------------------------------------------------------------------------------


def _certificate_authority(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for ``hooks.test`` signed by it."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "payoutsvc test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.test")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("hooks.test")]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (
        directory / "ca.pem",
        directory / "cert.pem",
        directory / "key.pem",
    )
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


async def test_tls_is_verified_against_the_hostname_while_connecting_to_the_address(
    tmp_path: Path,
) -> None:
    ca_file, cert_file, key_file = _certificate_authority(tmp_path)
    server = Receiver()
    server.start(ssl_certfile=str(cert_file), ssl_keyfile=str(key_file))
    http = make_webhook_client(ssl.create_default_context(cafile=str(ca_file)))
    try:
        good = await send(http, f"https://hooks.test:{server.port}/tls")
        assert good.ok, good
        again = await send(http, f"https://hooks.test:{server.port}/tls")
        assert again.ok, again
        # Same address, another name: the certificate does not cover it, so nothing is sent
        # (and the verified connection to hooks.test is not lent to it).
        wrong = await send(http, f"https://evil.test:{server.port}/tls")
        assert wrong.error_code == "connect_error"
        assert "certificate" in (wrong.error or "").lower()
    finally:
        await http.aclose()
        server.stop()
    first, second = server.received("/tls")
    assert first.headers["host"] == f"hooks.test:{server.port}"
    assert first.client_port == second.client_port
    assert len(server.received()) == 2


# -- framing, against a raw server that answers exactly what each test scripts -----------------


async def test_chunked_bodies_are_read_and_the_connection_reused(
    client: PinnedHttp11Client,
) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    )
    with_trailer = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nx-checksum: 1\r\n\r\n"
    )
    async with ScriptedServer([chunked, with_trailer, chunked]) as server:
        first = await send(client, server.url())
        second = await send(client, server.url())
        third = await send(client, server.url())
    assert first.ok
    assert first.response_excerpt == "hello world"
    assert second.response_excerpt == "hello"
    assert third.response_excerpt == "hello world"
    assert server.ports[0] == server.ports[1] == server.ports[2]


async def test_a_chunked_body_over_the_cap_is_cut_and_not_reused(
    client: PinnedHttp11Client,
) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n"
    )
    async with ScriptedServer([chunked, chunked]) as server:
        first = await send(client, server.url(), max_response_bytes=10)
        second = await send(client, server.url(), max_response_bytes=10)
    assert first.ok
    assert first.response_excerpt == "0123456789"
    assert second.response_excerpt == "0123456789"
    assert server.ports[0] != server.ports[1]


async def test_a_101_to_a_webhook_is_a_failed_attempt_and_its_connection_is_closed(
    client: PinnedHttp11Client,
) -> None:
    # Nothing asked to switch protocols: whatever follows a 101 on that socket is no longer
    # HTTP/1.1 (here, a WebSocket frame), so the socket must never carry another request.
    switching = (
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
        b"connection: upgrade\r\n\r\n\x81\x05hello"
    )
    answers = [switching, b"HTTP/1.1 204 No Content\r\n\r\n"]
    async with ScriptedServer(answers) as server:
        switched = await send(client, server.url())
        after = await send(client, server.url())
    assert not switched.ok
    assert switched.status_code is None
    assert switched.error_code == "protocol_error"
    assert "101" in (switched.error or "")
    assert after.ok, after
    assert server.ports[0] != server.ports[1]


async def test_interim_answers_are_skipped_and_the_final_one_used(
    client: PinnedHttp11Client,
) -> None:
    continued = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    hinted = (
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 102 Processing\r\n\r\n"
        b"HTTP/1.1 201 Created\r\ncontent-length: 7\r\nretry-after: 3\r\n\r\ncreated"
    )
    async with ScriptedServer([continued, hinted, continued]) as server:
        first = await send(client, server.url())
        second = await send(client, server.url())
        third = await send(client, server.url())
    assert (first.status_code, first.response_excerpt, first.ok) == (200, "ok", True)
    assert (second.status_code, second.response_excerpt, second.ok) == (201, "created", True)
    assert second.retry_after == "3"  # the final answer's headers, not the hint's
    assert third.ok
    # Complete exchanges: the interim answers do not stop the connection being reused.
    assert server.ports[0] == server.ports[1] == server.ports[2]


async def test_interim_answers_are_skipped_and_unframed_bodies_end_the_connection(
    client: PinnedHttp11Client,
) -> None:
    answers = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nretry-after: 7\r\n\r\nlater",
    ]
    async with ScriptedServer(answers) as server:
        # The body has no length: it runs to EOF, so the client must not wait for more
        # than the cap and must not reuse the connection.
        result = await send(client, server.url(), max_response_bytes=5)
    assert result.status_code == 503
    assert result.retry_after == "7"
    assert result.response_excerpt == "later"


async def test_a_body_without_length_runs_to_the_servers_close_and_is_not_reused(
    client: PinnedHttp11Client,
) -> None:
    unframed = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it, then EOF"
    async with ScriptedServer([unframed, unframed], hang_up_after_each=True) as server:
        first = await send(client, server.url())
        second = await send(client, server.url())
    assert first.ok, first
    assert first.response_excerpt == "all of it, then EOF"
    assert second.ok, second
    assert server.ports[0] != server.ports[1]


async def test_a_body_over_the_cap_closes_the_connection(client: PinnedHttp11Client) -> None:
    big = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 100_000
    async with ScriptedServer([big, big]) as server:
        first = await send(client, server.url(), max_response_bytes=100)
        second = await send(client, server.url(), max_response_bytes=100)
    assert first.ok
    assert first.response_excerpt == "x" * 100
    assert second.response_excerpt == "x" * 100
    assert server.ports[0] != server.ports[1]


async def test_bytes_nobody_asked_for_after_an_answer_are_not_taken_for_the_next_one(
    client: PinnedHttp11Client,
) -> None:
    # A broken receiver answers twice: the second answer sits in the socket's buffer, and
    # would otherwise be read as the answer to the next webhook on that connection.
    twice = b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
    answers = [twice, b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n"]
    async with ScriptedServer(answers) as server:
        first = await send(client, server.url())
        second = await send(client, server.url())
    assert first.status_code == 500
    assert second.status_code == 503  # the real answer to the second request
    assert server.ports[0] != server.ports[1]


async def test_http_1_0_answers_are_not_reused(client: PinnedHttp11Client) -> None:
    answers = [
        b"HTTP/1.0 204 No Content\r\n\r\n",
        # HTTP/1.0 keep-alive is an extension this client does not speak.
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.0 204 No Content\r\n\r\n",
    ]
    async with ScriptedServer(answers) as server:
        assert (await send(client, server.url())).ok
        kept_alive = await send(client, server.url())
        assert (await send(client, server.url())).ok
    assert kept_alive.ok
    assert kept_alive.response_excerpt == "ok"
    assert len(set(server.ports)) == 3


async def test_garbage_oversized_heads_and_conflicting_lengths_are_protocol_errors(
    client: PinnedHttp11Client,
) -> None:
    for answer in (
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nx-padding: " + b"a" * (MAX_HEADER_BYTES + 1) + b"\r\n\r\n",
    ):
        async with ScriptedServer([answer]) as server:
            result = await send(client, server.url())
        assert result.error_code == "protocol_error", (answer[:40], result)


async def test_header_values_cannot_inject_lines(client: PinnedHttp11Client) -> None:
    with pytest.raises(TransportConnectError, match="line breaks"):
        await client.post(
            scheme="http",
            address="127.0.0.1",
            port=9,
            host_header="a.test",
            server_name="a.test",
            target="/",
            headers={"webhook-id": "evt_1\r\nx-injected: 1"},
            body=b"{}",
            max_response_bytes=100,
            keep_alive=True,
        )
