"""All SQL of the recipient blocklist."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.recipients.models import RecipientBlock


class RecipientRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def is_postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    async def is_blocked(self, fingerprint: str) -> bool:
        result = await self.session.execute(
            select(exists().where(RecipientBlock.fingerprint == fingerprint))
        )
        return bool(result.scalar_one())

    async def get_block(self, block_id: str) -> RecipientBlock | None:
        return await self.session.get(RecipientBlock, block_id)

    async def get_block_by_fingerprint(self, fingerprint: str) -> RecipientBlock | None:
        result = await self.session.execute(
            select(RecipientBlock).where(RecipientBlock.fingerprint == fingerprint)
        )
        return result.scalar_one_or_none()

    async def insert_block(self, values: dict[str, Any]) -> bool:
        """Insert unless the fingerprint is blocked already (also under a race); returns
        whether this call inserted the row."""
        dialect_insert = postgresql.insert if self.is_postgres else sqlite.insert
        statement = (
            dialect_insert(RecipientBlock)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[RecipientBlock.fingerprint])
            .returning(RecipientBlock.id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def list_blocks(self, limit: int, before_id: str | None) -> Sequence[RecipientBlock]:
        query = select(RecipientBlock).order_by(RecipientBlock.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(RecipientBlock.id < before_id)
        return (await self.session.execute(query)).scalars().all()

    async def delete_block(self, block_id: str) -> bool:
        result = await self.session.execute(
            delete(RecipientBlock).where(RecipientBlock.id == block_id)
        )
        return bool(getattr(result, "rowcount", 0))
