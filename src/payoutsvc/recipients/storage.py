"""How a validated recipient is stored: encrypted in full, masked for display."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from payoutsvc.crypto import RecipientCipher
from payoutsvc.recipients.masking import mask_account, mask_name

# Fields that are not secret and help a human recognise the recipient.
_PUBLIC_FIELDS = ("bank_name", "bic", "routing_number", "account_type", "app_id")


def public_view(normalized: Mapping[str, str | None]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "type": normalized["type"],
        "account_masked": mask_account(normalized.get("account") or ""),
        "name": mask_name(normalized.get("name")),
    }
    for field in _PUBLIC_FIELDS:
        view[field] = normalized.get(field)
    return view


def seal(cipher: RecipientCipher, normalized: Mapping[str, str | None], payout_id: str) -> bytes:
    return cipher.encrypt(json.dumps(dict(normalized), sort_keys=True).encode(), payout_id)


def unseal(cipher: RecipientCipher, blob: bytes, payout_id: str) -> dict[str, str | None]:
    """The full recipient, for the gateway call only; never log or return it."""
    value: dict[str, str | None] = json.loads(cipher.decrypt(blob, payout_id))
    return value
