"""Money at the API edge: decimal strings in major units, ISO 4217 exponents, nothing else."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from payoutsvc.main import create_app
from payoutsvc.money import MAX_AMOUNT_MINOR, format_amount
from payoutsvc.policy.document import DEFAULT_POLICY_DOCUMENT
from tests.api_support import (
    NEW_PAYOUT_STATUSES,
    CaseFailures,
    alipay_recipient,
    assert_problem,
    post_payout,
)
from tests.conftest import ADMIN_KEY, make_settings
from tests.helpers import create_operator, payout_body

IBAN = {"type": "iban", "account": "DE89370400440532013000", "name": "Erika Mustermann"}
IBAN_GB = {"type": "iban", "account": "GB82WEST12345698765432", "name": "Jane Doe"}
IBAN_FR = {"type": "iban", "account": "FR1420041010050500013M02606", "name": "Jean Dupont"}

REFUSED = [
    # (amount, currency, field, code)
    pytest.param(12.5, "CNY", "amount", "amount_not_string", id="float"),
    pytest.param(12, "CNY", "amount", "amount_not_string", id="integer"),
    pytest.param(None, "CNY", "amount", None, id="null"),
    pytest.param(True, "CNY", "amount", "amount_not_string", id="boolean"),
    pytest.param("1e3", "CNY", "amount", "invalid_amount", id="exponent"),
    pytest.param("1E3", "CNY", "amount", "invalid_amount", id="exponent-upper"),
    pytest.param("0", "CNY", "amount", "amount_not_positive", id="zero"),
    pytest.param("0.00", "CNY", "amount", "amount_not_positive", id="zero-decimals"),
    pytest.param("-1.00", "CNY", "amount", "invalid_amount", id="negative"),
    pytest.param("+1.00", "CNY", "amount", "invalid_amount", id="plus-sign"),
    pytest.param("01.00", "CNY", "amount", "invalid_amount", id="leading-zero"),
    pytest.param(" 1.00", "CNY", "amount", "invalid_amount", id="whitespace"),
    pytest.param("1,000.00", "CNY", "amount", "invalid_amount", id="thousands-separator"),
    pytest.param("1.", "CNY", "amount", "invalid_amount", id="trailing-dot"),
    pytest.param(".5", "CNY", "amount", "invalid_amount", id="leading-dot"),
    pytest.param("", "CNY", "amount", "invalid_amount", id="empty"),
    pytest.param("NaN", "CNY", "amount", "invalid_amount", id="nan"),
    pytest.param("Infinity", "CNY", "amount", "invalid_amount", id="infinity"),
    pytest.param("\uff11\uff12.\uff15\uff10", "CNY", "amount", "invalid_amount", id="fullwidth"),
    pytest.param("1.5", "JPY", "amount", "too_many_decimals", id="jpy-decimals"),
    pytest.param("1.005", "CNY", "amount", "too_many_decimals", id="cny-3-decimals"),
    pytest.param("1.0005", "KWD", "amount", "too_many_decimals", id="kwd-4-decimals"),
    pytest.param("1" * 19, "CNY", "amount", "invalid_amount", id="too-many-digits"),
    pytest.param("999999999999999999.99", "CNY", "amount", "amount_too_large", id="overflow"),
    pytest.param("12.50", "ABC", "currency", "unknown_currency", id="unknown-currency"),
    pytest.param("12.50", "cny", "currency", "invalid_currency", id="lower-case-currency"),
    pytest.param("12.50", "CN", "currency", "invalid_currency", id="short-currency"),
    pytest.param("12.50", 156, "currency", "invalid_currency", id="numeric-currency"),
    pytest.param("12.50", "XAU", "currency", "unsupported_currency", id="gold"),
    pytest.param("12.50", "XDR", "currency", "unsupported_currency", id="sdr"),
]


async def test_refused_amounts_and_currencies_name_the_field(client: httpx.AsyncClient) -> None:
    failures = CaseFailures()
    for case in REFUSED:
        amount, currency, field, code = case.values
        with failures.case(str(case.id)):
            response = await post_payout(client, payout_body(amount=amount, currency=currency))
            assert_problem(response, 422, "validation_failed", field=field, field_code=code)
    failures.check()


async def test_a_refused_amount_is_not_echoed_as_a_number(client: httpx.AsyncClient) -> None:
    """A float must not be quietly turned into a string (12.5 -> "12.5" -> 1250)."""
    response = await post_payout(client, payout_body(amount=12.5))
    problem = assert_problem(response, 422, "validation_failed", field="amount")
    assert all(e["field"] != "currency" for e in problem["errors"])


def _policy_with(*currencies: str) -> dict[str, Any]:
    """The default policy, widened so agents may request in ``currencies`` (the policy, once it
    lands, refuses currencies a role has no limits for)."""
    document = copy.deepcopy(DEFAULT_POLICY_DOCUMENT)
    big = {"JPY": "100000", "KWD": "100.000"}
    document["currencies"] = [*document["currencies"], *currencies]

    def widen(amounts: dict[str, str], value: dict[str, str]) -> None:
        for code in currencies:
            amounts[code] = value[code]

    for role in document["roles"].values():
        widen(role["request_max"], big)
        widen(role["auto_approve_max"], big)
        widen(role["daily_request_total"], {"JPY": "1000000", "KWD": "1000.000"})
        if role["approve_max"] is not None:
            widen(role["approve_max"], big)
    widen(document["dual_approval_over"], {"JPY": "1000000", "KWD": "1000.000"})
    widen(document["per_ticket_max"], {"JPY": "1000000", "KWD": "1000.000"})
    widen(document["per_recipient_daily"]["amount"], {"JPY": "1000000", "KWD": "1000.000"})
    return document


@pytest.fixture
async def wide_client(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client on an app whose initial policy also allows JPY and KWD."""
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(_policy_with("JPY", "KWD")))
    app = create_app(make_settings(database_url, policy_file=policy_file))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as http,
    ):
        yield http


