"""event_hash writes the canonical content by hand and keeps HMAC key states (events.py):
every stored hash must still be what the documented formula gives, or every existing chain
would stop verifying."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from payoutsvc.payouts.events import canonical_json, event_hash

ODD_STRINGS = [
    "",
    "plain",
    'quote " and \\ backslash',
    "é € 😀",
    "line\nbreak\t\x00\x1f",
    "\u2028\u2029",
]


def documented(key: bytes | None, **fields: Any) -> str:
    """The formula audit.py and API.md describe: the previous hash, then the canonical JSON
    of the event's content, HMAC-SHA256 under the audit key (plain SHA-256 for legacy rows)."""
    content = canonical_json(
        {
            "id": fields["event_id"],
            "payout_id": fields["payout_id"],
            "sequence": fields["sequence"],
            "type": fields["type"],
            "actor": fields["actor"],
            "at": fields["at"].isoformat(),
            "data": fields["data"],
        }
    )
    message = (fields["prev_hash"] + content).encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("key", [None, b"", b"k" * 32, bytes(range(64)), b"long" * 40])
@pytest.mark.parametrize("text", ODD_STRINGS)
def test_event_hash_is_the_documented_hmac_over_canonical_json(
    key: bytes | None, text: str
) -> None:
    fields: dict[str, Any] = {
        "payout_id": f"pay_{text}",
        "sequence": 123456789012,
        "type": f"payout.{text}",
        "actor": text,
        "at": datetime(2026, 12, 3, tzinfo=UTC) + timedelta(microseconds=7),
        "data": {"z": text, "a": [None, True, 1.5, {"y": text, "b": 2}], text: "key"},
        "prev_hash": "f" * 64,
        "event_id": f"evt_{text}",
    }
    assert event_hash(key=key, **fields) == documented(key, **fields)


def test_event_hash_depends_on_the_key() -> None:
    fields: dict[str, Any] = {
        "payout_id": "pay_1",
        "sequence": 2,
        "type": "payout.approved",
        "actor": "system",
        "at": datetime(2026, 12, 3, tzinfo=UTC),
        "data": {"status": "approved"},
        "prev_hash": "0" * 64,
        "event_id": "evt_1",
    }
    assert event_hash(key=b"one", **fields) != event_hash(key=b"two", **fields)
