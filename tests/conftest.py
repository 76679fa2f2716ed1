"""Shared fixtures: every database test runs on SQLite, and on PostgreSQL too when
PAYOUTSVC_TEST_DATABASE_URL is set (.ci/run always sets it).

Under pytest-xdist (`make test` runs two workers) each worker gets its own PostgreSQL
database next to the given one (`<name>_gw0`, ...), created at the worker's start and
dropped at its end, because every test truncates the tables it uses."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from payoutsvc.config import Settings
from payoutsvc.crypto import generate_key
from payoutsvc.db.migrate import upgrade_to_head
from payoutsvc.db.models import Base
from payoutsvc.main import create_app

ADMIN_KEY = "psk_test_admin_key_0123456789"


def _worker_database_url(url: str | None) -> str | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if url is None or worker is None:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"{parts.path}_{worker}"))


POSTGRES_URL = _worker_database_url(os.environ.get("PAYOUTSVC_TEST_DATABASE_URL"))
BACKENDS = ["sqlite", "postgres"] if POSTGRES_URL else ["sqlite"]
ENCRYPTION_KEY = generate_key()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating per test is slow)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade_to_head(f"sqlite+aiosqlite:///{path}")
    return path


async def _create_or_drop_database(url: str, *, create: bool) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = create_async_engine(
        urlunsplit(parts._replace(path="/postgres")), isolation_level="AUTOCOMMIT"
    )
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            if create:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()


@pytest.fixture(scope="session")
def postgres_migrated() -> Iterator[str | None]:
    if POSTGRES_URL is None:
        yield None
        return
    own_database = os.environ.get("PYTEST_XDIST_WORKER") is not None
    if own_database:
        asyncio.run(_create_or_drop_database(POSTGRES_URL, create=True))
    upgrade_to_head(POSTGRES_URL)
    yield POSTGRES_URL
    if own_database:
        asyncio.run(_create_or_drop_database(POSTGRES_URL, create=False))


async def _truncate_postgres(url: str) -> None:
    engine = create_async_engine(url)
    try:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(
    backend: str, tmp_path: Path, sqlite_template: Path, postgres_migrated: str | None
) -> AsyncIterator[str]:
    if backend == "sqlite":
        target = tmp_path / f"test-{uuid.uuid4().hex[:8]}.db"
        shutil.copy(sqlite_template, target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    assert postgres_migrated is not None
    await _truncate_postgres(postgres_migrated)
    yield postgres_migrated


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "run_worker": False,
        "bootstrap_api_key": ADMIN_KEY,
        "webhook_allow_private": True,
        "encryption_key": ENCRYPTION_KEY,
        "log_format": "console",
        "log_level": "WARNING",
        "worker_poll_interval": 0.05,
        # Tests send bursts far beyond a helpdesk's rate; the limit tests set their own.
        "rate_limit": "100000/second",
        "rate_limit_burst": 100000,
        # Tests read the queue gauges right after changing the queues.
        "metrics_refresh_seconds": 0,
        # No daily reconciliation appearing in tests that run the worker (its webhook would
        # reach their `*` endpoints); tests/reconciliation/ turns it on where it is tested.
        "reconcile_at": "",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Any]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client (all scopes, integration `default`)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as http:
        yield http


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_env_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PAYOUTSVC_") and name != "PAYOUTSVC_TEST_DATABASE_URL":
            monkeypatch.delenv(name, raising=False)