ROUND_TRIPS = [
    # (amount, currency, recipient, minor units)
    pytest.param("12.50", "CNY", None, 1250, id="cny"),
    pytest.param("0.10", "CNY", None, 10, id="cny-alipay-minimum"),
    pytest.param("7", "CNY", None, 700, id="cny-whole"),
    pytest.param("1500", "JPY", IBAN, 1500, id="jpy"),
    pytest.param("1.005", "KWD", IBAN_GB, 1005, id="kwd-3-decimals"),
    pytest.param("2.5", "KWD", IBAN_FR, 2500, id="kwd-fewer-decimals"),
]


async def test_valid_amounts_round_trip_in_minor_units(wide_client: httpx.AsyncClient) -> None:
    await create_operator(wide_client, "agent-17", "agent")
    failures = CaseFailures()
    for index, case in enumerate(ROUND_TRIPS):
        amount, currency, recipient, minor = case.values
        with failures.case(str(case.id)):
            overrides: dict[str, Any] = {
                "amount": amount,
                "currency": currency,
                "recipient": recipient or alipay_recipient(8100 + index),
            }
            created = await post_payout(wide_client, payout_body(**overrides))
            assert created.status_code == 201, created.text
            payout = created.json()
            assert payout["status"] in NEW_PAYOUT_STATUSES
            assert payout["amount_minor"] == minor
            assert payout["currency"] == currency
            # The response carries the canonical form: every decimal the currency has.
            assert payout["amount"] == format_amount(minor, currency)
            fetched = (await wide_client.get(f"/v1/payouts/{payout['id']}")).json()
            assert (fetched["amount"], fetched["amount_minor"]) == (payout["amount"], minor)
    failures.check()


def test_largest_amount_is_far_below_the_database_integer_limit() -> None:
    # Daily totals add amounts up in SQL; a cap well below 2**63 keeps those sums exact.
    assert MAX_AMOUNT_MINOR * 1000 < 2**63 - 1
