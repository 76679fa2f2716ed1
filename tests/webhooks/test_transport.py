"""The sender's HTTP transport through ``ssrf.deliver``, against real servers on loopback:
connections are reused only for the same hostname and address, TLS is verified against the
hostname while connecting to the checked address, and nothing but IP literals is dialled."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from payoutsvc.webhooks.ssrf import DEFAULT_MAX_RESPONSE_BYTES, DeliveryResult, deliver
from payoutsvc.webhooks.transport import PinnedHttp11Transport, make_webhook_client
from tests.webhooks.receiver import Receiver, always

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
async def client() -> AsyncIterator[httpx.AsyncClient]:
    http = make_webhook_client()
    try:
        yield http
    finally:
        await http.aclose()


async def send(
    client: httpx.AsyncClient, url: str, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
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
    receiver: Receiver, client: httpx.AsyncClient
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
    receiver: Receiver, client: httpx.AsyncClient
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
    receiver: Receiver, client: httpx.AsyncClient
) -> None:
    receiver.on("/bye", always(204, headers={"connection": "close"}))
    url = f"http://a.test:{receiver.port}/bye"
    for _ in range(2):
        assert (await send(client, url)).ok
    first, second = receiver.received("/bye")
    assert first.client_port != second.client_port


async def test_redirects_are_not_followed(receiver: Receiver, client: httpx.AsyncClient) -> None:
    receiver.on("/moved", always(302, headers={"location": "http://169.254.169.254/"}))
    result = await send(client, f"http://a.test:{receiver.port}/moved")
    assert result.status_code == 302
    assert result.error == "redirect not followed (HTTP 302)"
    assert len(receiver.received()) == 1


async def test_a_server_that_hangs_up_without_answering(client: httpx.AsyncClient) -> None:
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
    transport = PinnedHttp11Transport()
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(httpx.UnsupportedProtocol, match="checked IP addresses"):
            await http.post("http://localhost:9/", content=b"{}")


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
