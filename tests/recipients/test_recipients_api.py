"""Recipient validation (POST /v1/recipients/validate and inside POST /v1/payouts) for every
type, and the blocklist /v1/recipient-blocks. No response ever carries a full account."""

from __future__ import annotations

from typing import Any

import httpx
from stdnum import luhn

from tests.helpers import create_operator, new_integration_client
from tests.policy.support import body, post, problem_code, violations

CARD_BASE = "622202123456789012"
VALID_CARD = CARD_BASE + luhn.calc_check_digit(CARD_BASE)

# type -> (valid recipient, currency, invalid variant, (field, code) of the invalid one)
CASES: dict[str, tuple[dict[str, Any], str, dict[str, Any], tuple[str, str]]] = {
    "alipay": (
        {"type": "alipay", "account": "13800138000", "name": "张三"},
        "CNY",
        {"account": "12345"},
        ("recipient.account", "invalid_format"),
    ),
    "wechat": (
        {
            "type": "wechat",
            "account": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            "app_id": "wx8888888888888888",
        },
        "CNY",
        {"account": "short_openid"},
        ("recipient.account", "invalid_length"),
    ),
    "bank_card_cn": (
        {"type": "bank_card_cn", "account": VALID_CARD, "name": "张三", "bank_name": "ICBC"},
        "CNY",
        {"account": "6222 0212"},
        ("recipient.account", "invalid_length"),
    ),
    "iban": (
        {"type": "iban", "account": "DE89 3704 0044 0532 0130 00", "name": "Max Muster"},
        "EUR",
        {"account": "DE89370400440532013001"},
        ("recipient.account", "checksum_mismatch"),
    ),
    "us_bank": (
        {
            "type": "us_bank",
            "routing_number": "011000015",
            "account": "123456789",
            "account_type": "checking",
            "name": "Jane Doe",
        },
        "USD",
        {"routing_number": "011000016"},
        ("recipient.routing_number", "checksum_mismatch"),
    ),
    "paypal": (
        {"type": "paypal", "account": "buyer@example.com"},
        "USD",
        {"account": "buyer-at-example.com"},
        ("recipient.account", "invalid_format"),
    ),
    "stripe_account": (
        {"type": "stripe_account", "account": "acct_1032D82eZvKYlo2C"},
        "USD",
        {"account": "acc_1032D82eZvKYlo2C"},
        ("recipient.account", "invalid_format"),
    ),
}


def _secrets(recipient: dict[str, Any]) -> list[str]:
    account = str(recipient["account"])
    return [account, account.replace(" ", "")]


async def test_every_recipient_type_valid_and_invalid(client: httpx.AsyncClient) -> None:
    await create_operator(client, "sup-1", "supervisor")
    for rtype, (valid, currency, breakage, (field, code)) in CASES.items():
        checked = await client.post(
            "/v1/recipients/validate",
            json={"recipient": valid, "amount": "12.50", "currency": currency},
        )
        assert checked.status_code == 200, (rtype, checked.text)
        result = checked.json()
        assert (result["valid"], result["errors"], result["warnings"]) == (True, [], []), rtype
        assert result["normalized"]["type"] == rtype
        assert "*" in result["normalized"]["account_masked"]
        paid = await post(client, body("12.50", "sup-1", recipient=valid, currency=currency))
        assert paid.status_code == 201, (rtype, paid.text)
        assert paid.json()["recipient"] == result["normalized"]
        for response in (checked, paid):
            for secret in _secrets(valid):
                assert secret not in response.text, (rtype, response.text)

        invalid = {**valid, **breakage}
        refused = await client.post(
            "/v1/recipients/validate",
            json={"recipient": invalid, "amount": "12.50", "currency": currency},
        )
        assert refused.status_code == 200, refused.text
        assert refused.json()["valid"] is False
        assert (field, code) in {(e["field"], e["code"]) for e in refused.json()["errors"]}, rtype
        rejected = await post(client, body("12.50", "sup-1", recipient=invalid, currency=currency))
        assert problem_code(rejected, 422) == "invalid_recipient", rtype
        assert (field, code) in {(e["field"], e["code"]) for e in rejected.json()["errors"]}
        for response in (refused, rejected):
            for secret in _secrets(invalid):
                assert secret not in response.text, (rtype, response.text)
    listed = await client.get("/v1/payouts", params={"limit": 200})
    assert len(listed.json()["data"]) == len(CASES)


