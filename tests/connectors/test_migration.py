"""Migration 0015 on a database with webhook endpoints: they keep every column and stay
Standard Webhooks endpoints (``target_kind`` NULL); the downgrade keeps them too."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, text

from payoutsvc.db.migrate import alembic_config

_ENDPOINT = {
    "id": "we_legacy",
    "integration_id": "int_legacy",
    "url": "https://hooks.example.com/payouts",
    "events": '["payout.*"]',
    "enabled": True,
    "secret_encrypted": b"\x01sealed",
    "created_at": "2026-11-01 00:00:00",
    "updated_at": "2026-11-01 00:00:00",
}


def _rows(path: Path, columns: str) -> list[tuple[object, ...]]:
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        rows = [
            tuple(r) for r in connection.execute(text(f"SELECT {columns} FROM webhook_endpoints"))
        ]
    engine.dispose()
    return rows


async def test_endpoints_survive_0015_both_ways(tmp_path: Path) -> None:
    path = tmp_path / "before.db"
    config = alembic_config(f"sqlite+aiosqlite:///{path}")
    await asyncio.to_thread(command.upgrade, config, "0014")
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO integrations (id, name, created_at) VALUES (:i, 'default', :t)"),
            {"i": "int_legacy", "t": "2026-11-01 00:00:00"},
        )
        connection.execute(
            text(
                "INSERT INTO webhook_endpoints (id, integration_id, url, events, enabled, "
                "secret_encrypted, created_at, updated_at) VALUES (:id, :integration_id, :url, "
                ":events, :enabled, :secret_encrypted, :created_at, :updated_at)"
            ),
            _ENDPOINT,
        )
    engine.dispose()
    columns = "id, integration_id, url, events, enabled, secret_encrypted"
    before = _rows(path, columns)

    await asyncio.to_thread(command.upgrade, config, "0015")
    assert _rows(path, columns) == before
    assert _rows(path, "target_kind, target_options") == [(None, None)]

    await asyncio.to_thread(command.downgrade, config, "0014")
    assert _rows(path, columns) == before
