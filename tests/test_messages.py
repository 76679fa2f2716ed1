"""Problem texts follow Accept-Language (Simplified Chinese or English), codes never change,
and the one catalogue (payoutsvc.messages) has a Chinese text for every code the service can
emit: the walk below finds the codes in the source and fails naming any without one."""

from __future__ import annotations

import ast
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from stdnum import luhn

import payoutsvc
from payoutsvc import http_errors
from payoutsvc.errors import error_codes, localized_problem
from payoutsvc.main import create_app
from payoutsvc.messages import (
    ERRORS,
    FIELD_ERRORS,
    MESSAGES,
    NOUNS,
    message,
    negotiate,
    placeholders,
)
from payoutsvc.policy import document as policy_document
from payoutsvc.policy.rules import RULES
from payoutsvc.recipients import validation
from payoutsvc.recipients.service import BLOCKED_CODE
from payoutsvc.webhooks.ssrf import REFUSAL_CODES
from tests.api_support import assert_problem
from tests.conftest import ADMIN_KEY, make_settings
from tests.helpers import new_integration_client
from tests.policy.support import approve, body, created, post, setup_world

CJK = re.compile(r"[\u4e00-\u9fff]")
SRC = Path(payoutsvc.__file__).parent
ZH = {"Accept-Language": "zh-CN"}
# Calls whose argument is a field-error code: (function name, index of the code argument).
CODE_ARGUMENTS = {
    "FieldError": 1,
    "error": 1,  # recipients/validation.py _Checker.error(path, code, message)
    "warning": 1,
    "MoneyError": 0,
    "UnsafeWebhookUrl": 0,
    "PydanticCustomError": 0,
    "_custom_error": 0,
}


# -- the catalogue walk ---------------------------------------------------------------------
def _literal_codes_in_source() -> dict[str, str]:
    """Every string literal passed as a code to the calls above, anywhere in src/, with
    where it was found."""
    found: dict[str, str] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            index = CODE_ARGUMENTS.get(name)
            if index is None:
                continue
            arg: ast.expr | None = node.args[index] if len(node.args) > index else None
            for keyword in node.keywords:
                if keyword.arg == "code":
                    arg = keyword.value
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.setdefault(arg.value, f"{path.relative_to(SRC)}:{node.lineno}")
    return found


def field_error_codes() -> dict[str, str]:
    """Every field-error code the service can emit, and where it comes from."""
    codes = _literal_codes_in_source()
    codes.pop("policy_invalid", None)  # a wrapper: its field errors are listed one by one
    for table, where in (
        (http_errors._PYDANTIC_CODES, "http_errors._PYDANTIC_CODES"),
        (policy_document._PYDANTIC_CODES, "policy.document._PYDANTIC_CODES"),
    ):
        for code in table.values():
            codes.setdefault(code, where)
    for rule in RULES:
        codes.setdefault(rule.name, f"policy rule {type(rule).__name__}")
    for _, code in validation._SCHWIFTY_ERRORS:
        codes.setdefault(code, "recipients.validation._SCHWIFTY_ERRORS")
    for code in REFUSAL_CODES:
        codes.setdefault(code, "webhooks.ssrf.REFUSAL_CODES")
    codes.setdefault(BLOCKED_CODE, "recipients.service.BLOCKED_CODE")
    return codes


def problem_codes() -> dict[str, str]:
    codes = {code: f"errors.{cls.__name__}" for code, cls in error_codes().items()}
    for code, _ in http_errors._HTTP_CODES.values():
        codes.setdefault(code, "http_errors._HTTP_CODES")
    codes.setdefault("http_error", "http_errors._http_error")
    return codes


def test_every_problem_code_has_a_chinese_title_and_detail() -> None:
    missing = {code: where for code, where in problem_codes().items() if code not in ERRORS}
    assert not missing, f"problem codes without a zh-CN entry in messages.ERRORS: {missing}"
    for code, text in ERRORS.items():
        assert CJK.search(text.title), code
        assert CJK.search(text.detail), code


