"""Many payouts fast, and the command that measures an export in a process of its own
(``export_child.py``): shared by the export tests and ``bench/export_payouts.py``."""

from __future__ import annotations

import base64
import json
import sys
from typing import Any, cast

from sqlalchemy import Table, insert, text

from payoutsvc.auth.models import Integration
from payoutsvc.db.base import utcnow
from payoutsvc.db.engine import Database
from payoutsvc.ids import new_id
from payoutsvc.payouts.models import Payout, PayoutEvent
from tests.conftest import ENCRYPTION_KEY
from tests.executor.support import approved_rows

# Copies of one payout, ``:count`` of them, made by the database itself (a recursive CTE
# both backends run): a new id, ticket, amount, gateway key and description each.
_COPIES = """
INSERT INTO payouts ({columns})
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
SELECT {values} FROM payouts AS p, n WHERE p.id = :template
"""
_PADDED = {
    "sqlite": "printf('%026d', n.i)",
    "postgresql": "lpad(CAST(n.i AS TEXT), 26, '0')",
}


def _copies_statement(dialect: str) -> str:
    varied = {
        "id": f"'po_' || {_PADDED[dialect]}",
        "ticket_id": "'T-' || CAST(n.i AS TEXT)",
        "amount_minor": "100 + n.i",
        "gateway_idempotency_key": f"'k' || {_PADDED[dialect]}",
        "description": "'退款 order ' || CAST(n.i AS TEXT)",
    }
    names = [column.name for column in cast(Table, Payout.__table__).columns]
    return _COPIES.format(
        columns=", ".join(names),
        values=", ".join(varied.get(name, f"p.{name}") for name in names),
    )


async def seed_payouts(db: Database, count: int, *, integration_id: str | None = None) -> str:
    """``count`` approved payouts of one new integration: one real row (and its events),
    then ``count - 1`` copies written by one INSERT … SELECT; returns the integration's id."""
    integration_id = integration_id or new_id("int")
    rows, events = approved_rows(
        integration_id,
        base64.urlsafe_b64decode(ENCRYPTION_KEY),
        [(1, 100)],
        actor="agent-1",
        ticket_system="zendesk",
    )
    async with db.transaction() as session:
        await session.execute(
            insert(cast(Table, Integration.__table__)),
            [{"id": integration_id, "name": f"export-{integration_id}", "created_at": utcnow()}],
        )
        await session.execute(insert(cast(Table, Payout.__table__)), rows)
        await session.execute(insert(cast(Table, PayoutEvent.__table__)), events)
        if count > 1:
            dialect = session.get_bind().dialect.name
            await session.execute(
                text(_copies_statement(dialect)), {"count": count - 1, "template": rows[0]["id"]}
            )
    return integration_id


def measure_in_subprocess_args(url: str, fmt: str) -> list[str]:
    """The command that measures an export in a process of its own (export_child.py)."""
    return [sys.executable, "-m", "tests.finance.export_child", url, fmt]


def parse_measured(output: str) -> dict[str, Any]:
    return dict(json.loads(output.strip().splitlines()[-1]))
