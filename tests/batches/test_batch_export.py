"""GET /v1/payout-batches/{id}/export: the bank files (Chinese bank-portal CSV, ISO 20022
pain.001.001.09), only payouts awaiting offline payment, each export in the audit chain."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import xmlschema
from fastapi import FastAPI

from payoutsvc.config import Settings
from payoutsvc.executor.service import Executor
from payoutsvc.gateways.registry import GatewayRegistry
from payoutsvc.main import create_app
from tests.api_support import assert_problem
from tests.batches.support import BATCHES, item, post_batch
from tests.conftest import ADMIN_KEY, make_settings
from tests.executor.support import FakeClock
from tests.helpers import act_as, bearer_of, new_integration_client
from tests.policy.support import policy, setup_world

# The ISO 20022 schema of pain.001.001.09 as the sepaxml package ships it (its package data,
# the file published by ISO 20022), kept here so the test needs no network.
PAIN_001_XSD = Path(__file__).with_name("pain.001.001.09.xsd")
DEBTOR_IBAN = "DE02120300000000202051"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(
        database_url,
        gateway_routes="bank_card_cn=manual,iban=manual",
        sepa_debtor_name="Acme Support GmbH",
        sepa_debtor_iban=DEBTOR_IBAN,
        sepa_debtor_bic="BYLADEM1001",
    )


def card(account: str, name: str = "张三") -> dict[str, str]:
    return {"type": "bank_card_cn", "account": account, "name": name, "bank_name": "中国工商银行"}


def iban(account: str, name: str) -> dict[str, str]:
    return {"type": "iban", "account": account, "name": name}


@pytest.fixture
async def executor(app: FastAPI) -> AsyncIterator[Executor]:
    gateways = GatewayRegistry(app.state.runtime)
    yield Executor(app.state.runtime, gateways, clock=FakeClock(), worker_id="test-worker")
    await gateways.aclose()


@pytest.fixture
async def batch(client: httpx.AsyncClient, executor: Executor) -> dict[str, Any]:
    """Five auto-approved payouts by agent-1, routed to the manual gateway: the executor
    hands two bank cards and two IBANs to finance (processing, awaiting_manual_payment);
    one bank card over the policy's manual_over waits for a release."""
    document = policy(currencies=["CNY", "USD", "EUR"])
    agent = document["roles"]["agent"]
    for limit in ("request_max", "auto_approve_max", "daily_request_total"):
        agent[limit]["EUR"] = agent[limit]["CNY"]
    document["per_recipient_daily"] = {"count": 3, "amount": {"CNY": "1500.00", "EUR": "900.00"}}
    document["release"] = {"mode": "manual", "manual_over": {"CNY": "4.00", "EUR": "100.00"}}
    await setup_world(client, document)
    items = [
        item("card-1", "3.00", recipient=card("6222021234567894")),
        item("card-2", "3.25", recipient=card("6217001234567890122", "=SUM(A1)")),
        item("card-late", "6.00", recipient=card("6222 0212 3456 7894")),
        item(
            "iban-1", "9.99", currency="EUR", recipient=iban("DE89370400440532013000", "Max Müller")
        ),
        item("iban-2", "1.50", currency="EUR", recipient=iban("GB82WEST12345698765432", "J Doe")),
    ]
    created = await post_batch(client, items)
    assert created.status_code == 201, created.text
    body = dict(created.json())
    assert body["counts"] == {"approved": 5}
    assert await executor.run_once() == 4  # card-late waits for its release
    body["payout_of"] = {i["item_key"]: i["payout_id"] for i in body["items"]}
    shown = (await client.get(f"{BATCHES}/{body['id']}")).json()
    assert shown["counts"] == {"approved": 1, "processing": 4}
    return body


async def _finance(client: httpx.AsyncClient) -> dict[str, str]:
    return await bearer_of(client, "fin-1", ("payouts:read", "payouts:release"))


async def test_the_csv_lists_the_bank_cards_awaiting_offline_payment(
    client: httpx.AsyncClient, batch: dict[str, Any]
) -> None:
    exported = await client.get(
        f"{BATCHES}/{batch['id']}/export",
        params={"format": "csv"},
        headers=await _finance(client),
    )
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("text/csv")
    assert exported.headers["x-export-rows"] == "2"
    assert exported.content.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert rows[0] == [
        "序号",
        "收款账号",
        "收款账号名称",
        "收款账号开户行",
        "金额",
        "币种",
        "汇款用途",
        "备注",
    ]
    payout_of = batch["payout_of"]
    bank = "中国工商银行"
    assert rows[1:] == [
        ["1", "6222021234567894", "张三", bank, "3.00", "CNY", "退款", payout_of["card-1"]],
        # A name a spreadsheet would run as a formula is written as text.
        ["2", "6217001234567890122", "'=SUM(A1)", bank, "3.25", "CNY", "退款", payout_of["card-2"]],
    ]
    # Each exported payout's chain records who exported which file; the others none.
    digest = hashlib.sha256(exported.content).hexdigest()
    for key in ("card-1", "card-2"):
        events = (await client.get(f"/v1/payouts/{payout_of[key]}/events")).json()["data"]
        assert events[-1]["type"] == "payout.exported"
        assert events[-1]["actor"] == "fin-1"
        assert events[-1]["data"]["file_sha256"] == digest
        assert events[-1]["data"]["format"] == "csv"
    late = (await client.get(f"/v1/payouts/{payout_of['card-late']}/events")).json()["data"]
    assert "payout.exported" not in {e["type"] for e in late}
    # The chains with their new events still verify.
    verified = await client.get("/v1/audit/verify")
    assert verified.json()["ok"] is True, verified.text
    # Everything else still shows the account masked.
    shown = (await client.get(f"/v1/payouts/{payout_of['card-1']}")).json()
    assert "6222021234567894" not in str(shown)


