"""`payoutsvc` command line: serve | worker | migrate | openapi | create-api-key."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer

from payoutsvc.config import get_settings

app = typer.Typer(help="payoutsvc: ticket-linked payouts for helpdesks.", no_args_is_help=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes (PostgreSQL only).")] = 1,
) -> None:
    """Run the HTTP API (plus executor and webhook sender unless PAYOUTSVC_RUN_WORKER=false)."""
    import uvicorn  # noqa: PLC0415  (keep `payoutsvc openapi` fast)

    settings = get_settings()
    if workers > 1 and settings.is_sqlite:
        raise typer.BadParameter("SQLite serialises writers: one process is its scale.")
    typer.echo(
        f"payoutsvc on http://{host}:{port}  (docs: http://{host}:{port}/docs, "
        f"database: {'SQLite ' + str(settings.sqlite_path) if settings.is_sqlite else 'PostgreSQL'}, "
        f"worker: {'in-process' if settings.run_worker else 'off'})",
        err=True,
    )
    uvicorn.run(
        "payoutsvc.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=20,
    )


@app.command()
def worker() -> None:
    """Run the executor and webhook sender only (any number of them, on one PostgreSQL)."""
    from payoutsvc.worker_process import run_worker  # noqa: PLC0415

    asyncio.run(run_worker(get_settings()))


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the latest revision (alembic upgrade head)."""
    from payoutsvc.db.migrate import upgrade_to_head  # noqa: PLC0415

    upgrade_to_head(get_settings().database_url)
    typer.echo("database schema is at head", err=True)


@app.command()
def openapi() -> None:
    """Print the OpenAPI document (what openapi/openapi.json must equal)."""
    from payoutsvc.main import create_app  # noqa: PLC0415

    document = create_app().openapi()
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


@app.command("create-api-key")
def create_api_key(
    integration: Annotated[str, typer.Option(help="Integration name (created if missing).")] = "default",
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: payouts:write,payouts:read,payouts:approve,admin")
    ] = "admin,payouts:write,payouts:read,payouts:approve",
) -> None:
    """Create an API key from the command line (e.g. the first key on PostgreSQL)."""
    from payoutsvc.auth.keys import SCOPES  # noqa: PLC0415
    from payoutsvc.auth.service import AuthService  # noqa: PLC0415
    from payoutsvc.db.engine import Database  # noqa: PLC0415

    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SCOPES))
    if unknown or not wanted:
        raise typer.BadParameter(f"unknown scopes {unknown}; choose from {', '.join(SCOPES)}")

    async def create() -> str:
        db = Database.connect(get_settings().database_url)
        try:
            async with db.transaction() as session:
                service = AuthService(session)
                found = await service.repo.get_integration_by_name(integration)
                target = found or await service.create_integration(integration)
                _key, secret = await service.create_key(target.id, wanted)
                return secret
        finally:
            await db.dispose()

    typer.echo(asyncio.run(create()))


if __name__ == "__main__":
    app()
