"""What the real provider adapters share: credentials from the environment or a file, RSA
SHA-256 signatures (WeChat Pay and Alipay both use PKCS#1 v1.5 over SHA-256), and an HTTP
client whose transport errors are already sorted into the gateway error classes.

The sorting rule is the whole point of :func:`send`: a failure *before* the request could
have reached the provider (connection refused, connect timeout) is :class:`NotDone`; any
failure after the bytes may have left (read/write timeout, reset, protocol error) is
:class:`OutcomeUnknown`, because the provider may have booked the transfer.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr

from payoutsvc.gateways.base import NotDone, OutcomeUnknown
from payoutsvc.recipients.masking import mask_account

_EMAIL = re.compile(r"[^\s@:;,'\"<>()\[\]]+@[^\s@:;,'\"<>()\[\]]+")
_LONG_NUMBER = re.compile(r"\+?\d[\d -]{5,}\d")


def redact_identifiers(text: str, limit: int = 500) -> str:
    """A provider's free-text message, safe to store and show: anything shaped like an
    account (an email address, a phone, user or card number) masked like our own output.
    Providers may quote the payee in error messages; ours are shown to API users."""
    text = _EMAIL.sub(lambda m: mask_account(m.group(0)), text)
    text = _LONG_NUMBER.sub(lambda m: mask_account(m.group(0)), text)
    return text[:limit]


class MissingCredential(RuntimeError):
    """An adapter is routed to but a credential it needs is not configured."""


def secret_from(value: SecretStr | None, path: Path | None, *, name: str) -> str:
    """A credential given inline (``…_KEY``) or as a file (``…_KEY_FILE``); the file wins
    when both are set, so a mounted secret overrides a leftover variable."""
    if path is not None:
        return path.read_text(encoding="utf-8").strip()
    if value is not None and value.get_secret_value():
        return value.get_secret_value()
    raise MissingCredential(f"{name} is not configured (set it or {name}_FILE)")


def _pem(text: str) -> bytes:
    """PEM text, also accepting a bare base64 body (as provider consoles hand keys out)."""
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        return stripped.encode()
    return b"-----BEGIN PUBLIC KEY-----\n" + stripped.encode() + b"\n-----END PUBLIC KEY-----\n"


def load_private_key(text: str) -> rsa.RSAPrivateKey:
    stripped = text.strip()
    pem = (
        stripped.encode()
        if stripped.startswith("-----BEGIN")
        else b"-----BEGIN PRIVATE KEY-----\n" + stripped.encode() + b"\n-----END PRIVATE KEY-----\n"
    )
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise MissingCredential("expected an RSA private key")
    return key


def load_public_key(text: str) -> rsa.RSAPublicKey:
    """An RSA public key from a PEM public key, a PEM certificate or a bare base64 key."""
    pem = _pem(text)
    key = (
        x509.load_pem_x509_certificate(pem).public_key()
        if b"CERTIFICATE" in pem
        else serialization.load_pem_public_key(pem)
    )
    if not isinstance(key, rsa.RSAPublicKey):
        raise MissingCredential("expected an RSA public key")
    return key


def sign_rsa_sha256(key: rsa.RSAPrivateKey, message: bytes) -> str:
    """Base64 of the PKCS#1 v1.5 SHA-256 signature of ``message``."""
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def verify_rsa_sha256(key: rsa.RSAPublicKey, message: bytes, signature_b64: str) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except (CryptoInvalidSignature, ValueError):
        return False
    return True


def provider_client(base_url: str, timeout_seconds: float) -> httpx.AsyncClient:
    """A pooled client for one provider: no redirects (a payment API never legitimately
    redirects a POST), no proxy variables from the environment."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_seconds, connect=min(5.0, timeout_seconds)),
        follow_redirects=False,
        trust_env=False,
    )


async def send(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send ``request``; transport failures come out as NotDone or OutcomeUnknown."""
    try:
        return await client.send(request)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise NotDone(
            f"could not connect: {type(exc).__name__}", gateway_status="refused"
        ) from None
    except httpx.TimeoutException as exc:
        raise OutcomeUnknown(
            f"no answer in time: {type(exc).__name__}", gateway_status="timeout"
        ) from None
    except httpx.TransportError as exc:
        raise OutcomeUnknown(
            f"connection failed after sending: {type(exc).__name__}", gateway_status="reset"
        ) from None
