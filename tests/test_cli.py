"""The `payoutsvc` command line.

The commands run in-process through Typer's runner (a new interpreter per command would cost
seconds of imports each); one test runs the installed console script to prove the entry point.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from typer.testing import CliRunner

from payoutsvc.cli import app as cli
from payoutsvc.config import get_settings
from payoutsvc.db.migrate import alembic_config
from payoutsvc.heap import YOUNG_COLLECTION_THRESHOLD
from payoutsvc.main import create_app
from tests.conftest import make_settings


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CliRunner]:
    """A runner whose commands see a fresh environment (settings are cached per process)."""
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def _sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def test_the_console_script_is_installed(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("payoutsvc")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTSVC_")}
    result = subprocess.run(
        [str(script), "--help"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for command in ("serve", "worker", "migrate", "openapi", "create-api-key"):
        assert command in result.stdout


def test_openapi_prints_the_apps_document(run: CliRunner, tmp_path: Path) -> None:
    result = run.invoke(cli, ["openapi"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["openapi"].startswith("3.")
    assert "/v1/payouts" in document["paths"]
    assert document == json.loads(json.dumps(create_app().openapi()))
    assert not list(tmp_path.iterdir()), "printing the document must not create files"


def test_migrate_brings_a_fresh_sqlite_file_to_head(
    run: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "fresh.db"
    monkeypatch.setenv("PAYOUTSVC_DATABASE_URL", _sqlite_url(database))
    result = run.invoke(cli, ["migrate"])
    assert result.exit_code == 0, result.output
    assert "head" in result.output
    heads = set(ScriptDirectory.from_config(alembic_config(_sqlite_url(database))).get_heads())
    with sqlite3.connect(database) as connection:
        versions = {row[0] for row in connection.execute("SELECT version_num FROM alembic_version")}
        tables = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    assert versions == heads
    assert {"payouts", "payout_events", "idempotency_keys", "api_keys", "operators"} <= tables
    # Running it again is harmless.
    assert run.invoke(cli, ["migrate"]).exit_code == 0


def test_create_api_key_prints_a_working_key(
    run: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "cli.db"
    monkeypatch.setenv("PAYOUTSVC_DATABASE_URL", _sqlite_url(database))
    assert run.invoke(cli, ["migrate"]).exit_code == 0

    def create(*args: str) -> str:
        result = run.invoke(cli, ["create-api-key", *args])
        assert result.exit_code == 0, result.output
        return result.stdout.strip().splitlines()[-1]

    admin = create()
    reader = create("--integration", "zendesk", "--scopes", "payouts:read")
    assert admin.startswith("psk_")
    assert reader.startswith("psk_")
    assert admin != reader
    assert run.invoke(cli, ["create-api-key", "--scopes", "root"]).exit_code != 0

    async def use_keys() -> None:
        app = create_app(make_settings(_sqlite_url(database), bootstrap_api_key=None))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            ) as http,
        ):
            as_admin = {"Authorization": f"Bearer {admin}"}
            as_reader = {"Authorization": f"Bearer {reader}"}
            assert (await http.get("/v1/operators", headers=as_admin)).status_code == 200
            listed = (await http.get("/v1/integrations", headers=as_admin)).json()["data"]
            assert {i["name"] for i in listed} == {"default", "zendesk"}
            assert (await http.get("/v1/payouts", headers=as_reader)).status_code == 200
            assert (await http.get("/v1/operators", headers=as_reader)).status_code == 403

    asyncio.run(use_keys())


async def test_serve_runs_an_app_that_freezes_what_startup_built(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`payoutsvc serve` runs ``serving_app``, whose startup moves the heap it built out of
    the garbage collector's sight (gc.freeze): full collections under load scan only what
    requests left behind; and young collections wait for 20,000 net allocations instead of
    700. A plain create_app (tests, embedders) freezes nothing."""
    served: dict[str, object] = {}
    monkeypatch.setattr("uvicorn.run", lambda target, **options: served.update(target=target))
    CliRunner().invoke(cli, ["serve"], catch_exceptions=False)
    assert served["target"] == "payoutsvc.main:serving_app"

    plain = create_app(make_settings(database_url))
    async with plain.router.lifespan_context(plain):
        assert gc.get_freeze_count() == 0
    threshold = gc.get_threshold()
    frozen = create_app(make_settings(database_url), freeze_startup_heap=True)
    try:
        async with frozen.router.lifespan_context(frozen):
            assert gc.get_freeze_count() > 100_000
            assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
