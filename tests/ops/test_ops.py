"""/healthz, /readyz, /metrics, offline /docs and /openapi.json: no key needed."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from payoutsvc.db.migrate import alembic_config
from payoutsvc.main import create_app
from tests.api_support import db_session, new_payout
from tests.conftest import POSTGRES_URL, make_settings
from tests.helpers import create_operator


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        yield http


async def test_healthz(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_at_head(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"


def _older_revision(url: str) -> str | None:
    """The first revision, or None when it is also the head (then: no revision at all)."""
    scripts = ScriptDirectory.from_config(alembic_config(url))
    base = scripts.get_base()
    return None if base in scripts.get_heads() else base


async def test_readyz_fails_while_the_schema_is_behind_on_sqlite(
    sqlite_template: Path, tmp_path: Path
) -> None:
    """SQLite migrates itself at startup, so the schema falls behind afterwards (as when an
    older binary's database meets a newer one) by stamping it back."""
    database = tmp_path / "behind.db"
    shutil.copy(sqlite_template, database)
    app = create_app(make_settings(f"sqlite+aiosqlite:///{database}"))
    older = _older_revision(app.state.settings.database_url)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        assert (await http.get("/readyz")).status_code == 200
        async with db_session(app) as session:
            if older is None:
                await session.execute(text("DELETE FROM alembic_version"))
            else:
                await session.execute(
                    text("UPDATE alembic_version SET version_num = :v"), {"v": older}
                )
        response = await http.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unavailable"
        assert body["schema"] == "behind"
        assert body["current"] == ([] if older is None else [older])
        assert body["expected"] == sorted(app.state.schema_heads)
        assert (await http.get("/healthz")).status_code == 200


async def test_readyz_on_an_unmigrated_postgres() -> None:
    if POSTGRES_URL is None:
        pytest.skip("PAYOUTSVC_TEST_DATABASE_URL not set")
    parts = urlsplit(POSTGRES_URL)
    name = f"payoutsvc_unmigrated_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(
        urlunsplit(parts._replace(path="/postgres")), isolation_level="AUTOCOMMIT"
    )
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        settings = make_settings(urlunsplit(parts._replace(path=f"/{name}")))
        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            ) as http,
        ):
            # PostgreSQL is never migrated by the API process itself.
            response = await http.get("/readyz")
            assert response.status_code == 503, response.text
            assert response.json()["schema"] == "behind"
            assert response.json()["current"] == []
            assert (await http.get("/healthz")).status_code == 200
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


def _samples(metrics_text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def test_metrics_count_requests_and_payouts(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    await create_operator(client, "agent-17", "agent")
    before = await anonymous.get("/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    created_route = {"method": "POST", "route": "/v1/payouts", "status": "201"}
    requests_before = _samples(before.text, "payoutsvc_http_requests_total", **created_route)
    payouts_before = _samples(before.text, "payoutsvc_payouts_created_total")

    payout = await new_payout(client)
    await client.get("/v1/payouts/po_missing")

    after = (await anonymous.get("/metrics")).text
    assert _samples(after, "payoutsvc_http_requests_total", **created_route) == requests_before + 1
    assert _samples(after, "payoutsvc_payouts_created_total") == payouts_before + 1
    by_status = _samples(after, "payoutsvc_payouts_created_total", status=payout["status"])
    assert by_status >= 1
    # Routes are labelled by their template, never by an id.
    assert (
        _samples(
            after, "payoutsvc_http_requests_total", route="/v1/payouts/{payout_id}", status="404"
        )
        >= 1
    )
    assert "po_missing" not in after
    assert _samples(after, "payoutsvc_http_request_duration_seconds_count", method="POST") >= 1


async def test_docs_render_from_local_assets(anonymous: httpx.AsyncClient) -> None:
    docs = await anonymous.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    html = docs.text
    assert "swagger" in html.lower()
    assert not re.search(r"https?://", html), "docs must not load anything from the internet"
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assets += re.findall(r"""url:\s*["']([^"']+)["']""", html)
    assert any(a.endswith(".js") for a in assets)
    assert any(a.endswith(".css") for a in assets)
    assert "/openapi.json" in assets
    for asset in assets:
        assert asset.startswith("/"), asset
        fetched = await anonymous.get(asset)
        assert fetched.status_code == 200, asset
        assert fetched.content, asset
    bundle = await anonymous.get(next(a for a in assets if a.endswith("bundle.js")))
    assert len(bundle.content) > 100_000  # the real Swagger UI, not a stub
    assert "javascript" in bundle.headers["content-type"]
    root = await anonymous.get("/")
    assert root.status_code in (302, 307)
    assert root.headers["location"] == "/docs"


async def test_openapi_json(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert "/v1/payouts" in document["paths"]
    assert "/docs" not in document["paths"]