async def test_validation_normalizes_and_checks_provider_limits(
    client: httpx.AsyncClient,
) -> None:
    iban = await client.post(
        "/v1/recipients/validate",
        json={"recipient": {"type": "iban", "account": "de89 3704 0044 0532 0130 00", "name": "M"}},
    )
    assert iban.json()["normalized"]["account_masked"] == "DE8****3000"
    mobile = await client.post(
        "/v1/recipients/validate",
        json={"recipient": {"type": "alipay", "account": "+86 138 0013 8000", "name": "张三"}},
    )
    assert mobile.json()["normalized"] == {
        "type": "alipay",
        "account_masked": "138****8000",
        "name": "张*",
        "bank_name": None,
        "bic": None,
        "routing_number": None,
        "account_type": None,
        "app_id": None,
    }
    alipay = {"type": "alipay", "account": "13800138000", "name": "张三"}
    too_small = await client.post(
        "/v1/recipients/validate", json={"recipient": alipay, "amount": "0.09", "currency": "CNY"}
    )
    assert [(e["field"], e["code"]) for e in too_small.json()["errors"]] == [
        ("amount", "amount_below_minimum")
    ]
    wrong_currency = await client.post(
        "/v1/recipients/validate", json={"recipient": alipay, "amount": "1.00", "currency": "USD"}
    )
    assert [e["code"] for e in wrong_currency.json()["errors"]] == ["unsupported_currency"]
    wechat = {
        "type": "wechat",
        "account": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        "app_id": "wx8888888888888888",
    }
    unnamed = await client.post(
        "/v1/recipients/validate",
        json={"recipient": wechat, "amount": "2000.00", "currency": "CNY"},
    )
    assert [(e["field"], e["code"]) for e in unnamed.json()["errors"]] == [
        ("recipient.name", "required")
    ]
    card = {"type": "bank_card_cn", "account": CARD_BASE + "0", "name": "张三", "bank_name": "ICBC"}
    if luhn.is_valid(card["account"]):
        card["account"] = CARD_BASE + "1"
    warned = (await client.post("/v1/recipients/validate", json={"recipient": card})).json()
    assert warned["valid"] is True
    assert [w["code"] for w in warned["warnings"]] == ["checksum_mismatch"]
    no_currency = await client.post(
        "/v1/recipients/validate", json={"recipient": alipay, "amount": "1.00"}
    )
    assert problem_code(no_currency, 422) == "validation_failed"
    assert no_currency.json()["errors"][0]["field"] == "amount"
    shape = await client.post(
        "/v1/recipients/validate", json={"recipient": {"type": "alipay", "account": "x"}}
    )
    assert problem_code(shape, 422) == "validation_failed"


