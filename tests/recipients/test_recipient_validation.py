"""Unit tests for payoutsvc.recipients.validation (API.md, Recipients)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from pydantic import TypeAdapter
from stdnum import luhn

from payoutsvc.recipients.schemas import RecipientIn
from payoutsvc.recipients.validation import (
    RecipientCheck,
    recipient_fingerprint,
    validate_recipient,
)

_ADAPTER: TypeAdapter[Any] = TypeAdapter(RecipientIn)

OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
FINGERPRINT_KEY = b"k" * 32
APP_ID = "wx8888888888888888"


def make(**fields: Any) -> Any:
    return _ADAPTER.validate_python(fields)


def check(
    amount_minor: int | None = None, currency: str | None = None, **fields: Any
) -> RecipientCheck:
    return validate_recipient(make(**fields), amount_minor, currency)


def codes(result: RecipientCheck) -> list[tuple[str, str]]:
    return [(e.field, e.code) for e in result.errors]


def warning_codes(result: RecipientCheck) -> list[tuple[str, str]]:
    return [(w.field, w.code) for w in result.warnings]


def assert_ok(result: RecipientCheck) -> None:
    assert result.valid, result.errors
    assert result.errors == []


# --- test data sanity ------------------------------------------------------------------------


def test_test_card_numbers_have_the_expected_luhn_status() -> None:
    assert luhn.is_valid("6222021234567894")
    assert luhn.is_valid("6217001234567890122")  # 19 digits
    assert not luhn.is_valid("6222021234567890")


# --- alipay -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account", "normalized"),
    [
        ("13800138000", "13800138000"),
        ("+86 138 0013 8000", "13800138000"),
        ("+8613800138000", "13800138000"),
        ("138-0013-8000", "13800138000"),
        ("2088102122524333", "2088102122524333"),
        ("Zhang.San@Example.COM", "Zhang.San@example.com"),
        # an open id (Alipay's documented example), kept exactly: it is case-sensitive
        (
            "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5",
            "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5",
        ),
    ],
)
def test_alipay_valid_accounts_are_normalized(account: str, normalized: str) -> None:
    result = check(1250, "CNY", type="alipay", account=account, name="张三")
    assert_ok(result)
    assert result.warnings == []
    assert result.normalized == {"type": "alipay", "account": normalized, "name": "张三"}


@pytest.mark.parametrize(
    ("account", "code"),
    [
        ("12345678901", "invalid_format"),  # not a valid number
        ("1380013800", "invalid_format"),  # 10 digits
        ("010 12345678", "invalid_format"),  # Beijing landline, not a mobile
        ("+852 9123 4567", "invalid_format"),  # Hong Kong mobile, not mainland
        ("208810212252433", "invalid_length"),  # 15-digit 2088 id
        ("20881021225243331", "invalid_length"),  # 17-digit 2088 id
        ("1234567890123456", "invalid_format"),  # 16 digits, not 2088…
        ("zhangsan", "invalid_format"),
        ("zhang@", "invalid_format"),
        ("zhang@localhost", "invalid_format"),
        ("074a1CcTG1Lelx", "invalid_format"),  # too short for an open id
        ("0" + "a1" * 32, "invalid_format"),  # 65 characters: longer than Alipay's identity
        ("074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo_", "invalid_format"),
        ("074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5".lower()[1:], "invalid_format"),
    ],
)
def test_alipay_invalid_accounts(account: str, code: str) -> None:
    result = check(1250, "CNY", type="alipay", account=account, name="张三")
    assert not result.valid
    assert codes(result) == [("recipient.account", code)]
    assert result.normalized["account"] == account  # failed fields keep their input


def test_alipay_minimum_amount_boundary() -> None:
    below = check(9, "CNY", type="alipay", account="13800138000", name="张三")
    assert codes(below) == [("amount", "amount_below_minimum")]
    at = check(10, "CNY", type="alipay", account="13800138000", name="张三")
    assert_ok(at)


def test_alipay_requires_cny() -> None:
    result = check(1250, "USD", type="alipay", account="13800138000", name="张三")
    assert codes(result) == [("currency", "unsupported_currency")]
    # the CNY minimum is not applied to another currency's minor units
    result = check(1, "USD", type="alipay", account="13800138000", name="张三")
    assert codes(result) == [("currency", "unsupported_currency")]


def test_alipay_without_amount_or_currency_skips_those_checks() -> None:
    assert_ok(check(None, None, type="alipay", account="13800138000", name="张三"))
    assert_ok(check(1, None, type="alipay", account="13800138000", name="张三"))
    result = check(None, "EUR", type="alipay", account="13800138000", name="张三")
    assert codes(result) == [("currency", "unsupported_currency")]


# --- wechat -----------------------------------------------------------------------------------


def test_wechat_valid() -> None:
    result = check(1250, "CNY", type="wechat", account=OPENID, app_id=APP_ID)
    assert_ok(result)
    assert result.normalized == {
        "type": "wechat",
        "account": OPENID,
        "app_id": APP_ID,
        "name": None,
    }


@pytest.mark.parametrize(
    ("account", "code"),
    [
        ("o" * 19, "invalid_length"),
        ("o" * 65, "invalid_length"),
        ("oUpF8uMuAJO M2pxb1Q9zNjWeS6o", "invalid_format"),
        ("oUpF8uMuAJO.M2pxb1Q9zNjWeS6o", "invalid_format"),
    ],
)
def test_wechat_invalid_openid(account: str, code: str) -> None:
    result = check(1250, "CNY", type="wechat", account=account, app_id=APP_ID)
    assert codes(result) == [("recipient.account", code)]


def test_wechat_openid_length_bounds_are_inclusive() -> None:
    assert_ok(check(1250, "CNY", type="wechat", account="o" * 20, app_id=APP_ID))
    assert_ok(check(1250, "CNY", type="wechat", account="o" * 64, app_id=APP_ID))


@pytest.mark.parametrize(
    "app_id",
    ["wx888888888888888", "wx88888888888888888", "wz8888888888888888", "wx88888888-8888888"],
)
def test_wechat_invalid_app_id(app_id: str) -> None:
    result = check(1250, "CNY", type="wechat", account=OPENID, app_id=app_id)
    assert codes(result) == [("recipient.app_id", "invalid_format")]


def test_wechat_minimum_amount_boundary() -> None:
    """WeChat Pay pays from 0.10 CNY; a name may only be sent from 0.30 CNY."""
    below = check(9, "CNY", type="wechat", account=OPENID, app_id=APP_ID)
    assert codes(below) == [("amount", "amount_below_minimum")]
    assert_ok(check(10, "CNY", type="wechat", account=OPENID, app_id=APP_ID))
    named = check(29, "CNY", type="wechat", account=OPENID, app_id=APP_ID, name="张三")
    assert codes(named) == [("recipient.name", "not_allowed")]
    assert_ok(check(30, "CNY", type="wechat", account=OPENID, app_id=APP_ID, name="张三"))


def test_wechat_name_required_from_2000_cny() -> None:
    assert_ok(check(199_999, "CNY", type="wechat", account=OPENID, app_id=APP_ID))
    at = check(200_000, "CNY", type="wechat", account=OPENID, app_id=APP_ID)
    assert codes(at) == [("recipient.name", "required")]
    named = check(200_000, "CNY", type="wechat", account=OPENID, app_id=APP_ID, name="张三")
    assert_ok(named)


def test_wechat_requires_cny() -> None:
    result = check(1250, "EUR", type="wechat", account=OPENID, app_id=APP_ID)
    assert codes(result) == [("currency", "unsupported_currency")]


# --- bank_card_cn -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account", "normalized"),
    [
        ("6222021234567894", "6222021234567894"),
        ("6222 0212 3456 7894", "6222021234567894"),
        ("6222-0212-3456-7894", "6222021234567894"),
        ("6217001234567890122", "6217001234567890122"),
    ],
)
def test_bank_card_cn_valid(account: str, normalized: str) -> None:
    result = check(1250, "CNY", type="bank_card_cn", account=account, name="张三", bank_name="ICBC")
    assert_ok(result)
    assert result.warnings == []
    assert result.normalized == {
        "type": "bank_card_cn",
        "account": normalized,
        "name": "张三",
        "bank_name": "ICBC",
    }


def test_bank_card_cn_luhn_mismatch_is_only_a_warning() -> None:
    result = check(
        1250, "CNY", type="bank_card_cn", account="6222021234567890", name="张三", bank_name="ICBC"
    )
    assert result.valid
    assert warning_codes(result) == [("recipient.account", "checksum_mismatch")]
    assert result.normalized["account"] == "6222021234567890"


@pytest.mark.parametrize(
    ("account", "code"),
    [
        ("622202123456789", "invalid_length"),  # 15
        ("62220212345678901234", "invalid_length"),  # 20
        ("6222O21234567894", "invalid_format"),  # letter O
        ("6222/0212/3456/7894", "invalid_format"),
    ],
)
def test_bank_card_cn_invalid(account: str, code: str) -> None:
    result = check(1250, "CNY", type="bank_card_cn", account=account, name="张三", bank_name="ICBC")
    assert codes(result) == [("recipient.account", code)]


def test_bank_card_cn_requires_cny() -> None:
    result = check(
        1250, "USD", type="bank_card_cn", account="6222021234567894", name="张三", bank_name="ICBC"
    )
    assert codes(result) == [("currency", "unsupported_currency")]


# --- iban -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account", "normalized"),
    [
        ("DE89370400440532013000", "DE89370400440532013000"),
        ("DE89 3704 0044 0532 0130 00", "DE89370400440532013000"),
        ("gb82 west 1234 5698 7654 32", "GB82WEST12345698765432"),
    ],
)
def test_iban_valid_is_normalized_to_compact_upper_case(account: str, normalized: str) -> None:
    result = check(1250, "EUR", type="iban", account=account, name="Max Mustermann")
    assert_ok(result)
    assert result.normalized == {
        "type": "iban",
        "account": normalized,
        "name": "Max Mustermann",
        "bic": None,
    }


@pytest.mark.parametrize(
    ("account", "code"),
    [
        ("DE88370400440532013000", "checksum_mismatch"),
        ("GB83WEST12345698765432", "checksum_mismatch"),
        ("DE8937040044053201300", "invalid_length"),
        ("DE893704004405320130000", "invalid_length"),
        ("XX89370400440532013000", "invalid_country"),
        ("DE8937040044053201300A", "invalid_format"),  # DE BBAN is all digits
        ("DE89-3704-0044-0532-0130-00", "invalid_format"),
        ("1234567890", "invalid_format"),
    ],
)
def test_iban_invalid(account: str, code: str) -> None:
    result = check(1250, "EUR", type="iban", account=account, name="Max Mustermann")
    assert codes(result) == [("recipient.account", code)]


def test_iban_any_currency() -> None:
    for currency in ("EUR", "GBP", "USD", "CNY"):
        assert_ok(check(1, currency, type="iban", account="GB82WEST12345698765432", name="J Doe"))


def test_iban_with_valid_bic_is_normalized() -> None:
    result = check(
        1250, "EUR", type="iban", account="DE89370400440532013000", name="M", bic="cobadeffxxx"
    )
    assert_ok(result)
    assert result.normalized["bic"] == "COBADEFFXXX"


@pytest.mark.parametrize(
    ("bic", "code"), [("COBAXXFF", "invalid_country"), ("COBA_EFF", "invalid_format")]
)
def test_iban_with_invalid_bic(bic: str, code: str) -> None:
    result = check(1250, "EUR", type="iban", account="DE89370400440532013000", name="M", bic=bic)
    assert codes(result) == [("recipient.bic", code)]


# --- us_bank ----------------------------------------------------------------------------------


@pytest.mark.parametrize("routing", ["011000015", "021000021", "0210-0002-1"])
def test_us_bank_valid(routing: str) -> None:
    result = check(
        1250,
        "USD",
        type="us_bank",
        routing_number=routing,
        account="000123456789",
        account_type="checking",
        name="John Doe",
    )
    assert_ok(result)
    assert result.normalized["routing_number"] == routing.replace("-", "")
    assert result.normalized["account"] == "000123456789"
    assert result.normalized["account_type"] == "checking"
    assert result.normalized["type"] == "us_bank"


@pytest.mark.parametrize(
    ("routing", "code"),
    [
        ("021000022", "checksum_mismatch"),
        ("011000016", "checksum_mismatch"),
        ("02100002", "invalid_length"),
        ("0210000211", "invalid_length"),
        ("02100002A", "invalid_format"),
        ("000000000", "invalid_format"),  # passes the checksum but is not a routing number
    ],
)
def test_us_bank_invalid_routing_number(routing: str, code: str) -> None:
    result = check(
        1250,
        "USD",
        type="us_bank",
        routing_number=routing,
        account="000123456789",
        account_type="savings",
        name="John Doe",
    )
    assert codes(result) == [("recipient.routing_number", code)]


@pytest.mark.parametrize(
    ("account", "code"),
    [
        ("123", "invalid_length"),
        ("123456789012345678", "invalid_length"),
        ("12345X", "invalid_format"),
    ],
)
def test_us_bank_invalid_account(account: str, code: str) -> None:
    result = check(
        1250,
        "USD",
        type="us_bank",
        routing_number="011000015",
        account=account,
        account_type="checking",
        name="John Doe",
    )
    assert codes(result) == [("recipient.account", code)]


@pytest.mark.parametrize("account", ["1234", "12345678901234567"])
def test_us_bank_account_length_bounds(account: str) -> None:
    result = check(
        1250,
        "USD",
        type="us_bank",
        routing_number="011000015",
        account=account,
        account_type="checking",
        name="John Doe",
    )
    assert_ok(result)


def test_us_bank_requires_usd() -> None:
    result = check(
        1250,
        "CNY",
        type="us_bank",
        routing_number="011000015",
        account="123456789",
        account_type="checking",
        name="John Doe",
    )
    assert codes(result) == [("currency", "unsupported_currency")]


# --- paypal -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account", "normalized"),
    [
        ("buyer@Example.com", "buyer@example.com"),
        ("+1 415-555-2671", "+14155552671"),
        ("+44 7911 123456", "+447911123456"),
        ("+86 138 0013 8000", "+8613800138000"),
        ("7X3MBKQ9WZ2LP", "7X3MBKQ9WZ2LP"),  # a PayPal payer id
        ("7x3mbkq9wz2lp", "7X3MBKQ9WZ2LP"),
    ],
)
def test_paypal_valid(account: str, normalized: str) -> None:
    result = check(1250, "EUR", type="paypal", account=account)
    assert_ok(result)
    assert result.normalized == {"type": "paypal", "account": normalized, "name": None}


@pytest.mark.parametrize(
    "account",
    [
        "14155552671",
        "(415) 555-2671",
        "+1 415 555",
        "+999 1234567",
        "buyer@",
        "buyer@@x.com",
        "paypal-me",
        "7X3MBKQ9WZ2L",  # 12 characters
        "7X3MBKQ9WZ2LPQ",  # 14
        "7X3MBKQ9WZ2LO",  # O is not in PayPal's payer id alphabet
        "7X3MBKQ9WZ2L1",  # nor is 1
        "2345678923456",  # 13 digits: a phone number without its "+", not a payer id
    ],
)
def test_paypal_invalid(account: str) -> None:
    result = check(1250, "USD", type="paypal", account=account)
    assert codes(result) == [("recipient.account", "invalid_format")]


# --- stripe_account ---------------------------------------------------------------------------


def test_stripe_account_valid() -> None:
    result = check(1250, "USD", type="stripe_account", account="acct_1032D82eZvKYlo2C")
    assert_ok(result)
    assert result.normalized == {
        "type": "stripe_account",
        "account": "acct_1032D82eZvKYlo2C",
        "name": None,
    }


@pytest.mark.parametrize(
    "account", ["acct_12345", "acc_1032D82eZvKYlo2C", "acct_1032D82e-ZvK", "cus_123456789"]
)
def test_stripe_account_invalid(account: str) -> None:
    result = check(1250, "USD", type="stripe_account", account=account)
    assert codes(result) == [("recipient.account", "invalid_format")]


# --- messages never echo the account ----------------------------------------------------------


_LEAK_CASES: list[tuple[dict[str, Any], int | None, str | None]] = [
    ({"type": "alipay", "account": "12345678901", "name": "张三"}, 5, "CNY"),
    ({"type": "alipay", "account": "208810212252433", "name": "张三"}, 5, "USD"),
    ({"type": "alipay", "account": "zhang@localhost", "name": "张三"}, 5, "CNY"),
    (
        {"type": "wechat", "account": "oUpF8uMuAJO.M2pxb1Q9zNjWeS6o", "app_id": "wx123"},
        200_000,
        "CNY",
    ),
    ({"type": "wechat", "account": "short_openid", "app_id": APP_ID}, 1, "CNY"),
    (
        {
            "type": "bank_card_cn",
            "account": "6222021234567890",
            "name": "张三",
            "bank_name": "ICBC",
        },
        1,
        "USD",
    ),
    (
        {"type": "bank_card_cn", "account": "622202123456789", "name": "张三", "bank_name": "ICBC"},
        1,
        "CNY",
    ),
    ({"type": "iban", "account": "DE88370400440532013000", "name": "M"}, 1, "EUR"),
    ({"type": "iban", "account": "DE8937040044053201300", "name": "M"}, 1, "EUR"),
    ({"type": "iban", "account": "DE8937040044053201300A", "name": "M"}, 1, "EUR"),
    ({"type": "iban", "account": "XX89370400440532013000", "name": "M"}, 1, "EUR"),
    (
        {"type": "iban", "account": "DE89-3704-0044-0532-0130-00", "name": "M", "bic": "COBAXXFF"},
        1,
        "EUR",
    ),
    (
        {
            "type": "us_bank",
            "routing_number": "021000022",
            "account": "123456789012345678",
            "account_type": "checking",
            "name": "J",
        },
        1,
        "CNY",
    ),
    (
        {
            "type": "us_bank",
            "routing_number": "02100002A",
            "account": "12345X789",
            "account_type": "checking",
            "name": "J",
        },
        1,
        "USD",
    ),
    ({"type": "paypal", "account": "+999 1234567"}, 1, "USD"),
    ({"type": "paypal", "account": "buyer@@example.com"}, 1, "USD"),
    ({"type": "stripe_account", "account": "acct_12345"}, 1, "USD"),
]


@pytest.mark.parametrize(("fields", "amount_minor", "currency"), _LEAK_CASES)
def test_messages_never_contain_the_account(
    fields: dict[str, Any], amount_minor: int | None, currency: str | None
) -> None:
    result = validate_recipient(make(**fields), amount_minor, currency)
    problems = result.errors + result.warnings
    assert problems, "each case must produce at least one message"
    secrets = {fields["account"], re.sub(r"[\s-]", "", fields["account"])}
    if "routing_number" in fields:
        secrets.add(fields["routing_number"])
    for problem in problems:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", problem.code)
        assert problem.field in {"amount", "currency"} or problem.field.startswith("recipient.")
        assert problem.message
        for secret in secrets:
            assert secret not in problem.message
            assert secret.upper() not in problem.message.upper()


# --- fingerprint ------------------------------------------------------------------------------


def test_fingerprint_is_stable_hex_and_uses_the_normalized_form() -> None:
    a = check(None, None, type="alipay", account="+86 138 0013 8000", name="张三").normalized
    b = check(None, None, type="alipay", account="13800138000", name="李四").normalized
    fp = recipient_fingerprint(a, FINGERPRINT_KEY)
    assert re.fullmatch(r"[0-9a-f]{64}", fp)
    assert fp == recipient_fingerprint(b, FINGERPRINT_KEY)  # same account, name does not matter
    assert "13800138000" not in fp


def test_fingerprint_depends_on_type() -> None:
    alipay = {"type": "alipay", "account": "buyer@example.com", "name": "x"}
    paypal = {"type": "paypal", "account": "buyer@example.com", "name": None}
    assert recipient_fingerprint(alipay, FINGERPRINT_KEY) != recipient_fingerprint(
        paypal, FINGERPRINT_KEY
    )


def test_fingerprint_email_is_case_insensitive() -> None:
    a = {"type": "paypal", "account": "Buyer@example.com", "name": None}
    b = {"type": "paypal", "account": "buyer@example.com", "name": None}
    assert recipient_fingerprint(a, FINGERPRINT_KEY) == recipient_fingerprint(b, FINGERPRINT_KEY)


def test_fingerprint_includes_routing_number_for_us_bank() -> None:
    base = {
        "type": "us_bank",
        "routing_number": "011000015",
        "account": "123456789",
        "account_type": "checking",
        "name": "J",
    }
    other_bank = {**base, "routing_number": "021000021"}
    other_type = {**base, "account_type": "savings", "name": "K"}
    assert recipient_fingerprint(base, FINGERPRINT_KEY) != recipient_fingerprint(
        other_bank, FINGERPRINT_KEY
    )
    assert recipient_fingerprint(base, FINGERPRINT_KEY) == recipient_fingerprint(
        other_type, FINGERPRINT_KEY
    )


def test_fingerprint_includes_app_id_for_wechat() -> None:
    base = {"type": "wechat", "account": OPENID, "app_id": APP_ID, "name": None}
    other_app = {**base, "app_id": "wx9999999999999999"}
    assert recipient_fingerprint(base, FINGERPRINT_KEY) != recipient_fingerprint(
        other_app, FINGERPRINT_KEY
    )


def test_fingerprint_parts_are_unambiguous() -> None:
    a = {"type": "wechat", "account": "ab", "app_id": "c", "name": None}
    b = {"type": "wechat", "account": "a", "app_id": "bc", "name": None}
    assert recipient_fingerprint(a, FINGERPRINT_KEY) != recipient_fingerprint(b, FINGERPRINT_KEY)


@pytest.mark.parametrize(
    "normalized", [{"type": "alipay"}, {"type": "alipay", "account": None}, {"account": "x"}]
)
def test_fingerprint_requires_type_and_account(normalized: dict[str, str | None]) -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        recipient_fingerprint(normalized, FINGERPRINT_KEY)


def test_fingerprint_depends_on_the_key() -> None:
    recipient = {"type": "alipay", "account": "13800138000", "name": None}
    assert recipient_fingerprint(recipient, FINGERPRINT_KEY) != recipient_fingerprint(
        recipient, b"j" * 32
    )
    # Not a bare hash of the parts: without the key the value cannot be recomputed.
    unkeyed = hashlib.sha256(b'["rfp2","alipay","13800138000"]').hexdigest()
    assert recipient_fingerprint(recipient, FINGERPRINT_KEY) != unkeyed


def test_fingerprint_refuses_a_short_key() -> None:
    recipient = {"type": "alipay", "account": "13800138000", "name": None}
    with pytest.raises(ValueError, match="key"):
        recipient_fingerprint(recipient, b"short")


def test_recipient_check_valid_property() -> None:
    ok = check(None, None, type="stripe_account", account="acct_1032D82eZvKYlo2C")
    bad = check(None, None, type="stripe_account", account="nope")
    assert ok.valid is True
    assert bad.valid is False
