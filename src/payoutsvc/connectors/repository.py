"""All SQL for connectors and their handled inbound events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.connectors.models import HelpdeskConnector, HelpdeskInboundEvent

_connectors = cast(Table, HelpdeskConnector.__table__)
_inbound = cast(Table, HelpdeskInboundEvent.__table__)


class ConnectorRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert(self, values: Mapping[str, Any]) -> None:
        await self.session.execute(insert(_connectors).values(**values))

    async def get(self, connector_id: str, integration_id: str | None) -> HelpdeskConnector | None:
        query = select(HelpdeskConnector).where(HelpdeskConnector.id == connector_id)
        if integration_id is not None:
            query = query.where(HelpdeskConnector.integration_id == integration_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def list(
        self, integration_id: str | None, limit: int, before_id: str | None
    ) -> Sequence[HelpdeskConnector]:
        query = select(HelpdeskConnector).order_by(HelpdeskConnector.id.desc()).limit(limit)
        if integration_id is not None:
            query = query.where(HelpdeskConnector.integration_id == integration_id)
        if before_id is not None:
            query = query.where(HelpdeskConnector.id < before_id)
        return (await self.session.execute(query)).scalars().all()

    async def update(self, connector_id: str, values: Mapping[str, Any]) -> None:
        await self.session.execute(
            update(_connectors).where(_connectors.c.id == connector_id).values(**values)
        )

    async def delete(self, connector_id: str) -> None:
        await self.session.execute(delete(_inbound).where(_inbound.c.connector_id == connector_id))
        await self.session.execute(delete(_connectors).where(_connectors.c.id == connector_id))

    # -- inbound de-duplication ---------------------------------------------------------------
    async def claim_event(self, values: Mapping[str, Any]) -> bool:
        """Record an inbound event as handled in this transaction; False when it was already
        (PostgreSQL: a concurrent redelivery waits here for the first one's commit)."""
        dialect = self.session.get_bind().dialect.name
        make = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = make(_inbound).values(**values).on_conflict_do_nothing()
        result = await self.session.execute(statement.returning(_inbound.c.event_id))
        return result.first() is not None

    async def answer_event(self, connector_id: str, event_id: str, status: int, body: str) -> None:
        await self.session.execute(
            update(_inbound)
            .where(_inbound.c.connector_id == connector_id, _inbound.c.event_id == event_id)
            .values(response_status=status, response_body=body)
        )

    async def purge_events(self, received_before: datetime) -> int:
        result = await self.session.execute(
            delete(_inbound).where(_inbound.c.received_at < received_before)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def stored_answer(self, connector_id: str, event_id: str) -> tuple[int, str] | None:
        result = await self.session.execute(
            select(_inbound.c.response_status, _inbound.c.response_body).where(
                _inbound.c.connector_id == connector_id, _inbound.c.event_id == event_id
            )
        )
        row = result.first()
        return None if row is None else (int(row[0]), str(row[1]))
