"""Standard Webhooks signing (https://www.standardwebhooks.com/).

The signature is ``v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>`` where the key
is the base64-decoded part of the ``whsec_...`` secret.  It is computed with the
``standardwebhooks`` library so that receivers using that library verify it byte-for-byte.

During secret rotation an endpoint has two active secrets; the message is signed with
each and the ``webhook-signature`` header carries all signatures separated by spaces --
a receiver accepts the message if any one of them verifies.
"""

from __future__ import annotations

import base64
import functools
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from secrets import token_bytes

from standardwebhooks.webhooks import Webhook

__all__ = [
    "SECRET_PREFIX",
    "USER_AGENT",
    "build_headers",
    "generate_secret",
    "sign",
    "unix_timestamp",
]

SECRET_PREFIX = "whsec_"  # noqa: S105 -- a format prefix, not a secret
SECRET_BYTES = 32
USER_AGENT = "payoutsvc-webhooks/1"


def generate_secret() -> str:
    """A new endpoint secret: ``whsec_`` + standard base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode("ascii")


def _as_utc(timestamp: datetime) -> datetime:
    # The library does ``timestamp.replace(tzinfo=utc)``, which silently shifts aware
    # non-UTC datetimes; normalise first.  Naive datetimes are taken to be UTC (that is
    # what SQLite-backed DateTime columns hand back).
    if timestamp.tzinfo is None:
        return timestamp.replace(tzinfo=UTC)
    return timestamp.astimezone(UTC)


def unix_timestamp(timestamp: datetime) -> int:
    """The ``webhook-timestamp`` value: whole unix seconds (floored, like the library)."""
    return math.floor(_as_utc(timestamp).timestamp())


def sign(secrets: Sequence[str], msg_id: str, timestamp: datetime, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<sig>`` per secret, space-separated.

    ``secrets`` are ``whsec_...`` strings (current first, then the previous one while a
    rotation is in progress); duplicates are signed once.  ``body`` must be the exact
    UTF-8 bytes that are sent.  Raises ``ValueError`` for an empty secret list, a secret
    that decodes to nothing, or a body that is not UTF-8.
    """
    if isinstance(secrets, str):
        raise ValueError("secrets must be a sequence of secrets, not a single string")  # noqa: TRY004  (one error type for every bad input)
    unique = list(dict.fromkeys(secrets))
    if not unique:
        raise ValueError("at least one signing secret is required")
    if not msg_id or not msg_id.isprintable():
        raise ValueError("msg_id must be a non-empty string without control characters")
    payload = body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    when = _as_utc(timestamp)
    signatures: list[str] = []
    for secret in unique:
        signatures.append(str(_signer(secret).sign(msg_id, when, payload)))
    return " ".join(signatures)


@functools.lru_cache(maxsize=1024)  # one per endpoint secret: decoding it is per-call work
def _signer(secret: str) -> Webhook:
    try:
        return Webhook(secret)
    except Exception as exc:  # noqa: BLE001  (EmptyWebhookSecretError, binascii.Error, …)
        raise ValueError(f"invalid webhook secret: {type(exc).__name__}") from None


def build_headers(
    secrets: Sequence[str], event_id: str, timestamp: datetime, body: bytes
) -> dict[str, str]:
    """All headers of a delivery request (Standard Webhooks + content type + user agent).

    ``event_id`` is the ``webhook-id`` and must be the same on every retry of an event;
    ``timestamp`` is the time of this attempt (receivers reject ones > 5 minutes off).
    """
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(unix_timestamp(timestamp)),
        "webhook-signature": sign(secrets, event_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
