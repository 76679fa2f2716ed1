"""`payoutsvc` command line: serve | worker | migrate | openapi | create-api-key | listen."""

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
    import uvicorn

    settings = get_settings()
    if workers > 1 and settings.is_sqlite:
        raise typer.BadParameter("SQLite serialises writers: one process is its scale.")
    database = f"SQLite {settings.sqlite_path}" if settings.is_sqlite else "PostgreSQL"
    typer.echo(
        f"payoutsvc on http://{host}:{port}  (docs: http://{host}:{port}/docs, "
        f"database: {database}, "
        f"worker: {'in-process' if settings.run_worker else 'off'})",
        err=True,
    )
    uvicorn.run(
        "payoutsvc.main:serving_app",
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
    from payoutsvc.worker_process import run_worker

    asyncio.run(run_worker(get_settings()))


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the latest revision (alembic upgrade head)."""
    from payoutsvc.db.migrate import upgrade_to_head

    upgrade_to_head(get_settings().database_url)
    typer.echo("database schema is at head", err=True)


@app.command()
def openapi() -> None:
    """Print the OpenAPI document (what openapi/openapi.json must equal)."""
    from payoutsvc.main import create_app

    document = create_app().openapi()
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


@app.command("create-api-key")
def create_api_key(
    integration: Annotated[
        str, typer.Option(help="Integration name (created if missing).")
    ] = "default",
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: payouts:write,payouts:read,payouts:approve,admin")
    ] = "admin,payouts:write,payouts:read,payouts:approve,payouts:release",
) -> None:
    """Create an API key from the command line (e.g. the first key on PostgreSQL)."""
    from payoutsvc.auth.keys import SCOPES
    from payoutsvc.auth.service import AuthService
    from payoutsvc.db.engine import Database

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


@app.command()
def listen(
    api: Annotated[str, typer.Option(help="Base URL of the running service.")] = (
        "http://127.0.0.1:8000"
    ),
    events: Annotated[
        list[str] | None,
        typer.Option(help="Event filter(s) to receive, repeated or comma-separated [payout.*]."),
    ] = None,
    forward_to: Annotated[
        str | None,
        typer.Option(help="Re-post each verified delivery (body and signature headers) here."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each verified payload as one JSON line.")
    ] = False,
    api_key: Annotated[
        str,
        typer.Option(
            envvar="PAYOUTSVC_API_KEY",
            help="API key with scope admin or payouts:write (default: $PAYOUTSVC_API_KEY).",
            show_default=False,
        ),
    ] = "",
) -> None:
    """Receive this service's webhooks on a laptop: a temporary endpoint on a loopback port,
    every delivery's signature verified and printed, the endpoint deleted on exit (Ctrl-C).

    The service must allow loopback webhook URLs (PAYOUTSVC_WEBHOOK_ALLOW_PRIVATE=true;
    `make run` sets it)."""
    from payoutsvc.listen import ListenOptions, run

    if not api_key:
        raise typer.BadParameter("set PAYOUTSVC_API_KEY or pass --api-key", param_hint="--api-key")
    filters = tuple(f.strip() for item in events or ["payout.*"] for f in item.split(","))
    options = ListenOptions(
        api=api.rstrip("/"),
        api_key=api_key,
        events=tuple(f for f in filters if f),
        forward_to=forward_to,
        as_json=as_json,
    )
    raise typer.Exit(run(options))


audit_app = typer.Typer(help="Tamper evidence of the payout history.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _audit_key() -> bytes:
    from payoutsvc.crypto import audit_key, load_cipher

    settings = get_settings()
    return audit_key(settings, load_cipher(settings))


@audit_app.command("verify")
def audit_verify(
    payout: Annotated[str | None, typer.Option(help="Check only this payout (po_…).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Walk every payout's keyed hash chain, its status walk and approvals, and compare the
    heads with the latest checkpoint; then every anomaly's keyed chain and head (without
    --payout).
    Name the first problem of each payout and each anomaly.

    Exit code 0 when every chain is intact, 1 when any is broken.
    """
    # Imported here like the other commands: keeps `payoutsvc --help` fast.
    from payoutsvc.audit import AuditReport, verify_all
    from payoutsvc.db.engine import Database

    key = _audit_key()

    async def run() -> AuditReport:
        db = Database.connect(get_settings().database_url)
        try:
            async with db.transaction(write=False) as session:
                return await verify_all(session, key, payout)
        finally:
            await db.dispose()

    report = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
    else:
        for problem in report.problems:
            typer.echo(f"BROKEN {problem.describe()}")
        verdict = "intact" if report.ok else f"{len(report.problems)} broken"
        against = f" (against checkpoint {report.checkpoint['id']})" if report.checkpoint else ""
        typer.echo(
            f"audit: {report.payouts_checked} payouts, {report.events_checked} events, "
            f"{report.anomalies_checked} anomalies, {report.anomaly_events_checked} anomaly "
            f"events checked{against}: {verdict}",
            err=not report.ok,
        )
    if payout is not None and report.payouts_checked == 0:
        typer.echo(f"no payout {payout!r}", err=True)
        raise typer.Exit(2)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint(
    heads: Annotated[
        bool,
        typer.Option(
            "--heads", help="Print every payout's and anomaly's head, not only their digest."
        ),
    ] = False,
) -> None:
    """Record a signed checkpoint (every payout's chain head and the counts) and print it
    as JSON, so a copy can be kept outside the database. Later verifies report payouts and
    events deleted since."""
    from payoutsvc.audit import checkpoint_json, record_checkpoint
    from payoutsvc.db.base import utcnow
    from payoutsvc.db.engine import Database

    key = _audit_key()

    async def run() -> dict[str, object]:
        db = Database.connect(get_settings().database_url)
        try:
            async with db.transaction() as session:
                checkpoint = await record_checkpoint(session, key, utcnow())
                return checkpoint_json(checkpoint, heads=heads)
        finally:
            await db.dispose()

    typer.echo(json.dumps(asyncio.run(run()), indent=2))


if __name__ == "__main__":
    app()