async def test_blocklist(client: httpx.AsyncClient) -> None:
    await create_operator(client, "sup-1", "supervisor")
    block = await client.post(
        "/v1/recipient-blocks",
        json={"recipient": {"type": "alipay", "account": "+86 138-0013-8000"}, "reason": "fraud"},
    )
    assert block.status_code == 201, block.text
    created = block.json()
    assert created["id"].startswith("rb_")
    assert created["recipient"] == {"type": "alipay", "account_masked": "138****8000"}
    assert created["reason"] == "fraud"
    assert "13800138000" not in block.text

    alipay = {"type": "alipay", "account": "13800138000", "name": "张三"}
    checked = (await client.post("/v1/recipients/validate", json={"recipient": alipay})).json()
    assert checked["valid"] is False
    assert [(e["field"], e["code"]) for e in checked["errors"]] == [
        ("recipient", "recipient_blocked")
    ]
    assert violations(await post(client, body("12.50", "sup-1", recipient=alipay))) == {
        "recipient_blocked"
    }
    # The same account under another type is another recipient.
    paypal_phone = {"type": "paypal", "account": "+8613800138000"}
    assert (await post(client, body("12.50", "sup-1", recipient=paypal_phone))).status_code == 201

    again = await client.post(
        "/v1/recipient-blocks", json={"recipient": {"type": "alipay", "account": "13800138000"}}
    )
    assert problem_code(again, 409) == "recipient_already_blocked"
    listed = await client.get("/v1/recipient-blocks")
    assert listed.json() == {"data": [created], "next_cursor": None}
    assert (await client.get(f"/v1/recipient-blocks/{created['id']}")).json() == created

    deleted = await client.delete(f"/v1/recipient-blocks/{created['id']}")
    assert deleted.status_code == 204
    assert problem_code(await client.get(f"/v1/recipient-blocks/{created['id']}"), 404) == (
        "not_found"
    )
    assert problem_code(await client.delete(f"/v1/recipient-blocks/{created['id']}"), 404) == (
        "not_found"
    )
    assert (await post(client, body("12.50", "sup-1", recipient=alipay))).status_code == 201


async def test_blocking_needs_the_identifying_fields(client: httpx.AsyncClient) -> None:
    no_routing = await client.post(
        "/v1/recipient-blocks", json={"recipient": {"type": "us_bank", "account": "123456789"}}
    )
    assert problem_code(no_routing, 422) == "invalid_recipient"
    assert no_routing.json()["errors"][0]["field"] == "recipient.routing_number"
    stray = await client.post(
        "/v1/recipient-blocks",
        json={"recipient": {"type": "paypal", "account": "a@example.com", "app_id": "wx1"}},
    )
    assert problem_code(stray, 422) == "invalid_recipient"
    garbage = await client.post(
        "/v1/recipient-blocks", json={"recipient": {"type": "iban", "account": "DE00 1234"}}
    )
    assert problem_code(garbage, 422) == "invalid_recipient"
    assert "DE00" not in garbage.text
    us_bank = await client.post(
        "/v1/recipient-blocks",
        json={
            "recipient": {"type": "us_bank", "account": "123456789", "routing_number": "011000015"}
        },
    )
    assert us_bank.status_code == 201, us_bank.text
    blocked = {
        "type": "us_bank",
        "routing_number": "011000015",
        "account": "123456789",
        "account_type": "savings",
        "name": "J",
    }
    other_bank = {**blocked, "routing_number": "021000021"}
    assert (await client.post("/v1/recipients/validate", json={"recipient": blocked})).json()[
        "valid"
    ] is False
    assert (await client.post("/v1/recipients/validate", json={"recipient": other_bank})).json()[
        "valid"
    ] is True


async def test_scopes(client: httpx.AsyncClient) -> None:
    writer = await new_integration_client(client, "desk", ["payouts:write"])
    reader = await new_integration_client(client, "viewer", ["payouts:read"])
    alipay = {"type": "alipay", "account": "13800138000", "name": "张三"}
    async with writer, reader:
        assert (
            await writer.post("/v1/recipients/validate", json={"recipient": alipay})
        ).status_code == 200
        assert (
            await reader.post("/v1/recipients/validate", json={"recipient": alipay})
        ).status_code == 403
        blocked = await writer.post(
            "/v1/recipient-blocks", json={"recipient": {"type": "alipay", "account": "13800138000"}}
        )
        assert problem_code(blocked, 403) == "insufficient_scope"
        assert problem_code(await writer.get("/v1/recipient-blocks"), 403) == "insufficient_scope"
