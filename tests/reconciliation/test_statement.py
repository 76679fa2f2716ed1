"""Reconciling offline (``manual``) payouts against an uploaded bank statement, and what
POST /v1/reconciliations refuses."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from payoutsvc.payouts.status import PayoutStatus
from payoutsvc.reconciliation.models import Reconciliation
from payoutsvc.runtime import Runtime
from tests.api_support import assert_problem
from tests.executor.support import APPROVER, approved_payout
from tests.helpers import walk
from tests.reconciliation.support import around_now, count_rows, payout_states, result, runner

pytestmark = pytest.mark.usefixtures("operators")
CSV = {"Content-Type": "text/csv"}


async def upload(client: httpx.AsyncClient, csv: str, gateway: str = "manual") -> httpx.Response:
    return await client.post(
        "/v1/reconciliations",
        params={"gateway": gateway, **around_now()},
        content=csv.encode(),
        headers=CSV,
    )


async def test_a_statement_is_compared_with_the_manual_payouts(make_app: Any) -> None:
    app, client = await make_app(gateway_routes="alipay=manual")
    runtime: Runtime = app.state.runtime
    paid, awaiting, short, unpaid = [
        (await approved_payout(client, runtime, amount))["id"]
        for amount in ("12.34", "23.45", "34.56", "45.67")
    ]
    for payout_id in (paid, short, unpaid):
        await walk(
            runtime, payout_id, PayoutStatus.PROCESSING, PayoutStatus.SUCCEEDED, actor=APPROVER
        )
    await walk(runtime, awaiting, PayoutStatus.PROCESSING, actor=APPROVER)
    before = await payout_states(runtime)
    statement = (
        "\ufeffreference,amount,currency,status,date\n"  # a spreadsheet's BOM
        f"{paid},12.34,CNY,succeeded,2026-12-01\n"
        f"{awaiting},23.45,CNY,succeeded,2026-12-01\n"  # paid at the bank, not recorded here
        f"{short},30.00,CNY,succeeded,2026-12-01\n"
        "BOC-UNKNOWN-1,99.00,CNY,succeeded,2026-12-01\n"
    )

    started = await upload(client, statement)
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    assert await runner(runtime).run_once() == run_id

    done = await result(client, run_id)
    assert (done["status"], done["source"], done["gateway_calls"]) == ("completed", "statement", 0)
    assert done["summary"] == {
        "matched": 1,
        "status_mismatch": 1,
        "amount_mismatch": 1,
        "missing_at_gateway": 1,
        "unknown_to_us": 1,
        "unknown": 0,
    }
    by_kind = {item["kind"]: item for item in done["items"]}
    assert by_kind["status_mismatch"]["payout_id"] == awaiting
    assert by_kind["amount_mismatch"]["payout_id"] == short
    assert by_kind["amount_mismatch"]["theirs"]["amount"] == "30.00"
    assert by_kind["missing_at_gateway"]["payout_id"] == unpaid
    assert by_kind["unknown_to_us"]["gateway_reference"] == "BOC-UNKNOWN-1"
    assert await payout_states(runtime) == before


async def test_a_statement_with_bad_rows_records_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await upload(
        client,
        "reference,amount,currency,status,date\n"
        "A-1,12.50,CNY,succeeded,2026-12-01\n"
        "A-2,12.505,CNY,paid,yesterday\n"
        "A-1,1.00,XYZ,failed,2026-12-01\n",
    )
    problem = assert_problem(response, 422, "validation_failed")
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {
        "rows[2].amount",
        "rows[2].status",
        "rows[2].date",
        "rows[3].currency",
    }
    missing = await upload(client, "reference,amount,currency\nA-1,1.00,CNY\n")
    assert {e["field"] for e in assert_problem(missing, 422, "validation_failed")["errors"]} == {
        "columns.status",
        "columns.date",
    }
    assert await count_rows(runtime, Reconciliation) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"gateway": "nowhere"}, "gateway"),
        ({"gateway": "manual"}, "gateway"),  # nothing to ask: a statement is needed
        ({"gateway": "sandbox", "from": "2026-12-02", "to": "2026-12-01"}, "to"),
        ({"gateway": "sandbox", "from": "2026-10-01", "to": "2026-12-01"}, "to"),
        ({"gateway": "sandbox", "from": "2026-12-01T00:00:00", "to": "2026-12-02T00:00:00"}, "to"),
        ({"gateway": "sandbox", "from": "2026-12-01"}, "to"),
    ],
)
async def test_bad_requests_are_refused(
    client: httpx.AsyncClient, runtime: Runtime, body: dict[str, str], field: str
) -> None:
    request = {"from": "2026-12-01", "to": "2026-12-01", **body}
    if field == "to" and "to" not in body:
        del request["to"]
    response = await client.post("/v1/reconciliations", json=request)
    problem = assert_problem(response, 422, "validation_failed")
    assert field in {e["field"] for e in problem["errors"]}
    assert await count_rows(runtime, Reconciliation) == 0


async def test_days_are_policy_days_and_runs_are_listed(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/reconciliations", json={"gateway": "sandbox", "from": "2026-12-01", "to": "2026-12-02"}
    )
    assert response.status_code == 202, response.text
    shown = await result(client, response.json()["id"])
    assert shown["period"] == {"from": "2026-12-01T00:00:00.000Z", "to": "2026-12-03T00:00:00.000Z"}
    listed = await client.get("/v1/reconciliations", params={"status": "running"})
    assert [r["id"] for r in listed.json()["data"]] == [shown["id"]]
    assert (await client.get("/v1/reconciliations/rc_nope")).status_code == 404
    garbage = await client.post(
        "/v1/reconciliations", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert_problem(garbage, 400, "invalid_json")
