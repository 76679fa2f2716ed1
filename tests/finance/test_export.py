"""The payout export (API.md, Finance operations): the list's filters, masked, CSV with a
UTF-8 BOM or XLSX, streamed; 100,000 rows in flat memory (measured in a process of its own)."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook

from payoutsvc.payouts.export import HEADER
from payoutsvc.runtime import Runtime
from tests.api_support import assert_problem
from tests.executor.support import unique_body
from tests.finance.conftest import APPROVER, REQUESTER
from tests.finance.export_support import (
    measure_in_subprocess_args,
    parse_measured,
    seed_payouts,
)
from tests.helpers import new_integration_client, request_as

pytestmark = pytest.mark.usefixtures("operators")


async def _payout(client: httpx.AsyncClient, amount: str, **overrides: Any) -> dict[str, Any]:
    body = {**unique_body(amount), **overrides}
    body.pop("requested_by")
    requester = overrides.get("requested_by", REQUESTER)
    created = await request_as(client, requester, body)
    assert created.status_code == 201, created.text
    return dict(created.json())


def _csv(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    assert response.content.startswith(b"\xef\xbb\xbf")  # the UTF-8 BOM
    text = response.content.decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text))
    assert tuple(next(reader)) == HEADER
    return [dict(zip(HEADER, row, strict=True)) for row in reader]


async def test_csv_export_is_masked_filtered_and_newest_first(client: httpx.AsyncClient) -> None:
    small = await _payout(client, "12.34", description='=HYPERLINK("http://x")')
    large = await _payout(client, "900.00", description="退款 订单 9931")
    other = await _payout(client, "13.00", requested_by=APPROVER)

    rows = _csv(await client.get("/v1/payouts/export", params={"format": "csv"}))
    assert [r["id"] for r in rows] == [other["id"], large["id"], small["id"]]
    by_id = {r["id"]: r for r in rows}
    assert by_id[large["id"]]["description"] == "退款 订单 9931"
    assert by_id[large["id"]]["amount"] == "900.00"
    assert by_id[large["id"]]["status"] == "pending_approval"
    assert by_id[small["id"]]["description"].startswith("'=")  # not a formula in a sheet
    assert by_id[small["id"]]["requested_by"] == REQUESTER
    account = small["recipient"]["account_masked"]
    assert by_id[small["id"]]["recipient_account_masked"] == account
    assert "****" in account

    full = await client.get("/v1/payouts/export")  # csv is the default
    for payout in (small, large):
        body_account = full.content.decode("utf-8-sig")
        assert payout["recipient"]["account_masked"] in body_account
    assert _csv(full) == rows

    pending = _csv(await client.get("/v1/payouts/export", params={"status": "pending_approval"}))
    assert [r["id"] for r in pending] == [large["id"]]
    mine = _csv(await client.get("/v1/payouts/export", params={"requested_by": APPROVER}))
    assert [r["id"] for r in mine] == [other["id"]]
    refused = await client.get("/v1/payouts/export", params={"format": "pdf"})
    assert_problem(refused, 422, "validation_failed")
    refused = await client.get("/v1/payouts/export", params={"status": "lost"})
    assert_problem(refused, 422, "validation_failed")


async def test_the_full_account_is_never_exported(client: httpx.AsyncClient) -> None:
    body = unique_body("12.34")
    account = body["recipient"]["account"]
    await _payout(client, "12.34", recipient=body["recipient"])
    for fmt in ("csv", "xlsx"):
        response = await client.get("/v1/payouts/export", params={"format": fmt})
        assert response.status_code == 200
        assert account.encode() not in response.content


async def test_another_integration_exports_only_its_own(client: httpx.AsyncClient) -> None:
    await _payout(client, "12.34")
    reader = await new_integration_client(client, f"books-{uuid.uuid4().hex[:6]}", ["payouts:read"])
    async with reader:
        assert _csv(await reader.get("/v1/payouts/export")) == []
        writer_only = await new_integration_client(client, "no-read", ["payouts:write"])
        async with writer_only:
            assert_problem(await writer_only.get("/v1/payouts/export"), 403, "insufficient_scope")


async def test_xlsx_export_has_the_same_columns_and_rows(client: httpx.AsyncClient) -> None:
    first = await _payout(client, "12.34", description="中文说明")
    second = await _payout(client, "12.50")
    response = await client.get("/v1/payouts/export", params={"format": "xlsx"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    sheet = load_workbook(io.BytesIO(response.content), read_only=True)["payouts"]
    rows = [tuple(cell if cell is not None else "" for cell in row) for row in sheet.values]
    assert rows[0] == HEADER
    assert [r[0] for r in rows[1:]] == [second["id"], first["id"]]
    assert rows[2][HEADER.index("description")] == "中文说明"


async def test_100000_rows_export_in_flat_memory(database_url: str, runtime: Runtime) -> None:
    count = 100_000
    await seed_payouts(runtime.db, count)
    process = await asyncio.create_subprocess_exec(
        *measure_in_subprocess_args(database_url, "csv"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    measured = parse_measured(out.decode())
    assert measured["rows"] == count
    assert measured["peak_rss_mib"] < 150, measured