async def test_the_pain_001_file_validates_against_the_iso_20022_schema(
    client: httpx.AsyncClient, batch: dict[str, Any]
) -> None:
    exported = await client.get(
        f"{BATCHES}/{batch['id']}/export",
        params={"format": "pain.001"},
        headers=await _finance(client),
    )
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("application/xml")
    schema = xmlschema.XMLSchema(str(PAIN_001_XSD))
    schema.validate(exported.text)  # raises on any deviation from the schema
    document = schema.to_dict(exported.text)
    initiation = document["CstmrCdtTrfInitn"]
    assert initiation["GrpHdr"]["NbOfTxs"] == "2"
    assert str(initiation["GrpHdr"]["CtrlSum"]) == "11.49"
    payment = initiation["PmtInf"][0]
    assert payment["DbtrAcct"]["Id"]["IBAN"] == DEBTOR_IBAN
    transactions = payment["CdtTrfTxInf"]
    payout_of = batch["payout_of"]
    assert [t["PmtId"]["EndToEndId"] for t in transactions] == [
        payout_of["iban-1"],
        payout_of["iban-2"],
    ]
    assert [t["CdtrAcct"]["Id"]["IBAN"] for t in transactions] == [
        "DE89370400440532013000",
        "GB82WEST12345698765432",
    ]
    assert transactions[0]["Cdtr"]["Nm"] == "Max Muller"  # SEPA's Latin character set
    events = (await client.get(f"/v1/payouts/{payout_of['iban-1']}/events")).json()["data"]
    assert (events[-1]["type"], events[-1]["data"]["format"]) == ("payout.exported", "pain.001")


async def test_exports_that_cannot_be_made_say_why(
    client: httpx.AsyncClient, batch: dict[str, Any], database_url: str
) -> None:
    finance = await _finance(client)
    wrong = await client.get(
        f"{BATCHES}/{batch['id']}/export", params={"format": "xls"}, headers=finance
    )
    assert_problem(wrong, 422, "validation_failed", "format")
    reader = await new_integration_client(client, "books", ["payouts:read"])
    async with reader:
        refused = await reader.get(f"{BATCHES}/{batch['id']}/export", params={"format": "csv"})
        assert_problem(refused, 403, "insufficient_scope")
    # A batch with nothing awaiting offline payment.
    nothing = await post_batch(client, [item("x", "2.00")])
    empty = await client.get(
        f"{BATCHES}/{nothing.json()['id']}/export", params={"format": "csv"}, headers=finance
    )
    assert_problem(empty, 409, "nothing_to_export")


@pytest.fixture
async def unconfigured(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(make_settings(database_url))
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    async with application.router.lifespan_context(application), http:
        yield http


async def test_pain_001_without_a_debtor_account_is_refused(
    batch: dict[str, Any], unconfigured: httpx.AsyncClient
) -> None:
    refused = await unconfigured.get(
        f"{BATCHES}/{batch['id']}/export", params={"format": "pain.001"}
    )
    assert_problem(refused, 409, "sepa_debtor_not_configured")


async def test_a_batch_is_released_paid_offline_and_recorded(
    client: httpx.AsyncClient, batch: dict[str, Any], executor: Executor
) -> None:
    """The worked example: release what waits, the executor hands it to finance, the bank
    file pays it, record-payment settles it."""
    payout_of = batch["payout_of"]
    finance = await _finance(client)
    # A role without can_release releases nothing.
    refused = await client.post(
        f"{BATCHES}/{batch['id']}/release",
        json={},
        headers=await bearer_of(client, "sup-1", ("payouts:release",)),
    )
    assert_problem(refused, 403, "release_not_allowed")
    released = await client.post(f"{BATCHES}/{batch['id']}/release", json={}, headers=finance)
    assert released.status_code == 200, released.text
    results = {r["item_key"]: r for r in released.json()["results"]}
    assert (results["card-late"]["outcome"], results["card-late"]["status"]) == (
        "released",
        "approved",
    )
    assert released.json()["outcomes"] == {"released": 1, "skipped": 4}
    assert await executor.run_once() == 1
    exported = await client.get(
        f"{BATCHES}/{batch['id']}/export", params={"format": "csv"}, headers=finance
    )
    assert exported.headers["x-export-rows"] == "3"
    recorded = await act_as(
        client,
        "fin-1",
        payout_of["card-late"],
        "record-payment",
        {"outcome": "succeeded", "reference": "ICBC-20261203-0001"},
        ("payouts:release", "payouts:read"),
    )
    assert recorded.status_code == 200, recorded.text
    shown = (await client.get(f"{BATCHES}/{batch['id']}")).json()
    assert shown["counts"] == {"processing": 4, "succeeded": 1}
    # Releasing again finds nothing waiting.
    again = await client.post(f"{BATCHES}/{batch['id']}/release", json={}, headers=finance)
    assert again.json()["outcomes"] == {"skipped": 5}
