"""The full account number never leaves the service: not in responses, logs or the database
in clear; it exists only encrypted, and the gateway can still decrypt it."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.exceptions import InvalidTag
from fastapi import FastAPI
from sqlalchemy import inspect

from payoutsvc.config import Settings
from payoutsvc.crypto import EncryptionKeyError, load_cipher
from payoutsvc.main import create_app
from payoutsvc.recipients.storage import unseal
from tests.api_support import CaseFailures, db_session, post_payout, raw_bytes, scalar, table_dump
from tests.conftest import ADMIN_KEY, make_settings
from tests.helpers import create_operator, payout_body

# (recipient, amount, currency, the secret part that must never show)
RECIPIENTS: list[tuple[dict[str, str], str, str, str]] = [
    ({"type": "alipay", "account": "13800138000", "name": "张三"}, "12.50", "CNY", "13800138000"),
    (
        {"type": "alipay", "account": "zhang.san.refunds@example.com", "name": "张三"},
        "12.50",
        "CNY",
        "zhang.san.refunds",
    ),
    (
        {
            "type": "wechat",
            "account": "oUpF8uMuAJOM2pxb1Q9zNjWeS6o",
            "app_id": "wx8888888888888888",
            "name": "李四",
        },
        "12.50",
        "CNY",
        "oUpF8uMuAJOM2pxb1Q9zNjWeS6o",
    ),
    (
        {
            "type": "bank_card_cn",
            "account": "6222020000000007",
            "name": "王五",
            "bank_name": "ICBC",
        },
        "12.50",
        "CNY",
        "6222020000000007",
    ),
    (
        {"type": "iban", "account": "DE89 3704 0044 0532 0130 00", "name": "Erika Mustermann"},
        "5.00",
        "EUR",
        "370400440532013000",
    ),
    (
        {
            "type": "us_bank",
            "routing_number": "011000015",
            "account": "123456789012",
            "account_type": "checking",
            "name": "John Doe",
        },
        "5.00",
        "USD",
        "123456789012",
    ),
    (
        {"type": "paypal", "account": "buyer.person@example.org"},
        "5.00",
        "USD",
        "buyer.person",
    ),
]


class _Capture(logging.Handler):
    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
async def logged_app(database_url: str) -> AsyncIterator[tuple[FastAPI, _Capture]]:
    """An app logging everything (DEBUG, JSON) into a list, through the service's own
    structlog pipeline, so the test sees exactly what production would write."""
    app = create_app(make_settings(database_url, log_level="DEBUG", log_format="json"))
    async with app.router.lifespan_context(app):
        root = logging.getLogger()
        capture = _Capture(root.handlers[0].formatter if root.handlers else None)
        root.addHandler(capture)
        try:
            yield app, capture
        finally:
            root.removeHandler(capture)


@pytest.fixture
async def logged_client(
    logged_app: tuple[FastAPI, _Capture],
) -> AsyncIterator[httpx.AsyncClient]:
    app, _ = logged_app
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as http:
        yield http


async def _all_tables(app: FastAPI) -> bytes:
    async with db_session(app) as session:
        connection = await session.connection()
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    dumps = [raw_bytes(await table_dump(app, name)) for name in names]
    return b"\x00".join(dumps)


async def test_account_never_leaves_in_clear(
    logged_app: tuple[FastAPI, _Capture], logged_client: httpx.AsyncClient
) -> None:
    app, logs = logged_app
    client = logged_client
    await create_operator(client, "agent-17", "agent")
    failures = CaseFailures()
    for index, (recipient, amount, currency, secret) in enumerate(RECIPIENTS):
        with failures.case(f"{recipient['type']}-{index}"):
            await _check_recipient(app, logs, client, index, recipient, amount, currency, secret)
    failures.check()


async def _check_recipient(
    app: FastAPI,
    logs: _Capture,
    client: httpx.AsyncClient,
    index: int,
    recipient: dict[str, str],
    amount: str,
    currency: str,
    secret: str,
) -> None:
    created = await post_payout(
        client, payout_body(recipient=recipient, amount=amount, currency=currency)
    )
    assert created.status_code == 201, created.text
    payout = created.json()
    replay_body = payout_body(recipient=recipient, amount=amount, currency=currency)
    answers: list[httpx.Response] = [
        created,
        await client.get(f"/v1/payouts/{payout['id']}"),
        await client.get("/v1/payouts"),
        await client.get(f"/v1/payouts/{payout['id']}/events"),
        await client.post(f"/v1/payouts/{payout['id']}/cancel", json={"operator_id": "agent-17"}),
        await client.get(f"/v1/payouts/{payout['id']}/events"),
        await post_payout(client, replay_body, key=f"masking-check-{index}"),
        await post_payout(client, replay_body, key=f"masking-check-{index}"),
    ]
    for answer in answers:
        assert answer.status_code < 300, answer.text
        assert secret not in answer.text
        assert secret.encode() not in answer.content
    masked = payout["recipient"]["account_masked"]
    assert "*" in masked
    assert masked != recipient["account"]

    # The logs saw this payout (so they were captured) and never its account.
    text = "\n".join(logs.lines)
    assert payout["id"] in text
    assert secret not in text

    # In the database the account exists only as ciphertext...
    stored = await _all_tables(app)
    assert secret.encode() not in stored
    blob = bytes(
        await scalar(app, "SELECT recipient_encrypted FROM payouts WHERE id = :id", id=payout["id"])
    )
    assert secret.encode() not in blob
    # ...which the gateway can open with the service key, bound to this payout.
    full = unseal(app.state.runtime.cipher, blob, payout["id"])
    assert secret in (full["account"] or "").replace(" ", "")
    assert full["type"] == recipient["type"]
    with pytest.raises(InvalidTag):
        unseal(app.state.runtime.cipher, blob, "po_another_payout")


async def test_validation_errors_do_not_echo_the_account(client: httpx.AsyncClient) -> None:
    await create_operator(client, "agent-17", "agent")
    cases = [
        {
            "type": "bank_card_cn",
            "account": "62220200000000079999",
            "name": "王五",
            "bank_name": "X",
        },
        {"type": "iban", "account": "DE00370400440532013000", "name": "Erika"},
        {
            "type": "us_bank",
            "routing_number": "011000016",
            "account": "99887766554",
            "account_type": "checking",
            "name": "John",
        },
        {"type": "alipay", "account": "x" * 129, "name": "张三"},
    ]
    for recipient in cases:
        response = await post_payout(client, payout_body(recipient=recipient))
        assert response.status_code == 422, response.text
        compact = recipient["account"]
        assert compact not in response.text
        assert compact[4:] not in response.text


def test_default_key_file_is_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/payoutsvc.db")
    assert settings.encryption_key is None
    cipher = load_cipher(settings)
    key_file = tmp_path / "payoutsvc.db.key"
    assert key_file.is_file()
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    blob = cipher.encrypt(b"secret", "po_1")
    # The next start reads the same key: what was sealed stays readable.
    assert load_cipher(settings).decrypt(blob, "po_1") == b"secret"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600


def test_default_key_file_is_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        load_cipher(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "x.db.key").st_mode) == 0o600


def test_production_needs_an_explicit_key(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/p.db", environment="production"
    )
    with pytest.raises(EncryptionKeyError):
        load_cipher(settings)
    assert not (tmp_path / "p.db.key").exists()


@pytest.mark.parametrize("bad", ["not base64 at all!", "c2hvcnQ="])
def test_a_malformed_key_is_refused(bad: str) -> None:
    with pytest.raises(EncryptionKeyError):
        load_cipher(Settings(encryption_key=bad))


def test_wrong_key_cannot_decrypt(tmp_path: Path) -> None:
    one = load_cipher(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/a.db"))
    other = load_cipher(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/b.db"))
    blob = one.encrypt(b'{"account": "13800138000"}', "po_1")
    assert b"13800138000" not in blob
    with pytest.raises(InvalidTag):
        other.decrypt(blob, "po_1")


async def test_log_lines_carry_request_integration_and_payout(
    logged_app: tuple[FastAPI, _Capture], logged_client: httpx.AsyncClient
) -> None:
    _, logs = logged_app
    await create_operator(logged_client, "agent-17", "agent")
    created = await logged_client.post(
        "/v1/payouts",
        json=payout_body(),
        headers={"Idempotency-Key": "log-check", "X-Request-Id": "log-check-1"},
    )
    assert created.status_code == 201, created.text
    payout_id = created.json()["id"]
    lines = [json.loads(line) for line in logs.lines if line.startswith("{")]
    mine = [line for line in lines if line.get("request_id") == "log-check-1"]
    access = [line for line in mine if line.get("path") == "/v1/payouts"]
    assert access, mine
    assert access[-1]["status"] == 201
    assert access[-1]["integration_id"].startswith("int_")
    assert "timestamp" in access[-1]
    assert any(line.get("payout_id") == payout_id for line in mine), mine
