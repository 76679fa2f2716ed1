"""Helpers the real gateway adapters share."""

from __future__ import annotations

from typing import Any, cast

import pytest

from payoutsvc.gateways.alipay import _check_echo
from payoutsvc.gateways.base import OutcomeUnknown
from payoutsvc.gateways.providers import MissingCredential, redact_identifiers
from payoutsvc.gateways.registry import GatewayRegistry


def test_provider_messages_lose_every_account_shaped_token() -> None:
    text = redact_identifiers(
        "PAYEE_NOT_EXIST: 收款账号 13800138000 不存在 (payee a.b@example.com, "
        "uid 2088123412341234, phone +1 415 555 0123) HTTP 404"
    )
    for secret in ("13800138000", "a.b@example.com", "2088123412341234", "415 555 0123"):
        assert secret not in text
    assert "138****8000" in text
    assert "HTTP 404" in text  # short numbers (status codes) stay readable


def test_long_messages_are_cut() -> None:
    assert len(redact_identifiers("x" * 2000, 300)) == 300


def test_an_alipay_answer_that_does_not_name_our_key_is_not_ours() -> None:
    _check_echo({"out_biz_no": "k1", "status": "SUCCESS"}, "k1")
    for body in ({"status": "SUCCESS"}, {"out_biz_no": "k2", "status": "SUCCESS"}):
        with pytest.raises(OutcomeUnknown):
            _check_echo(body, "k1")


def test_a_misconfigured_adapter_is_not_rebuilt_for_every_payout() -> None:
    builds = 0

    def broken(_runtime: Any) -> Any:
        nonlocal builds
        builds += 1
        raise MissingCredential("PAYOUTSVC_STRIPE_SECRET_KEY is not configured")

    registry = GatewayRegistry(cast(Any, None), factories={"stripe": broken})
    for _ in range(3):
        with pytest.raises(MissingCredential):
            registry.get("stripe")
    assert builds == 1
