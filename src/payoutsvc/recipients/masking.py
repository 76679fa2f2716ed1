"""Masking of recipient data: the full account number never leaves the service."""

from __future__ import annotations

import re


def mask_account(account: str) -> str:
    """Keep just enough for a human to recognise the account.

    Emails keep the first character of the local part and the domain; everything else keeps
    the first 3 and last 4 characters (``13800138000`` -> ``138****8000``), and short values
    keep only their last character or two.
    """
    if "@" in account:
        local, _, domain = account.partition("@")
        return f"{local[:1]}***@{domain}"
    compact = re.sub(r"\s+", "", account)
    length = len(compact)
    if length >= 11:
        return f"{compact[:3]}****{compact[-4:]}"
    if length >= 7:
        return f"****{compact[-4:]}"
    if length >= 3:
        return f"****{compact[-2:]}"
    return "****"


def mask_name(name: str | None) -> str | None:
    """``张三`` -> ``张*``, ``Li Lei`` -> ``L*****``: the first character only."""
    if not name:
        return name
    return name[0] + "*" * max(1, len(name) - 1)
