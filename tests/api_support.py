"""Assertions and builders for the foundation API tests.

Payout statuses are asserted so they hold before and after the policy lands: under the
default policy an agent's refund of at most 50.00 CNY is auto-approved and one up to 500.00
CNY waits for approval, while the foundation alone starts every payout in
``pending_approval``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.helpers import payout_body

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code", "errors"}
# A new payout's first status: `pending_approval` (foundation, or above the auto-approval
# limit) or `approved` (within it, once the policy decides).
NEW_PAYOUT_STATUSES = {"pending_approval", "approved"}
REQUESTER = "agent-17"


def assert_problem(
    response: httpx.Response,
    status: int,
    code: str | Iterable[str],
    field: str | None = None,
    field_code: str | None = None,
) -> dict[str, Any]:
    """An RFC 9457 problem with our ``code`` and, when given, an error on ``field``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    problem = response.json()
    assert set(problem) >= PROBLEM_FIELDS, problem
    assert problem["status"] == status
    codes = {code} if isinstance(code, str) else set(code)
    assert problem["code"] in codes, problem
    assert problem["type"].endswith(problem["code"])
    assert isinstance(problem["title"], str)
    assert problem["title"]
    assert isinstance(problem["detail"], str)
    assert problem["detail"]
    assert isinstance(problem["errors"], list)
    for error in problem["errors"]:
        assert set(error) == {"field", "code", "message"}, error
    if field is not None:
        matching = [e for e in problem["errors"] if e["field"] == field]
        assert matching, f"no error on {field!r}: {problem['errors']}"
        if field_code is not None:
            assert field_code in {e["code"] for e in matching}, problem["errors"]
    return dict(problem)


def alipay_mobile(index: int) -> str:
    """A distinct valid mainland mobile number per index (keeps per-recipient limits apart)."""
    return f"1380013{index:04d}"


def alipay_recipient(index: int = 8000) -> dict[str, str]:
    return {"type": "alipay", "account": alipay_mobile(index), "name": "张三"}


async def post_payout(
    client: httpx.AsyncClient, body: Any, key: str | None = None
) -> httpx.Response:
    return await client.post(
        "/v1/payouts", json=body, headers={"Idempotency-Key": key or uuid.uuid4().hex}
    )


async def new_payout(client: httpx.AsyncClient, index: int = 0, **overrides: Any) -> dict[str, Any]:
    """Create a payout that every world accepts; ``index`` varies the recipient."""
    overrides.setdefault("recipient", alipay_recipient(8000 + index))
    response = await post_payout(client, payout_body(**overrides))
    assert response.status_code == 201, response.text
    payout = dict(response.json())
    assert payout["status"] in NEW_PAYOUT_STATUSES
    return payout


@asynccontextmanager
async def db_session(app: FastAPI) -> AsyncIterator[AsyncSession]:
    """A committed transaction on the app's own database."""
    async with app.state.runtime.db.transaction() as session:
        yield session


async def scalar(app: FastAPI, sql: str, **params: Any) -> Any:
    async with db_session(app) as session:
        return (await session.execute(text(sql), params)).scalar()


async def table_dump(app: FastAPI, table: str) -> list[tuple[Any, ...]]:
    async with db_session(app) as session:
        rows = (await session.execute(text(f"SELECT * FROM {table}"))).all()
        return [tuple(row) for row in rows]


def raw_bytes(rows: Iterable[tuple[Any, ...]]) -> bytes:
    """Every value of the rows as bytes, binary columns as they are stored."""
    chunks: list[bytes] = []
    for row in rows:
        for value in row:
            if isinstance(value, bytes | bytearray | memoryview):
                chunks.append(bytes(value))
            else:
                chunks.append(str(value).encode())
    return b"\x00".join(chunks)


class CaseFailures:
    """Runs many small cases against one app and reports every failing one at the end.

    Each case of a table costs a request, not an app start, which keeps the suite fast on
    both backends while a failure still names its case.
    """

    def __init__(self) -> None:
        self.messages: list[str] = []

    @contextmanager
    def case(self, name: str) -> Iterator[None]:
        try:
            yield
        except AssertionError as exc:
            self.messages.append(f"[{name}] {exc}")

    def check(self) -> None:
        assert not self.messages, f"{len(self.messages)} case(s) failed:\n" + "\n".join(
            self.messages
        )