def test_every_field_error_code_has_a_chinese_message() -> None:
    codes = field_error_codes()
    # The walk does find the codes (a broken walk must not pass by finding nothing).
    assert {"required", "invalid_format", "request_max", "private_address"} <= set(codes)
    missing = {code: where for code, where in codes.items() if code not in FIELD_ERRORS}
    assert not missing, f"field-error codes without a zh-CN message in FIELD_ERRORS: {missing}"
    for code, text in FIELD_ERRORS.items():
        assert CJK.search(text), code


def test_every_catalogue_message_is_translated_with_the_same_facts() -> None:
    for ident, text in MESSAGES.items():
        english, chinese = placeholders(text.en), placeholders(text.zh)
        # A Chinese text may name a fact by its Chinese word (``what_zh``), never drop one.
        assert {name.removesuffix("_zh") for name in chinese} == english, ident
        if ident != "list_separator":
            assert CJK.search(text.zh), ident
    assert all(CJK.search(noun) for noun in NOUNS.values())


def test_a_message_refuses_an_unknown_id_or_a_missing_fact() -> None:
    with pytest.raises(KeyError):
        message("no_such_message")
    with pytest.raises(KeyError, match="limit"):
        message("payload_too_large")
    rendered = message("payload_too_large", limit=65536)
    assert rendered.render() == "The request body is larger than 65536 bytes."
    assert rendered.render("zh-CN") == "请求体超过了 65536 字节的上限。"


def test_a_code_missing_from_the_catalogue_keeps_its_english_text() -> None:
    """What a client sees until the lead adds a new code's translation (the walk above
    fails meanwhile): English, never a bare code."""
    problem = localized_problem(
        418, "brand_new_code", None, [], "zh-CN", english=("Teapot", "Short and stout.")
    )
    assert (problem["title"], problem["detail"], problem["code"]) == (
        "Teapot",
        "Short and stout.",
        "brand_new_code",
    )


# -- negotiation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "locale"),
    [
        (None, "en"),
        ("", "en"),
        ("zh-CN", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh-Hans", "zh-CN"),
        ("zh-Hans-CN", "zh-CN"),
        ("ZH-cn", "zh-CN"),
        ("zh-TW", "en"),
        ("zh-Hant", "en"),
        ("zh-HK,zh-TW;q=0.9", "en"),
        ("fr-FR", "en"),
        ("en-US,zh-CN;q=0.8", "en"),
        ("zh-CN;q=0.8,en;q=0.9", "en"),
        ("en;q=0.5,zh-CN;q=0.9", "zh-CN"),
        ("fr;q=1.0,zh;q=0.5", "zh-CN"),  # French is not offered; Chinese is acceptable
        ("zh-CN;q=0", "en"),
        ("zh-CN;q=0,en", "en"),
        ("de, zh-Hans;q=0.7, *;q=0.1", "zh-CN"),
        ("zh-CN;q=abc", "en"),
        ("en;q=0.8, zh;q=0.8", "en"),  # a tie keeps the header's order
        ("*", "en"),
    ],
)
def test_accept_language_negotiation(header: str | None, locale: str) -> None:
    assert negotiate(header) == locale


# -- through the API ------------------------------------------------------------------------
@contextmanager
def speaking(client: httpx.AsyncClient, language: str) -> Iterator[None]:
    client.headers["Accept-Language"] = language
    try:
        yield
    finally:
        del client.headers["Accept-Language"]


