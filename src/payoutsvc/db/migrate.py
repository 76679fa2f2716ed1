"""Schema migrations from code: `payoutsvc migrate`, auto-migrate on the embedded default,
and the "is the schema at head?" check behind /readyz."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

_PROJECT_ROOT = Path(__file__).resolve().parents[3]


def _locate_migrations() -> Path:
    """Migrations sit beside src/ in a checkout, and are packaged as payoutsvc/_migrations in
    the wheel (see the Dockerfile)."""
    packaged = Path(__file__).resolve().parents[1] / "_migrations"
    if packaged.is_dir():
        return packaged
    return _PROJECT_ROOT / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_locate_migrations()))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


def upgrade_to_head(database_url: str) -> None:
    """Blocking; call from a thread when an event loop is running (env.py runs its own)."""
    command.upgrade(alembic_config(database_url), "head")


def head_revisions(database_url: str) -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())


async def current_revisions(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync_conn: set(MigrationContext.configure(sync_conn).get_current_heads())
        )
