"""Encryption at rest for recipient data (AES-256-GCM).

The key comes from ``PAYOUTSVC_ENCRYPTION_KEY`` (32 bytes, urlsafe base64). The embedded
default generates a key file (0600) beside the SQLite database and warns: a production
deployment must set the variable, or losing that file loses every recipient.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from payoutsvc.config import Settings

log = structlog.get_logger(__name__)

_NONCE_BYTES = 12
_FORMAT_VERSION = b"\x01"


class EncryptionKeyError(RuntimeError):
    pass


def generate_key() -> str:
    return base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode()


def _decode_key(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode())
    except ValueError:
        raise EncryptionKeyError("PAYOUTSVC_ENCRYPTION_KEY is not urlsafe base64") from None
    if len(raw) != 32:
        raise EncryptionKeyError("PAYOUTSVC_ENCRYPTION_KEY must decode to 32 bytes")
    return raw


def derive_fingerprint_key(key: bytes) -> bytes:
    """The HMAC key for recipient fingerprints, derived from the encryption key (HKDF-SHA256).

    A separate, derived key: fingerprints of short accounts (phone numbers) cannot be
    brute-forced from a database dump without it, and it never doubles as the AES key.
    """
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"payoutsvc recipient fingerprint v1"
    ).derive(key)


def derive_audit_key(material: bytes) -> bytes:
    """The HMAC key of the audit chain (HKDF-SHA256 over the encryption key, or over
    ``PAYOUTSVC_AUDIT_KEY`` when set): a separate key, so a database dump alone can neither
    recompute event hashes nor learn anything about the encryption key."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"payoutsvc audit chain v1"
    ).derive(material)


def audit_key(settings: Settings, cipher: RecipientCipher) -> bytes:
    """The audit key of this deployment: from PAYOUTSVC_AUDIT_KEY if set, else the cipher's."""
    if settings.audit_key is not None:
        return derive_audit_key(settings.audit_key.get_secret_value().encode())
    return cipher.audit_key


class RecipientCipher:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.fingerprint_key = derive_fingerprint_key(key)
        self.audit_key = derive_audit_key(key)

    def encrypt(self, plaintext: bytes, bound_to: str) -> bytes:
        """Encrypt, binding the ciphertext to ``bound_to`` (the payout id) so a blob copied to
        another row fails to decrypt instead of paying the wrong person."""
        nonce = os.urandom(_NONCE_BYTES)
        return _FORMAT_VERSION + nonce + self._aead.encrypt(nonce, plaintext, bound_to.encode())

    def decrypt(self, blob: bytes, bound_to: str) -> bytes:
        if blob[:1] != _FORMAT_VERSION:
            raise EncryptionKeyError("unknown ciphertext format")
        nonce = blob[1 : 1 + _NONCE_BYTES]
        return self._aead.decrypt(nonce, blob[1 + _NONCE_BYTES :], bound_to.encode())


def load_cipher(settings: Settings) -> RecipientCipher:
    if settings.encryption_key is not None:
        return RecipientCipher(_decode_key(settings.encryption_key.get_secret_value()))
    if settings.environment == "production":
        raise EncryptionKeyError("PAYOUTSVC_ENCRYPTION_KEY must be set in production")
    db_path = settings.sqlite_path
    key_path = (db_path.parent if db_path else Path.cwd()) / (
        (db_path.name if db_path else "payoutsvc") + ".key"
    )
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # another process (or an earlier run) made it first: use theirs
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_key() + "\n")
        log.warning(
            "crypto.key_file_generated",
            path=str(key_path),
            hint="set PAYOUTSVC_ENCRYPTION_KEY in production; this file is needed to pay out",
        )
    return RecipientCipher(_decode_key(key_path.read_text()))