def chinese(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    problem = assert_problem(response, status, code)
    assert response.headers["content-language"] == "zh-CN"
    assert "Accept-Language" in response.headers["vary"]
    assert problem["title"] == ERRORS[code].title
    assert CJK.search(problem["detail"]), problem
    for error in problem["errors"]:
        assert CJK.search(error["message"]), error
    return problem


async def test_zh_cn_gets_chinese_401_403_404_409_with_the_same_codes(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as anonymous:
        chinese(await anonymous.get("/v1/payouts", headers=ZH), 401, "unauthorized")
        bad_key = {**ZH, "Authorization": "Bearer psk_wrong"}
        chinese(await anonymous.get("/v1/payouts", headers=bad_key), 401, "unauthorized")
    reader = await new_integration_client(client, "zendesk", ["payouts:read"])
    async with reader:
        refused = await reader.post("/v1/payouts", json={}, headers=ZH)
    assert "payouts:write" in chinese(refused, 403, "insufficient_scope")["detail"]
    missing = chinese(await client.get("/v1/payouts/po_missing", headers=ZH), 404, "not_found")
    assert missing["detail"] == "未找到付款 po_missing。"
    chinese(await client.get("/v1/nowhere", headers=ZH), 404, "not_found")
    chinese(await client.get("/v1/pay%01outs", headers=ZH), 404, "not_found")
    chinese(await client.delete("/v1/payouts", headers=ZH), 405, "method_not_allowed")

    await setup_world(client)
    payout = await created(client, body("5.00"))
    cancel = {"operator_id": "sup-1", "reason": "dup"}
    url = f"/v1/payouts/{payout['id']}/cancel"
    assert (await client.post(url, json=cancel)).status_code == 200
    again = chinese(
        await client.post(url, json=cancel, headers=ZH), 409, "invalid_status_transition"
    )
    assert payout["id"] in again["detail"]
    assert "canceled" in again["detail"]
    # The same errors in English by default, and for a language we do not offer.
    for headers in ({}, {"Accept-Language": "zh-TW"}):
        english = await client.post(url, json=cancel, headers=headers)
        problem = assert_problem(english, 409, "invalid_status_transition")
        assert problem["title"] == "Action not allowed in the current status"
        assert problem["detail"] == f"Cannot cancel {payout['id']}: its status is 'canceled'."
        assert english.headers["content-language"] == "en"


async def test_zh_cn_validation_errors_keep_fields_and_codes(client: httpx.AsyncClient) -> None:
    payload = {
        "amount": 12.5,
        "currency": "CNY",
        "surprise": 1,
        "reason": "refund",
        "ticket": {"system": "zendesk", "id": "x" * 129},
    }
    english = assert_problem(await post(client, payload), 422, "validation_failed")
    answer = await client.post(
        "/v1/payouts", json=payload, headers={**ZH, "Idempotency-Key": uuid.uuid4().hex}
    )
    problem = chinese(answer, 422, "validation_failed")
    assert [(e["field"], e["code"]) for e in problem["errors"]] == [
        (e["field"], e["code"]) for e in english["errors"]
    ]
    by_code = {e["code"]: e["message"] for e in problem["errors"]}
    assert by_code["required"] == "此字段为必填项。"
    assert by_code["unknown_field"] == "未知字段。"
    assert by_code["too_long"] == "最多 128 个字符。"  # the bound, as in English
    assert "128" in {e["code"]: e["message"] for e in english["errors"]}["too_long"]
    assert problem["detail"].startswith(f"{problem['errors'][0]['field']}: ")
    malformed = await client.post(
        "/v1/payouts",
        content=b"{not json",
        headers={**ZH, "Idempotency-Key": "k", "Content-Type": "application/json"},
    )
    chinese(malformed, 400, "invalid_json")


async def test_zh_cn_policy_refusal_carries_the_amounts_also_when_replayed(
    client: httpx.AsyncClient,
) -> None:
    await setup_world(client)
    key, payload = uuid.uuid4().hex, body("100.01")
    with speaking(client, "zh-CN"):
        first = await post(client, payload, key=key)
    problem = chinese(first, 422, "policy_violation")
    [error] = problem["errors"]
    assert (error["field"], error["code"]) == ("amount", "request_max")
    assert error["message"] == "100.01 CNY 超出了 agent 角色的单笔限额 100.00 CNY。"
    assert error["message"] in problem["detail"]
    assert "_i18n" not in first.text
    # The stored refusal replays in the replaying request's language, with the same facts.
    with speaking(client, "en-GB"):
        replayed = await post(client, payload, key=key)
    again = assert_problem(replayed, 422, "policy_violation")
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.headers["content-language"] == "en"
    assert again["title"] == "Payout forbidden by policy"
    assert again["errors"][0]["message"] == (
        "100.01 CNY exceeds the agent request limit of 100.00 CNY."
    )
    assert "_i18n" not in replayed.text
    with speaking(client, "zh"):
        in_chinese = await post(client, payload, key=key)
    assert chinese(in_chinese, 422, "policy_violation") == problem


@asynccontextmanager
async def limited_app(database_url: str, **overrides: Any) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(database_url, **overrides))
    async with application.router.lifespan_context(application):
        yield application


async def test_zh_cn_413_and_429_from_the_middleware(database_url: str) -> None:
    async with limited_app(
        database_url, rate_limit="1/second", rate_limit_burst=2, max_body_bytes=1024
    ) as app:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            admin = {**ZH, "Authorization": f"Bearer {ADMIN_KEY}"}
            large = await http.post("/v1/operators", content=b"x" * 2048, headers=admin)
            too_large = chinese(large, 413, "payload_too_large")
            assert "1024" in too_large["detail"]
            answers = [await http.get("/v1/operators", headers=admin) for _ in range(3)]
            guesses = [
                await http.get("/v1/operators", headers={**ZH, "Authorization": "Bearer psk_x"})
                for _ in range(3)
            ]
    chinese(answers[-1], 429, "rate_limited")
    assert "retry-after" in answers[-1].headers
    chinese(guesses[-1], 429, "rate_limited")
    assert "地址" in guesses[-1].json()["detail"]


async def test_zh_cn_approval_refusals_name_the_operator_and_amounts(
    client: httpx.AsyncClient,
) -> None:
    version = await setup_world(client)
    own = await created(client, body("150.00", requested_by="sup-1"))
    large = await created(client, body("90.00"))
    with speaking(client, "zh-CN"):
        self_approval = await approve(client, own["id"], "sup-1")
        agent = await approve(client, large["id"], "agent-2")
        first = await approve(client, large["id"], "sup-1")
        twice = await approve(client, large["id"], "sup-1")
    assert "sup-1" in chinese(self_approval, 403, "self_approval_forbidden")["detail"]
    no_rights = chinese(agent, 403, "approval_limit_exceeded")["detail"]
    assert (
        no_rights == f"根据策略版本 {version}，agent-2（agent）没有审批权限；这笔付款是 90.00 CNY。"
    )
    assert first.status_code == 200, first.text
    assert large["id"] in chinese(twice, 409, "invalid_status_transition")["detail"]


async def test_zh_cn_recipient_checks_state_their_facts(client: httpx.AsyncClient) -> None:
    short_iban = {"type": "iban", "account": "DE89 3704 0044 0532 0130 0", "name": "M"}
    account = next(
        f"622202123456789{d}" for d in "0123456789" if not luhn.is_valid(f"622202123456789{d}")
    )
    card = {"type": "bank_card_cn", "account": account, "name": "张三", "bank_name": "ICBC"}
    answers = {}
    for language in ("zh-CN", "en"):
        with speaking(client, language):
            iban = await client.post("/v1/recipients/validate", json={"recipient": short_iban})
            checked = await client.post("/v1/recipients/validate", json={"recipient": card})
        assert iban.status_code == 200, iban.text
        assert iban.headers["content-language"] == language
        answers[language] = (iban.json()["errors"], checked.json()["warnings"])
    (iban_zh, luhn_zh), (iban_en, luhn_en) = answers["zh-CN"], answers["en"]
    assert [(e["field"], e["code"]) for e in iban_zh] == [("recipient.account", "invalid_length")]
    assert [(e["field"], e["code"]) for e in iban_en] == [("recipient.account", "invalid_length")]
    assert iban_zh[0]["message"] == "DE 的 IBAN 必须为 22 个字符（实际 21 个）。"
    assert iban_en[0]["message"] == "A DE IBAN must be 22 characters long (got 21)."
    assert [e["code"] for e in luhn_zh] == [e["code"] for e in luhn_en] == ["checksum_mismatch"]
    assert luhn_zh[0]["message"] == "卡号未通过 Luhn 校验，请仔细核对。"
