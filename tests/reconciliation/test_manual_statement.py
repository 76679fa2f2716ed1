"""The bank statement against offline payouts paid the way finance pays them: the manual
gateway leaves them awaiting payment, record-payment stores the bank's reference, and the
statement names them by that reference (or by our payout id in the transfer's remark)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from payoutsvc.config import Settings
from payoutsvc.executor.service import Executor
from payoutsvc.runtime import Runtime
from tests.conftest import make_settings
from tests.executor.support import unique_body
from tests.finance.conftest import REQUESTER, operators  # noqa: F401  (the finance operators)
from tests.finance.test_manual_gateway import record
from tests.helpers import request_as
from tests.reconciliation.support import around_now, payout_states, result, runner

pytestmark = pytest.mark.usefixtures("operators")


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, gateway_routes="alipay=manual")


async def awaiting_payment(client: httpx.AsyncClient, executor: Executor, amount: str) -> str:
    body = unique_body(amount)
    body.pop("requested_by")
    created = await request_as(client, REQUESTER, body)
    assert created.status_code == 201, created.text
    assert await executor.run_once() == 1  # processing, awaiting_manual_payment
    return str(created.json()["id"])


async def test_the_statement_is_matched_by_the_recorded_bank_reference(
    client: httpx.AsyncClient, runtime: Runtime, executor: Executor
) -> None:
    paid, short, unrecorded, unpaid = [
        await awaiting_payment(client, executor, amount)
        for amount in ("12.34", "23.45", "34.56", "45.67")
    ]
    for payout_id, reference in ((paid, "CMB-1"), (short, "CMB-2"), (unpaid, "CMB-4")):
        recorded = await record(client, payout_id, outcome="succeeded", reference=reference)
        assert recorded.status_code == 200, recorded.text
    before = await payout_states(runtime)
    statement = (
        "reference,amount,currency,status,date\n"
        "CMB-1,12.34,CNY,succeeded,2026-12-03\n"
        "CMB-2,20.00,CNY,succeeded,2026-12-03\n"
        f"{unrecorded},34.56,CNY,succeeded,2026-12-03\n"  # paid; nobody recorded it here
        "CMB-999,5.00,CNY,succeeded,2026-12-03\n"
    )
    started = await client.post(
        "/v1/reconciliations",
        params={"gateway": "manual", **around_now()},
        content=statement.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert started.status_code == 202, started.text
    assert await runner(runtime).run_once() == started.json()["id"]

    done: dict[str, Any] = await result(client, started.json()["id"])
    assert done["summary"] == {
        "matched": 1,
        "status_mismatch": 1,
        "amount_mismatch": 1,
        "missing_at_gateway": 1,
        "unknown_to_us": 1,
        "unknown": 0,
    }
    by_kind = {item["kind"]: item for item in done["items"]}
    assert by_kind["amount_mismatch"]["payout_id"] == short
    assert by_kind["amount_mismatch"]["gateway_reference"] == "CMB-2"
    assert by_kind["status_mismatch"]["payout_id"] == unrecorded
    assert by_kind["status_mismatch"]["ours"]["status"] == "processing"
    assert by_kind["missing_at_gateway"]["payout_id"] == unpaid
    assert by_kind["unknown_to_us"]["gateway_reference"] == "CMB-999"
    assert await payout_states(runtime) == before
